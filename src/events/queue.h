/* nb_q: durable queues, the one place where nimbus keeps events until they are processed: a
 * function's async invocations, its failed-event log, and the SQS-like queues users create.
 *
 * Model (SQS's): a queue holds messages; receiving one makes it invisible for a visibility
 * timeout and counts a receive; deleting it (with the receipt of that receive) ends it; if it
 * is not deleted in time it becomes visible again. A queue may name a dead-letter queue and a
 * max receive count: a message received that many times and not deleted moves there instead of
 * becoming visible again. Messages older than the queue's retention are dropped (counted).
 *
 * Durability: nb_q_send* acknowledges (its callback runs) only after the messages are on disk:
 * a writer thread commits everything pending in one SQLite transaction (WAL, synchronous=FULL:
 * an fsync per commit) - group commit, so one fsync covers every send that arrived meanwhile.
 * Other changes (receive, delete, visibility) are written by the next commit without anyone
 * waiting for it: after a crash, a message may come back (delivered again: at least once),
 * never be lost. A failed commit (disk full, I/O error) fails the sends it carried (their
 * callbacks get an error) and every later send until a commit succeeds again; nothing
 * acknowledged is ever lost.
 *
 * The live state is in memory (every message of every queue, loaded at open), so receive and
 * delete never touch the disk on the caller's thread. Caps: NB_Q_MAX_MESSAGES and a byte total
 * over all queues (send answers 503-class "full" beyond), NB_Q_MAX_BODY per message.
 *
 * Threads: every function may be called from any thread (one mutex guards the memory state; it
 * is never held during I/O). Send callbacks run on the writer thread: a caller on an event
 * loop hands the result back to its loop itself (uv_async). The notify callback also runs on
 * whatever thread made a message visible (a send's commit, a visibility expiry noticed by the
 * writer's tick): keep it short (it typically wakes a loop). */
#ifndef NB_QUEUE_H
#define NB_QUEUE_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define NB_Q_MAX_MESSAGES 1000000
/* The bytes messages may hold in memory over all queues: an eighth of physical memory, at least
 * this much; NIMBUS_QUEUE_MAX_MB overrides. A send beyond answers 503 "full". */
#define NB_Q_MIN_MAX_BYTES ((int64_t)256 << 20)
/* A message's body and attributes together: 1 MiB of body (the async payload cap) and room for
 * the attributes the platform adds (attempt counts, failure records). */
#define NB_Q_MAX_BODY ((1u << 20) + (64u << 10))
#define NB_Q_NAME_MAX 200 /* "fn/default/hello", "q/default/orders" */

typedef struct nb_q nb_q;

typedef struct nb_q_config {
    int64_t visibility_timeout_ms;       /* default for receives; 30000 */
    int64_t retention_ms;                /* 4 days by default; 60 s .. 14 days */
    int max_receives;                    /* 0: no limit (then no dead-letter move) */
    char dead_letter[NB_Q_NAME_MAX + 1]; /* "" none; the queue must exist */
} nb_q_config;

typedef struct nb_q_msg {
    char id[37];      /* uuid, stable for the message's life (also across dead-letter moves) */
    char receipt[80]; /* of this receive; delete/visibility need it */
    char *body;       /* owned by the message (nb_q_msgs_free); NUL-terminated too */
    size_t body_len;
    json_t *attrs;     /* string -> string attributes, or NULL; owned */
    int receive_count; /* including this receive */
    int64_t sent_ms;   /* epoch ms of the first send */
    int64_t first_receive_ms;
} nb_q_msg;

/* One message to send. */
typedef struct nb_q_out {
    const char *body;
    size_t body_len;
    const json_t *attrs; /* may be NULL; copied */
    int64_t delay_ms;    /* invisible for this long first */
    const char *id;      /* NULL: a new uuid; else kept (a message moved between queues). An id
                            already in the queue adds nothing (a move repeated after a crash);
                            while that id's own send is uncommitted, the send is refused (503) */
    int64_t sent_ms;     /* 0: now; else kept */
} nb_q_out;

/* status 0: durable (ids filled, one per message, in order); else an nb_err-like status and
 * message (503 "unavailable": the disk refused; 503 "full"; 404: the queue was deleted). */
typedef void (*nb_q_sent_cb)(void *ud, int status, const char *msg, char (*ids)[37], size_t n);
/* A queue has messages visible (again). */
typedef void (*nb_q_notify_cb)(void *ud, const char *queue);

/* Opens (creating) the store at path and loads it; starts the writer thread. */
nb_q *nb_q_open(const char *path, nb_q_notify_cb notify, void *notify_ud, nb_err *err);
/* Commits what is pending and stops the writer. Sends still unacknowledged get their
 * callbacks (committed or failed) before it returns. */
void nb_q_close(nb_q *q);

/* Queues. cfg NULL: the defaults; retention_ms 0: the default.
 * create: 409 if it exists with another config (same config: 0, idempotent).
 * Deleting a queue deletes its messages. */
int nb_q_create(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err);
/* Creates the queue unless it exists, whatever the existing one's config: the platform's queues
 * made on demand by whichever sender comes first (atomic: no 409 from a race). */
int nb_q_ensure(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err);
int nb_q_update(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err);
int nb_q_delete_queue(nb_q *q, const char *name, nb_err *err);
int nb_q_exists(nb_q *q, const char *name);
/* Names with prefix (may be ""), sorted; free with nb_q_names_free. */
char **nb_q_list(nb_q *q, const char *prefix, size_t *n);
void nb_q_names_free(char **names, size_t n);
int nb_q_get_config(nb_q *q, const char *name, nb_q_config *out, nb_err *err);

/* Sends n messages (all or none: one commit carries them). cb runs once, on the writer thread
 * (or on the calling thread for an immediate refusal). 0 if queued for the commit, -1 if
 * refused at once (err filled, cb not called): unknown queue, too big, full, disk failed. */
int nb_q_send(nb_q *q, const char *queue, const nb_q_out *msgs, size_t n, nb_q_sent_cb cb, void *ud,
              nb_err *err);

/* Up to max visible messages (oldest first), each made invisible for visibility_ms (<= 0: the
 * queue's default) and counted; messages over max_receives move to the dead-letter queue
 * instead of being returned. *out is malloc'd (nb_q_msgs_free). Returns the count, or -1 (err:
 * unknown queue). */
int nb_q_receive(nb_q *q, const char *queue, int max, int64_t visibility_ms, nb_q_msg **out,
                 nb_err *err);
void nb_q_msgs_free(nb_q_msg *m, size_t n);
/* Ends a message. 404 when the id is unknown, 410 "receipt_expired" when the receipt is not the
 * latest receive's (the message was received again since). */
int nb_q_delete(nb_q *q, const char *queue, const char *id, const char *receipt, nb_err *err);
/* Makes a received message visible after ms (0: now). Same errors as delete. */
int nb_q_change_visibility(nb_q *q, const char *queue, const char *id, const char *receipt,
                           int64_t ms, nb_err *err);
/* Moves every message of `from` to `to` (redrive), keeping ids and sent times; returns the
 * count. Written by the next commit. */
int64_t nb_q_move_all(nb_q *q, const char *from, const char *to, nb_err *err);
/* The same, each message's send time set to now: a redrive starts the events' age afresh
 * (they would otherwise be too old to run the moment they arrive). */
int64_t nb_q_move_all_fresh(nb_q *q, const char *from, const char *to, nb_err *err);
/* Copies of the messages (oldest first, at most max), without receiving them: the failure log's
 * view. */
int nb_q_peek(nb_q *q, const char *queue, int max, nb_q_msg **out, nb_err *err);

typedef struct nb_q_stats {
    int64_t visible, inflight, delayed; /* delayed: not yet visible after a send delay/retry */
    int64_t oldest_ms;                  /* age of the oldest message, 0 if empty */
    int64_t sent, received, deleted, dead_lettered, expired; /* since open */
} nb_q_stats;
int nb_q_get_stats(nb_q *q, const char *queue, nb_q_stats *out, nb_err *err);
/* Makes every received, undeleted message of the queues whose name starts with prefix visible
 * now: at a start, for queues whose only consumer is the daemon itself (the receiver of those
 * messages died with the previous process). Returns how many. */
int64_t nb_q_release_inflight(nb_q *q, const char *prefix);
/* Milliseconds until the queue's next message becomes visible; -1 if none is waiting. For a
 * consumer's timer. */
int64_t nb_q_next_visible_ms(nb_q *q, const char *queue);

#endif
