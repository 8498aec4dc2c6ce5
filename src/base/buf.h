/* nb_buf: a growable byte buffer with a hard cap.
 *
 * Every buffer that grows from outside input (request bodies, channel frames, captured output)
 * is an nb_buf with a max set at init; an append that would pass the cap fails with -1 and
 * leaves the buffer unchanged. The buffer owns its memory; data is always NUL-terminated for
 * convenience (the NUL is not counted in len). Not thread-safe. */
#ifndef NB_BUF_H
#define NB_BUF_H

#include <stddef.h>

typedef struct nb_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
} nb_buf;

void nb_buf_init(nb_buf *b, size_t max);
int nb_buf_reserve(nb_buf *b, size_t extra);
int nb_buf_append(nb_buf *b, const void *data, size_t len);
int nb_buf_appendf(nb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void nb_buf_consume(nb_buf *b, size_t n);
void nb_buf_reset(nb_buf *b);
void nb_buf_free(nb_buf *b);
/* Hands the data to the caller (who frees it) and resets the buffer. */
char *nb_buf_steal(nb_buf *b, size_t *len);

#endif
