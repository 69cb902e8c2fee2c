int tlv_value_sum(const uint8_t *buf, size_t len, uint8_t type, uint32_t *sum)
{
    size_t pos = 0;

    while (pos + 2 <= len) {
        uint8_t t = buf[pos];
        size_t l = buf[pos + 1];

        if (l > len - pos - 2)
            return -1;
        if (t == type) {
            size_t i;

            *sum = 0;
            for (i = 0; i < l; i++)
                *sum += buf[pos + 2 + i];
            return 0;
        }
        pos += 2 + l;
    }
    return -1;
}
