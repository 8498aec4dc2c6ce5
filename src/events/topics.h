/* nb_topic: topics, SNS-style publish/subscribe with per-subscriber durable delivery.
 *
 * A topic T of namespace NS is a store object (kind "topic", body {"created_s", "display_name"})
 * and a durable queue "t/NS/T" (nb_async_topic_queue): the queue exists iff the topic does,
 * so other modules publish by checking nb_q_exists. Publishing is one nb_q_send to that queue;
 * body = the message text, nb_q attributes = {"attributes": "<normalised JSON text>",
 * "subject": "..."} (each only when present). The message's queue id is SNS's MessageId.
 *
 * Fan-out: nb_fan (fan.h) forwards each message of "t/" to one copy per subscription of the
 * topic whose filter policy matches the message attributes, and deletes it once every copy is
 * durable. A subscription (store object kind "topic_subscription", name "T/ID") targets
 *   function:NAME  the function's async queue fn/NS/NAME, body = SNS's Lambda event
 *                  {"Records":[{"EventSource":"aws:sns", ..., "Sns":{...}}]}: the function's
 *                  own retries, destinations and failure log apply;
 *   queue:NAME     the user queue q/NS/NAME, body = SNS's notification JSON (or the raw
 *                  message, its attributes then as the queue message's attributes);
 *   webhook:URL    its own delivery queue wh/NS/T/ID (max 10 receives, then the failure queue
 *                  failed/wh/NS/T/ID), POSTed by the webhook deliverer (webhook.h).
 * Each subscriber has its own queue: a slow or failing one never delays the others.
 *
 * Threads: nb_topics_new/stop/free on loop 0's thread (the planner runs there, called by
 * nb_fan); nb_topics_reload and nb_topics_notify from any thread. The admin functions
 * (nb_topic_create ... nb_topic_views) may be called from any thread; callers serialise changes
 * (the admin API holds admin_mu) and then call nb_topics_reload. Design: docs/internals/topics.md.
 */
#ifndef NB_TOPICS_H
#define NB_TOPICS_H

#include "base/err.h"
#include "events/fan.h"
#include "events/queue.h"
#include "store/store.h"

#include <jansson.h>
#include <uv.h>

#define NB_TOPIC_MAX_MESSAGE   (256u << 10) /* SNS's message cap (413 beyond) */
#define NB_TOPIC_MAX_ATTRS     10           /* SNS's limit of message attributes */
#define NB_TOPIC_ATTR_NAME_MAX 256
#define NB_TOPIC_SUBJECT_MAX   100
#define NB_TOPIC_MAX_SUBS      100 /* subscriptions of one topic */
#define NB_TOPIC_URL_MAX       2048
#define NB_TOPIC_WH_RECEIVES   10 /* webhook deliveries tried before the failure queue */
#define NB_TOPIC_KIND          "topic"
#define NB_TOPIC_SUB_KIND      "topic_subscription"

typedef struct nb_topics nb_topics;

/* ---------- publishing (any thread, pure apart from nb_topic_publish's send) ---------- */

/* Validates and normalises message attributes: in is an object of name -> string | number |
 * array of strings/numbers/booleans/null | {"Type": "String"|"Number"|"String.Array",
 * "Value": "..."} (NULL or null: none). *json_text_out (malloc'd, NULL when there are none) is
 * the compact JSON of name -> {"Type","Value"}, Value always a string. 0, or -1 with a 400
 * naming the attribute. */
int nb_topic_attrs_normalise(const json_t *in, char **json_text_out, nb_err *err);

/* chain: nb_async_chain_attrs of a publishing function (NULL otherwise): carried to the
 * function subscribers' events, so a function publishing to a topic it is subscribed to stops at
 * the call depth limit instead of looping for ever.
 * Checks message (len bytes of UTF-8, 1..NB_TOPIC_MAX_MESSAGE: 413 beyond), subject (NULL or
 * 1..100 printable ASCII) and attributes (as nb_topic_attrs_normalise), then sends one message
 * to topic ns/topic; cb as nb_q_send's (its id is the MessageId). 0 queued for the commit,
 * -1 refused (err: 400, 404 unknown topic, 413, 503). */
int nb_topic_publish(nb_q *q, const char *ns, const char *topic, const char *message, size_t len,
                     const json_t *attributes, const char *subject, const json_t *chain,
                     nb_q_sent_cb cb, void *ud, nb_err *err);

/* ---------- SNS's shapes (pure; new references, NULL only on a malformed input) ---------- */

/* What one published message is, as read back from its queue message. */
typedef struct nb_topic_msg {
    const char *ns, *topic;
    const char *id;      /* the MessageId */
    const char *message; /* len bytes */
    size_t len;
    const char *subject; /* NULL: none */
    const json_t *attrs; /* name -> {"Type","Value"} or NULL */
    int64_t sent_ms;
} nb_topic_msg;

/* "arn:nimbus:sns:local:NS:T" and, with sub_id, "...:T:ID". */
void nb_topic_arn(const char *ns, const char *topic, const char *sub_id, char *out, size_t size);
/* SNS's notification as HTTP endpoints and SQS queues get it. */
json_t *nb_topic_notification(const nb_topic_msg *m);
/* SNS's Lambda event for subscription sub_id: {"Records":[{...,"Sns":{...}}]}. */
json_t *nb_topic_lambda_event(const nb_topic_msg *m, const char *sub_id);
/* The object a filter policy is matched against: name -> Value, a String.Array's Value as the
 * array it encodes (so a policy matches when any element does). */
json_t *nb_topic_match_attrs(const json_t *attrs);

/* ---------- the admin side (any thread; the caller serialises changes) ---------- */

/* Creates topic ns/name (object and queue). in: {"name", "display_name"?}; unknown fields are
 * refused. Same settings as an existing topic: *created 0, success; others: 409. *out: the
 * topic's view (new ref). */
int nb_topic_create(nb_store *s, nb_q *q, const char *ns, const json_t *in, json_t **out,
                    int *created, nb_err *err);
/* Deletes the topic, its subscriptions and their delivery queues, then its queue. 404. */
int nb_topic_delete(nb_store *s, nb_q *q, const char *ns, const char *name, nb_err *err);
/* One topic's view, or every topic of ns (name NULL) as an array: settings, arn, the number of
 * subscriptions and the queue's stats. NULL with err (404). */
json_t *nb_topic_views(nb_store *s, nb_q *q, const char *ns, const char *name, nb_err *err);
/* Subscribes: in {"target", "filter"?, "raw"?}. The same target again with the same settings
 * answers the existing subscription (*created 0); with others, 409. *out: its view. */
int nb_topic_subscribe(nb_store *s, nb_q *q, const char *ns, const char *topic, const json_t *in,
                       json_t **out, int *created, nb_err *err);
int nb_topic_unsubscribe(nb_store *s, nb_q *q, const char *ns, const char *topic, const char *id,
                         nb_err *err);
/* {"subscriptions":[...]} of a topic (404 when the topic does not exist). */
json_t *nb_topic_subscriptions(nb_store *s, nb_q *q, const char *ns, const char *topic,
                               nb_err *err);

/* ---------- the runtime (loop 0) ---------- */

/* Registers the planner as nb_fan's source "t/" and starts the webhook deliverer. Reconciles
 * the queues with the store first (a crash between a queue's and an object's creation). */
nb_topics *nb_topics_new(uv_loop_t *loop, nb_q *q, nb_store *store, nb_fan *fan);
/* The bus its messages are published to as platform events (nimbus.topic.message); before the
 * fan is published. */
typedef struct nb_bus nb_bus;
void nb_topics_set_bus(nb_topics *t, nb_bus *bus);
/* Any thread: subscriptions changed in the store. The next planning reads them again. */
void nb_topics_reload(nb_topics *t);
/* Any thread: queue has visible messages (the nb_q notify callback; only "wh/" queues matter). */
void nb_topics_notify(nb_topics *t, const char *queue);
/* Shutdown: stops the webhook deliverer (requests under way are abandoned; their messages come
 * back at the next start). Loop thread. */
void nb_topics_stop(nb_topics *t);
/* After the queue store is closed. */
void nb_topics_free(nb_topics *t);

/* The planner (nb_fan_planner's shape), exposed for the unit test: adds through add(). */
typedef int (*nb_topic_add_fn)(void *ud, const char *queue, const char *body, size_t len,
                               const json_t *attrs);
int nb_topics_plan(nb_topics *t, const char *queue, const nb_q_msg *m, nb_topic_add_fn add,
                   void *ud);

#endif
