char **split_fields(const char *line, size_t *count)
{
    char *copy = strdup(line);
    char **fields = NULL;
    size_t n = 0;
    char *token;

    if (copy == NULL)
        return NULL;
    for (token = strtok(copy, ","); token != NULL; token = strtok(NULL, ",")) {
        char **grown = realloc(fields, (n + 1) * sizeof(*fields));

        if (grown == NULL)
            return NULL;
        fields = grown;
        fields[n] = strdup(token);
        if (fields[n] == NULL)
            return NULL;
        n++;
    }
    free(copy);
    *count = n;
    return fields;
}
