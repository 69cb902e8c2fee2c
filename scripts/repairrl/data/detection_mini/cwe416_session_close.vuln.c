void session_close(struct session **list, struct session *s)
{
    struct session **link = list;

    while (*link != NULL && *link != s)
        link = &(*link)->next;
    if (*link != NULL)
        *link = s->next;
    close(s->fd);
    free(s->peer);
    free(s);
    fprintf(stderr, "session %u closed\n", s->id);
}
