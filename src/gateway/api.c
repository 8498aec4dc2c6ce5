#include "gateway/api.h"

#include "base/log.h"
#include "base/util.h"
#include "code/bundle.h"
#include "console/console.h"
#include "events/cloudevent.h"
#include "events/pattern.h"
#include "gateway/http.h"
#include "gateway/routes.h"
#include "metrics/metrics.h"
#include "metering/usage.h"
#include "metrics/series.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NB_INVOKE_MAX_BODY (6u << 20)
#define NB_JSON_MAX_BODY   (256u << 10)
#define DEFAULT_NS         "default"

typedef struct route_args {
    nb_api *api;
    h2o_req_t *req;
    const char *request_id;
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    char sub[256];     /* a second path capture: a route id, a share's consumer */
    const char *query; /* after '?', NUL-terminated copy, or "" */
    const char *kind;  /* the gateway object kind of the route, for the shared handlers */
} route_args;

typedef void (*route_fn)(route_args *a);

typedef struct route {
    const char *method;
    const char *pattern; /* segments; "{name}" captures a function name */
    route_fn fn;
    int public;       /* 1: no token needed; 2: none with serve --metrics-public */
    const char *kind; /* "key" or "client" for the credential routes */
} route;

static void r_health(route_args *a);
static void r_version(route_args *a);
static void r_code(route_args *a);
static void r_put(route_args *a);
static void r_list(route_args *a);
static void r_get(route_args *a);
static void r_delete(route_args *a);
static void r_scaling(route_args *a);
static void r_versions(route_args *a);
static void r_invoke(route_args *a);
static void r_logs(route_args *a);
static void r_events_failed(route_args *a);
static void r_events_redrive(route_args *a);
static void r_queues(route_args *a);
static void r_queue_put(route_args *a);
static void r_queue_get(route_args *a);
static void r_queue_delete(route_args *a);
static void r_queue_send(route_args *a);
static void r_queue_receive(route_args *a);
static void r_queue_msg_delete(route_args *a);
static void r_queue_subscribe(route_args *a);
static void r_queue_unsubscribe(route_args *a);
static void r_topics(route_args *a);
static void r_topic_create(route_args *a);
static void r_topic_get(route_args *a);
static void r_topic_delete(route_args *a);
static void r_topic_publish(route_args *a);
static void r_topic_subs(route_args *a);
static void r_topic_subscribe(route_args *a);
static void r_topic_unsubscribe(route_args *a);
static void r_schedules(route_args *a);
static void r_schedule_put(route_args *a);
static void r_schedule_get(route_args *a);
static void r_schedule_delete(route_args *a);
static void r_schedule_pause(route_args *a);
static void r_schedule_resume(route_args *a);
static void r_apis(route_args *a);
static void r_api_put(route_args *a);
static void r_api_get(route_args *a);
static void r_api_delete(route_args *a);
static void r_routes(route_args *a);
static void r_route_add(route_args *a);
static void r_route_delete(route_args *a);
static void r_shares(route_args *a);
static void r_share_add(route_args *a);
static void r_share_delete(route_args *a);
static void r_api_usage(route_args *a);
static void r_api_logs(route_args *a);
static void r_plans(route_args *a);
static void r_plan_put(route_args *a);
static void r_plan_delete(route_args *a);
static void r_creds(route_args *a);
static void r_cred_create(route_args *a);
static void r_cred_get(route_args *a);
static void r_cred_update(route_args *a);
static void r_cred_rotate(route_args *a);
static void r_cred_delete(route_args *a);
static void r_services(route_args *a);
static void r_service_get(route_args *a);
static void r_service_delete(route_args *a);
static void r_events_put(route_args *a);
static void r_rules(route_args *a);
static void r_rule_create(route_args *a);
static void r_rule_get(route_args *a);
static void r_rule_update(route_args *a);
static void r_rule_delete(route_args *a);
static void r_rule_test(route_args *a);
static void r_metrics(route_args *a);
static void r_usage(route_args *a);
static void r_fn_invocations(route_args *a);
static void r_metrics_series(route_args *a);

/* Namespaced routes exist twice: short (namespace "default") and under
 * /v1/namespaces/{ns}; the long form is derived in match_route(). */
static const route routes[] = {
    {"GET", "/healthz", r_health, 1},
    {"GET", "/metrics", r_metrics, 2},
    {"GET", "/v1/version", r_version, 0},
    {"POST", "/v1/code", r_code, 0},
    {"PUT", "/v1/functions/{name}", r_put, 0},
    {"GET", "/v1/functions", r_list, 0},
    {"GET", "/v1/functions/{name}", r_get, 0},
    {"DELETE", "/v1/functions/{name}", r_delete, 0},
    {"PUT", "/v1/functions/{name}/scaling", r_scaling, 0},
    {"GET", "/v1/functions/{name}/versions", r_versions, 0},
    {"POST", "/v1/functions/{name}/invoke", r_invoke, 0},
    {"GET", "/v1/functions/{name}/logs", r_logs, 0},
    {"GET", "/v1/functions/{name}/invocations", r_fn_invocations, 0},
    {"GET", "/v1/functions/{name}/events/failed", r_events_failed, 0},
    {"POST", "/v1/functions/{name}/events/redrive", r_events_redrive, 0},
    {"GET", "/v1/queues", r_queues, 0},
    {"PUT", "/v1/queues/{name}", r_queue_put, 0},
    {"GET", "/v1/queues/{name}", r_queue_get, 0},
    {"DELETE", "/v1/queues/{name}", r_queue_delete, 0},
    {"POST", "/v1/queues/{name}/messages", r_queue_send, 0},
    {"POST", "/v1/queues/{name}/receive", r_queue_receive, 0},
    {"DELETE", "/v1/queues/{name}/messages/{sub}", r_queue_msg_delete, 0},
    {"PUT", "/v1/queues/{name}/subscriptions/{sub}", r_queue_subscribe, 0},
    {"DELETE", "/v1/queues/{name}/subscriptions/{sub}", r_queue_unsubscribe, 0},
    {"GET", "/v1/topics", r_topics, 0},
    {"POST", "/v1/topics", r_topic_create, 0},
    {"GET", "/v1/topics/{name}", r_topic_get, 0},
    {"DELETE", "/v1/topics/{name}", r_topic_delete, 0},
    {"POST", "/v1/topics/{name}/publish", r_topic_publish, 0},
    {"GET", "/v1/topics/{name}/subscriptions", r_topic_subs, 0},
    {"POST", "/v1/topics/{name}/subscriptions", r_topic_subscribe, 0},
    {"DELETE", "/v1/topics/{name}/subscriptions/{sub}", r_topic_unsubscribe, 0},
    {"GET", "/v1/schedules", r_schedules, 0},
    {"PUT", "/v1/schedules/{name}", r_schedule_put, 0},
    {"GET", "/v1/schedules/{name}", r_schedule_get, 0},
    {"DELETE", "/v1/schedules/{name}", r_schedule_delete, 0},
    {"POST", "/v1/schedules/{name}/pause", r_schedule_pause, 0},
    {"POST", "/v1/schedules/{name}/resume", r_schedule_resume, 0},
    {"GET", "/v1/services", r_services, 0},
    {"GET", "/v1/services/{name}", r_service_get, 0},
    {"DELETE", "/v1/services/{name}", r_service_delete, 0},
    {"POST", "/v1/events", r_events_put, 0},
    {"GET", "/v1/rules", r_rules, 0},
    {"POST", "/v1/rules", r_rule_create, 0},
    {"GET", "/v1/rules/{name}", r_rule_get, 0},
    {"PATCH", "/v1/rules/{name}", r_rule_update, 0},
    {"DELETE", "/v1/rules/{name}", r_rule_delete, 0},
    {"POST", "/v1/rules/{name}/test", r_rule_test, 0},
    {"GET", "/v1/usage", r_usage, 0},
    {"GET", "/v1/metrics/series", r_metrics_series, 0},
    {"GET", "/v1/apis", r_apis, 0},
    {"PUT", "/v1/apis/{name}", r_api_put, 0},
    {"GET", "/v1/apis/{name}", r_api_get, 0},
    {"DELETE", "/v1/apis/{name}", r_api_delete, 0},
    {"GET", "/v1/apis/{name}/routes", r_routes, 0},
    {"POST", "/v1/apis/{name}/routes", r_route_add, 0},
    {"DELETE", "/v1/apis/{name}/routes/{sub}", r_route_delete, 0},
    {"GET", "/v1/apis/{name}/shares", r_shares, 0},
    {"POST", "/v1/apis/{name}/shares", r_share_add, 0},
    {"DELETE", "/v1/apis/{name}/shares/{sub}", r_share_delete, 0},
    {"GET", "/v1/apis/{name}/usage", r_api_usage, 0},
    {"GET", "/v1/apis/{name}/logs", r_api_logs, 0},
    {"GET", "/v1/plans", r_plans, 0},
    {"PUT", "/v1/plans/{name}", r_plan_put, 0},
    {"DELETE", "/v1/plans/{name}", r_plan_delete, 0},
    {"GET", "/v1/keys", r_creds, 0, "key"},
    {"POST", "/v1/keys", r_cred_create, 0, "key"},
    {"GET", "/v1/keys/{name}", r_cred_get, 0, "key"},
    {"PATCH", "/v1/keys/{name}", r_cred_update, 0, "key"},
    {"POST", "/v1/keys/{name}/rotate", r_cred_rotate, 0, "key"},
    {"DELETE", "/v1/keys/{name}", r_cred_delete, 0, "key"},
    {"GET", "/v1/clients", r_creds, 0, "client"},
    {"POST", "/v1/clients", r_cred_create, 0, "client"},
    {"GET", "/v1/clients/{name}", r_cred_get, 0, "client"},
    {"PATCH", "/v1/clients/{name}", r_cred_update, 0, "client"},
    {"POST", "/v1/clients/{name}/rotate", r_cred_rotate, 0, "client"},
    {"DELETE", "/v1/clients/{name}", r_cred_delete, 0, "client"},
};

void nb_api_print_routes(FILE *f)
{
    for (size_t i = 0; i < NB_ARRAY_LEN(routes); i++)
        fprintf(f, "%s %s\n", routes[i].method, routes[i].pattern);
}

/* ---------- routing ---------- */

/* Matches path against pattern, capturing {name}. 1 match, 0 no match. A {name} segment that
 * is not a valid function name still matches (the handler answers 400/404 with a reason). */
static int match_pattern(const char *pattern, const char *path, size_t plen, char *name,
                         size_t nsize, char *sub, size_t ssize)
{
    const char *p = pattern, *s = path, *end = path + plen;
    while (*p && s < end) {
        if (strncmp(p, "{sub}", 5) == 0) {
            /* Last in every pattern, it takes the rest of the path, percent-decoded: a share's
             * consumer "ns/name" may come as is or as "ns%2Fname". */
            const char *seg_end = end;
            size_t n = (size_t)(seg_end - s);
            if (n == 0 || n >= ssize) return 0;
            size_t o = 0;
            for (size_t i = 0; i < n; i++) {
                unsigned v;
                if (s[i] == '%' && i + 2 < n && sscanf(s + i + 1, "%2x", &v) == 1) {
                    sub[o++] = (char)v;
                    i += 2;
                } else {
                    sub[o++] = s[i];
                }
            }
            sub[o] = 0;
            s = seg_end;
            p += 5;
            continue;
        }
        if (strncmp(p, "{name}", 6) == 0) {
            const char *seg_end = memchr(s, '/', (size_t)(end - s));
            if (!seg_end) seg_end = end;
            size_t n = (size_t)(seg_end - s);
            if (n == 0) return 0;
            snprintf(name, nsize, "%.*s", (int)(n < nsize ? n : nsize - 1), s);
            if (n >= nsize) name[0] = '\x01'; /* too long: never a valid name */
            s = seg_end;
            p += 6;
            continue;
        }
        if (*p != *s) return 0;
        p++;
        s++;
    }
    return *p == 0 && s == end;
}

static int auth_ok(nb_api *api, h2o_req_t *req)
{
    char value[256];
    const char *v = nb_http_req_header(req, "authorization", value, sizeof value);
    if (!v || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    return nb_secure_streq(v + 7, api->token);
}

int nb_api_handle(void *ud, h2o_req_t *req, const char *request_id)
{
    nb_api *api = ud;
    /* The console's static files: no token (they hold no data; see console/console.h). */
    if (nb_con_handle(req)) return 0;
    route_args a = {.api = api, .req = req, .request_id = request_id, .query = ""};
    snprintf(a.ns, sizeof a.ns, "%s", DEFAULT_NS);
    size_t plen = req->path_normalized.len;
    const char *path = req->path_normalized.base;
    if (req->query_at != SIZE_MAX) {
        size_t qlen = req->path.len - req->query_at - 1;
        char *q = h2o_mem_alloc_pool(&req->pool, qlen + 1);
        memcpy(q, req->path.base + req->query_at + 1, qlen);
        q[qlen] = 0;
        a.query = q;
    }
    /* /v1/namespaces/{ns}/rest -> namespace ns, path /v1/rest */
    char rewritten[1024];
    static const char nsprefix[] = "/v1/namespaces/";
    if (plen > sizeof nsprefix - 1 && strncmp(path, nsprefix, sizeof nsprefix - 1) == 0) {
        const char *ns = path + sizeof nsprefix - 1;
        const char *slash = memchr(ns, '/', plen - (size_t)(ns - path));
        size_t nslen = slash ? (size_t)(slash - ns) : plen - (size_t)(ns - path);
        if (nslen == 0 || nslen > NB_NAME_MAX || !slash) {
            nb_http_error(req, 404, NB_E_NOT_FOUND, "no route for %.*s", (int)plen, path);
            return 0;
        }
        snprintf(a.ns, sizeof a.ns, "%.*s", (int)nslen, ns);
        if (!nb_fn_valid_name(a.ns)) {
            nb_http_error(req, 400, NB_E_INVALID_NAME, "invalid namespace '%s'", a.ns);
            return 0;
        }
        int n = snprintf(rewritten, sizeof rewritten, "/v1%.*s",
                         (int)(plen - (size_t)(slash - path)), slash);
        if (n < 0 || (size_t)n >= sizeof rewritten) {
            nb_http_error(req, 404, NB_E_NOT_FOUND, "no route");
            return 0;
        }
        path = rewritten;
        plen = (size_t)n;
    }
    /* Only the default namespace exists until tenants land; others are simply empty. */
    int path_matched = 0;
    for (size_t i = 0; i < NB_ARRAY_LEN(routes); i++) {
        const route *r = &routes[i];
        if (!match_pattern(r->pattern, path, plen, a.name, sizeof a.name, a.sub, sizeof a.sub))
            continue;
        path_matched = 1;
        if (!h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method))) continue;
        int open = r->public == 1 || (r->public == 2 && api->metrics_public);
        if (!open && !auth_ok(api, req)) {
            nb_http_error(req, 401, NB_E_UNAUTHORIZED,
                          "missing or wrong admin token (Authorization: Bearer ...)");
            return 0;
        }
        if (strstr(r->pattern, "{name}") && !nb_fn_valid_name(a.name)) {
            nb_http_error(req, 400, NB_E_INVALID_NAME,
                          "invalid function name: names match [A-Za-z0-9_-]{1,64}");
            return 0;
        }
        a.kind = r->kind;
        r->fn(&a);
        return 0;
    }
    if (path_matched)
        nb_http_error(req, 405, NB_E_METHOD, "method %.*s not allowed on %.*s",
                      (int)req->method.len, req->method.base, (int)plen, path);
    else
        nb_http_error(req, 404, NB_E_NOT_FOUND, "no route for %.*s", (int)plen, path);
    return 0;
}

/* Query parameter value (URL-decoding not needed: every value we take is numeric). */
static const char *query_param(const char *q, const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    for (const char *p = q; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > klen && p[klen] == '=' && strncmp(p, key, klen) == 0) {
            snprintf(buf, size, "%.*s", (int)(n - klen - 1), p + klen + 1);
            return buf;
        }
        if (n == klen && strncmp(p, key, klen) == 0) {
            snprintf(buf, size, "1");
            return buf;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static int parse_int_param(route_args *a, const char *key, long long lo, long long hi,
                           long long *out)
{
    char buf[32];
    if (!query_param(a->query, key, buf, sizeof buf)) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf || *end || v < lo || v > hi) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                      "query parameter %s must be an integer in %lld..%lld", key, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

static int body_too_big(route_args *a, size_t max)
{
    if (a->req->entity.len <= max) return 0;
    nb_http_error(a->req, 413, NB_E_TOO_LARGE, "request body is %zu bytes; the limit is %zu",
                  a->req->entity.len, max);
    return 1;
}

/* ---------- simple routes ---------- */

static void r_health(route_args *a)
{
    nb_http_send_json(a->req, 200,
                      json_pack("{s:s}", "status", a->api->draining ? "draining" : "ok"));
}

/* Prometheus text format (docs/internals/metrics.md). */
static void r_metrics(route_args *a)
{
    if (!a->api->metrics) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "metrics are off");
        return;
    }
    nb_buf out;
    nb_buf_init(&out, NB_MET_MAX_PAGE);
    nb_err err = {0};
    if (nb_met_render(a->api->metrics, &out, &err) < 0) {
        nb_buf_free(&out);
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send(a->req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data ? out.data : "",
                 out.len);
    nb_buf_free(&out);
}

static void r_version(route_args *a)
{
    nb_http_send_json(
        a->req, 200,
        json_pack("{s:s, s:s}", "version", NIMBUS_VERSION, "store", a->api->store->ops->name));
}

/* The routes that change state run one at a time over every loop (see api.h). */
#define ADMIN_LOCKED(api, name)                                                                    \
    static void name##_locked(route_args *a);                                                      \
    static void name(route_args *a)                                                                \
    {                                                                                              \
        pthread_mutex_lock((api)->admin_mu);                                                       \
        name##_locked(a);                                                                          \
        pthread_mutex_unlock((api)->admin_mu);                                                     \
    }

ADMIN_LOCKED(a->api, r_put)
ADMIN_LOCKED(a->api, r_scaling)
ADMIN_LOCKED(a->api, r_delete)

static int count_bundle(nb_api *api, route_args *a, nb_code_blob *blob, nb_err *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.count-XXXXXX", api->code_root);
    if (!mkdtemp(tmp)) return nb_err_sys(err, errno, "mkdtemp %s", tmp);
    int rc = nb_bundle_unpack(a->req->entity.base, a->req->entity.len, tmp, NULL, blob, err);
    nb_rm_rf(tmp);
    return rc;
}

/* The unpack (up to 256 MB) runs outside the admin lock, so other loops' admin requests do
 * not wait for it: the content-addressed directory is made under a unique name and renamed
 * into place, so concurrent uploads are safe; only the store write takes the lock. */
static void r_code(route_args *a)
{
    nb_api *api = a->api;
    if (body_too_big(a, NB_BUNDLE_MAX_UPLOAD)) return;
    if (a->req->entity.len == 0) {
        nb_http_error(a->req, 400, NB_E_INVALID_ARCHIVE,
                      "empty body: send a zip or tar.gz archive");
        return;
    }
    nb_err err = {0};
    nb_code_blob blob;
    int existed = 0;
    if (nb_bundle_ingest(api->blob_root, api->code_root, a->req->entity.base, a->req->entity.len,
                         NULL, &blob, &existed, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    pthread_mutex_lock(api->admin_mu);
    nb_code_blob known;
    int rc = 0, found = api->store->ops->blob_get(api->store, blob.sha256, &known, &err) == 1;
    pthread_mutex_unlock(api->admin_mu);
    if (found) {
        blob = known;
        existed = 1;
    } else {
        /* On disk without its row: another loop's upload of the same bytes between its rename
         * and its store write, or a daemon that died there. Ingest found the directory and
         * skipped the unpack, so count what it holds the same way, in a scratch directory. */
        if (existed && count_bundle(api, a, &blob, &err) < 0) {
            nb_http_send_error(a->req, &err);
            return;
        }
        pthread_mutex_lock(api->admin_mu);
        if (api->store->ops->blob_get(api->store, blob.sha256, &known, &err) == 1)
            blob = known;
        else
            rc = api->store->ops->blob_put(api->store, &blob, &err);
        pthread_mutex_unlock(api->admin_mu);
        existed = 0;
    }
    if (rc < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, existed ? 200 : 201,
                      json_pack("{s:s, s:I, s:I, s:I}", "sha256", blob.sha256, "size",
                                (json_int_t)blob.size, "unpacked_size",
                                (json_int_t)blob.unpacked_size, "files", (json_int_t)blob.files));
}

/* Checks that the bundle holds what the handler needs. */
static int check_handler(nb_api *api, const nb_fn_config *cfg, nb_err *err)
{
    nb_code_blob blob;
    int found = api->store->ops->blob_get(api->store, cfg->code_sha256, &blob, err);
    if (found < 0) return -1;
    if (!found)
        return nb_err_set(err, 404, NB_E_NOT_FOUND,
                          "code %.12s... was never uploaded (POST /v1/code first)",
                          cfg->code_sha256);
    char dir[PATH_MAX], files[1024];
    snprintf(dir, sizeof dir, "%s/%s", api->code_root, cfg->code_sha256);
    if (nb_fn_handler_files(cfg, files, sizeof files) < 0)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "handler '%s' is too long", cfg->handler);
    for (const char *f = files; *f; f += strlen(f) + 1)
        if (nb_bundle_has_file(dir, f)) return 0;
    return nb_err_set(err, 400, NB_E_HANDLER_NOT_FOUND,
                      cfg->kind == NB_RT_PROVIDED
                          ? "the bundle has no 'bootstrap' file at its root (runtime %s needs one)"
                          : "handler '%s': file '%s' is not in the bundle",
                      cfg->kind == NB_RT_PROVIDED ? cfg->runtime : cfg->handler, files);
}

/* The function object: its latest version, scaling settings and the scheduler's live view. */
static json_t *fn_object(nb_api *api, const nb_fn_version *v, int64_t updated_at)
{
    json_t *o = nb_fn_version_to_json(v, updated_at);
    nb_fn_stats st;
    if (nb_invoker_stats(api->invoker, v->ns, v->name, &st) < 0) return o;
    json_t *inst = json_pack("{s:i, s:i, s:i, s:i}", "starting", st.starting, "idle", st.idle,
                             "busy", st.busy, "draining", st.draining);
    json_t *stats =
        json_pack("{s:o, s:i, s:i, s:I, s:I, s:I, s:I, s:o}", "instances", inst, "in_flight",
                  st.in_flight, "queued", st.queued, "invocations", (json_int_t)st.invocations,
                  "cold_starts", (json_int_t)st.cold_starts, "throttles", (json_int_t)st.throttles,
                  "instance_starts", (json_int_t)st.instance_starts, "last_cold_start_ms",
                  st.last_cold_start_ms < 0 ? json_null() : json_integer(st.last_cold_start_ms));
    nb_async_stats as;
    nb_async_fn_stats(api->async, v->ns, v->name, &as);
    json_object_set_new(stats, "async",
                        json_pack("{s:I, s:I, s:I, s:I, s:I}", "queued", (json_int_t)as.depth,
                                  "in_flight", (json_int_t)as.inflight, "oldest_ms",
                                  (json_int_t)as.oldest_ms, "retries", (json_int_t)as.retries,
                                  "failed", (json_int_t)as.failed));
    json_object_set_new(o, "stats", stats);
    return o;
}

/* Reads a JSON object body, answering 400/413 itself when it is not one. */
static json_t *json_body(route_args *a)
{
    if (body_too_big(a, NB_JSON_MAX_BODY)) return NULL;
    json_error_t je;
    json_t *body = json_loadb(a->req->entity.base ? a->req->entity.base : "", a->req->entity.len,
                              JSON_REJECT_DUPLICATES, &je);
    if (!body || !json_is_object(body)) {
        json_decref(body);
        nb_http_error(a->req, 400, NB_E_INVALID_JSON, "body must be a JSON object%s%s",
                      body ? "" : ": ", body ? "" : je.text);
        return NULL;
    }
    return body;
}

static void r_put_locked(route_args *a)
{
    nb_api *api = a->api;
    json_t *body = json_body(a);
    if (!body) return;
    nb_err err = {0};
    nb_fn_version *cur = api->store->ops->fn_get(api->store, a->ns, a->name, 0, NULL, &err);
    if (!cur && err.status != 404) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_fn_config cfg;
    if (cur)
        nb_fn_config_copy(&cfg, &cur->cfg);
    else
        nb_fn_config_init(&cfg);
    nb_put_result res = {0};
    int rc = nb_fn_config_apply(&cfg, body, cur == NULL, &err);
    if (rc == 0) rc = check_handler(api, &cfg, &err);
    if (rc == 0) rc = api->store->ops->fn_put(api->store, a->ns, a->name, &cfg, &res, &err);
    json_decref(body);
    nb_fn_config_release(&cfg);
    nb_fn_version_unref(cur);
    if (rc < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (res.changed || res.scaling_changed) {
        nb_invoker_publish(api->invoker, res.version);
        nb_info("api", "%s %s/%s version %lld", res.changed ? "published" : "new scaling for",
                a->ns, a->name, (long long)res.version->version);
    }
    json_t *o = fn_object(api, res.version, res.updated_at);
    json_object_set_new(o, "changed", json_boolean(res.changed));
    nb_fn_version_unref(res.version);
    nb_http_send_json(a->req, res.created ? 201 : 200, o);
}

static void r_list(route_args *a)
{
    nb_api *api = a->api;
    nb_err err = {0};
    nb_fn_version **vs;
    int64_t *upd;
    size_t n;
    if (api->store->ops->fn_list(api->store, a->ns, &vs, &upd, &n, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, fn_object(api, vs[i], upd[i]));
    nb_store_free_versions(vs, n);
    free(upd);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "functions", arr));
}

static void r_get(route_args *a)
{
    nb_err err = {0};
    int64_t updated = 0;
    nb_fn_version *v = a->api->store->ops->fn_get(a->api->store, a->ns, a->name, 0, &updated, &err);
    if (!v) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, fn_object(a->api, v, updated));
    nb_fn_version_unref(v);
}

/* Scaling settings only: never a new version, never a restart (docs/api.md). */
static void r_scaling_locked(route_args *a)
{
    nb_api *api = a->api;
    json_t *body = json_body(a);
    if (!body) return;
    nb_err err = {0};
    int64_t updated = 0;
    nb_fn_version *cur = api->store->ops->fn_get(api->store, a->ns, a->name, 0, &updated, &err);
    if (!cur) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_fn_config cfg;
    nb_fn_config_copy(&cfg, &cur->cfg);
    nb_put_result res = {0};
    int rc = nb_fn_scaling_apply(&cfg.scaling, body, &err);
    if (rc == 0) rc = api->store->ops->fn_put(api->store, a->ns, a->name, &cfg, &res, &err);
    json_decref(body);
    nb_fn_config_release(&cfg);
    nb_fn_version_unref(cur);
    if (rc < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (res.scaling_changed) {
        nb_invoker_publish(api->invoker, res.version);
        nb_info("api", "new scaling for %s/%s", a->ns, a->name);
    }
    json_t *o = fn_object(api, res.version, res.updated_at);
    json_object_set_new(o, "changed", json_false());
    nb_fn_version_unref(res.version);
    nb_http_send_json(a->req, 200, o);
}

static void r_delete_locked(route_args *a)
{
    nb_api *api = a->api;
    nb_err err = {0};
    if (api->store->ops->fn_delete(api->store, a->ns, a->name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_invoker_remove(api->invoker, a->ns, a->name);
    nb_logs_remove(api->logs, a->ns, a->name);
    nb_info("api", "deleted %s/%s", a->ns, a->name);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

static void r_versions(route_args *a)
{
    nb_err err = {0};
    nb_fn_version **vs;
    size_t n;
    if (a->api->store->ops->fn_versions(a->api->store, a->ns, a->name, &vs, &n, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char created[32];
        nb_time_iso8601(vs[i]->created_at, created, sizeof created);
        json_t *o = nb_fn_config_to_json(&vs[i]->cfg);
        json_object_set_new(o, "version", json_integer(vs[i]->version));
        json_object_set_new(o, "created_at", json_string(created));
        json_array_append_new(arr, o);
    }
    nb_store_free_versions(vs, n);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "versions", arr));
}

/* ---------- invoke ---------- */

/* Lives in the request's memory pool; the pool's disposal (client gone) detaches the
 * invocation so its result is dropped instead of written to a freed request. */
typedef struct pending_invoke {
    h2o_req_t *req;
    nb_inv *inv;
} pending_invoke;

static void pending_dispose(void *p)
{
    pending_invoke *pi = p;
    if (pi->inv) nb_inv_detach(pi->inv);
}

static void invoke_done(nb_inv *inv, void *ud)
{
    pending_invoke *pi = ud;
    pi->inv = NULL;
    h2o_req_t *req = pi->req;
    if (inv->throttled) {
        /* Both shapes: the platform's error object, and Lambda's errorType that SDKs and
         * retry loops look for. */
        char ra[16];
        snprintf(ra, sizeof ra, "%d", inv->retry_after_s);
        nb_http_header(req, "retry-after", ra);
        nb_http_send_json(req, 429,
                          json_pack("{s:{s:s, s:s}, s:s, s:s, s:s}", "error", "code", NB_E_TOO_MANY,
                                    "message", inv->body, "errorType", inv->error_type,
                                    "errorMessage", inv->body, "reason", inv->throttle_reason));
        return;
    }
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)inv->ver->version);
    nb_http_header(req, "x-nimbus-executed-version", v);
    if (inv->outcome != NB_OUTCOME_OK) {
        nb_http_header(req, "x-nimbus-function-error",
                       inv->outcome == NB_OUTCOME_HANDLED ? "Handled" : "Unhandled");
        nb_http_send(req, 200, "application/json", inv->body, inv->body_len);
        return;
    }
    nb_http_send(req, 200, inv->content_type[0] ? inv->content_type : "application/json", inv->body,
                 inv->body_len);
}

static void invoke_async(route_args *a);

static void r_invoke(route_args *a)
{
    nb_api *api = a->api;
    char itype[32];
    if (nb_http_req_header(a->req, "x-nimbus-invocation-type", itype, sizeof itype)) {
        if (strcasecmp(itype, "Event") == 0) {
            invoke_async(a);
            return;
        }
        if (strcasecmp(itype, "RequestResponse") != 0) {
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                          "X-Nimbus-Invocation-Type must be RequestResponse or Event");
            return;
        }
    }
    long long version = 0;
    if (parse_int_param(a, "version", 1, INT64_MAX, &version) < 0) return;
    if (body_too_big(a, NB_INVOKE_MAX_BODY)) return;
    if (api->draining) {
        nb_http_error(a->req, 503, NB_E_UNAVAILABLE, "nimbus is shutting down");
        return;
    }
    nb_fn_version *ver = NULL;
    nb_err err = {0};
    nb_fn_version *latest = nb_invoker_latest(api->invoker, a->ns, a->name);
    if (!latest) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "function '%s' not found", a->name);
        return;
    }
    if (version == 0 || version == latest->version) {
        ver = nb_fn_version_ref(latest);
    } else if (!(ver = api->store->ops->fn_get(api->store, a->ns, a->name, version, NULL, &err))) {
        nb_http_send_error(a->req, &err);
        return;
    }
    pending_invoke *pi = h2o_mem_alloc_shared(&a->req->pool, sizeof *pi, pending_dispose);
    pi->req = a->req;
    pi->inv = NULL;
    const char *event = a->req->entity.base ? a->req->entity.base : "";
    nb_invoke(api->invoker, ver, event, a->req->entity.len, a->request_id, invoke_done, pi,
              &pi->inv);
    nb_fn_version_unref(ver);
}

/* ---------- logs ---------- */

struct nb_api_follower {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    h2o_req_t *req;
    nb_api *api;
    nb_logs_sub *sub;
    nb_buf pending;  /* records not yet handed to h2o */
    nb_buf inflight; /* handed to h2o, valid until proceed */
    int sending, stopped, end_when_sent;
    nb_api_follower *next;
    /* An API's access records: polled from the access log (they are in SQLite, not in the
     * function logs' live stream). */
    uv_timer_t *poll;
    char ns[NB_NAME_MAX + 1], apiname[NB_NAME_MAX + 1];
    int status_class, status;
    int64_t after_id;
};

static void follower_unlink(nb_api_follower *f)
{
    for (nb_api_follower **p = &f->api->followers; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            return;
        }
    }
}

enum flush_mode { FLUSH_IF_PENDING, FLUSH_ALWAYS, FLUSH_FINAL };

/* Hands pending records to h2o unless a send is still in flight (h2o allows one at a time;
 * proceed() calls back here). FLUSH_ALWAYS sends even nothing, which puts the headers on the
 * wire; FLUSH_FINAL ends the stream. */
static void follower_flush(nb_api_follower *f, enum flush_mode mode)
{
    if (f->stopped || f->sending) return;
    if (!f->pending.len && mode == FLUSH_IF_PENDING) return;
    nb_buf tmp = f->inflight;
    f->inflight = f->pending;
    f->pending = tmp;
    nb_buf_reset(&f->pending);
    h2o_iovec_t buf = h2o_iovec_init(f->inflight.data ? f->inflight.data : "", f->inflight.len);
    f->sending = 1;
    if (mode == FLUSH_FINAL) {
        f->stopped = 1;
        if (f->sub) nb_logs_unsubscribe(f->api->logs, f->sub);
        f->sub = NULL;
        if (f->poll) uv_close((uv_handle_t *)f->poll, (uv_close_cb)free);
        f->poll = NULL;
        follower_unlink(f);
    }
    h2o_send(f->req, &buf, 1,
             mode == FLUSH_FINAL ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void follower_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    nb_api_follower *f = (nb_api_follower *)g;
    f->sending = 0;
    nb_buf_reset(&f->inflight);
    follower_flush(f, f->end_when_sent ? FLUSH_FINAL : FLUSH_IF_PENDING);
}

static void follower_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    nb_api_follower *f = (nb_api_follower *)g;
    if (f->stopped) return;
    f->stopped = 1;
    if (f->sub) nb_logs_unsubscribe(f->api->logs, f->sub);
    f->sub = NULL;
    if (f->poll) uv_close((uv_handle_t *)f->poll, (uv_close_cb)free);
    f->poll = NULL;
    follower_unlink(f);
}

static void follower_dispose(void *p)
{
    nb_api_follower *f = p;
    follower_stop(&f->gen, f->req);
    nb_buf_free(&f->pending);
    nb_buf_free(&f->inflight);
}

static void follower_record(void *ud, const char *rec, size_t len)
{
    nb_api_follower *f = ud;
    /* A follower that cannot keep up loses the oldest unsent records, never the daemon's
     * memory: the pending buffer is capped. */
    if (nb_buf_append(&f->pending, rec, len) < 0) {
        nb_buf_reset(&f->pending);
        nb_buf_append(&f->pending, rec, len);
    }
    follower_flush(f, FLUSH_IF_PENDING);
}

void nb_api_end_streams(nb_api *api)
{
    while (api->followers) {
        nb_api_follower *f = api->followers;
        if (f->sending) { /* one send at a time: proceed() ends it */
            f->end_when_sent = 1;
            follower_unlink(f);
            continue;
        }
        follower_flush(f, FLUSH_FINAL);
    }
}

static void r_logs(route_args *a)
{
    nb_api *api = a->api;
    long long since = 0, limit = 1000, follow = 0;
    if (parse_int_param(a, "since", 0, INT64_MAX, &since) < 0 ||
        parse_int_param(a, "limit", 0, 100000, &limit) < 0 ||
        parse_int_param(a, "follow", 0, 1, &follow) < 0)
        return;
    nb_err err = {0};
    nb_fn_version *v = api->store->ops->fn_get(api->store, a->ns, a->name, 0, NULL, &err);
    if (!v) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_fn_version_unref(v);
    nb_buf out;
    nb_buf_init(&out, 64u << 20);
    if (nb_logs_read(api->logs, a->ns, a->name, since, (size_t)limit, &out, &err) < 0) {
        nb_buf_free(&out);
        nb_http_send_error(a->req, &err);
        return;
    }
    if (!follow) {
        nb_http_send(a->req, 200, "application/x-ndjson", out.data ? out.data : "", out.len);
        nb_buf_free(&out);
        return;
    }
    nb_api_follower *f = h2o_mem_alloc_shared(&a->req->pool, sizeof *f, follower_dispose);
    memset(f, 0, sizeof *f);
    f->gen.proceed = follower_proceed;
    f->gen.stop = follower_stop;
    f->req = a->req;
    f->api = api;
    nb_buf_init(&f->pending, 4u << 20);
    nb_buf_init(&f->inflight, 4u << 20);
    f->next = api->followers;
    api->followers = f;
    f->sub = nb_logs_subscribe(api->logs, a->ns, a->name, follower_record, f);
    a->req->res.status = 200;
    a->req->res.reason = "OK";
    nb_http_header(a->req, "content-type", "application/x-ndjson");
    h2o_start_response(a->req, &f->gen);
    if (out.len) nb_buf_append(&f->pending, out.data, out.len);
    nb_buf_free(&out);
    follower_flush(f, FLUSH_ALWAYS);
}

/* ---------- API gateway objects ---------- */

ADMIN_LOCKED(a->api, r_api_put)
ADMIN_LOCKED(a->api, r_api_delete)
ADMIN_LOCKED(a->api, r_route_add)
ADMIN_LOCKED(a->api, r_route_delete)
ADMIN_LOCKED(a->api, r_share_add)
ADMIN_LOCKED(a->api, r_share_delete)
ADMIN_LOCKED(a->api, r_plan_put)
ADMIN_LOCKED(a->api, r_plan_delete)
ADMIN_LOCKED(a->api, r_cred_create)
ADMIN_LOCKED(a->api, r_cred_update)
ADMIN_LOCKED(a->api, r_cred_rotate)
ADMIN_LOCKED(a->api, r_cred_delete)

/* After a change: every loop's next gateway request sees it. */
static int gw_changed(route_args *a)
{
    nb_err err = {0};
    if (a->api->gw && nb_gw_reload(a->api->gw, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return -1;
    }
    return 0;
}

static json_t *obj_json(const nb_obj *o)
{
    json_t *j = json_loads(o->body, 0, NULL);
    return j ? j : json_object();
}

/* The stored object (body parsed) or NULL having answered (404 when absent). */
static json_t *obj_load(route_args *a, const char *kind, const char *name, nb_obj *o)
{
    nb_err err = {0};
    int rc = a->api->store->ops->obj_get(a->api->store, a->ns, kind, name, o, &err);
    if (rc < 0) {
        nb_http_send_error(a->req, &err);
        return NULL;
    }
    if (rc == 0) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "%s '%s' not found", kind, name);
        return NULL;
    }
    return obj_json(o);
}

static json_t *obj_view(const char *kind, const nb_obj *o)
{
    json_t *b = obj_json(o);
    json_t *v = nb_gw_admin_view(kind, o->name, b, o->created_at, o->updated_at);
    json_decref(b);
    return v;
}

static void list_kind(route_args *a, const char *kind, const char *prefix, const char *key)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (a->api->store->ops->obj_list(a->api->store, a->ns, kind, prefix, &objs, &n, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, obj_view(kind, &objs[i]));
    nb_obj_free_list(objs, n);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", key, arr));
}

static int obj_write(route_args *a, const char *kind, const char *name, json_t *body,
                     enum nb_obj_put_mode mode, int *created)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    nb_err err = {0};
    int rc =
        a->api->store->ops->obj_put(a->api->store, a->ns, kind, name, text, mode, created, &err);
    free(text);
    if (rc < 0) nb_http_send_error(a->req, &err);
    return rc;
}

/* 1 when the plan named by field exists (or the field is absent/null), else answers 400. */
static int plan_exists(route_args *a, const json_t *body, const char *field)
{
    const char *p = json_string_value(json_object_get(body, field));
    if (!p) return 1;
    nb_obj o = {0};
    nb_err err = {0};
    int rc = a->api->store->ops->obj_get(a->api->store, a->ns, "plan", p, &o, &err);
    nb_obj_clear(&o);
    if (rc == 1) return 1;
    if (rc < 0)
        nb_http_send_error(a->req, &err);
    else
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "%s: plan '%s' does not exist", field, p);
    return 0;
}

/* 1 when the API of the path exists; else 0, having answered (404). */
static int api_exists(route_args *a)
{
    nb_obj o = {0};
    json_t *j = obj_load(a, "api", a->name, &o);
    nb_obj_clear(&o);
    json_decref(j);
    return j != NULL;
}

/* Whether path p is at or below base ("/" is above everything). */
static int path_under(const char *p, const char *base)
{
    size_t n = strlen(base);
    if (strcmp(base, "/") == 0) return 1;
    return strncmp(p, base, n) == 0 && (p[n] == 0 || p[n] == '/');
}

static void r_apis(route_args *a)
{
    list_kind(a, "api", NULL, "apis");
}

static void r_api_put_locked(route_args *a)
{
    json_t *in = json_body(a);
    if (!in) return;
    nb_obj cur = {0};
    nb_err err = {0};
    int found = a->api->store->ops->obj_get(a->api->store, a->ns, "api", a->name, &cur, &err);
    json_t *curj = found == 1 ? obj_json(&cur) : NULL;
    json_t *body = found < 0 ? NULL : nb_gw_admin_api(a->name, in, curj, &err);
    json_decref(in);
    json_decref(curj);
    nb_obj_clear(&cur);
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    /* One API per base path over every namespace: the gateway listener is shared. */
    const char *base = json_string_value(json_object_get(body, "base_path"));
    nb_obj *all;
    size_t n;
    if (a->api->store->ops->obj_list(a->api->store, NULL, "api", NULL, &all, &n, &err) < 0) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = obj_json(&all[i]);
        const char *other = json_string_value(json_object_get(o, "base_path")) ?: "";
        int self = strcmp(all[i].ns, a->ns) == 0 && strcmp(all[i].name, a->name) == 0;
        /* The same path, or (across namespaces) one under the other: another namespace's API
         * must never receive a share of this one's traffic and its callers' credentials. */
        int clash = !self && (strcmp(other, base) == 0 ||
                              (strcmp(all[i].ns, a->ns) != 0 &&
                               (path_under(base, other) || path_under(other, base))));
        if (clash) {
            nb_http_error(a->req, 409, NB_E_CONFLICT, "base path %s clashes with %s of API %s/%s",
                          base, other, all[i].ns, all[i].name);
            json_decref(o);
            nb_obj_free_list(all, n);
            json_decref(body);
            return;
        }
        json_decref(o);
    }
    nb_obj_free_list(all, n);
    int created = 0;
    if (!plan_exists(a, body, "plan") ||
        obj_write(a, "api", a->name, body, NB_OBJ_UPSERT, &created) < 0 || gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    nb_info("api", "%s gateway API %s/%s at %s", created ? "created" : "updated", a->ns, a->name,
            base);
    json_t *v = nb_gw_admin_view("api", a->name, body, 0, 0);
    json_object_del(v, "created_at");
    json_object_del(v, "updated_at");
    json_decref(body);
    nb_http_send_json(a->req, created ? 201 : 200, v);
}

static void r_api_get(route_args *a)
{
    nb_obj o = {0};
    json_t *j = obj_load(a, "api", a->name, &o);
    if (!j) return;
    json_decref(j);
    json_t *v = obj_view("api", &o);
    nb_obj_clear(&o);
    char prefix[NB_NAME_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", a->name);
    nb_obj *rs;
    size_t n;
    nb_err err = {0};
    if (a->api->store->ops->obj_list(a->api->store, a->ns, "route", prefix, &rs, &n, &err) < 0) {
        json_decref(v);
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, obj_view("route", &rs[i]));
    nb_obj_free_list(rs, n);
    json_object_set_new(v, "routes", arr);
    nb_http_send_json(a->req, 200, v);
}

static void r_api_delete_locked(route_args *a)
{
    nb_err err = {0};
    char prefix[NB_NAME_MAX + 3];
    snprintf(prefix, sizeof prefix, "%s/*", a->name);
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, "api", a->name, &err) < 0 ||
        a->api->store->ops->obj_delete(a->api->store, a->ns, "route", prefix, &err) < 0 ||
        a->api->store->ops->obj_delete(a->api->store, a->ns, "share", prefix, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (gw_changed(a) < 0) return;
    nb_info("api", "deleted gateway API %s/%s", a->ns, a->name);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* An API's objects of kind (named "API/..."), listed under key. */
static void list_of_api(route_args *a, const char *kind, const char *key)
{
    if (!api_exists(a)) return;
    char prefix[NB_NAME_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", a->name);
    list_kind(a, kind, prefix, key);
}

static void r_routes(route_args *a)
{
    list_of_api(a, "route", "routes");
}

static void r_route_add_locked(route_args *a)
{
    if (!api_exists(a)) return;
    json_t *in = json_body(a);
    if (!in) return;
    nb_err err = {0};
    json_t *body = nb_gw_admin_route(in, &err);
    json_decref(in);
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    /* Conflicts are found by building the API's table with the new route last. */
    char prefix[NB_NAME_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", a->name);
    nb_obj *rs;
    size_t n;
    if (a->api->store->ops->obj_list(a->api->store, a->ns, "route", prefix, &rs, &n, &err) < 0) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_rt *t = nb_rt_new();
    for (size_t i = 0; i < n; i++) {
        json_t *r = obj_json(&rs[i]);
        nb_err ignored = {0};
        nb_rt_add(t, json_string_value(json_object_get(r, "method")) ?: "",
                  json_string_value(json_object_get(r, "path")) ?: "", NULL, &ignored);
        json_decref(r);
    }
    nb_obj_free_list(rs, n);
    int rc = nb_rt_add(t, json_string_value(json_object_get(body, "method")),
                       json_string_value(json_object_get(body, "path")), NULL, &err);
    nb_rt_free(t);
    if (rc < 0) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    char id[16], name[NB_NAME_MAX + 20];
    id[0] = 'r';
    nb_random_hex(id + 1, 4);
    snprintf(name, sizeof name, "%s/%s", a->name, id);
    json_object_set_new(body, "id", json_string(id));
    json_object_set_new(body, "api", json_string(a->name));
    if (obj_write(a, "route", name, body, NB_OBJ_CREATE, NULL) < 0 || gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    nb_info("api", "gateway API %s/%s: route %s %s -> %s", a->ns, a->name,
            json_string_value(json_object_get(body, "method")),
            json_string_value(json_object_get(body, "path")),
            json_string_value(json_object_get(body, "function")));
    nb_http_send_json(a->req, 201, body);
}

static void r_route_delete_locked(route_args *a)
{
    char name[NB_NAME_MAX + 260];
    snprintf(name, sizeof name, "%s/%s", a->name, a->sub);
    nb_err err = {0};
    if (strchr(a->sub, '*') ||
        a->api->store->ops->obj_delete(a->api->store, a->ns, "route", name, &err) < 0) {
        if (!err.status) nb_err_set(&err, 404, NB_E_NOT_FOUND, "route '%s' not found", a->sub);
        nb_http_send_error(a->req, &err);
        return;
    }
    if (gw_changed(a) < 0) return;
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->sub));
}

/* "name", "ns/name": the consumer's namespace (default: the API's) and name. */
static int split_consumer(route_args *a, const char *c, char *ns, char *name)
{
    const char *slash = strchr(c, '/');
    size_t nslen = slash ? (size_t)(slash - c) : 0;
    if (slash && (nslen > NB_NAME_MAX || strlen(slash + 1) > NB_NAME_MAX)) {
        ns[0] = 0; /* too long: refused below, never cut down into another valid name */
    } else if (slash) {
        snprintf(ns, NB_NAME_MAX + 1, "%.*s", (int)nslen, c);
        snprintf(name, NB_NAME_MAX + 1, "%s", slash + 1);
    } else {
        snprintf(ns, NB_NAME_MAX + 1, "%s", a->ns);
        snprintf(name, NB_NAME_MAX + 1, "%s", c);
    }
    if (!nb_fn_valid_name(ns) || !nb_fn_valid_name(name)) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                      "consumer must be NAME or NAMESPACE/NAME of a key or client");
        return -1;
    }
    return 0;
}

static void r_shares(route_args *a)
{
    list_of_api(a, "share", "shares");
}

static void r_share_add_locked(route_args *a)
{
    if (!api_exists(a)) return;
    json_t *in = json_body(a);
    if (!in) return;
    const char *consumer = json_string_value(json_object_get(in, "consumer"));
    const char *kind = json_string_value(json_object_get(in, "kind"));
    const json_t *plan = json_object_get(in, "plan");
    char cns[NB_NAME_MAX + 1], cname[NB_NAME_MAX + 1];
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        if (strcmp(k, "consumer") && strcmp(k, "kind") && strcmp(k, "plan")) {
            nb_http_error(a->req, 400, NB_E_UNKNOWN_FIELD, "unknown field '%s'", k);
            json_decref(in);
            return;
        }
    }
    if (!consumer || split_consumer(a, consumer, cns, cname) < 0) {
        if (!consumer)
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "consumer: required (NAME or NS/NAME)");
        json_decref(in);
        return;
    }
    if (kind && strcmp(kind, "key") != 0 && strcmp(kind, "client") != 0) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "kind: must be key or client");
        json_decref(in);
        return;
    }
    if (plan && !json_is_null(plan) && !json_is_string(plan)) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "plan: must be a plan name or null");
        json_decref(in);
        return;
    }
    /* The consumer: a key, else a client, of that name in its namespace (kind may say which). */
    nb_err err = {0};
    const char *found_kind = NULL;
    static const char *const kinds[] = {"key", "client"};
    for (int i = 0; i < 2 && !found_kind; i++) {
        if (kind && strcmp(kind, kinds[i]) != 0) continue;
        nb_obj c = {0};
        if (a->api->store->ops->obj_get(a->api->store, cns, kinds[i], cname, &c, &err) == 1)
            found_kind = kinds[i];
        nb_obj_clear(&c);
    }
    if (!found_kind) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "no %s '%s/%s' to share with",
                      kind ? kind : "key or client", cns, cname);
        json_decref(in);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "api", a->name, "consumer_ns", cns, "consumer",
                             cname, "kind", found_kind);
    if (plan && json_is_string(plan)) json_object_set_new(body, "plan", json_copy((json_t *)plan));
    json_decref(in);
    char name[4 * NB_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s/%s/%s/%s", a->name, cns, found_kind, cname);
    int created = 0;
    if (!plan_exists(a, body, "plan") ||
        obj_write(a, "share", name, body, NB_OBJ_UPSERT, &created) < 0 || gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    nb_info("api", "gateway API %s/%s shared with %s %s/%s", a->ns, a->name, found_kind, cns,
            cname);
    nb_http_send_json(a->req, created ? 201 : 200, body);
}

static void r_share_delete_locked(route_args *a)
{
    char cns[NB_NAME_MAX + 1], cname[NB_NAME_MAX + 1];
    if (split_consumer(a, a->sub, cns, cname) < 0) return;
    nb_err err = {0};
    int deleted = 0;
    static const char *const kinds[] = {"key", "client"};
    for (int i = 0; i < 2; i++) {
        char name[4 * NB_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s/%s/%s/%s", a->name, cns, kinds[i], cname);
        if (a->api->store->ops->obj_delete(a->api->store, a->ns, "share", name, &err) == 0)
            deleted = 1;
        else if (err.status != 404) {
            nb_http_send_error(a->req, &err);
            return;
        }
    }
    if (!deleted) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "API %s is not shared with %s/%s", a->name, cns,
                      cname);
        return;
    }
    if (gw_changed(a) < 0) return;
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "unshared", a->sub));
}

/* "24h", "30m", "7d", "90s" or plain seconds -> ms; -1 when malformed. */
static int64_t parse_since(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0) return -1;
    long long mul = 1000;
    if (*end == 's')
        mul = 1000, end++;
    else if (*end == 'm')
        mul = 60000, end++;
    else if (*end == 'h')
        mul = 3600000, end++;
    else if (*end == 'd')
        mul = 86400000, end++;
    if (*end) return -1;
    return v * mul;
}

/* Fills an access-log filter from the query: since, status (5xx or 404), limit. */
static int alog_filter(route_args *a, nb_alog_filter *f)
{
    memset(f, 0, sizeof *f);
    f->ns = a->ns;
    f->api = a->name;
    char buf[32];
    if (query_param(a->query, "since", buf, sizeof buf)) {
        int64_t ms = parse_since(buf);
        if (ms < 0) {
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                          "since must be a duration such as 90s, 30m, 24h or 7d");
            return -1;
        }
        f->since_ms = nb_now_ms() - ms;
    }
    if (query_param(a->query, "status", buf, sizeof buf)) {
        if (strlen(buf) == 3 && buf[0] >= '1' && buf[0] <= '5' && buf[1] == 'x' && buf[2] == 'x')
            f->status_class = buf[0] - '0';
        else if (strlen(buf) == 3 && atoi(buf) >= 100 && atoi(buf) <= 599)
            f->status = atoi(buf);
        else {
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                          "status must be a class such as 5xx or a code such as 404");
            return -1;
        }
    }
    long long limit = 100;
    if (parse_int_param(a, "limit", 1, 10000, &limit) < 0) return -1;
    f->limit = (int)limit;
    return 0;
}

static void r_api_usage(route_args *a)
{
    if (!api_exists(a)) return;
    nb_alog_filter f;
    if (alog_filter(a, &f) < 0) return;
    char by[16] = "route";
    query_param(a->query, "by", by, sizeof by);
    if (strcmp(by, "key") && strcmp(by, "route") && strcmp(by, "status") && strcmp(by, "day") &&
        strcmp(by, "api")) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "by must be key, route, status or day");
        return;
    }
    nb_err err = {0};
    nb_alog_flush(a->api->alog);
    json_t *rows = nb_alog_usage(a->api->alog, &f, by, &err);
    if (!rows) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200,
                      json_pack("{s:s, s:s, s:o}", "api", a->name, "by", by, "usage", rows));
}

static void send_records(nb_api_follower *f, json_t *rows)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        char *line = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t n = strlen(line);
        line[n] = '\n';
        follower_record(f, line, n + 1);
        free(line);
    }
}

static void api_logs_poll(uv_timer_t *t)
{
    nb_api_follower *f = t->data;
    if (f->stopped) return;
    nb_alog_filter flt = {.ns = f->ns,
                          .api = f->apiname,
                          .status_class = f->status_class,
                          .status = f->status,
                          .after_id = f->after_id,
                          .limit = 1000};
    nb_err err = {0};
    json_t *rows = nb_alog_query(f->api->alog, &flt, &f->after_id, &err);
    if (rows) send_records(f, rows);
    json_decref(rows);
}

static void r_api_logs(route_args *a)
{
    if (!api_exists(a)) return;
    nb_alog_filter flt;
    if (alog_filter(a, &flt) < 0) return;
    long long follow = 0;
    if (parse_int_param(a, "follow", 0, 1, &follow) < 0) return;
    nb_err err = {0};
    nb_alog_flush(a->api->alog);
    int64_t last = 0;
    json_t *rows = nb_alog_query(a->api->alog, &flt, &last, &err);
    if (!rows) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (!follow) {
        nb_http_send_json(a->req, 200, json_pack("{s:s, s:o}", "api", a->name, "records", rows));
        return;
    }
    nb_api_follower *f = h2o_mem_alloc_shared(&a->req->pool, sizeof *f, follower_dispose);
    memset(f, 0, sizeof *f);
    f->gen.proceed = follower_proceed;
    f->gen.stop = follower_stop;
    f->req = a->req;
    f->api = a->api;
    snprintf(f->ns, sizeof f->ns, "%s", a->ns);
    snprintf(f->apiname, sizeof f->apiname, "%s", a->name);
    f->status_class = flt.status_class;
    f->status = flt.status;
    f->after_id = last;
    nb_buf_init(&f->pending, 4u << 20);
    nb_buf_init(&f->inflight, 4u << 20);
    f->next = a->api->followers;
    a->api->followers = f;
    f->poll = malloc(sizeof *f->poll);
    if (!f->poll) abort();
    uv_timer_init(a->req->conn->ctx->loop, f->poll);
    f->poll->data = f;
    uv_timer_start(f->poll, api_logs_poll, 250, 250);
    a->req->res.status = 200;
    a->req->res.reason = "OK";
    nb_http_header(a->req, "content-type", "application/x-ndjson");
    h2o_start_response(a->req, &f->gen);
    send_records(f, rows);
    json_decref(rows);
    follower_flush(f, FLUSH_ALWAYS);
}

static void r_plans(route_args *a)
{
    list_kind(a, "plan", NULL, "plans");
}

static void r_plan_put_locked(route_args *a)
{
    if (!nb_fn_valid_name(a->name)) {
        nb_http_error(a->req, 400, NB_E_INVALID_NAME, "invalid plan name: [A-Za-z0-9_-]{1,64}");
        return;
    }
    json_t *in = json_body(a);
    if (!in) return;
    nb_obj cur = {0};
    nb_err err = {0};
    int found = a->api->store->ops->obj_get(a->api->store, a->ns, "plan", a->name, &cur, &err);
    json_t *curj = found == 1 ? obj_json(&cur) : NULL;
    json_t *body = found < 0 ? NULL : nb_gw_admin_plan(in, curj, &err);
    json_decref(in);
    json_decref(curj);
    nb_obj_clear(&cur);
    int created = 0;
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (obj_write(a, "plan", a->name, body, NB_OBJ_UPSERT, &created) < 0 || gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    json_object_set_new(body, "name", json_string(a->name));
    nb_http_send_json(a->req, created ? 201 : 200, body);
}

/* A plan in use stays: deleting it would silently lift the limits of its keys. */
static void r_plan_delete_locked(route_args *a)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (a->api->store->ops->obj_list(a->api->store, a->ns, NULL, NULL, &objs, &n, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "plan") == 0 || strcmp(objs[i].kind, "route") == 0) continue;
        json_t *j = obj_json(&objs[i]);
        int uses = strcmp(json_string_value(json_object_get(j, "plan")) ?: "", a->name) == 0;
        json_decref(j);
        if (uses) {
            nb_http_error(a->req, 409, NB_E_CONFLICT, "plan '%s' is used by %s '%s'", a->name,
                          objs[i].kind, objs[i].name);
            nb_obj_free_list(objs, n);
            return;
        }
    }
    nb_obj_free_list(objs, n);
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, "plan", a->name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (gw_changed(a) < 0) return;
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* "key" or "client": the route table says. */
static const char *cred_kind(route_args *a)
{
    return a->kind;
}

static void r_creds(route_args *a)
{
    const char *kind = cred_kind(a);
    list_kind(a, kind, NULL, strcmp(kind, "key") == 0 ? "keys" : "clients");
}

static void r_cred_get(route_args *a)
{
    const char *kind = cred_kind(a);
    nb_obj o = {0};
    json_t *j = obj_load(a, kind, a->name, &o);
    if (!j) return;
    json_decref(j);
    json_t *v = obj_view(kind, &o);
    nb_obj_clear(&o);
    nb_http_send_json(a->req, 200, v);
}

static json_t *cred_body(const char *kind, const json_t *in, const json_t *cur, char *secret,
                         size_t size, nb_err *err)
{
    return strcmp(kind, "key") == 0 ? nb_gw_admin_key(in, cur, secret, size, err)
                                    : nb_gw_admin_client(in, cur, secret, size, err);
}

static void cred_answer(route_args *a, const char *kind, const char *name, json_t *body,
                        const char *secret, int status)
{
    json_t *v = nb_gw_admin_view(kind, name, body, nb_now_ms(), nb_now_ms());
    json_object_del(v, "created_at");
    json_object_del(v, "updated_at");
    if (secret[0])
        json_object_set_new(v, strcmp(kind, "key") == 0 ? "key" : "client_secret",
                            json_string(secret));
    nb_http_send_json(a->req, status, v);
}

static void r_cred_create_locked(route_args *a)
{
    const char *kind = cred_kind(a);
    json_t *in = json_body(a);
    if (!in) return;
    const char *name = json_string_value(json_object_get(in, "name"));
    if (!name || !nb_fn_valid_name(name)) {
        nb_http_error(a->req, 400, NB_E_INVALID_NAME, "name: required, [A-Za-z0-9_-]{1,64}");
        json_decref(in);
        return;
    }
    if (json_object_get(in, "rotate")) {
        nb_http_error(a->req, 400, NB_E_UNKNOWN_FIELD, "unknown field 'rotate'");
        json_decref(in);
        return;
    }
    char secret[128], cname[NB_NAME_MAX + 1];
    snprintf(cname, sizeof cname, "%s", name);
    nb_err err = {0};
    json_t *body = cred_body(kind, in, NULL, secret, sizeof secret, &err);
    json_decref(in);
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (!plan_exists(a, body, "plan") || obj_write(a, kind, cname, body, NB_OBJ_CREATE, NULL) < 0 ||
        gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    nb_info("api", "created %s %s/%s", kind, a->ns, cname);
    cred_answer(a, kind, cname, body, secret, 201);
    json_decref(body);
}

static void cred_change(route_args *a, json_t *in)
{
    const char *kind = cred_kind(a);
    nb_obj cur = {0};
    json_t *curj = obj_load(a, kind, a->name, &cur);
    nb_obj_clear(&cur);
    if (!curj) return;
    char secret[128];
    nb_err err = {0};
    json_t *body = cred_body(kind, in, curj, secret, sizeof secret, &err);
    json_decref(curj);
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (!plan_exists(a, body, "plan") ||
        obj_write(a, kind, a->name, body, NB_OBJ_UPDATE, NULL) < 0 || gw_changed(a) < 0) {
        json_decref(body);
        return;
    }
    cred_answer(a, kind, a->name, body, secret, 200);
    json_decref(body);
}

static void r_cred_update_locked(route_args *a)
{
    json_t *in = json_body(a);
    if (!in) return;
    if (json_object_get(in, "rotate") || json_object_get(in, "name")) {
        nb_http_error(a->req, 400, NB_E_UNKNOWN_FIELD, "only enabled, plan%s may change",
                      strcmp(cred_kind(a), "client") == 0 ? " and scopes" : "");
        json_decref(in);
        return;
    }
    cred_change(a, in);
    json_decref(in);
}

static void r_cred_rotate_locked(route_args *a)
{
    json_t *in = json_pack("{s:b}", "rotate", 1);
    cred_change(a, in);
    json_decref(in);
}

static void r_cred_delete_locked(route_args *a)
{
    const char *kind = cred_kind(a);
    nb_err err = {0};
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, kind, a->name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    if (gw_changed(a) < 0) return;
    nb_info("api", "deleted %s %s/%s", kind, a->ns, a->name);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* ---------- async invocations, queues ---------- */

#define NB_ASYNC_MAX_BODY NB_ASYNC_MAX_EVENT

/* A durable send answered when its commit is done: lives in the request's pool; the pool's
 * disposal (client gone) leaves only a flag for the commit's answer to find. */
typedef struct pending_send {
    h2o_req_t *req;
    nb_api *api;
    int gone;
    int refs; /* the pool's and the send's */
    int status;
    char msg[256];
    int nids;
    char (*ids)[37];
    int async;         /* an async invoke: 202 with the request id */
    int topic;         /* a topic's publish: 202 with SNS's messageId */
    json_t *event_ids; /* POST /v1/events: 202 with the events' own ids */
} pending_send;

static void pending_send_unref(pending_send *p)
{
    if (--p->refs == 0) {
        free(p->ids);
        json_decref(p->event_ids);
        free(p);
    }
}

static void pending_send_dispose(void *x)
{
    pending_send *p = *(pending_send **)x;
    p->gone = 1;
    pending_send_unref(p);
}

static void send_answer(void *ud)
{
    pending_send *p = ud;
    if (!p->gone) {
        if (p->status != 0) {
            nb_http_error(p->req, p->status,
                          p->status == 413   ? NB_E_TOO_LARGE
                          : p->status == 404 ? NB_E_NOT_FOUND
                                             : NB_E_UNAVAILABLE,
                          "%s", p->msg);
        } else if (p->topic) {
            nb_http_send_json(p->req, 202, json_pack("{s:s}", "messageId", p->ids[0]));
        } else if (p->event_ids) {
            nb_http_send_json(p->req, 202,
                              json_pack("{s:I, s:O}", "accepted",
                                        (json_int_t)json_array_size(p->event_ids), "ids",
                                        p->event_ids));
        } else if (p->async) {
            nb_http_send_json(p->req, 202, json_pack("{s:s}", "request_id", p->ids[0]));
        } else {
            json_t *ids = json_array();
            for (int i = 0; i < p->nids; i++)
                json_array_append_new(ids, json_string(p->ids[i]));
            nb_http_send_json(p->req, 201, json_pack("{s:o}", "ids", ids));
        }
    }
    pending_send_unref(p);
}

/* The queue's writer thread: the answer goes back to the request's loop. */
static void send_done(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    pending_send *p = ud;
    p->status = status;
    snprintf(p->msg, sizeof p->msg, "%s", msg ? msg : "");
    if (status == 0 && n) {
        p->ids = malloc(n * sizeof *p->ids);
        if (!p->ids) abort();
        memcpy(p->ids, ids, n * sizeof *ids);
        p->nids = (int)n;
    }
    nb_async_post(p->api->port, send_answer, p);
}

static pending_send *pending_send_new(route_args *a, int async)
{
    pending_send *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->req = a->req;
    p->api = a->api;
    p->async = async;
    p->refs = 2;
    pending_send **slot = h2o_mem_alloc_shared(&a->req->pool, sizeof *slot, pending_send_dispose);
    *slot = p;
    return p;
}

static void invoke_async(route_args *a)
{
    nb_api *api = a->api;
    char v[8];
    if (query_param(a->query, "version", v, sizeof v)) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                      "async invocations run the latest version: version is not accepted");
        return;
    }
    if (body_too_big(a, NB_ASYNC_MAX_BODY)) return;
    /* Events travel on as text (records, SQS-shaped batches, the failure log's view). */
    if (!nb_utf8_valid(a->req->entity.base, a->req->entity.len)) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "an async event must be UTF-8 text");
        return;
    }
    if (api->draining) {
        nb_http_error(a->req, 503, NB_E_UNAVAILABLE, "nimbus is shutting down");
        return;
    }
    nb_fn_version *latest = nb_invoker_latest(api->invoker, a->ns, a->name);
    if (!latest) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "function '%s' not found", a->name);
        return;
    }
    nb_err err = {0};
    pending_send *p = pending_send_new(a, 1);
    char id[37];
    if (nb_async_enqueue(api->q, a->ns, a->name, a->req->entity.base, a->req->entity.len,
                         a->request_id, NULL, id, send_done, p, &err) < 0) {
        nb_http_send_error(a->req, &err);
        pending_send_unref(p);
    }
}

static void r_events_failed(route_args *a)
{
    char q[NB_Q_NAME_MAX + 1];
    nb_async_failed_queue(a->ns, a->name, q, sizeof q);
    long long limit = 100;
    if (parse_int_param(a, "limit", 1, 10000, &limit) < 0) return;
    json_t *arr = json_array();
    nb_q_msg *m = NULL;
    nb_err err = {0};
    int n = nb_q_exists(a->api->q, q) ? nb_q_peek(a->api->q, q, (int)limit, &m, &err) : 0;
    for (int i = 0; i < n; i++) {
        const char *rec = json_string_value(json_object_get(m[i].attrs, "record"));
        json_t *r = rec ? json_loads(rec, 0, NULL) : NULL;
        if (!r) r = json_pack("{s:{s:s}}", "requestContext", "requestId", m[i].id);
        /* The record leaves the payload out: the message's body is the event. */
        json_t *payload = json_loadb(m[i].body, m[i].body_len, JSON_DECODE_ANY, NULL);
        if (!payload) payload = json_stringn(m[i].body, m[i].body_len);
        json_object_set_new(r, "requestPayload", payload ? payload : json_null());
        json_array_append_new(arr, r);
    }
    nb_q_msgs_free(m, n > 0 ? (size_t)n : 0);
    nb_http_send_json(a->req, 200, json_pack("{s:s, s:o}", "function", a->name, "failed", arr));
}

static void r_events_redrive(route_args *a)
{
    char from[NB_Q_NAME_MAX + 1], to[NB_Q_NAME_MAX + 1];
    nb_async_failed_queue(a->ns, a->name, from, sizeof from);
    nb_async_fn_queue(a->ns, a->name, to, sizeof to);
    nb_fn_version *latest = nb_invoker_latest(a->api->invoker, a->ns, a->name);
    if (!latest) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "function '%s' not found", a->name);
        return;
    }
    nb_err err = {0};
    int64_t n = 0;
    if (nb_q_exists(a->api->q, from)) {
        if (nb_async_ensure_queue(a->api->q, to, &err) < 0 ||
            (n = nb_q_move_all_fresh(a->api->q, from, to, &err)) < 0) {
            nb_http_send_error(a->req, &err);
            return;
        }
    }
    nb_info("api", "%s/%s: %lld failed events sent again", a->ns, a->name, (long long)n);
    nb_async_notify(a->api->async, to);
    nb_http_send_json(a->req, 200, json_pack("{s:I}", "redriven", (json_int_t)n));
}

static json_t *queue_object(nb_api *api, const char *ns, const char *name)
{
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(ns, name, q, sizeof q);
    nb_q_config cfg;
    nb_q_stats st;
    nb_err err = {0};
    if (nb_q_get_config(api->q, q, &cfg, &err) < 0 || nb_q_get_stats(api->q, q, &st, &err) < 0)
        return NULL;
    const char *dl = cfg.dead_letter[0] ? strrchr(cfg.dead_letter, '/') + 1 : NULL;
    return json_pack("{s:s, s:s, s:I, s:I, s:i, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                     "s:I}}",
                     "namespace", ns, "name", name, "visibility_timeout_s",
                     (json_int_t)(cfg.visibility_timeout_ms / 1000), "retention_s",
                     (json_int_t)(cfg.retention_ms / 1000), "max_receives", cfg.max_receives,
                     "dead_letter", dl ? json_string(dl) : json_null(), "stats", "visible",
                     (json_int_t)st.visible, "in_flight", (json_int_t)st.inflight, "delayed",
                     (json_int_t)st.delayed, "oldest_ms", (json_int_t)st.oldest_ms, "sent",
                     (json_int_t)st.sent, "received", (json_int_t)st.received, "deleted",
                     (json_int_t)st.deleted, "dead_lettered", (json_int_t)st.dead_lettered,
                     "expired", (json_int_t)st.expired);
}

static void r_queues(route_args *a)
{
    char prefix[NB_Q_NAME_MAX + 1];
    snprintf(prefix, sizeof prefix, "q/%s/", a->ns);
    size_t n;
    char **names = nb_q_list(a->api->q, prefix, &n);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = queue_object(a->api, a->ns, names[i] + strlen(prefix));
        if (o) json_array_append_new(arr, o);
    }
    nb_q_names_free(names, n);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "queues", arr));
}

static void r_queue_get(route_args *a)
{
    json_t *o = queue_object(a->api, a->ns, a->name);
    if (!o) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "queue '%s' not found", a->name);
        return;
    }
    nb_http_send_json(a->req, 200, o);
}

static int queue_int(json_t *body, const char *k, long long lo, long long hi, long long dflt,
                     long long *out, nb_err *err)
{
    json_t *v = json_object_get(body, k);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s must be an integer in %lld..%lld", k,
                          lo, hi);
    *out = json_integer_value(v);
    return 0;
}

static void r_queue_put(route_args *a)
{
    json_t *body = json_body(a);
    if (!body) return;
    nb_err err = {0};
    static const char *const fields[] = {"visibility_timeout_s", "retention_s", "max_receives",
                                         "dead_letter", NULL};
    nb_json_known_fields(body, fields, &err);
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    nb_q_config cur;
    int exists = nb_q_get_config(a->api->q, q, &cur, &(nb_err){0}) == 0;
    long long vis = 30, ret = 345600, maxr = 0;
    nb_q_config cfg = {0};
    if (!err.status && queue_int(body, "visibility_timeout_s", 0, 43200,
                                 exists ? cur.visibility_timeout_ms / 1000 : 30, &vis, &err) == 0)
        if (queue_int(body, "retention_s", 60, 1209600, exists ? cur.retention_ms / 1000 : 345600,
                      &ret, &err) == 0)
            queue_int(body, "max_receives", 0, 1000, exists ? cur.max_receives : 0, &maxr, &err);
    json_t *dl = json_object_get(body, "dead_letter");
    if (!err.status && dl && !json_is_null(dl) &&
        (!json_is_string(dl) || !nb_fn_valid_name(json_string_value(dl))))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "dead_letter must be a queue name or null");
    if (!err.status) {
        cfg.visibility_timeout_ms = vis * 1000;
        cfg.retention_ms = ret * 1000;
        cfg.max_receives = (int)maxr;
        if (json_is_string(dl))
            nb_async_user_queue(a->ns, json_string_value(dl), cfg.dead_letter,
                                sizeof cfg.dead_letter);
        else if (exists && !dl)
            snprintf(cfg.dead_letter, sizeof cfg.dead_letter, "%s", cur.dead_letter);
        if (cfg.max_receives > 0 && !cfg.dead_letter[0])
            nb_err_set(&err, 400, NB_E_INVALID_VALUE, "max_receives needs a dead_letter queue");
    }
    json_decref(body);
    if (!err.status && (exists ? nb_q_update(a->api->q, q, &cfg, &err)
                               : nb_q_create(a->api->q, q, &cfg, &err)) == 0) {
        nb_http_send_json(a->req, exists ? 200 : 201, queue_object(a->api, a->ns, a->name));
        return;
    }
    nb_http_send_error(a->req, &err);
}

static void r_queue_delete(route_args *a)
{
    char q[NB_Q_NAME_MAX + 1], prefix[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    nb_err err = {0};
    /* A queue another one sends its dead letters to stays: deleting it would silently stop
     * their moves. */
    snprintf(prefix, sizeof prefix, "q/%s/", a->ns);
    size_t n;
    char **names = nb_q_list(a->api->q, prefix, &n);
    for (size_t i = 0; i < n && !err.status; i++) {
        nb_q_config cfg;
        nb_err ignored = {0};
        if (strcmp(names[i], q) != 0 && nb_q_get_config(a->api->q, names[i], &cfg, &ignored) == 0 &&
            strcmp(cfg.dead_letter, q) == 0)
            nb_err_set(&err, 409, NB_E_CONFLICT, "queue %s is the dead-letter queue of %s", a->name,
                       names[i] + strlen(prefix));
    }
    nb_q_names_free(names, n);
    if (err.status || nb_q_delete_queue(a->api->q, q, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* {"body": "...", "attributes": {...}, "delay_s": N} -> out (strings borrowed from m). */
static int message_in(json_t *m, nb_q_out *out, nb_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (strcmp(k, "body") && strcmp(k, "attributes") && strcmp(k, "delay_s"))
            return nb_err_set(err, 400, NB_E_UNKNOWN_FIELD, "unknown message field '%.64s'", k);
    }
    json_t *body = json_object_get(m, "body");
    if (!json_is_string(body))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a message needs a string body");
    json_t *attrs = json_object_get(m, "attributes");
    if (nb_async_check_attrs(attrs, err) < 0) return -1;
    long long delay = 0;
    if (queue_int(m, "delay_s", 0, 900, 0, &delay, err) < 0) return -1;
    *out =
        (nb_q_out){json_string_value(body), json_string_length(body), attrs, delay * 1000, NULL, 0};
    return 0;
}

/* A user's send to a queue is a platform event (nimbus.queue.message) per message, once they
 * are durable, when the namespace has rules. Only this route emits it: copies that nb_fan writes
 * (a rule's queue target) never come here, so a rule routing queue events to a queue cannot
 * feed itself. */
typedef struct queue_events {
    nb_api *api;
    pending_send *p;
    char ns[NB_NAME_MAX + 1], name[NB_NAME_MAX + 1];
    json_t *data; /* one object per message; messageId filled once known */
} queue_events;

static queue_events *queue_events_new(route_args *a, const nb_q_out *outs, size_t n)
{
    if (nb_bus_enabled_rules(a->api->bus, a->ns) == 0) return NULL;
    queue_events *qe = calloc(1, sizeof *qe);
    if (!qe) abort();
    qe->api = a->api;
    snprintf(qe->ns, sizeof qe->ns, "%s", a->ns);
    snprintf(qe->name, sizeof qe->name, "%s", a->name);
    qe->data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            qe->data,
            json_pack("{s:s, s:s%, s:o}", "queue", a->name, "body", outs[i].body, outs[i].body_len,
                      "attributes", outs[i].attrs ? json_deep_copy(outs[i].attrs) : json_object()));
    return qe;
}

static void queue_events_free(queue_events *qe)
{
    if (!qe) return;
    json_decref(qe->data);
    free(qe);
}

/* On the request's loop (not the writer thread, which must not wait on its own sends). */
static void queue_events_emit(void *ud)
{
    queue_events *qe = ud;
    size_t i;
    json_t *d;
    json_array_foreach(qe->data, i, d)
    {
        json_t *body = json_object_get(d, "body");
        nb_bus_queue_message(
            qe->api->bus, qe->ns, qe->name, json_string_value(json_object_get(d, "messageId")),
            json_string_value(body), json_string_length(body), json_object_get(d, "attributes"));
    }
    queue_events_free(qe);
}

static void queue_events_sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    queue_events *qe = ud;
    pending_send *p = qe->p;
    if (status == 0) {
        for (size_t i = 0; i < n && i < json_array_size(qe->data); i++)
            json_object_set_new(json_array_get(qe->data, i), "messageId", json_string(ids[i]));
        nb_async_post(qe->api->port, queue_events_emit, qe);
    } else {
        queue_events_free(qe);
    }
    send_done(p, status, msg, ids, n);
}

static void r_queue_send(route_args *a)
{
    /* Up to 100 messages of up to 1 MiB each, so not json_body's 256 KiB. */
    if (body_too_big(a, 8u << 20)) return;
    json_error_t je;
    json_t *body = json_loadb(a->req->entity.base ? a->req->entity.base : "", a->req->entity.len,
                              JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(body)) {
        json_decref(body);
        nb_http_error(a->req, 400, NB_E_INVALID_JSON, "body must be a JSON object");
        return;
    }
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    nb_err err = {0};
    json_t *list = json_object_get(body, "messages");
    size_t n = list ? json_array_size(list) : 1;
    if (list && (!json_is_array(list) || n == 0 || n > 100 || json_object_size(body) != 1))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE,
                   "send {body, attributes, delay_s} or {\"messages\": [1..100 of them]}");
    nb_q_out *outs = calloc(n, sizeof *outs);
    if (!outs) abort();
    for (size_t i = 0; i < n && !err.status; i++)
        message_in(list ? json_array_get(list, i) : body, &outs[i], &err);
    if (!err.status && !nb_q_exists(a->api->q, q))
        nb_err_set(&err, 404, NB_E_NOT_FOUND, "queue '%s' not found", a->name);
    if (!err.status) {
        pending_send *p = pending_send_new(a, 0);
        queue_events *qe = queue_events_new(a, outs, n);
        if (qe) qe->p = p;
        if (nb_q_send(a->api->q, q, outs, n, qe ? queue_events_sent : send_done,
                      qe ? (void *)qe : (void *)p, &err) < 0) {
            queue_events_free(qe);
            pending_send_unref(p);
        }
    }
    free(outs);
    json_decref(body);
    if (err.status) nb_http_send_error(a->req, &err);
}

static void r_queue_receive(route_args *a)
{
    json_t *body = a->req->entity.len ? json_body(a) : json_object();
    if (!body) return;
    nb_err err = {0};
    long long max = 1, vis = -1;
    if (queue_int(body, "max", 1, 100, 1, &max, &err) < 0 ||
        queue_int(body, "visibility_timeout_s", 0, 43200, -1, &vis, &err) < 0) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    json_decref(body);
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    nb_q_msg *m;
    /* 0 means "the queue's default" to the store; an explicit 0 here is 1 ms. */
    int n = nb_q_receive(a->api->q, q, (int)max, vis < 0 ? 0 : vis == 0 ? 1 : vis * 1000, &m, &err);
    if (n < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        char sent[32];
        nb_time_iso8601(m[i].sent_ms, sent, sizeof sent);
        json_t *o = json_pack("{s:s, s:s, s:s%, s:i, s:s}", "id", m[i].id, "receipt", m[i].receipt,
                              "body", m[i].body, m[i].body_len, "receive_count", m[i].receive_count,
                              "sent_at", sent);
        json_object_set_new(o, "attributes", m[i].attrs ? json_copy(m[i].attrs) : json_object());
        json_array_append_new(arr, o);
    }
    nb_q_msgs_free(m, (size_t)n);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "messages", arr));
}

static int hexdigit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static void r_queue_msg_delete(route_args *a)
{
    char q[NB_Q_NAME_MAX + 1], receipt[128];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    if (!query_param(a->query, "receipt", receipt, sizeof receipt)) {
        nb_http_error(a->req, 400, NB_E_INVALID_VALUE, "the receipt query parameter is required");
        return;
    }
    /* Receipts hold ':' and may come percent-encoded. */
    size_t o = 0;
    for (size_t i = 0; receipt[i]; i++) {
        int hi = receipt[i] == '%' ? hexdigit(receipt[i + 1]) : -1;
        int lo = hi >= 0 ? hexdigit(receipt[i + 2]) : -1;
        if (lo >= 0) {
            receipt[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            receipt[o++] = receipt[i] == '+' ? ' ' : receipt[i];
        }
    }
    receipt[o] = 0;
    nb_err err = {0};
    if (nb_q_delete(a->api->q, q, a->sub, receipt, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->sub));
}

ADMIN_LOCKED(a->api, r_queue_subscribe)
ADMIN_LOCKED(a->api, r_queue_unsubscribe)

static void r_queue_subscribe_locked(route_args *a)
{
    json_t *body = a->req->entity.len ? json_body(a) : json_object();
    if (!body) return;
    nb_err err = {0};
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(a->ns, a->name, q, sizeof q);
    long long bs = 10, bw = 0, mc = 5;
    static const char *const fields[] = {"batch_size", "batch_window_ms", "max_concurrency", NULL};
    nb_json_known_fields(body, fields, &err);
    if (!err.status && !nb_fn_valid_name(a->sub))
        nb_err_set(&err, 400, NB_E_INVALID_NAME, "invalid function name '%s'", a->sub);
    if (!err.status && !nb_q_exists(a->api->q, q))
        nb_err_set(&err, 404, NB_E_NOT_FOUND, "queue '%s' not found", a->name);
    nb_fn_version *fnv = err.status ? NULL : nb_invoker_latest(a->api->invoker, a->ns, a->sub);
    if (!err.status && !fnv)
        nb_err_set(&err, 404, NB_E_NOT_FOUND, "function '%s' not found", a->sub);
    nb_q_config qc;
    /* As Lambda: a batch must not become visible again while its invocation may still run
     * (it would be delivered twice, and its deletes refused). */
    if (!err.status && nb_q_get_config(a->api->q, q, &qc, &err) == 0 &&
        qc.visibility_timeout_ms < (int64_t)fnv->cfg.timeout_s * 1000)
        nb_err_set(&err, 400, NB_E_INVALID_VALUE,
                   "queue %s's visibility timeout (%lld s) is shorter than function %s's timeout "
                   "(%d s)",
                   a->name, (long long)(qc.visibility_timeout_ms / 1000), a->sub,
                   fnv->cfg.timeout_s);
    if (!err.status && queue_int(body, "batch_size", 1, 100, 10, &bs, &err) == 0 &&
        queue_int(body, "batch_window_ms", 0, 300000, 0, &bw, &err) == 0)
        queue_int(body, "max_concurrency", 1, 1000, 5, &mc, &err);
    json_decref(body);
    if (err.status) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *sub = json_pack("{s:s, s:s, s:I, s:I, s:I}", "queue", a->name, "function", a->sub,
                            "batch_size", (json_int_t)bs, "batch_window_ms", (json_int_t)bw,
                            "max_concurrency", (json_int_t)mc);
    char name[2 * NB_NAME_MAX + 2];
    snprintf(name, sizeof name, "%s/%s", a->name, a->sub);
    int created = 0;
    if (obj_write(a, "subscription", name, sub, NB_OBJ_UPSERT, &created) == 0) {
        nb_async_reload(a->api->async);
        nb_http_send_json(a->req, created ? 201 : 200, sub);
        return;
    }
    json_decref(sub);
}

static void r_queue_unsubscribe_locked(route_args *a)
{
    char name[2 * NB_NAME_MAX + 2];
    snprintf(name, sizeof name, "%s/%s", a->name, a->sub);
    nb_err err = {0};
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, "subscription", name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_async_reload(a->api->async);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "unsubscribed", a->sub));
}

/* ---------- topics (the logic is src/events/topics.c's) ---------- */

ADMIN_LOCKED(a->api, r_topic_create)
ADMIN_LOCKED(a->api, r_topic_delete)
ADMIN_LOCKED(a->api, r_topic_subscribe)
ADMIN_LOCKED(a->api, r_topic_unsubscribe)

/* Answers out (status) or err. */
static void topic_answer(route_args *a, int status, json_t *out, const nb_err *err)
{
    if (out)
        nb_http_send_json(a->req, status, out);
    else
        nb_http_send_error(a->req, err);
}

static void r_topics(route_args *a)
{
    nb_err err = {0};
    json_t *arr = nb_topic_views(a->api->store, a->api->q, a->ns, NULL, &err);
    topic_answer(a, 200, arr ? json_pack("{s:o}", "topics", arr) : NULL, &err);
}

static void r_topic_get(route_args *a)
{
    nb_err err = {0};
    topic_answer(a, 200, nb_topic_views(a->api->store, a->api->q, a->ns, a->name, &err), &err);
}

static void r_topic_create_locked(route_args *a)
{
    json_t *in = json_body(a), *out = NULL;
    if (!in) return;
    nb_err err = {0};
    int created = 0;
    nb_topic_create(a->api->store, a->api->q, a->ns, in, &out, &created, &err);
    json_decref(in);
    topic_answer(a, created ? 201 : 200, out, &err);
}

static void r_topic_delete_locked(route_args *a)
{
    nb_err err = {0};
    int rc = nb_topic_delete(a->api->store, a->api->q, a->ns, a->name, &err);
    nb_topics_reload(a->api->topics);
    topic_answer(a, 200, rc == 0 ? json_pack("{s:s}", "deleted", a->name) : NULL, &err);
}

static void r_topic_subs(route_args *a)
{
    nb_err err = {0};
    topic_answer(a, 200, nb_topic_subscriptions(a->api->store, a->api->q, a->ns, a->name, &err),
                 &err);
}

static void r_topic_subscribe_locked(route_args *a)
{
    json_t *in = json_body(a), *out = NULL;
    if (!in) return;
    nb_err err = {0};
    int created = 0;
    nb_topic_subscribe(a->api->store, a->api->q, a->ns, a->name, in, &out, &created, &err);
    json_decref(in);
    /* Before the answer: a publish that follows it is planned with the new subscription. */
    if (created) nb_topics_reload(a->api->topics);
    topic_answer(a, created ? 201 : 200, out, &err);
}

static void r_topic_unsubscribe_locked(route_args *a)
{
    nb_err err = {0};
    int rc = nb_topic_unsubscribe(a->api->store, a->api->q, a->ns, a->name, a->sub, &err);
    if (rc == 0) nb_topics_reload(a->api->topics);
    topic_answer(a, 200, rc == 0 ? json_pack("{s:s}", "unsubscribed", a->sub) : NULL, &err);
}

static void r_topic_publish(route_args *a)
{
    /* A 256 KiB message may take six times that once JSON-escaped in the request. */
    if (body_too_big(a, 2u << 20)) return;
    json_error_t je;
    json_t *in = json_loadb(a->req->entity.base ? a->req->entity.base : "", a->req->entity.len,
                            JSON_REJECT_DUPLICATES, &je);
    nb_err err = {0};
    static const char *const fields[] = {"message", "attributes", "subject", NULL};
    if (!json_is_object(in))
        nb_err_set(&err, 400, NB_E_INVALID_JSON, "body must be a JSON object");
    else
        nb_json_known_fields(in, fields, &err);
    json_t *msg = json_object_get(in, "message"), *subject = json_object_get(in, "subject");
    if (!err.status && !json_is_string(msg))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "message is required and must be a string");
    if (!err.status && subject && !json_is_null(subject) && !json_is_string(subject))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "subject must be a string");
    if (!err.status && a->api->draining)
        nb_err_set(&err, 503, NB_E_UNAVAILABLE, "nimbus is shutting down");
    if (!err.status) {
        pending_send *p = pending_send_new(a, 0);
        p->topic = 1;
        if (nb_topic_publish(a->api->q, a->ns, a->name, json_string_value(msg),
                             json_string_length(msg), json_object_get(in, "attributes"),
                             json_string_value(subject), NULL, send_done, p, &err) < 0)
            pending_send_unref(p);
    }
    json_decref(in);
    if (err.status) nb_http_send_error(a->req, &err);
}

/* ---------- schedules ---------- */

ADMIN_LOCKED(a->api, r_schedule_put)
ADMIN_LOCKED(a->api, r_schedule_delete)
ADMIN_LOCKED(a->api, r_schedule_pause)
ADMIN_LOCKED(a->api, r_schedule_resume)

static json_t *schedule_view(nb_api *api, const nb_obj *o)
{
    json_t *b = obj_json(o);
    json_t *v = nb_gw_admin_view("schedule", o->name, b, o->created_at, o->updated_at);
    json_decref(b);
    /* The payload as the JSON it is, the times as UTC text, and when it fires next. */
    const char *p = json_string_value(json_object_get(v, "payload"));
    if (p) json_object_set_new(v, "payload", json_loads(p, JSON_DECODE_ANY, NULL));
    static const char *const times[] = {"start", "end"};
    for (int i = 0; i < 2; i++) {
        json_t *t = json_object_get(v, times[i]);
        if (json_is_integer(t)) {
            char iso[32];
            nb_time_iso8601(json_integer_value(t) * 1000, iso, sizeof iso);
            json_object_set_new(v, times[i], json_string(iso));
        }
    }
    json_object_del(v, "created_s");
    int64_t next = nb_schd_next_fire(api->schd, o->ns, o->name);
    char iso[32];
    if (next >= 0) nb_time_iso8601(next * 1000, iso, sizeof iso);
    json_object_set_new(v, "next_fire", next >= 0 ? json_string(iso) : json_null());
    return v;
}

static void r_schedules(route_args *a)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (a->api->store->ops->obj_list(a->api->store, a->ns, "schedule", NULL, &objs, &n, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, schedule_view(a->api, &objs[i]));
    nb_obj_free_list(objs, n);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "schedules", arr));
}

static void r_schedule_get(route_args *a)
{
    nb_obj o = {0};
    json_t *j = obj_load(a, "schedule", a->name, &o);
    if (!j) return;
    json_decref(j);
    json_t *v = schedule_view(a->api, &o);
    nb_obj_clear(&o);
    nb_http_send_json(a->req, 200, v);
}

/* Writes body as schedule a->name and answers with its view (status). */
static void schedule_write(route_args *a, json_t *body, enum nb_obj_put_mode mode, int status)
{
    int created = 0;
    if (obj_write(a, "schedule", a->name, body, mode, &created) < 0) return;
    nb_schd_changed(a->api->schd, a->ns, a->name);
    nb_obj o = {0};
    nb_err err = {0};
    if (a->api->store->ops->obj_get(a->api->store, a->ns, "schedule", a->name, &o, &err) != 1) {
        nb_http_send_error(a->req, &err);
        return;
    }
    /* The scheduler reloads on its loop: its next firing may not be known yet. */
    json_t *v = schedule_view(a->api, &o);
    nb_obj_clear(&o);
    nb_http_send_json(a->req, status ? status : created ? 201 : 200, v);
}

static void r_schedule_put_locked(route_args *a)
{
    if (!nb_fn_valid_name(a->name)) {
        nb_http_error(a->req, 400, NB_E_INVALID_NAME, "invalid schedule name: [A-Za-z0-9_-]{1,64}");
        return;
    }
    json_t *in = json_body(a);
    if (!in) return;
    nb_obj cur = {0};
    nb_err err = {0};
    int found = a->api->store->ops->obj_get(a->api->store, a->ns, "schedule", a->name, &cur, &err);
    json_t *curj = found == 1 ? obj_json(&cur) : NULL;
    json_t *body = found < 0 ? NULL : nb_schd_admin(in, curj, nb_now_ms() / 1000, &err);
    json_decref(in);
    json_decref(curj);
    nb_obj_clear(&cur);
    if (!body) {
        nb_http_send_error(a->req, &err);
        return;
    }
    schedule_write(a, body, NB_OBJ_UPSERT, 0);
    json_decref(body);
}

static void schedule_state(route_args *a, const char *state)
{
    nb_obj cur = {0};
    json_t *j = obj_load(a, "schedule", a->name, &cur);
    nb_obj_clear(&cur);
    if (!j) return;
    json_object_set_new(j, "state", json_string(state));
    schedule_write(a, j, NB_OBJ_UPDATE, 200);
    json_decref(j);
}

static void r_schedule_pause_locked(route_args *a)
{
    schedule_state(a, "paused");
}

static void r_schedule_resume_locked(route_args *a)
{
    schedule_state(a, "enabled");
}

static void r_schedule_delete_locked(route_args *a)
{
    nb_err err = {0};
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, "schedule", a->name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    char key[2 * NB_NAME_MAX + 2];
    snprintf(key, sizeof key, "%s/%s", a->ns, a->name);
    a->api->store->ops->obj_delete(a->api->store, "_system", "schedule_fired", key, &err);
    nb_schd_changed(a->api->schd, a->ns, a->name);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* ---------- events and rules (the logic is src/events/bus.c's) ---------- */

/* Every event of the request in one send (all or none), each as its structured JSON, with a
 * fresh message id: CloudEvents ids are unique per source only, so they cannot be queue ids. */
static void r_events_put(route_args *a)
{
    nb_api *api = a->api;
    if (api->draining) {
        nb_http_error(a->req, 503, NB_E_UNAVAILABLE, "nimbus is shutting down");
        return;
    }
    char ct[512];
    const char *ctype = nb_http_req_header(a->req, "content-type", ct, sizeof ct);
    size_t nh = a->req->headers.size;
    nb_ce_header *hs = h2o_mem_alloc_pool(&a->req->pool, (nh ? nh : 1) * sizeof *hs);
    for (size_t i = 0; i < nh; i++) {
        const h2o_header_t *h = &a->req->headers.entries[i];
        hs[i] = (nb_ce_header){h->name->base, h->name->len, h->value.base, h->value.len};
    }
    nb_err err = {0};
    json_t *events = nb_ce_from_http(ctype, hs, nh, a->req->entity.base ? a->req->entity.base : "",
                                     a->req->entity.len, &err);
    if (!events) {
        nb_http_send_error(a->req, &err);
        return;
    }
    size_t n = json_array_size(events);
    json_t *ids = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(ids, json_object_get(json_array_get(events, i), "id"));
    if (n == 0) { /* an empty batch is a valid one: nothing to keep */
        json_decref(events);
        nb_http_send_json(a->req, 202, json_pack("{s:i, s:o}", "accepted", 0, "ids", ids));
        return;
    }
    char q[NB_Q_NAME_MAX + 1];
    nb_async_bus_queue(a->ns, q, sizeof q);
    nb_q_out *outs = calloc(n, sizeof *outs);
    if (!outs) abort();
    int rc = nb_async_ensure_queue(api->q, q, &err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *text = json_dumps(json_array_get(events, i), JSON_COMPACT);
        if (!text) abort(); /* validated events always encode: only OOM gets here */
        outs[i] = (nb_q_out){.body = text, .body_len = strlen(text)};
    }
    if (rc == 0) {
        pending_send *p = pending_send_new(a, 0);
        p->event_ids = ids;
        ids = NULL;
        if ((rc = nb_q_send(api->q, q, outs, n, send_done, p, &err)) < 0) pending_send_unref(p);
    }
    for (size_t i = 0; i < n; i++)
        free((char *)outs[i].body);
    free(outs);
    json_decref(ids);
    json_decref(events);
    if (rc < 0) nb_http_send_error(a->req, &err);
}

ADMIN_LOCKED(a->api, r_rule_create)
ADMIN_LOCKED(a->api, r_rule_update)
ADMIN_LOCKED(a->api, r_rule_delete)

/* 0 when the rule's target exists now (it is checked again at every routing). */
static int rule_target_exists(route_args *a, const char *target, nb_err *err)
{
    const char *colon = strchr(target, ':');
    const char *name = colon + 1;
    char q[NB_Q_NAME_MAX + 1];
    if (strncmp(target, "function:", 9) == 0) {
        nb_fn_version *v = a->api->store->ops->fn_get(a->api->store, a->ns, name, 0, NULL, err);
        if (!v) return err->status == 404 ? nb_err_prefix(err, "target") : -1;
        nb_fn_version_unref(v);
        return 0;
    }
    int topic = strncmp(target, "topic:", 6) == 0;
    if (topic)
        nb_async_topic_queue(a->ns, name, q, sizeof q);
    else
        nb_async_user_queue(a->ns, name, q, sizeof q);
    if (nb_q_exists(a->api->q, q)) return 0;
    return nb_err_set(err, 404, NB_E_NOT_FOUND, "target: %s '%s' not found",
                      topic ? "topic" : "queue", name);
}

/* The rule as stored, re-read, into an answer; the bus reloaded first so that the rule routes
 * from the moment the caller has its answer. */
static void rule_written(route_args *a, const char *name, int status)
{
    nb_err err = {0};
    if (nb_bus_reload(a->api->bus, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_obj o = {0};
    if (a->api->store->ops->obj_get(a->api->store, a->ns, "rule", name, &o, &err) != 1) {
        if (!err.status) nb_err_set(&err, 404, NB_E_NOT_FOUND, "rule '%s' not found", name);
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *v = obj_view("rule", &o);
    nb_obj_clear(&o);
    nb_http_send_json(a->req, status, v);
}

static void r_rules(route_args *a)
{
    list_kind(a, "rule", NULL, "rules");
}

static void r_rule_get(route_args *a)
{
    nb_obj o = {0};
    json_t *j = obj_load(a, "rule", a->name, &o);
    if (!j) return;
    json_decref(j);
    json_t *v = obj_view("rule", &o);
    nb_obj_clear(&o);
    nb_http_send_json(a->req, 200, v);
}

static void r_rule_create_locked(route_args *a)
{
    json_t *in = json_body(a);
    if (!in) return;
    nb_err err = {0};
    char name[NB_NAME_MAX + 1] = "";
    const char *nm = json_string_value(json_object_get(in, "name"));
    if (!nm || !nb_fn_valid_name(nm))
        nb_err_set(&err, 400, NB_E_INVALID_NAME, "name: a rule name is required (%s)",
                   "[A-Za-z0-9_-]{1,64}");
    else
        snprintf(name, sizeof name, "%s", nm);
    json_object_del(in, "name");
    json_t *body = err.status ? NULL : nb_rule_admin(in, NULL, &err);
    json_decref(in);
    nb_obj *objs = NULL;
    size_t n = 0;
    if (body &&
        a->api->store->ops->obj_list(a->api->store, a->ns, "rule", NULL, &objs, &n, &err) == 0) {
        nb_obj_free_list(objs, n);
        if (n >= NB_BUS_MAX_RULES)
            nb_err_set(&err, 409, NB_E_CONFLICT, "namespace %s has %zu rules; the limit is %d",
                       a->ns, n, NB_BUS_MAX_RULES);
    }
    if (!err.status)
        rule_target_exists(a, json_string_value(json_object_get(body, "target")), &err);
    if (err.status) {
        json_decref(body);
        nb_http_send_error(a->req, &err);
        return;
    }
    int rc = obj_write(a, "rule", name, body, NB_OBJ_CREATE, NULL);
    if (rc == 0)
        nb_info("api", "rule %s/%s -> %s", a->ns, name,
                json_string_value(json_object_get(body, "target")));
    json_decref(body);
    if (rc == 0) rule_written(a, name, 201);
}

/* PATCH: the fields given change, the others stay. */
static void r_rule_update_locked(route_args *a)
{
    nb_obj cur = {0};
    json_t *curj = obj_load(a, "rule", a->name, &cur);
    nb_obj_clear(&cur);
    if (!curj) return;
    json_t *in = json_body(a);
    nb_err err = {0};
    json_t *body = in ? nb_rule_admin(in, curj, &err) : NULL;
    const char *target = json_string_value(json_object_get(body, "target"));
    if (body && strcmp(target, json_string_value(json_object_get(curj, "target")) ?: "") != 0)
        rule_target_exists(a, target, &err);
    json_decref(in);
    json_decref(curj);
    if (in && (!body || err.status)) nb_http_send_error(a->req, &err);
    if (!body || err.status) {
        json_decref(body);
        return;
    }
    int rc = obj_write(a, "rule", a->name, body, NB_OBJ_UPDATE, NULL);
    json_decref(body);
    if (rc == 0) rule_written(a, a->name, 200);
}

static void r_rule_delete_locked(route_args *a)
{
    nb_err err = {0};
    if (a->api->store->ops->obj_delete(a->api->store, a->ns, "rule", a->name, &err) < 0) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_bus_reload(a->api->bus, &err);
    nb_info("api", "deleted rule %s/%s", a->ns, a->name);
    nb_http_send_json(a->req, 200, json_pack("{s:s}", "deleted", a->name));
}

/* {"event": {...}}: whether the rule's pattern matches it, enabled or not. */
static void r_rule_test(route_args *a)
{
    nb_obj o = {0};
    json_t *rule = obj_load(a, "rule", a->name, &o);
    nb_obj_clear(&o);
    if (!rule) return;
    json_t *in = json_body(a);
    json_t *ev = json_object_get(in, "event");
    nb_err err = {0};
    if (in && (json_object_size(in) != 1 || !json_is_object(ev)))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "send {\"event\": {...}}: the event to test");
    char *text = json_dumps(json_object_get(rule, "match"), JSON_COMPACT);
    nb_pat *p = in && !err.status && text ? nb_pat_compile(text, strlen(text), &err) : NULL;
    if (in && !p && !err.status)
        nb_err_set(&err, 500, NB_E_INTERNAL, "rule '%s' has no pattern", a->name);
    if (p)
        nb_http_send_json(a->req, 200, json_pack("{s:b}", "matched", nb_pat_match(p, ev)));
    else if (in)
        nb_http_send_error(a->req, &err);
    nb_pat_free(p);
    free(text);
    json_decref(in);
    json_decref(rule);
}

/* ---------- services ---------- */

/* A service is the functions whose `service` setting names it, and everything in the store that
 * exists for one of them: the kinds below, each naming its function in `field` (as a target,
 * "function:NAME", when `target`). A service declared in a file later is the same set. */
static const struct {
    const char *kind, *key, *field;
    int target;
} service_parts[] = {
    {"route", "routes", "function", 0},
    {"schedule", "schedules", "function", 0},
    {"subscription", "subscriptions", "function", 0},
    {"topic_subscription", "topic_subscriptions", "target", 1},
    {"rule", "rules", "target", 1},
};

static int in_names(const json_t *names, const char *fn)
{
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        if (strcmp(json_string_value(v), fn) == 0) return 1;
    }
    return 0;
}

/* The function an object exists for, or NULL. */
static const char *part_function(const json_t *body, size_t kind)
{
    const char *v = json_string_value(json_object_get(body, service_parts[kind].field));
    if (v && service_parts[kind].target) v = strncmp(v, "function:", 9) == 0 ? v + 9 : NULL;
    return v;
}

/* Functions of namespace ns grouped by service: {"svc": ["fn", ...]}; NULL with err. */
static json_t *services_of(nb_api *api, const char *ns, nb_err *err)
{
    nb_fn_version **vs;
    int64_t *upd;
    size_t n;
    if (api->store->ops->fn_list(api->store, ns, &vs, &upd, &n, err) < 0) return NULL;
    json_t *by = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *svc = vs[i]->cfg.scaling.service;
        if (!svc[0]) continue;
        json_t *arr = json_object_get(by, svc);
        if (!arr) json_object_set_new(by, svc, arr = json_array());
        json_array_append_new(arr, json_string(vs[i]->name));
    }
    nb_store_free_versions(vs, n);
    free(upd);
    return by;
}

/* The service's functions (answers 404 when it has none). */
static json_t *service_functions(route_args *a)
{
    nb_err err = {0};
    json_t *by = services_of(a->api, a->ns, &err);
    if (!by) {
        nb_http_send_error(a->req, &err);
        return NULL;
    }
    json_t *fns = json_incref(json_object_get(by, a->name));
    json_decref(by);
    if (!fns) nb_http_error(a->req, 404, NB_E_NOT_FOUND, "service '%s' not found", a->name);
    return fns;
}

/* Every part of the service: kind key -> array of [name, view]; NULL with err. */
static json_t *service_parts_of(nb_api *api, const char *ns, const json_t *fns, nb_err *err)
{
    json_t *out = json_object();
    for (size_t k = 0; k < NB_ARRAY_LEN(service_parts); k++) {
        nb_obj *objs;
        size_t n;
        if (api->store->ops->obj_list(api->store, ns, service_parts[k].kind, NULL, &objs, &n, err) <
            0) {
            json_decref(out);
            return NULL;
        }
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *b = obj_json(&objs[i]);
            const char *fn = part_function(b, k);
            if (fn && in_names(fns, fn)) {
                json_t *v = nb_gw_admin_view(service_parts[k].kind, objs[i].name, b,
                                             objs[i].created_at, objs[i].updated_at);
                /* A topic subscription is named TOPIC/ID; its body holds neither. */
                const char *slash = strchr(objs[i].name, '/');
                if (strcmp(service_parts[k].kind, "topic_subscription") == 0 && slash) {
                    json_object_set_new(v, "topic",
                                        json_stringn(objs[i].name, (size_t)(slash - objs[i].name)));
                    json_object_set_new(v, "id", json_string(slash + 1));
                }
                json_array_append_new(arr, json_pack("[s,o]", objs[i].name, v));
            }
            json_decref(b);
        }
        nb_obj_free_list(objs, n);
        json_object_set_new(out, service_parts[k].key, arr);
    }
    return out;
}

static void r_services(route_args *a)
{
    nb_err err = {0};
    json_t *by = services_of(a->api, a->ns, &err);
    if (!by) {
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *arr = json_array();
    const char *svc;
    json_t *fns;
    json_object_foreach(by, svc, fns)
    {
        json_array_append_new(arr, json_pack("{s:s, s:O}", "name", svc, "functions", fns));
    }
    json_decref(by);
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "services", arr));
}

static void r_service_get(route_args *a)
{
    json_t *fns = service_functions(a);
    if (!fns) return;
    nb_err err = {0};
    json_t *parts = service_parts_of(a->api, a->ns, fns, &err);
    if (!parts) {
        json_decref(fns);
        nb_http_send_error(a->req, &err);
        return;
    }
    json_t *out = json_pack("{s:s, s:[]}", "name", a->name, "functions");
    size_t i;
    json_t *v;
    json_array_foreach(fns, i, v)
    {
        nb_fn_version *fv = nb_invoker_latest(a->api->invoker, a->ns, json_string_value(v));
        json_array_append_new(json_object_get(out, "functions"),
                              fv ? fn_object(a->api, fv, fv->created_at)
                                 : json_pack("{s:O}", "name", v));
    }
    json_decref(fns);
    const char *key;
    json_t *arr;
    json_object_foreach(parts, key, arr)
    {
        json_t *views = json_array();
        json_t *pair;
        json_array_foreach(arr, i, pair)
        {
            json_array_append(views, json_array_get(pair, 1));
        }
        json_object_set_new(out, key, views);
    }
    json_decref(parts);
    nb_http_send_json(a->req, 200, out);
}

ADMIN_LOCKED(a->api, r_service_delete)

/* Deletes the parts first, then the functions: a failure half way leaves functions whose
 * triggers are gone, never triggers pointing at deleted functions. */
static void r_service_delete_locked(route_args *a)
{
    nb_api *api = a->api;
    json_t *fns = service_functions(a);
    if (!fns) return;
    nb_err err = {0};
    json_t *parts = service_parts_of(api, a->ns, fns, &err);
    json_t *counts = json_object();
    for (size_t k = 0; parts && k < NB_ARRAY_LEN(service_parts) && !err.status; k++) {
        json_t *arr = json_object_get(parts, service_parts[k].key);
        size_t i;
        json_t *pair;
        json_array_foreach(arr, i, pair)
        {
            const char *name = json_string_value(json_array_get(pair, 0));
            if (api->store->ops->obj_delete(api->store, a->ns, service_parts[k].kind, name, &err) <
                    0 &&
                err.status != 404)
                break;
            err = (nb_err){0};
            if (strcmp(service_parts[k].kind, "schedule") == 0) {
                char key[2 * NB_NAME_MAX + 2];
                snprintf(key, sizeof key, "%s/%s", a->ns, name);
                api->store->ops->obj_delete(api->store, "_system", "schedule_fired", key, &err);
                err = (nb_err){0};
            }
        }
        json_object_set_new(counts, service_parts[k].key, json_integer((json_int_t)i));
    }
    json_decref(parts);
    /* Whatever was deleted must stop triggering, even when a later step failed. */
    nb_err rerr = {0};
    if (api->gw) nb_gw_reload(api->gw, &rerr);
    nb_async_reload(api->async);
    nb_topics_reload(api->topics); /* its topic subscriptions are gone too */
    nb_schd_reload(api->schd);
    nb_bus_reload(api->bus, &rerr);
    size_t i;
    json_t *v;
    json_array_foreach(fns, i, v)
    {
        if (err.status) break;
        const char *fn = json_string_value(v);
        if (api->store->ops->fn_delete(api->store, a->ns, fn, &err) < 0 && err.status != 404) break;
        err = (nb_err){0};
        nb_invoker_remove(api->invoker, a->ns, fn);
        nb_logs_remove(api->logs, a->ns, fn);
    }
    if (err.status) {
        json_decref(fns);
        json_decref(counts);
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_info("api", "deleted service %s/%s (%zu functions)", a->ns, a->name, json_array_size(fns));
    json_object_set_new(counts, "deleted", json_string(a->name));
    json_object_set_new(counts, "functions", fns);
    nb_http_send_json(a->req, 200, counts);
}

/* ---------- usage (src/metering) ---------- */

/* Epoch ms, or a UTC time YYYY-MM-DD[THH:MM[:SS]][Z]. -1 when it is neither. */
static int64_t parse_time_param(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && end != s && !*end && v >= 0) return v;
    struct tm tm = {0};
    int n = 0, len = (int)strlen(s);
    if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3) return -1;
    if (n < len && (s[n] == 'T' || s[n] == ' ')) {
        int m = 0;
        if (sscanf(s + n + 1, "%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &m) != 2) return -1;
        n += 1 + m;
        if (n < len && s[n] == ':') {
            if (sscanf(s + n + 1, "%2d%n", &tm.tm_sec, &m) != 1) return -1;
            n += 1 + m;
        }
    }
    if (n < len && s[n] == 'Z') n++;
    if (n != len || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? -1 : (int64_t)t * 1000;
}

/* GET /v1/usage?since=24h | from=T&to=T, by=function|namespace|key|day. Every namespace on the
 * short path; one under /v1/namespaces/{ns}/usage. */
static void r_usage(route_args *a)
{
    if (!a->api->use) {
        nb_http_error(a->req, 503, NB_E_UNAVAILABLE, "metering is not running");
        return;
    }
    nb_use_filter f = {0};
    char buf[64], by[16] = "function";
    query_param(a->query, "by", by, sizeof by);
    f.by = by;
    if (query_param(a->query, "since", buf, sizeof buf)) {
        int64_t ms = parse_since(buf);
        if (ms < 0) {
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                          "since must be a duration such as 90s, 30m, 24h or 7d");
            return;
        }
        f.from_ms = nb_now_ms() - ms;
    }
    static const char *const ends[] = {"from", "to"};
    for (int i = 0; i < 2; i++) {
        if (!query_param(a->query, ends[i], buf, sizeof buf)) continue;
        int64_t t = parse_time_param(buf);
        if (t < 0) {
            nb_http_error(a->req, 400, NB_E_INVALID_VALUE,
                          "%s must be epoch milliseconds or a UTC time such as "
                          "2026-01-31T12:00:00Z",
                          ends[i]);
            return;
        }
        *(i ? &f.to_ms : &f.from_ms) = t;
    }
    if (strncmp(a->req->path.base, "/v1/namespaces/", 15) == 0) f.ns = a->ns;
    nb_use_flush(a->api->use); /* what ended before the request is in the answer */
    nb_err err = {0};
    json_t *rows = nb_use_query(a->api->use, &f, &err);
    if (!rows) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, json_pack("{s:o}", "usage", rows));
}

/* ---------- the web console's reads ---------- */

/* The function's newest invocation records (metering's raw records). */
static void r_fn_invocations(route_args *a)
{
    long long limit = 50;
    if (parse_int_param(a, "limit", 1, 500, &limit) < 0) return;
    if (!a->api->use) {
        nb_http_error(a->req, 503, NB_E_UNAVAILABLE, "metering is not running");
        return;
    }
    nb_err err = {0};
    int64_t updated = 0;
    nb_fn_version *v = a->api->store->ops->fn_get(a->api->store, a->ns, a->name, 0, &updated, &err);
    if (!v) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_fn_version_unref(v);
    nb_use_flush(a->api->use); /* an invocation that just ended is in the answer */
    json_t *j = nb_use_recent(a->api->use, a->ns, a->name, (int)limit, &err);
    if (!j) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, j);
}

/* The dashboard's rates and percentiles over the last minutes (metrics/series.h). */
static void r_metrics_series(route_args *a)
{
    long long seconds = NB_SER_SECONDS;
    if (parse_int_param(a, "seconds", 1, NB_SER_SECONDS, &seconds) < 0) return;
    if (!a->api->metrics) {
        nb_http_error(a->req, 404, NB_E_NOT_FOUND, "metrics are off");
        return;
    }
    nb_err err = {0};
    json_t *j = nb_met_series(a->api->metrics, (int)seconds, &err);
    if (!j) {
        nb_http_send_error(a->req, &err);
        return;
    }
    nb_http_send_json(a->req, 200, j);
}
