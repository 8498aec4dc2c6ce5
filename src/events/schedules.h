/* nb_schd: schedules (EventBridge Scheduler semantics) that invoke functions asynchronously.
 *
 * A schedule is a store object (kind "schedule"): an expression (rate, cron, at; see cron.h)
 * evaluated in a time zone, a target function, an optional JSON payload, an optional start and
 * end, a catch-up policy and a state (enabled or paused). Each firing sends the payload to the
 * function's async queue ("fn/NS/NAME"), so retries, destinations and the failure log apply; a
 * firing counts once its event is durable, and its time is then recorded (kind
 * "schedule_fired" in namespace "_system"), so after downtime the missed firings are known:
 * the default catch-up policy "one" fires once for all of them, "none" skips them, "all" fires
 * each (at most NB_SCHD_CATCHUP_MAX).
 *
 * Firing times come from the expression, never from when the previous firing ran, so a
 * schedule does not drift.
 *
 * Threads: the scheduler runs on one loop (loop 0). nb_schd_reload and nb_schd_next_fire may
 * be called from any thread. */
#ifndef NB_SCHEDULES_H
#define NB_SCHEDULES_H

#include "base/err.h"
#include "events/queue.h"
#include "store/store.h"

#include <jansson.h>
#include <uv.h>

#define NB_SCHD_CATCHUP_MAX 100

typedef struct nb_schd nb_schd;

/* On loop's thread. */
nb_schd *nb_schd_new(uv_loop_t *loop, nb_q *q, nb_store *store);
/* Each durable firing is also a platform event on bus (nimbus.schedule.fired). Before the loop
 * runs; NULL: none. */
typedef struct nb_bus nb_bus;
void nb_schd_set_bus(nb_schd *s, nb_bus *bus);
/* Any thread: schedules changed in the store (all are read again). */
void nb_schd_reload(nb_schd *s);
/* Any thread: schedule ns/name was created, changed or deleted in the store (only it is read
 * again: creating 10,000 schedules one by one stays linear). */
void nb_schd_changed(nb_schd *s, const char *ns, const char *name);
/* Shutdown: no more firings (one being made durable still records its time). Loop thread. */
void nb_schd_stop(nb_schd *s);
void nb_schd_free(nb_schd *s);
/* The next firing of ns/name (Unix seconds), -1 when none (paused, ended, unknown). Any thread. */
int64_t nb_schd_next_fire(nb_schd *s, const char *ns, const char *name);

/* The admin side: a request body validated into the stored body (new ref), or NULL with a 400
 * err naming the field. cur: the stored body when updating (fields left out keep their values).
 * now_s: the creation time of a new schedule (rate() counts from its start, else from it). */
json_t *nb_schd_admin(const json_t *in, const json_t *cur, int64_t now_s, nb_err *err);

#endif
