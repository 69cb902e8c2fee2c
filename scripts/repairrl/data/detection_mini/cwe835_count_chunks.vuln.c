size_t count_chunks(const uint8_t *buf, size_t len)
{
    size_t pos = 0;
    size_t chunks = 0;

    /* Each chunk starts with its total length (header included) as a big-endian 32-bit value. */
    while (pos + 4 <= len) {
        uint32_t chunk_len = (uint32_t)buf[pos] << 24 | (uint32_t)buf[pos + 1] << 16 |
                             (uint32_t)buf[pos + 2] << 8 | (uint32_t)buf[pos + 3];

        pos += chunk_len;
        chunks++;
    }
    return chunks;
}
