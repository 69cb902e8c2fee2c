int ping_host(const char *host)
{
    char cmd[256];
    int n;

    if (host == NULL || host[0] == '\0' || host[0] == '-')
        return -1;
    if (host[strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")] != '\0')
        return -1;
    n = snprintf(cmd, sizeof(cmd), "ping -c 1 -W 2 %s > /dev/null 2>&1", host);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return -1;
    return system(cmd) == 0 ? 0 : -1;
}
