/* nb_invoker: where a function is chosen and an invocation finds an instance.
 *
 * The invoker keeps the live registry of functions (the latest version of each, loaded from
 * the store at start and updated by the admin API) and, per function version, a pool of
 * instances. nb_invoke() takes an idle instance (most recently used first, so the pool can
 * shrink), else starts one, else queues; the first instance that becomes free serves the
 * head of the queue. Every accepted invocation ends in exactly one call of its done callback.
 *
 * Invocation lifecycle (changed only through inv_set_state(), logged at debug level):
 *   QUEUED -> RUNNING -> DONE        (or QUEUED -> DONE when it fails before an instance)
 *
 * Memory: an nb_inv belongs to the invoker; the done callback may read it and must not keep
 * it. nb_inv_detach() is for callers that go away first (an HTTP client disconnecting): the
 * invocation still runs to completion, nobody is told.
 * Thread: loop thread only. */
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

typedef enum nb_inv_state { NB_INV_QUEUED, NB_INV_RUNNING, NB_INV_DONE } nb_inv_state;

typedef void (*nb_inv_done_cb)(nb_inv *inv, void *ud);

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
    int64_t queued_us, started_us, ended_us;
};

typedef struct nb_invoker_config {
    uv_loop_t *loop;
    const char *data_dir;
    nb_store *store;
    nb_logs *logs;
    int max_instances_per_version; /* instances one function version may run at once */
    int64_t idle_timeout_ms;       /* idle instances are stopped after this */
    int64_t init_timeout_ms;
} nb_invoker_config;

nb_invoker *nb_invoker_new(const nb_invoker_config *cfg);
/* Loads every function's latest version from the store. */
int nb_invoker_load(nb_invoker *iv, nb_err *err);
/* Makes v the latest version of its function; older versions' idle instances stop and busy
 * ones stop after their invocation. */
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
void nb_inv_detach(nb_inv *inv);

/* Invocations queued or running. */
size_t nb_invoker_inflight(const nb_invoker *iv);
size_t nb_invoker_instances(const nb_invoker *iv);
/* Instances whose memory is not yet released (stopped ones still closing included). */
size_t nb_invoker_allocated(const nb_invoker *iv);
/* Shutdown: stop every instance (busy ones are killed and their invocations fail). */
void nb_invoker_stop_all(nb_invoker *iv);
/* Frees the invoker once nb_invoker_allocated() is 0. */
void nb_invoker_free(nb_invoker *iv);

#endif
