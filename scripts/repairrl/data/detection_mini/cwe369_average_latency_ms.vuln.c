unsigned average_latency_ms(const unsigned *samples, size_t count)
{
    unsigned long long total = 0;
    size_t i;

    for (i = 0; i < count; i++)
        total += samples[i];
    return (unsigned)(total / count);
}
