int load_manifest(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long size;

    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    data = malloc((size_t)size + 1);
    if (data == NULL)
        goto fail;
    if (fread(data, 1, (size_t)size, f) != (size_t)size) {
        free(data);
        goto fail;
    }
    data[size] = '\0';
    fclose(f);
    *out = data;
    return 0;

fail:
    free(data);
    fclose(f);
    return -1;
}
