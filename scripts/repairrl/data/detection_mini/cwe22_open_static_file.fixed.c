FILE *open_static_file(const char *root, const char *request_path)
{
    char path[4096];
    int n;

    while (*request_path == '/')
        request_path++;
    if (strstr(request_path, "..") != NULL)
        return NULL;
    n = snprintf(path, sizeof(path), "%s/%s", root, request_path);
    if (n < 0 || (size_t)n >= sizeof(path))
        return NULL;
    return fopen(path, "rb");
}
