#include "function/function.h"

#include "base/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nb_fn_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > NB_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_') return 0;
    return 1;
}

int nb_fn_runtime_kind(const char *rt)
{
    static const struct {
        const char *name;
        enum nb_runtime_kind kind;
    } exact[] = {
        {"python3", NB_RT_PYTHON},        {"nodejs", NB_RT_NODE},
        {"nodejs18.x", NB_RT_NODE},       {"nodejs20.x", NB_RT_NODE},
        {"nodejs22.x", NB_RT_NODE},       {"provided", NB_RT_PROVIDED},
        {"provided.al2", NB_RT_PROVIDED}, {"provided.al2023", NB_RT_PROVIDED},
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(exact); i++)
        if (strcmp(rt, exact[i].name) == 0) return (int)exact[i].kind;
    /* python3.x: any minor version runs on the host's python3, as Lambda users expect. */
    if (strncmp(rt, "python3.", 8) == 0 && rt[8]) {
        for (const char *p = rt + 8; *p; p++)
            if (!isdigit((unsigned char)*p)) return -1;
        return (int)NB_RT_PYTHON;
    }
    return -1;
}

void nb_fn_config_init(nb_fn_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->memory_mb = NB_MEMORY_MIN;
    cfg->timeout_s = 3;
    cfg->ephemeral_storage_mb = NB_EPHEMERAL_MIN;
    cfg->network = NB_NET_NONE;
    cfg->environment = json_object();
    nb_fn_scaling_init(&cfg->scaling);
}

void nb_fn_scaling_init(nb_fn_scaling *s)
{
    s->max_concurrency = NB_SCALE_UNSET;
    s->min_instances = 0;
    s->idle_timeout_s = NB_SCALE_UNSET;
    s->max_queue = NB_SCALE_DEFAULT_QUEUE;
    s->queue_timeout_ms = NB_SCALE_DEFAULT_QUEUE_MS;
    s->max_retry_attempts = NB_ASYNC_RETRIES_DEFAULT;
    s->max_event_age_s = NB_ASYNC_AGE_MAX;
    s->retry_delay_ms = NB_ASYNC_RETRY_DELAY_MS;
    s->async_share = NB_ASYNC_SHARE_DEFAULT;
    s->on_success[0] = s->on_failure[0] = s->dead_letter[0] = s->service[0] = 0;
}

int nb_fn_scaling_equal(const nb_fn_scaling *a, const nb_fn_scaling *b)
{
    return a->max_concurrency == b->max_concurrency && a->min_instances == b->min_instances &&
           a->idle_timeout_s == b->idle_timeout_s && a->max_queue == b->max_queue &&
           a->queue_timeout_ms == b->queue_timeout_ms &&
           a->max_retry_attempts == b->max_retry_attempts &&
           a->max_event_age_s == b->max_event_age_s && a->retry_delay_ms == b->retry_delay_ms &&
           a->async_share == b->async_share && strcmp(a->on_success, b->on_success) == 0 &&
           strcmp(a->on_failure, b->on_failure) == 0 &&
           strcmp(a->dead_letter, b->dead_letter) == 0 && strcmp(a->service, b->service) == 0;
}

void nb_fn_config_release(nb_fn_config *cfg)
{
    json_decref(cfg->environment);
    cfg->environment = NULL;
}

void nb_fn_config_copy(nb_fn_config *dst, const nb_fn_config *src)
{
    *dst = *src;
    dst->environment = json_deep_copy(src->environment);
}

static int valid_env_key(const char *k)
{
    static const char *reserved[] = {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "TZ",
        "AWS_LAMBDA_RUNTIME_API",
    };
    size_t n = strlen(k);
    if (n < 2 || !isalpha((unsigned char)k[0])) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '_') return 0;
    for (size_t i = 0; i < NB_ARRAY_LEN(reserved); i++)
        if (strcmp(k, reserved[i]) == 0) return 0;
    if (strncmp(k, "AWS_LAMBDA_", 11) == 0 || strncmp(k, "LAMBDA_", 7) == 0 ||
        strncmp(k, "NIMBUS_", 7) == 0)
        return 0;
    return 1;
}

static int check_environment(json_t *env, nb_err *err)
{
    if (!json_is_object(env))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "environment must be an object of strings");
    size_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v)
    {
        if (!valid_env_key(k))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "environment key '%.64s' is invalid or reserved (keys match "
                              "[A-Za-z][A-Za-z0-9_]+ and may not start with AWS_LAMBDA_, "
                              "LAMBDA_ or NIMBUS_)",
                              k);
        /* A NUL would silently cut the value when it becomes a C environment string. */
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "environment value of '%.64s' must be a string without NUL bytes", k);
        total += strlen(k) + json_string_length(v);
    }
    if (total > NB_ENV_MAX_BYTES)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "environment is %zu bytes; the limit is %d",
                          total, NB_ENV_MAX_BYTES);
    return 0;
}

static int get_int(json_t *v, const char *field, int lo, int hi, int *out, nb_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s must be an integer in %d..%d", field,
                          lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

/* An integer in lo..hi, or null for NB_SCALE_UNSET when nullable. */
static int get_opt_int(json_t *v, const char *field, int lo, int hi, int nullable, int *out,
                       nb_err *err)
{
    if (nullable && json_is_null(v)) {
        *out = NB_SCALE_UNSET;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s must be an integer in %d..%d%s", field,
                          lo, hi, nullable ? " or null" : "");
    *out = (int)json_integer_value(v);
    return 0;
}

/* A destination: "" (or null) for none, "function:NAME", "queue:NAME" or "topic:NAME"
 * (queue_only: only a queue, as Lambda's dead-letter queues). */
static int get_target(json_t *v, const char *field, int queue_only, char *out, nb_err *err)
{
    const char *t = json_is_null(v) ? "" : json_string_value(v);
    const char *name = !t                                               ? NULL
                       : !*t                                            ? ""
                       : strncmp(t, "queue:", 6) == 0                   ? t + 6
                       : !queue_only && strncmp(t, "function:", 9) == 0 ? t + 9
                       : !queue_only && strncmp(t, "topic:", 6) == 0    ? t + 6
                                                                        : NULL;
    if (!name || (*t && !nb_fn_valid_name(name)))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s must be %s or null", field,
                          queue_only ? "\"queue:NAME\""
                                     : "\"function:NAME\", \"queue:NAME\", \"topic:NAME\"");
    snprintf(out, NB_ASYNC_TARGET_MAX + 1, "%s", t);
    return 0;
}

/* 0 applied, -1 bad value, 1 not a scaling field. */
static int scaling_field(nb_fn_scaling *s, const char *k, json_t *v, nb_err *err)
{
    if (strcmp(k, "max_retry_attempts") == 0)
        return get_opt_int(v, k, 0, 2, 0, &s->max_retry_attempts, err);
    /* Lambda's range is 60 s .. 6 h; seconds are allowed so tests need not wait a minute. */
    if (strcmp(k, "max_event_age_s") == 0)
        return get_opt_int(v, k, 1, NB_ASYNC_AGE_MAX, 0, &s->max_event_age_s, err);
    if (strcmp(k, "retry_delay_ms") == 0)
        return get_opt_int(v, k, 100, 3600000, 0, &s->retry_delay_ms, err);
    if (strcmp(k, "async_share") == 0) return get_opt_int(v, k, 1, 100, 0, &s->async_share, err);
    if (strcmp(k, "on_success") == 0) return get_target(v, k, 0, s->on_success, err);
    if (strcmp(k, "on_failure") == 0) return get_target(v, k, 0, s->on_failure, err);
    if (strcmp(k, "dead_letter") == 0) return get_target(v, k, 1, s->dead_letter, err);
    if (strcmp(k, "service") == 0) {
        const char *sv = json_is_null(v) ? "" : json_string_value(v);
        if (!sv || (*sv && !nb_fn_valid_name(sv)))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "service must be a name (letters, digits, '-' and '_') or null");
        snprintf(s->service, sizeof s->service, "%s", sv);
        return 0;
    }
    if (strcmp(k, "max_concurrency") == 0)
        return get_opt_int(v, k, 0, NB_SCALE_CONCURRENCY_MAX, 1, &s->max_concurrency, err);
    if (strcmp(k, "min_instances") == 0)
        return get_opt_int(v, k, 0, NB_SCALE_MIN_INST_MAX, 0, &s->min_instances, err);
    if (strcmp(k, "idle_timeout_s") == 0)
        return get_opt_int(v, k, 1, NB_SCALE_IDLE_MAX, 1, &s->idle_timeout_s, err);
    if (strcmp(k, "max_queue") == 0)
        return get_opt_int(v, k, 0, NB_SCALE_QUEUE_MAX, 0, &s->max_queue, err);
    if (strcmp(k, "queue_timeout_ms") == 0)
        return get_opt_int(v, k, 1, NB_SCALE_QUEUE_TIMEOUT_MAX, 0, &s->queue_timeout_ms, err);
    return 1;
}

/* Rules across fields, checked once every field of a body is applied. */
static int check_scaling(const nb_fn_scaling *s, nb_err *err)
{
    if (s->max_concurrency != NB_SCALE_UNSET && s->min_instances > s->max_concurrency)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "min_instances (%d) may not exceed max_concurrency (%d)",
                          s->min_instances, s->max_concurrency);
    return 0;
}

int nb_fn_scaling_apply(nb_fn_scaling *s, json_t *body, nb_err *err)
{
    if (!json_is_object(body))
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "body must be a JSON object");
    nb_fn_scaling c = *s;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        int rc = scaling_field(&c, k, v, err);
        if (rc < 0) return -1;
        if (rc > 0)
            return nb_err_set(err, 400, NB_E_UNKNOWN_FIELD,
                              "unknown field '%.64s' (scaling fields: max_concurrency, "
                              "min_instances, idle_timeout_s, max_queue, queue_timeout_ms, "
                              "max_retry_attempts, max_event_age_s, retry_delay_ms, "
                              "async_share, on_success, on_failure, dead_letter, service)",
                              k);
    }
    if (check_scaling(&c, err) < 0) return -1;
    *s = c;
    return 0;
}

static json_t *int_or_null(int v)
{
    return v == NB_SCALE_UNSET ? json_null() : json_integer(v);
}

void nb_fn_scaling_to_json(const nb_fn_scaling *s, json_t *o)
{
    json_object_set_new(o, "max_concurrency", int_or_null(s->max_concurrency));
    json_object_set_new(o, "min_instances", json_integer(s->min_instances));
    json_object_set_new(o, "idle_timeout_s", int_or_null(s->idle_timeout_s));
    json_object_set_new(o, "max_queue", json_integer(s->max_queue));
    json_object_set_new(o, "queue_timeout_ms", json_integer(s->queue_timeout_ms));
    json_object_set_new(o, "max_retry_attempts", json_integer(s->max_retry_attempts));
    json_object_set_new(o, "max_event_age_s", json_integer(s->max_event_age_s));
    json_object_set_new(o, "retry_delay_ms", json_integer(s->retry_delay_ms));
    json_object_set_new(o, "async_share", json_integer(s->async_share));
    json_object_set_new(o, "on_success",
                        s->on_success[0] ? json_string(s->on_success) : json_null());
    json_object_set_new(o, "on_failure",
                        s->on_failure[0] ? json_string(s->on_failure) : json_null());
    json_object_set_new(o, "dead_letter",
                        s->dead_letter[0] ? json_string(s->dead_letter) : json_null());
    json_object_set_new(o, "service", s->service[0] ? json_string(s->service) : json_null());
}

static int get_str(json_t *v, const char *field, size_t max, char *out, nb_err *err)
{
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s must be a string of at most %zu bytes",
                          field, max);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int valid_handler(const nb_fn_config *c)
{
    if (!c->handler[0]) return 0;
    for (const char *p = c->handler; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == '\\') return 0;
    if (c->kind == NB_RT_PROVIDED) return 1;
    /* module.function: a dot after the last slash, names on both sides, no ".." segments. */
    const char *slash = strrchr(c->handler, '/');
    const char *base = slash ? slash + 1 : c->handler;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base || !dot[1] || c->handler[0] == '/' || strstr(c->handler, ".."))
        return 0;
    return 1;
}

int nb_fn_config_apply(nb_fn_config *cfg, json_t *body, int creating, nb_err *err)
{
    if (!json_is_object(body))
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "body must be a JSON object");
    nb_fn_config c;
    nb_fn_config_copy(&c, cfg);
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "runtime") == 0) {
            rc = get_str(v, k, sizeof c.runtime - 1, c.runtime, err);
            if (rc == 0 && nb_fn_runtime_kind(c.runtime) < 0)
                rc = nb_err_set(err, 400, NB_E_INVALID_RUNTIME,
                                "unknown runtime '%s' (supported: python3, python3.x, nodejs, "
                                "nodejs18.x, nodejs20.x, nodejs22.x, provided, provided.al2, "
                                "provided.al2023)",
                                c.runtime);
        } else if (strcmp(k, "handler") == 0) {
            rc = get_str(v, k, NB_HANDLER_MAX, c.handler, err);
        } else if (strcmp(k, "code_sha256") == 0) {
            rc = get_str(v, k, 64, c.code_sha256, err);
            if (rc == 0 && strspn(c.code_sha256, "0123456789abcdef") != 64)
                rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                "code_sha256 must be 64 lowercase hex digits");
        } else if (strcmp(k, "memory_mb") == 0) {
            rc = get_int(v, k, NB_MEMORY_MIN, NB_MEMORY_MAX, &c.memory_mb, err);
        } else if (strcmp(k, "timeout_s") == 0) {
            rc = get_int(v, k, 1, NB_TIMEOUT_MAX, &c.timeout_s, err);
        } else if (strcmp(k, "ephemeral_storage_mb") == 0) {
            rc = get_int(v, k, NB_EPHEMERAL_MIN, NB_EPHEMERAL_MAX, &c.ephemeral_storage_mb, err);
        } else if (strcmp(k, "network") == 0) {
            const char *net = json_string_value(v);
            if (net && strcmp(net, "none") == 0)
                c.network = NB_NET_NONE;
            else if (net && strcmp(net, "host") == 0)
                c.network = NB_NET_HOST;
            else
                rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                "network must be \"none\" or \"host\"");
        } else if (strcmp(k, "description") == 0) {
            rc = get_str(v, k, NB_DESC_MAX, c.description, err);
        } else if (strcmp(k, "environment") == 0) {
            rc = check_environment(v, err);
            if (rc == 0) {
                json_decref(c.environment);
                c.environment = json_deep_copy(v);
            }
        } else if ((rc = scaling_field(&c.scaling, k, v, err)) > 0) {
            rc = nb_err_set(err, 400, NB_E_UNKNOWN_FIELD, "unknown field '%.64s'", k);
        }
        if (rc < 0) break;
    }
    if (rc == 0) rc = check_scaling(&c.scaling, err);
    if (rc == 0 && creating) {
        const char *missing = !c.runtime[0]       ? "runtime"
                              : !c.handler[0]     ? "handler"
                              : !c.code_sha256[0] ? "code_sha256"
                                                  : NULL;
        if (missing)
            rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s is required to create a function",
                            missing);
    }
    if (rc == 0) {
        c.kind = (enum nb_runtime_kind)nb_fn_runtime_kind(c.runtime);
        if (!valid_handler(&c))
            rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                            "handler '%s' is invalid for runtime %s (expected file.function)",
                            c.handler, c.runtime);
    }
    if (rc < 0) {
        nb_fn_config_release(&c);
        return -1;
    }
    nb_fn_config_release(cfg);
    *cfg = c;
    return 0;
}

const char *nb_fn_network_name(enum nb_network n)
{
    return n == NB_NET_HOST ? "host" : "none";
}

int nb_fn_config_equal(const nb_fn_config *a, const nb_fn_config *b)
{
    return strcmp(a->runtime, b->runtime) == 0 && strcmp(a->handler, b->handler) == 0 &&
           strcmp(a->code_sha256, b->code_sha256) == 0 && a->memory_mb == b->memory_mb &&
           a->timeout_s == b->timeout_s && a->ephemeral_storage_mb == b->ephemeral_storage_mb &&
           a->network == b->network && strcmp(a->description, b->description) == 0 &&
           json_equal(a->environment, b->environment);
}

json_t *nb_fn_config_to_json(const nb_fn_config *c)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:O}", "runtime", c->runtime,
                     "handler", c->handler, "code_sha256", c->code_sha256, "memory_mb",
                     c->memory_mb, "timeout_s", c->timeout_s, "ephemeral_storage_mb",
                     c->ephemeral_storage_mb, "network", nb_fn_network_name(c->network),
                     "description", c->description, "environment", c->environment);
}

int nb_fn_config_from_json(nb_fn_config *cfg, json_t *obj, nb_err *err)
{
    nb_fn_config_init(cfg);
    if (nb_fn_config_apply(cfg, obj, 1, err) < 0) return nb_err_prefix(err, "stored config");
    return 0;
}

int nb_fn_handler_files(const nb_fn_config *c, char *out, size_t size)
{
    if (c->kind == NB_RT_PROVIDED) {
        if (size < 11) return -1;
        memcpy(out, "bootstrap\0", 11);
        return 0;
    }
    const char *slash = strrchr(c->handler, '/');
    const char *base = slash ? slash + 1 : c->handler;
    size_t dirlen = (size_t)(base - c->handler);
    /* python: module is everything before the last dot, dots become directories;
     * node: the file is the part before the first dot (later dots name nested exports). */
    const char *end = c->kind == NB_RT_PYTHON ? strrchr(base, '.') : strchr(base, '.');
    if (!end) return -1; /* not a validated handler */
    size_t modlen = (size_t)(end - c->handler);
    if (3 * (modlen + 14) + 1 > size) return -1;
    char mod[NB_HANDLER_MAX + 1];
    memcpy(mod, c->handler, modlen);
    mod[modlen] = 0;
    if (c->kind == NB_RT_PYTHON)
        for (char *p = mod + dirlen; *p; p++)
            if (*p == '.') *p = '/';
    size_t off = 0;
    const char *exts_py[] = {".py", "/__init__.py", NULL};
    const char *exts_node[] = {".js", ".mjs", ".cjs", NULL};
    const char **exts = c->kind == NB_RT_PYTHON ? exts_py : exts_node;
    for (int i = 0; exts[i]; i++)
        off += (size_t)snprintf(out + off, size - off, "%s%s", mod, exts[i]) + 1;
    out[off] = 0;
    return 0;
}

nb_fn_version *nb_fn_version_new(void)
{
    nb_fn_version *v = calloc(1, sizeof *v);
    if (!v) abort();
    v->refs = 1;
    nb_fn_config_init(&v->cfg);
    return v;
}

nb_fn_version *nb_fn_version_ref(nb_fn_version *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void nb_fn_version_unref(nb_fn_version *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) > 1) return;
    nb_fn_config_release(&v->cfg);
    free(v);
}

json_t *nb_fn_version_to_json(const nb_fn_version *v, int64_t updated_at)
{
    char created[32], updated[32];
    nb_time_iso8601(v->fn_created_at, created, sizeof created);
    nb_time_iso8601(updated_at, updated, sizeof updated);
    json_t *o = nb_fn_config_to_json(&v->cfg);
    nb_fn_scaling_to_json(&v->cfg.scaling, o);
    json_object_set_new(o, "namespace", json_string(v->ns));
    json_object_set_new(o, "name", json_string(v->name));
    json_object_set_new(o, "version", json_integer(v->version));
    json_object_set_new(o, "created_at", json_string(created));
    json_object_set_new(o, "updated_at", json_string(updated));
    return o;
}

char *nb_fn_error_vjson(const char *type, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *o = json_pack("{s:s, s:s, s:[]}", "errorType", type, "errorMessage", msg, "stackTrace");
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) abort();
    return s;
}

char *nb_fn_error_json(const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = nb_fn_error_vjson(type, fmt, ap);
    va_end(ap);
    return s;
}
