/* nb_async: asynchronous invocations and queue subscriptions, on top of the durable queues
 * (nb_q) and the scheduler (nb_invoker).
 *
 * An async invocation is a message on the function's own queue "fn/NS/NAME", acknowledged (202)
 * only once it is on disk. The dispatcher takes messages as the function's async share of its
 * concurrency allows, invokes the function with the message id as the request id (the same id
 * on every attempt, so a function can deduplicate), and then, as Lambda does:
 *   - success: the message is deleted; a success record goes to on_success if set;
 *   - function error, timeout, out of memory: retried after retry_delay_ms, then twice that,
 *     up to max_retry_attempts;
 *   - throttled or platform failure (no capacity, instance failed to start): retried with
 *     exponential backoff (1 s doubling to 5 min) until max_event_age_s;
 *   - failed (retries exhausted, or too old): the invocation record goes to on_failure, the
 *     event itself to dead_letter; with neither, to the function's failure log
 *     "failed/NS/NAME" (nimbus events failed / redrive). Never dropped.
 * A retry is a new copy of the message (same id, the attempt count in its attributes) made
 * durable before the old one is deleted: a crash in between gives a duplicate, never a loss.
 *
 * A subscription (event source mapping) delivers a user queue "q/NS/NAME" to a function in
 * batches, in SQS's event shape; the function may report partial failures
 * (batchItemFailures). Failed messages reappear after the queue's visibility timeout and go to
 * its dead-letter queue after max_receives.
 *
 * Threads: the dispatcher runs on one loop (loop 0) with that loop's invoker. nb_async_notify
 * and nb_async_post may be called from any thread. Design: docs/internals/async.md. */
#ifndef NB_ASYNC_H
#define NB_ASYNC_H

#include "events/queue.h"
#include "invoke/invoke.h"
#include "store/store.h"

#include <uv.h>

typedef struct nb_async nb_async;
/* A loop's mailbox: functions posted from any thread run on the loop. */
typedef struct nb_async_port nb_async_port;

nb_async_port *nb_async_port_new(uv_loop_t *loop);
/* fn(ud) runs on the port's loop, soon. Any thread. */
void nb_async_post(nb_async_port *p, void (*fn)(void *ud), void *ud);
/* Drops what is still posted and closes; on the loop's thread, once nothing posts any more. */
void nb_async_port_free(nb_async_port *p);

/* The queue names the dispatcher uses. */
void nb_async_fn_queue(const char *ns, const char *fn, char *out, size_t size);
void nb_async_failed_queue(const char *ns, const char *fn, char *out, size_t size);
void nb_async_user_queue(const char *ns, const char *name, char *out, size_t size);
/* A topic's messages before fan-out ("t/NS/NAME"; the queue exists iff the topic does), and a
 * namespace's event bus before its rules route the events ("bus/NS"). */
void nb_async_topic_queue(const char *ns, const char *name, char *out, size_t size);
void nb_async_bus_queue(const char *ns, char *out, size_t size);
/* Makes one of the platform's own queues (a function's async queue or failure log, a
 * namespace's bus) unless it exists: they are made on demand by whichever sender comes first,
 * all with one config. 0, or -1 with err. Any thread. */
int nb_async_ensure_queue(nb_q *q, const char *name, nb_err *err);
/* Message attributes naming what queued an event for metering (nb_use_trigger): "topic" with
 * the topic's name as source. Schedules and rules are known by their own attributes. */
#define NB_ASYNC_ATTR_TRIGGER "nimbus_trigger"
#define NB_ASYNC_ATTR_SOURCE  "nimbus_source"
/* A chain of calls travelling through a queue: the attributes (nimbus_depth, nimbus_caller,
 * nimbus_trace, nimbus_caller_fn) an async event carries so the invocation it starts continues
 * the chain. NULL when ctx is NULL or at depth 0 (a chain's start needs nothing). New
 * reference. */
json_t *nb_async_chain_attrs(const nb_inv_ctx *ctx);
/* Copies those attributes from one message's attributes to another's (to: an object). Returns
 * 1 when from carried a chain. */
int nb_async_chain_copy(const json_t *from, json_t *to);

/* The queue behind a target written "function:NAME" (created on demand), "queue:NAME" or
 * "topic:NAME" (both must exist). 0, or -1 when there is none. Any thread. */
int nb_async_target_queue(nb_q *q, const char *ns, const char *target, char *out, size_t size);

#define NB_ASYNC_MAX_EVENT (1u << 20) /* an async event's payload: Lambda's cap */

/* Accepts an async invocation of ns/fn: the event goes to the function's queue "fn/NS/NAME"
 * (created on demand, 14 days of retention) as one message whose id is request_id (NULL: a new
 * one; either way it is the invocation's request id, written to id_out[37]). ctx (may be NULL)
 * travels in the message's attributes, so the dispatcher invokes within the same chain of calls
 * (docs/internals/calls.md).
 * cb runs once on the queue's writer thread (status 0: durable). 0, or -1 with err (the queue
 * could not be made, the send was refused: cb not called). Any thread. The caller checks the
 * function exists and the event is UTF-8 of at most NB_ASYNC_MAX_EVENT bytes. */
int nb_async_enqueue(nb_q *q, const char *ns, const char *fn, const char *event, size_t len,
                     const char *request_id, const nb_inv_ctx *ctx, char id_out[37],
                     nb_q_sent_cb cb, void *ud, nb_err *err);
/* The attributes a message may carry: a JSON object of strings (NULL: none). 0, or -1 with a
 * 400 err naming the culprit. */
int nb_async_check_attrs(const json_t *attrs, nb_err *err);

/* On loop's thread. store: for subscriptions (objects of kind "subscription"). */
nb_async *nb_async_new(uv_loop_t *loop, nb_invoker *iv, nb_q *q, nb_store *store);
/* Destination records become platform events on bus (nimbus.invocation.success|failure, see
 * nb_bus_platform_event). Before the loop runs; NULL: none. */
typedef struct nb_bus nb_bus;
void nb_async_set_bus(nb_async *a, nb_bus *bus);
/* Any thread: queue has visible messages (the nb_q notify callback). */
void nb_async_notify(nb_async *a, const char *queue);
/* Any thread: subscriptions changed in the store. */
void nb_async_reload(nb_async *a);
/* Stops taking messages (shutdown); invocations under way finish and their messages are
 * settled (deleted or kept for redelivery). Loop thread. */
void nb_async_stop(nb_async *a);
/* Invocations of the dispatcher still running. */
int nb_async_inflight(const nb_async *a);
void nb_async_free(nb_async *a);

typedef struct nb_async_stats {
    int64_t depth, inflight, oldest_ms, failed, retries;
} nb_async_stats;
/* A function's async view: its queue's depth (visible + delayed), the dispatcher's in-flight
 * count, the oldest event's age, the failure log's size, retries scheduled since start. Any
 * thread. */
void nb_async_fn_stats(nb_async *a, const char *ns, const char *fn, nb_async_stats *out);

#endif
