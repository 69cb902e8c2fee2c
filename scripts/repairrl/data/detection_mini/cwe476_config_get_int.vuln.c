int config_get_int(const struct config *cfg, const char *key, int fallback)
{
    const struct config_entry *entry = config_find(cfg, key);
    char *end;
    long value;

    errno = 0;
    value = strtol(entry->value, &end, 10);
    if (errno != 0 || end == entry->value || *end != '\0')
        return fallback;
    if (value < INT_MIN || value > INT_MAX)
        return fallback;
    return (int)value;
}
