/* nb_fn: what a function is. Config validation, (de)serialisation and the runtime table.
 *
 * A function version is immutable once published: nb_fn_version values are built once (from
 * the store or from a validated request) and then shared read-only, refcounted, by the
 * scheduler and every instance and invocation that uses them, so a redeploy never changes a
 * config under a running invocation. The refcount is atomic: a version is published to every
 * loop and a forwarded invocation carries it to another loop's thread; everything else in it is
 * read-only once built, so any thread may read it while it holds a ref. */
#ifndef NB_FUNCTION_H
#define NB_FUNCTION_H

#include "base/err.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#define NB_NAME_MAX      64
#define NB_HANDLER_MAX   128
#define NB_DESC_MAX      256
#define NB_ENV_MAX_BYTES 4096
#define NB_MEMORY_MIN    128
#define NB_MEMORY_MAX    10240
#define NB_TIMEOUT_MAX   900
#define NB_EPHEMERAL_MIN 512 /* MB of /tmp, Lambda's range */
#define NB_EPHEMERAL_MAX 10240

enum nb_runtime_kind { NB_RT_PYTHON, NB_RT_NODE, NB_RT_PROVIDED };

/* none: the instance's own network namespace with only loopback (the default); host: the
 * host's network, granted explicitly by the operator (docs/security.md). */
enum nb_network { NB_NET_NONE, NB_NET_HOST };
/* Scaling settings. They belong to the function, not to a version (as Lambda's concurrency
 * settings): changing only these publishes no version and restarts no instance; the store
 * keeps them on the function's row and every version read carries the current ones.
 * NB_SCALE_UNSET marks "not reserved" / "the daemon's default". */
#define NB_SCALE_UNSET             (-1)
#define NB_SCALE_CONCURRENCY_MAX   10000
#define NB_SCALE_MIN_INST_MAX      1000
#define NB_SCALE_IDLE_MAX          86400
#define NB_SCALE_QUEUE_MAX         100000
#define NB_SCALE_QUEUE_TIMEOUT_MAX 900000
#define NB_SCALE_DEFAULT_QUEUE     1000
#define NB_SCALE_DEFAULT_QUEUE_MS  10000

#define NB_ASYNC_RETRIES_DEFAULT 2
#define NB_ASYNC_AGE_MAX         21600 /* 6 h, Lambda's maximum event age */
#define NB_ASYNC_RETRY_DELAY_MS  60000 /* Lambda waits about a minute, then two */
#define NB_ASYNC_SHARE_DEFAULT   80    /* % of max_concurrency async events may take */
#define NB_ASYNC_TARGET_MAX      80    /* "function:NAME", "queue:NAME", "topic:NAME" */

typedef struct nb_fn_scaling {
    int max_concurrency;  /* instances at once; UNSET: only the global caps; 0: disabled */
    int min_instances;    /* kept started (provisioned); <= max_concurrency when reserved */
    int idle_timeout_s;   /* an idle instance above min_instances stops after it; UNSET: default */
    int max_queue;        /* invocations waiting with no instance coming for them */
    int queue_timeout_ms; /* longest wait for an instance before 429 */
    /* Asynchronous invocation (Lambda's event invoke config), also not versioned. */
    int max_retry_attempts; /* after a function error, timeout or OOM: 0..2 */
    int max_event_age_s;    /* an event older than this fails (throttles retry until then) */
    int retry_delay_ms;     /* the first retry's delay; the second waits twice as long */
    int async_share;        /* % of max_concurrency (or of the daemon's cap) async may use */
    char on_success[NB_ASYNC_TARGET_MAX + 1];  /* destination of success records, "" none */
    char on_failure[NB_ASYNC_TARGET_MAX + 1];  /* destination of failure records, "" none */
    char dead_letter[NB_ASYNC_TARGET_MAX + 1]; /* "queue:NAME": failed events themselves */
    /* The service the function belongs to ("" none): a grouping, not a version property, so a
     * function moves between services without a deploy. */
    char service[NB_NAME_MAX + 1];
} nb_fn_scaling;

typedef struct nb_fn_config {
    char runtime[32]; /* as given: "python3.12", "nodejs20.x", "provided.al2023", ... */
    enum nb_runtime_kind kind;
    char handler[NB_HANDLER_MAX + 1];
    char code_sha256[65];
    int memory_mb;
    int timeout_s;
    int ephemeral_storage_mb; /* size of the instance's private /tmp */
    enum nb_network network;
    char description[NB_DESC_MAX + 1];
    json_t *environment;   /* object of strings; owned */
    nb_fn_scaling scaling; /* not versioned: ignored by nb_fn_config_equal and the stored form */
} nb_fn_config;

typedef struct nb_fn_version {
    _Atomic int refs; /* versions cross loop threads (publish, forwarded invocations) */
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    int64_t version;
    int64_t created_at; /* epoch ms of this version */
    int64_t fn_created_at;
    nb_fn_config cfg;
} nb_fn_version;

int nb_fn_valid_name(const char *name);
/* Maps a runtime string to its kind; -1 if unsupported. */
int nb_fn_runtime_kind(const char *runtime);

void nb_fn_config_init(nb_fn_config *cfg);
void nb_fn_config_release(nb_fn_config *cfg);
void nb_fn_config_copy(nb_fn_config *dst, const nb_fn_config *src);
void nb_fn_scaling_init(nb_fn_scaling *s);
int nb_fn_scaling_equal(const nb_fn_scaling *a, const nb_fn_scaling *b);
/* Applies a body holding only scaling fields (PUT /v1/functions/NAME/scaling, or the stored
 * form) on top of s. Any other field is unknown_field. On error s is unchanged. */
int nb_fn_scaling_apply(nb_fn_scaling *s, json_t *body, nb_err *err);
/* Adds the scaling fields to obj (null for UNSET). */
void nb_fn_scaling_to_json(const nb_fn_scaling *s, json_t *obj);
/* Applies a request body (PUT /v1/functions/NAME) on top of cfg. For a create, cfg holds the
 * defaults and runtime/handler/code_sha256 are required. On error cfg is unchanged. */
int nb_fn_config_apply(nb_fn_config *cfg, json_t *body, int creating, nb_err *err);
const char *nb_fn_network_name(enum nb_network n);
/* Equality of the versioned part (everything but scaling). */
int nb_fn_config_equal(const nb_fn_config *a, const nb_fn_config *b);
/* The stored form of a version: a JSON object with every versioned field (no scaling).
 * Caller owns the result. */
json_t *nb_fn_config_to_json(const nb_fn_config *cfg);
int nb_fn_config_from_json(nb_fn_config *cfg, json_t *obj, nb_err *err);
/* Relative path of the file the handler needs in the bundle ("app.py", "bootstrap", ...);
 * for node, every candidate extension is written, separated by NUL, ending with an empty one. */
int nb_fn_handler_files(const nb_fn_config *cfg, char *out, size_t size);

nb_fn_version *nb_fn_version_new(void);
nb_fn_version *nb_fn_version_ref(nb_fn_version *v);
void nb_fn_version_unref(nb_fn_version *v);
/* The Lambda error JSON {"errorType","errorMessage","stackTrace":[]} of a failure nimbus itself
 * detected (timeout, crash, init failure), message formatted from fmt. Caller frees. */
char *nb_fn_error_json(const char *type, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *nb_fn_error_vjson(const char *type, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* The API's function object for a version, scaling settings included (see docs/api.md).
 * Caller owns the result. */
json_t *nb_fn_version_to_json(const nb_fn_version *v, int64_t updated_at);

#endif
