/* nb_wh: the webhook deliverer, which POSTs the messages of the delivery queues "wh/..." of
 * topic subscriptions to their URLs, as SNS does to HTTP/S endpoints.
 *
 * Each message is received from its queue (hidden for NB_WH_VISIBILITY_MS) and POSTed with
 * SNS's headers (x-amz-sns-message-type, -message-id, -topic-arn, -subscription-arn) and
 * Content-Type text/plain; charset=UTF-8. A 2xx answer deletes it; any other answer, a
 * connection failure or NB_WH_TIMEOUT_MS without an answer makes it visible again after a
 * backoff (1 s doubling per receive, at most 5 min), so the queue's max_receives eventually
 * moves it to its failure queue: nothing is dropped.
 *
 * At most NB_WH_PER_QUEUE requests per queue are under way at once, NB_WH_MAX_INFLIGHT in all:
 * a slow endpoint holds only its own subscription's slots, never another's.
 *
 * Threads: one dedicated thread runs a curl multi handle and does every queue call itself
 * (nb_q is thread-safe); nb_wh_notify may be called from any thread (curl_multi_wakeup).
 * nb_wh_new/stop/free from one owner thread. resolve is called on the deliverer's thread. */
#ifndef NB_WEBHOOK_H
#define NB_WEBHOOK_H

#include "base/err.h"
#include "events/queue.h"

#include <stdint.h>

#define NB_WH_TIMEOUT_MS    10000
#define NB_WH_VISIBILITY_MS 60000 /* covers the request's timeout with room to settle */
#define NB_WH_PER_QUEUE     4
#define NB_WH_MAX_INFLIGHT  512
#define NB_WH_BACKOFF_MAX   300000

typedef struct nb_wh nb_wh;

/* Where the messages of one delivery queue go. */
typedef struct nb_wh_target {
    char url[2049];
    char topic_arn[256];
    char sub_arn[320];
    int raw; /* raw message delivery (adds x-amz-sns-rawdelivery: true) */
} nb_wh_target;

/* 1 and out filled when queue (a "wh/..." name) belongs to a live subscription, else 0. */
typedef int (*nb_wh_resolve)(void *ud, const char *queue, nb_wh_target *out);

/* Starts the thread. NULL with err when curl or the thread cannot be started. */
nb_wh *nb_wh_new(nb_q *q, nb_wh_resolve resolve, void *ud, nb_err *err);
/* Any thread: a delivery queue has visible messages. */
void nb_wh_notify(nb_wh *w, const char *queue);
/* Stops and joins the thread; requests under way are abandoned (their messages stay hidden
 * until their visibility ends, or come back at the next start: nb_q_release_inflight("wh/")). */
void nb_wh_stop(nb_wh *w);
void nb_wh_free(nb_wh *w);

/* How long a message stays hidden after its receive_count-th delivery failed: 1 s, 2 s, 4 s,
 * ... at most NB_WH_BACKOFF_MAX. */
int64_t nb_wh_backoff_ms(int receive_count);

#endif
