/* nb_invoker: where a function is chosen and an invocation finds an instance: the scheduler.
 *
 * The invoker keeps the live registry of functions (the latest version of each, loaded from
 * the store at start and updated by the admin API), each function's scaling settings and
 * counters, and per function version a pool of instances. nb_invoke() takes an idle instance
 * (most recently used first, so the pool can shrink), else starts one if the function's
 * max_concurrency and the daemon's global caps allow, else waits in the function's bounded
 * queue; the first instance of the version that becomes free serves the oldest waiter. An
 * invocation that finds the queue full, or waits past queue_timeout_ms, or whose function is
 * disabled (max_concurrency 0) is throttled: answered at once, never run later.
 * Every accepted invocation ends in exactly one call of its done callback.
 * Design: docs/internals/scheduler.md.
 *
 * Invocation lifecycle (changed only through inv_set_state(), logged at debug level):
 *   QUEUED -> RUNNING -> DONE        (or QUEUED -> DONE: throttled, or failed before an instance)
 * Pool lifecycle (pool_set_state(), logged at info level):
 *   ACTIVE (the latest version's pool: keeps min_instances, idle ones wait for work)
 *   -> DRAINING (an older version, a deleted function, an explicit ?version=N: instances stop
 *   as soon as they are idle) -> freed once its last instance is gone.
 *
 * Memory: an nb_inv belongs to the invoker; the done callback may read it and must not keep
 * it. nb_inv_detach() is for callers that go away first (an HTTP client disconnecting): the
 * invocation still runs to completion, nobody is told.
 *
 * Threads: one nb_invoker per loop, each called only on its loop's thread (its own pools and
 * instances); the invokers of a daemon share one nb_sched, through which every limit holds
 * across loops (atomics, no lock on the invocation path). An invocation may be forwarded to
 * another loop's invoker (to an idle instance there, or to wait where the function's
 * instances are); its done callback still runs on the loop that called nb_invoke().
 * nb_invoker_publish/remove may be called on any loop: they reach every loop in order, and a
 * lookup on any loop after they return sees them. nb_sched_* may be called from any thread. */
#ifndef NB_INVOKE_H
#define NB_INVOKE_H

#include "base/err.h"
#include "function/function.h"
#include "instance/instance.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct nb_invoker nb_invoker;
typedef struct nb_inv nb_inv;
/* What the loops of a daemon share: caps, per-function counters, the registry's messages. */
typedef struct nb_sched nb_sched;

typedef enum nb_inv_state { NB_INV_QUEUED, NB_INV_RUNNING, NB_INV_DONE } nb_inv_state;

typedef void (*nb_inv_done_cb)(nb_inv *inv, void *ud);

/* Where an invocation stands in a chain of calls between functions (docs/internals/calls.md).
 * Strings are copied by nb_invoke_ex. */
typedef struct nb_inv_ctx {
    int depth;                     /* 0: from outside; a call from depth d runs at d + 1 */
    const char *caller_request_id; /* the calling invocation's; NULL or "" at depth 0 */
    const char *trace_id;          /* the chain's (its root's request id); NULL: a new root */
    int64_t deadline_ms; /* epoch ms the callee must end by (the caller's deadline); 0: none */
    /* For metering (src/metering/usage.h): what started it (nb_use_trigger; 0 = http, the
     * admin API, which is also what a NULL ctx means) and who (a gateway key or client, the
     * calling function, a schedule, a rule, a queue); NULL: nobody known. */
    int trigger;
    const char *caller;
} nb_inv_ctx;

#define NB_CALL_DEPTH_DEFAULT 16

/* A call a running function made (docs/internals/calls.md). The invoker handles "invoke" itself;
 * the other operations go to the daemon's nb_call_ops. */
typedef struct nb_call nb_call;
typedef struct nb_call_info {
    nb_invoker *iv;           /* the loop's, on whose thread the call is handled */
    const nb_inst_call *call; /* op, target, attrs, body: valid during handle() only */
    const char *ns, *fn;      /* the caller: calls stay in its namespace */
    const char *request_id;   /* the caller's invocation */
    nb_inv_ctx next;          /* what an invocation the call causes carries (depth + 1) */
} nb_call_info;
typedef struct nb_call_ops {
    /* Handles one call; ends, now or later, in exactly one nb_call_finish on iv's loop. */
    void (*handle)(void *ud, nb_call *call, const nb_call_info *info);
} nb_call_ops;
/* The answer to a call (status and error_code as nb_inst_call_done); frees call. Dropped when
 * the calling invocation ended meanwhile. On the loop's thread of nb_call_info.iv. */
void nb_call_finish(nb_call *call, int status, const char *error_code, const char *body,
                    size_t len);
/* The same with the body {"error":{"code","message"}}. */
void nb_call_fail(nb_call *call, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct nb_inv {
    nb_inv_state state;
    char request_id[37];
    nb_fn_version *ver;
    /* result, valid in the done callback */
    enum nb_inst_outcome outcome;
    char error_type[96];
    char *body;
    size_t body_len;
    char content_type[128];
    int cold;        /* served by a freshly started instance */
    int64_t init_ms; /* init duration when cold */
    /* Throttled (answer 429): outcome is UNHANDLED, error_type "TooManyRequestsException",
     * body the human message, throttle_reason Lambda's Reason, retry_after_s the advice. */
    int throttled;
    char throttle_reason[64];
    int retry_after_s;
    int64_t queued_us, started_us, ended_us;
    /* The chain of calls it is part of (nb_inv_ctx): trace_id is its root's request id. */
    int depth;
    char caller_request_id[37];
    char trace_id[64];
    /* nb_inv_ctx's trigger and caller; cpu_us the instance's cgroup CPU time during the run
     * (-1 unknown), filled at the end. */
    int trigger;
    char caller[96];
    int64_t cpu_us;
};

typedef struct nb_invoker_config {
    uv_loop_t *loop;
    nb_sched *sched;
    int index; /* this loop's, 0..nloops-1; loop 0 keeps the functions' min_instances */
    const char *data_dir;
    nb_store *store;
    nb_logs *logs;
    int max_instances;       /* ignored: the sched's caps */
    int64_t max_memory_mb;   /* ignored: the sched's caps */
    int64_t idle_timeout_ms; /* default for functions without idle_timeout_s; 0: 300 s */
    int64_t init_timeout_ms;
    /* Calls from running functions: "invoke" is handled here, the rest by call_ops (NULL:
     * refused with 501). max_call_depth: 0 means NB_CALL_DEPTH_DEFAULT. */
    const nb_call_ops *call_ops;
    void *call_ud;
    int max_call_depth;
    /* Where every invocation's end is counted (src/metrics/metrics.h); NULL: not counted. */
    struct nb_met *metrics;
    /* Where every ended invocation's record goes (shared by the loops; NULL: not metered). */
    struct nb_use *use;
} nb_invoker_config;

/* Per function, for the API's function object and `nimbus get`. Instances of the latest
 * version by state; "draining" counts the instances of older versions (or of explicit-version
 * requests) and instances being stopped. Counters run since the daemon started. */
typedef struct nb_fn_stats {
    int starting, idle, busy, draining;
    int in_flight; /* invocations running */
    int queued;    /* invocations waiting for an instance */
    int64_t invocations, cold_starts, throttles, instance_starts;
    int64_t last_cold_start_ms; /* init duration of the last cold start; -1: none yet */
} nb_fn_stats;

/* The defaults the daemon uses when its config leaves the caps at 0: from physical memory. */
void nb_invoker_default_caps(int *max_instances, int64_t *max_memory_mb);

/* caps: instances alive at once and the sum of their memory_mb over every loop (0: sized from
 * physical memory, nb_invoker_default_caps). Free after every invoker. */
nb_sched *nb_sched_new(int nloops, int max_instances, int64_t max_memory_mb);
void nb_sched_free(nb_sched *s);
int nb_sched_loops(const nb_sched *s);
/* 1 when one more instance of memory_mb would take the daemon within a tenth of its caps
 * (instances or memory): where callers that can wait (async events) stop adding instances,
 * so they never make the scheduler evict other functions' idle instances. Any thread. */
int nb_sched_near_caps(const nb_sched *s, int64_t memory_mb);
/* Calls fn for every function in the registry with its figures summed over the loops, as
 * nb_invoker_stats gives them (last_cold_start_ms included). Under the sched mutex: fn must be
 * short and must not call the invoker. Any thread (the metrics scrape). */
void nb_sched_foreach(nb_sched *s,
                      void (*fn)(void *ud, const char *ns, const char *name, const nb_fn_stats *st),
                      void *ud);
/* Invocations queued or running, every loop (the daemon's drain). Any thread. */
size_t nb_sched_inflight(const nb_sched *s);

/* Creates loop cfg->index's invoker. May be called on another thread before the loop runs. */
nb_invoker *nb_invoker_new(const nb_invoker_config *cfg);
/* Loads every function's latest version from the store (once, for every loop). */
int nb_invoker_load(nb_invoker *iv, nb_err *err);
/* Makes v the latest version of its function: older versions' pools drain (idle instances
 * stop now, busy ones after their invocation; their waiters move to v) and min_instances of v
 * start. v with the latest's version number only brings new scaling settings: nothing
 * restarts; the function's instances and queue are brought within the new limits. */
void nb_invoker_publish(nb_invoker *iv, nb_fn_version *v);
/* Forgets a function; its instances drain as above. */
void nb_invoker_remove(nb_invoker *iv, const char *ns, const char *name);
/* Latest version (borrowed) or NULL. */
nb_fn_version *nb_invoker_latest(nb_invoker *iv, const char *ns, const char *name);

/* Starts an invocation of ver (the caller keeps its own ref). The event is copied.
 * *handle is set before anything can complete, so a caller that clears it in cb always
 * knows whether the invocation is still pending (cb may run before nb_invoke returns). */
void nb_invoke(nb_invoker *iv, nb_fn_version *ver, const char *event, size_t len,
               const char *request_id, nb_inv_done_cb cb, void *ud, nb_inv **handle);
/* The same within a chain of calls: ctx NULL is nb_invoke (depth 0, a new trace). The callee's
 * timeout is its own, cut to what is left of ctx->deadline_ms. */
void nb_invoke_ex(nb_invoker *iv, nb_fn_version *ver, const char *event, size_t len,
                  const char *request_id, const nb_inv_ctx *ctx, nb_inv_done_cb cb, void *ud,
                  nb_inv **handle);
void nb_inv_detach(nb_inv *inv);

/* Loop 0 only: for each function with min_instances, calls cb with the memory_mb and how many
 * of its instances are alive, up to min_instances (what provisioned concurrency charges). */
void nb_invoker_provisioned(nb_invoker *iv,
                            void (*cb)(void *ud, const char *ns, const char *fn, int memory_mb,
                                       int kept),
                            void *ud);
/* 0, or -1 when the function is unknown. */
int nb_invoker_stats(nb_invoker *iv, const char *ns, const char *name, nb_fn_stats *out);
nb_sched *nb_invoker_sched(nb_invoker *iv);
/* The caps in force (after defaults). */
void nb_invoker_caps(const nb_invoker *iv, int *max_instances, int64_t *max_memory_mb);

/* This loop's invocations queued or running (its requests', wherever they run). */
size_t nb_invoker_inflight(const nb_invoker *iv);
size_t nb_invoker_instances(const nb_invoker *iv);
/* Instances whose memory is not yet released (stopped ones still closing included). */
size_t nb_invoker_allocated(const nb_invoker *iv);
/* Shutdown: stop every instance (busy ones are killed and their invocations fail). */
void nb_invoker_stop_all(nb_invoker *iv);
/* Frees the invoker once nb_invoker_allocated() is 0. */
void nb_invoker_free(nb_invoker *iv);

#endif
