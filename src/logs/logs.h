/* nb_logs: captured function output, kept per function with a size cap, readable and
 * followable.
 *
 * Each function has DATA/logs/<ns>/<name>.log (NDJSON, one record per line, the shape the API
 * returns) and one rotated predecessor <name>.log.1. When the current file passes half the cap
 * it replaces the predecessor, so a function never holds more than its cap on disk and the
 * oldest lines go first. Records are batched per function and written with one write(2) per
 * loop turn to an O_APPEND fd kept open per function (at most NB_LOGS_OPEN_FDS open, least
 * recently used closed first).
 * Followers (GET .../logs?follow=1) get each new record through a callback.
 *
 * Threads: one nb_logs per loop, used by that loop's thread; the loops append to the same files
 * (O_APPEND, one write(2) per batch of whole records, so records never interleave). Each nb_logs
 * has a mutex that only its own loop takes on the invocation path (uncontended) and that a
 * reader on another loop takes to flush it first, so nb_logs_read sees every loop's records.
 * Followers are process-wide: a record appended on any loop reaches the follower's callback on
 * the follower's loop, after nb_logs_attach (through a uv_async; a global mutex is taken per
 * record only while at least one follower is connected). */
#ifndef NB_LOGS_H
#define NB_LOGS_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NB_LOGS_DEFAULT_CAP (8u << 20)
#define NB_LOGS_LINE_MAX    (16u << 10)
#define NB_LOGS_OPEN_FDS    64

typedef struct nb_logs nb_logs;
typedef struct nb_logs_sub nb_logs_sub;
typedef void (*nb_logs_cb)(void *ud, const char *record, size_t len);

typedef struct nb_log_line {
    const char *ns, *fn;
    int64_t version;
    const char *instance;   /* may be NULL */
    const char *request_id; /* may be NULL */
    const char *stream;     /* "stdout", "stderr", "platform" */
    const char *text;
    size_t len;
    /* May be NULL: a JSON object written as the record's "report" field (the REPORT line's
     * figures, so tools need not parse the text). Must be valid JSON; not escaped. */
    const char *report_json;
} nb_log_line;

#define NB_LOGS_FOLLOW_MAX (4u << 20) /* records buffered per follower between two deliveries */

nb_logs *nb_logs_new(const char *dir, size_t cap_per_function);
/* Delivery to this nb_logs' followers happens on loop (its thread); detach before closing the
 * loop. Without attach, followers subscribed through it get nothing. */
void nb_logs_attach(nb_logs *l, uv_loop_t *loop);
void nb_logs_detach(nb_logs *l);
void nb_logs_free(nb_logs *l);
/* Queues a record; it reaches the disk at the next nb_logs_flush() (the daemon calls it once
 * per loop turn) or when a function's pending bytes pass 1 MiB. Followers get it at once. */
void nb_logs_append(nb_logs *l, const nb_log_line *line);
void nb_logs_flush(nb_logs *l);
/* Appends the NDJSON record of line (newline included) to b. */
void nb_logs_format(nb_buf *b, const nb_log_line *line, int64_t ts_ms);
/* Appends to out the newest `limit` records at or after since_ms (0 = all), oldest first. */
int nb_logs_read(nb_logs *l, const char *ns, const char *fn, int64_t since_ms, size_t limit,
                 nb_buf *out, nb_err *err);
nb_logs_sub *nb_logs_subscribe(nb_logs *l, const char *ns, const char *fn, nb_logs_cb cb, void *ud);
void nb_logs_unsubscribe(nb_logs *l, nb_logs_sub *s);
/* Deletes a function's logs (on function delete). Followers stay subscribed. */
void nb_logs_remove(nb_logs *l, const char *ns, const char *fn);
/* Drops this loop's fd and unwritten records of a function (its deletion seen by this loop). */
void nb_logs_forget(nb_logs *l, const char *ns, const char *fn);

#endif
