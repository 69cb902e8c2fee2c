int copy_header_name(char *dst, size_t dst_size, const char *line)
{
    const char *colon = strchr(line, ':');
    size_t name_len;

    if (colon == NULL)
        return -1;
    name_len = (size_t)(colon - line);
    memcpy(dst, line, name_len);
    dst[name_len] = '\0';
    return (int)name_len;
}
