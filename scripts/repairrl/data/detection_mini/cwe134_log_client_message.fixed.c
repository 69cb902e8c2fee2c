void log_client_message(FILE *log, const char *client, const char *message)
{
    char line[512];

    snprintf(line, sizeof(line), "[%s] %s\n", client, message);
    fputs(line, log);
    fflush(log);
}
