/* nb_calls: what the daemon does for the calls a running function makes through its runtime
 * (docs/internals/calls.md), except "invoke", which the scheduler handles itself:
 *   invoke_async  an async invocation, exactly as POST /v1/functions/NAME/invoke with
 *                 X-Nimbus-Invocation-Type: Event (nb_async_enqueue), in the caller's chain;
 *   send          a message to the user queue q/NS/TARGET (must exist);
 *   publish       a message to topic TARGET (nb_topic_publish: queue t/NS/TARGET, the topic's
 *                 rules for the message, subject and attributes);
 *   emit          a CloudEvent to the namespace's bus queue bus/NS (made on demand).
 * Every answer is 202 once the message is durable, with its id, or an error
 * {"error":{"code","message"}}. Everything stays in the caller's namespace.
 *
 * Threads: one nb_calls per loop, called on that loop's thread (the invoker's call_ops); the
 * queue's commits run on its writer thread and come back through the loop's nb_async_port. */
#ifndef NB_CALLS_H
#define NB_CALLS_H

#include "events/async.h"
#include "events/queue.h"
#include "invoke/invoke.h"

#include <jansson.h>

typedef struct nb_calls nb_calls;

/* q and port outlive it; port is the loop's whose invoker uses it. */
nb_calls *nb_calls_new(nb_q *q, nb_async_port *port);
/* The bus that user-queue sends are reported to as platform events (nimbus.queue.message, as
 * the admin API's sends are). Before the loop serves calls. */
typedef struct nb_bus nb_bus;
void nb_calls_set_bus(nb_calls *c, nb_bus *bus);
void nb_calls_free(nb_calls *c);

/* For nb_invoker_config.call_ops, with the nb_calls as call_ud. */
extern const nb_call_ops nb_calls_ops;

#endif
