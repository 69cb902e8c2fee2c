ssize_t hex_decode(const char *hex, uint8_t *out, size_t out_size)
{
    size_t len = strlen(hex);
    size_t i;

    if (len % 2 != 0 || len / 2 > out_size)
        return -1;
    for (i = 0; i < len; i++) {
        char c = hex[i];
        int v;

        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return (ssize_t)(len / 2);
}
