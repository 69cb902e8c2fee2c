int buf_append(char *dst, size_t dst_size, size_t *used, const char *src, size_t src_len)
{
    /* Room for src_len bytes and the terminating NUL. */
    if (*used >= dst_size || src_len >= dst_size - *used)
        return -1;
    memcpy(dst + *used, src, src_len);
    *used += src_len;
    dst[*used] = '\0';
    return 0;
}
