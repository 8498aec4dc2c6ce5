/* nb_bus: a namespace's event bus. CloudEvents (received on POST /v1/events, or produced by the
 * platform) wait on the durable queue "bus/NS" as structured-mode JSON, one event per message;
 * rules (store objects of kind "rule") route each to the targets whose EventBridge pattern
 * matches it, through nb_fan: one durable copy per matching rule, on the target's queue.
 *
 * A rule: {"match": <pattern object>, "target": "function:NAME" | "queue:NAME" | "topic:NAME",
 * "description": "...", "enabled": true}. The pattern is matched against the whole structured
 * event, so "type", "source", "subject", extensions and "data.x.y" are all fields. Targets are
 * resolved when an event is routed: a function gets the event as an async invocation (its
 * retries, destinations and failure log apply), a queue gets the event JSON as the message
 * body, a topic gets it as a message whose attributes carry ce_type, ce_source (and ce_subject)
 * for filter policies. A target that is gone is skipped with a warning.
 *
 * Platform events (a schedule firing, a queue message, an invocation result, a topic message)
 * are CloudEvents too; nb_bus_platform_event writes one only when the namespace has at least
 * one enabled rule, so nothing is written for namespaces without rules.
 *
 * Loops: copies made by the bus are sent by nb_fan straight to their queues, never through the
 * paths that emit platform events (a user's queue send), so routing a nimbus.queue.message to a
 * queue emits nothing more. Invocation results can chain (a rule sends a function's success to
 * a function whose success matches again): each event carries the extension "nimbushops", one
 * more than the event whose delivery produced it; past NB_BUS_MAX_HOPS nothing is emitted.
 *
 * Threads: the rules are an immutable snapshot swapped under a mutex (readers take a reference),
 * reloaded synchronously by nb_bus_reload, so a rule is live when the admin call that wrote it
 * answers. The planner runs on nb_fan's loop (loop 0), with that loop's invoker. Every other
 * function may be called from any thread. Design: docs/internals/bus.md. */
#ifndef NB_BUS_H
#define NB_BUS_H

#include "base/err.h"
#include "events/fan.h"
#include "events/queue.h"
#include "invoke/invoke.h"
#include "store/store.h"

#include <jansson.h>

#define NB_BUS_MAX_RULES 300 /* per namespace, as an EventBridge bus */
#define NB_BUS_MAX_HOPS  8   /* invocation results chained through rules */
#define NB_BUS_DESC_MAX  256

typedef struct nb_bus nb_bus;

/* The admin side, pure: a request body validated into the stored body (new ref), or NULL with
 * a 400 err naming the field (pattern errors name the path: "match: pattern: type[0]: ...").
 * Fields: match (object), target, description, enabled; cur: the stored body when updating
 * (fields left out keep their values); on create match and target are required. */
json_t *nb_rule_admin(const json_t *in, const json_t *cur, nb_err *err);
/* "function:NAME", "queue:NAME", "topic:NAME" with NAME a valid name: 0, else -1 with a 400. */
int nb_rule_target_check(const char *target, nb_err *err);

/* Loads the rules and registers the source "bus/" with fan (call before fan is published to
 * the queue store's notify callback). iv: loop 0's invoker, to skip functions that do not
 * exist (NULL: no check). */
nb_bus *nb_bus_new(nb_q *q, nb_store *store, nb_fan *fan, nb_invoker *iv);
/* Rules changed in the store: reads them and swaps the snapshot before returning. Any thread.
 * -1 with err when the store cannot be read (the old snapshot stays). */
int nb_bus_reload(nb_bus *b, nb_err *err);
/* Enabled rules of namespace ns. Any thread; b may be NULL (0). */
int nb_bus_enabled_rules(nb_bus *b, const char *ns);

/* Sends event (structured form, validated) to bus/NS; fire-and-forget but durable (a refusal
 * is logged). 0, or -1 when refused at once. Any thread. */
int nb_bus_put(nb_bus *b, const char *ns, const json_t *event);

/* A platform event (nb_ce_make: id NULL = a fresh UUID; subject and data may be NULL) to
 * bus/NS, only when ns has an enabled rule and hops <= NB_BUS_MAX_HOPS. hops: 0, or for an
 * event produced by delivering a bus event, that event's count plus one (then carried as the
 * extension "nimbushops"). 1 sent, 0 nothing to do, -1 refused (logged). Any thread; b may
 * be NULL (0). */
int nb_bus_platform_event(nb_bus *b, const char *ns, const char *type, const char *source,
                          const char *subject, const char *id, const json_t *data, int hops);

/* The platform event nb_bus_platform_event would write (hops 0), as JSON text (malloc'd) for a
 * caller that makes it part of its own durable write (a topic's fan-out plans it as one more
 * copy), with its queue bus/NS (created) in queue; NULL when there is nothing to emit. */
char *nb_bus_platform_text(nb_bus *b, const char *ns, const char *type, const char *source,
                           const char *subject, const char *id, const json_t *data, char *queue,
                           size_t qsize);

/* A message sent to user queue `queue` (by the admin API or from a function) as the platform
 * event nimbus.queue.message: source nimbus://NS/queues/QUEUE, id the message id, data
 * {queue, messageId, body, attributes}. Only when ns has rules. Not on the queue store's writer
 * thread (it sends). b may be NULL. */
void nb_bus_queue_message(nb_bus *b, const char *ns, const char *queue, const char *id,
                          const char *body, size_t len, const json_t *attrs);

/* After the fan and the queue store are closed. */
void nb_bus_free(nb_bus *b);

/* The extension an event emitted by a function carries: the depth of the call chain that
 * emitted it, continued by the function a rule delivers it to. */
#define NB_BUS_DEPTH_EXT "nimbusdepth"

/* The queue-message attribute that carries an event's hop count to the function it is
 * delivered to (so its result's event counts one more). */
#define NB_BUS_HOPS_ATTR "bus_hops"

#endif
