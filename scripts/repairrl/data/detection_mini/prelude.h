/* Declarations the bundled functions rely on, as their projects' headers would provide them.
 * Only the tests use this file (to compile every function); the model sees the function alone, as in PrimeVul. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

struct config_entry {
    const char *key;
    const char *value;
    struct config_entry *next;
};

struct config {
    struct config_entry *entries;
};

const struct config_entry *config_find(const struct config *cfg, const char *key);

struct image {
    uint32_t width;
    uint32_t height;
    uint32_t channels;
    uint8_t *pixels;
};

struct session {
    int fd;
    unsigned id;
    char *peer;
    struct session *next;
};
