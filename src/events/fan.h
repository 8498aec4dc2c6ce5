/* nb_fan: durable forwarding from source queues to target queues, the engine under a topic's
 * fan-out (t/NS/TOPIC -> one copy per matching subscriber) and the event bus's rules
 * (bus/NS -> one copy per matching rule's target).
 *
 * A source is a queue-name prefix with a planner. For each message received from a queue
 * whose name starts with the prefix, the planner says which copies to make (target queue,
 * body, attributes); nb_fan sends every copy (one nb_q_send per target) and deletes the source
 * message only once every copy is durable. A crash in between repeats the forwarding at the
 * next start, and each copy carries an id derived from (source message id, target queue), so a
 * copy still waiting in its target is not duplicated (a queue keeps one message per id);
 * a copy already consumed there may be delivered again: at least once, never lost.
 *
 * Failures: a copy refused because its target queue does not exist (404) is dropped with a
 * warning (the target was deleted; nothing could ever deliver it). Any other refusal (the
 * disk, the store full) leaves the source message in place: it is offered again after the
 * visibility timeout (NB_FAN_RETRY_MS), copies that did land are deduplicated by their ids.
 * A source message received more than NB_FAN_MAX_RECEIVES times (a planner that always fails)
 * goes to the failure queue "failed/fan" so it can be inspected, never spins forever.
 *
 * Threads: nb_fan_new, nb_fan_source, nb_fan_stop, nb_fan_free on the loop's thread; the
 * planner runs on that thread; nb_fan_notify from any thread (the nb_q notify callback). */
#ifndef NB_FAN_H
#define NB_FAN_H

#include "events/queue.h"

#include <jansson.h>
#include <uv.h>

#define NB_FAN_RETRY_MS     5000
#define NB_FAN_MAX_RECEIVES 20
#define NB_FAN_MAX_COPIES   1000 /* copies of one message; the planner's extra ones are dropped */

typedef struct nb_fan nb_fan;

/* The copies of one message, filled by a planner through nb_fan_plan_add. */
typedef struct nb_fan_plan nb_fan_plan;

/* Adds a copy: body copied, attrs borrowed (copied; may be NULL), delay_ms as nb_q_out's.
 * A target queue that does not exist yet must be created by the planner first (fn/ queues
 * are made on demand; see nb_async_target_queue). -1 past NB_FAN_MAX_COPIES. */
int nb_fan_plan_add(nb_fan_plan *p, const char *queue, const char *body, size_t len,
                    const json_t *attrs, int64_t delay_ms);

/* Decides the copies of message m received from queue (the full name, e.g. "t/default/orders").
 * 0: forward the copies added (none: the message is simply deleted); -1: keep the message for
 * a later try (a transient problem on the planner's side). Loop thread. */
typedef int (*nb_fan_planner)(void *ud, const char *queue, const nb_q_msg *m, nb_fan_plan *plan);

nb_fan *nb_fan_new(uv_loop_t *loop, nb_q *q);
/* Registers a source; every source before the fan is handed to whoever calls nb_fan_notify
 * (the list is read from other threads without a lock); prefix e.g. "t/" or "bus/". Sources whose
 * queues already hold messages are picked up at once (a restart's backlog). */
void nb_fan_source(nb_fan *f, const char *prefix, nb_fan_planner fn, void *ud);
/* Any thread: queue has visible messages (the nb_q notify callback; queues of no source are
 * ignored). */
void nb_fan_notify(nb_fan *f, const char *queue);
/* Stops taking messages (shutdown); forwards under way settle when their sends are answered. */
void nb_fan_stop(nb_fan *f);
/* Forwards still waiting for their sends. */
int nb_fan_inflight(const nb_fan *f);
/* After the queue store is closed (its callbacks have run). Loop thread. */
void nb_fan_free(nb_fan *f);

/* The id of copy number `index` (in the plan) of message `src_id` for target queue `queue`: a
 * UUID-shaped digest, so the same forwarding repeated after a crash gives the same ids, while
 * two copies for one queue (two rules naming the same target) stay two. out: 37 bytes. */
void nb_fan_copy_id(const char *src_id, const char *queue, unsigned index, char out[37]);

#endif
