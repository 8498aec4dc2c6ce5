#include "events/async.h"

#include "base/log.h"
#include "base/util.h"
#include "events/bus.h"
#include "metering/usage.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---------- ports ---------- */

typedef struct post_item {
    void (*fn)(void *ud);
    void *ud;
    struct post_item *next;
} post_item;

struct nb_async_port {
    uv_async_t wake;
    pthread_mutex_t mu;
    post_item *head, *tail;
};

static void port_run(uv_async_t *w)
{
    nb_async_port *p = w->data;
    pthread_mutex_lock(&p->mu);
    post_item *it = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (it) {
        post_item *next = it->next;
        it->fn(it->ud);
        free(it);
        it = next;
    }
}

nb_async_port *nb_async_port_new(uv_loop_t *loop)
{
    nb_async_port *p = calloc(1, sizeof *p);
    if (!p) abort();
    pthread_mutex_init(&p->mu, NULL);
    uv_async_init(loop, &p->wake, port_run);
    p->wake.data = p;
    return p;
}

void nb_async_post(nb_async_port *p, void (*fn)(void *ud), void *ud)
{
    post_item *it = malloc(sizeof *it);
    if (!it) abort();
    it->fn = fn;
    it->ud = ud;
    it->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = it;
    else
        p->head = it;
    p->tail = it;
    pthread_mutex_unlock(&p->mu);
    uv_async_send(&p->wake);
}

static void port_closed(uv_handle_t *h)
{
    nb_async_port *p = h->data;
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void nb_async_port_free(nb_async_port *p)
{
    if (!p) return;
    /* Shutdown: what is still posted is dropped, not run (its loop serves nobody any more;
     * a message whose settling is dropped is delivered again at the next start). */
    pthread_mutex_lock(&p->mu);
    for (post_item *it = p->head; it;) {
        post_item *next = it->next;
        free(it);
        it = next;
    }
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    uv_close((uv_handle_t *)&p->wake, port_closed);
}

/* ---------- names ---------- */

void nb_async_fn_queue(const char *ns, const char *fn, char *out, size_t size)
{
    snprintf(out, size, "fn/%s/%s", ns, fn);
}

void nb_async_failed_queue(const char *ns, const char *fn, char *out, size_t size)
{
    snprintf(out, size, "failed/%s/%s", ns, fn);
}

void nb_async_user_queue(const char *ns, const char *name, char *out, size_t size)
{
    snprintf(out, size, "q/%s/%s", ns, name);
}

void nb_async_topic_queue(const char *ns, const char *name, char *out, size_t size)
{
    snprintf(out, size, "t/%s/%s", ns, name);
}

void nb_async_bus_queue(const char *ns, char *out, size_t size)
{
    snprintf(out, size, "bus/%s", ns);
}

/* "fn/NS/NAME" -> ns, name. */
static int split_queue(const char *q, const char *prefix, char *ns, char *name)
{
    size_t pl = strlen(prefix);
    if (strncmp(q, prefix, pl) != 0) return -1;
    const char *slash = strchr(q + pl, '/');
    if (!slash || (size_t)(slash - (q + pl)) > NB_NAME_MAX || strlen(slash + 1) > NB_NAME_MAX)
        return -1;
    snprintf(ns, NB_NAME_MAX + 1, "%.*s", (int)(slash - (q + pl)), q + pl);
    snprintf(name, NB_NAME_MAX + 1, "%s", slash + 1);
    return 0;
}

/* ---------- the dispatcher's state ---------- */

/* A function's async queue, or a subscription (a user queue delivered to a function). */
typedef struct source {
    char queue[NB_Q_NAME_MAX + 1];
    char ns[NB_NAME_MAX + 1], fn[NB_NAME_MAX + 1];
    int is_sub;
    int batch_size, batch_window_ms, max_concurrency; /* subscriptions */
    int inflight;
    int limit;      /* async functions: what it may run now (halved by a throttle, then regrows) */
    int64_t run_us; /* async functions: moving average of an invocation's run time; 0 unknown */
    int64_t retries;
    int64_t waiting_since_ms; /* subscriptions: when a partial batch started waiting */
    int seen;                 /* still configured at the last reload */
    struct source *next;
} source;

struct nb_async {
    uv_loop_t *loop;
    nb_invoker *iv;
    nb_q *q;
    nb_store *store;
    nb_async_port *port;
    uv_async_t wake;
    uv_timer_t tick;
    pthread_mutex_t mu; /* sources list (stats read it from other loops), flags below */
    source *sources;
    int reload, stopping;
    int inflight;
    int closing; /* handles still closing at free */
    nb_bus *bus; /* destination records as platform events; may be NULL */
};

/* One message being handled. */
typedef struct job {
    nb_async *a;
    source *src;
    nb_q_msg *msgs; /* one for an async invocation; the batch for a subscription */
    int nmsgs;
    nb_inv *inv;
    int pending_sends; /* destination sends not acknowledged yet */
    int send_failed;   /* one may pass later: the message is kept and handled again */
    int send_lost;     /* one can never pass (logged): the message is settled anyway */
    int attempts;      /* function attempts made, this one included */
    char *response;
    size_t response_len;
    char error_type[96];
} job;

static source *find_source(nb_async *a, const char *queue, const char *fn)
{
    for (source *s = a->sources; s; s = s->next)
        if (strcmp(s->queue, queue) == 0 && (!fn || strcmp(s->fn, fn) == 0)) return s;
    return NULL;
}

/* The function's async sources are made as their queues appear. Caller holds a->mu. */
static source *fn_source(nb_async *a, const char *queue)
{
    source *s = find_source(a, queue, NULL);
    if (s) return s;
    s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->queue, sizeof s->queue, "%s", queue);
    if (split_queue(queue, "fn/", s->ns, s->fn) < 0) {
        free(s);
        return NULL;
    }
    s->seen = 1;
    s->next = a->sources;
    a->sources = s;
    return s;
}

static void load_subscriptions(nb_async *a)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (a->store->ops->obj_list(a->store, NULL, "subscription", NULL, &objs, &n, &err) < 0) {
        nb_warn("async", "read subscriptions: %s", err.msg);
        return;
    }
    pthread_mutex_lock(&a->mu);
    for (source *s = a->sources; s; s = s->next)
        if (s->is_sub) s->seen = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(objs[i].body, 0, NULL);
        const char *queue = json_string_value(json_object_get(j, "queue"));
        const char *fn = json_string_value(json_object_get(j, "function"));
        if (!queue || !fn) {
            json_decref(j);
            continue;
        }
        char qname[NB_Q_NAME_MAX + 1];
        nb_async_user_queue(objs[i].ns, queue, qname, sizeof qname);
        source *s = find_source(a, qname, fn);
        if (!s) {
            s = calloc(1, sizeof *s);
            if (!s) abort();
            snprintf(s->queue, sizeof s->queue, "%s", qname);
            snprintf(s->ns, sizeof s->ns, "%s", objs[i].ns);
            snprintf(s->fn, sizeof s->fn, "%s", fn);
            s->is_sub = 1;
            s->next = a->sources;
            a->sources = s;
        }
        s->seen = 1;
        s->batch_size = (int)json_integer_value(json_object_get(j, "batch_size"));
        s->batch_window_ms = (int)json_integer_value(json_object_get(j, "batch_window_ms"));
        s->max_concurrency = (int)json_integer_value(json_object_get(j, "max_concurrency"));
        if (s->batch_size < 1) s->batch_size = 10;
        if (s->max_concurrency < 1) s->max_concurrency = 5;
        json_decref(j);
    }
    /* Subscriptions gone: their sources stay while invocations are under way (jobs point at
     * them), and are never pumped again. */
    pthread_mutex_unlock(&a->mu);
    nb_obj_free_list(objs, n);
}

/* ---------- settling a message ---------- */

/* A job for msgs (taken), counted in flight until job_done. */
static job *job_new(nb_async *a, source *s, nb_q_msg *msgs, int n)
{
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->a = a;
    j->src = s;
    j->msgs = msgs;
    j->nmsgs = n;
    s->inflight++;
    a->inflight++;
    return j;
}

static void job_free(job *j)
{
    nb_q_msgs_free(j->msgs, (size_t)j->nmsgs);
    free(j->response);
    free(j);
}

static void job_done(job *j)
{
    nb_async *a = j->a;
    j->src->inflight--;
    a->inflight--;
    job_free(j);
    uv_async_send(&a->wake); /* capacity came back: take the next ones */
}

static void settle_delete(job *j)
{
    nb_err err = {0};
    for (int i = 0; i < j->nmsgs; i++)
        if (nb_q_delete(j->a->q, j->src->queue, j->msgs[i].id, j->msgs[i].receipt, &err) < 0 &&
            err.status != 404)
            nb_warn("async", "%s: delete %s: %s (it will be delivered again)", j->src->queue,
                    j->msgs[i].id, err.msg);
}

/* After every destination send of a job was acknowledged (or one failed). Loop thread. */
static void sends_settled(void *ud)
{
    job *j = ud;
    if (--j->pending_sends > 0) return;
    if (j->send_lost)
        nb_warn("async", "%s: event %s: a destination refused its record for good (see above)",
                j->src->queue, j->msgs[0].id);
    if (j->send_failed) {
        /* Kept: it comes back after its visibility timeout and is handled again. */
        nb_warn("async", "%s: event %s kept: a destination refused it", j->src->queue,
                j->msgs[0].id);
        nb_err err = {0};
        nb_q_change_visibility(j->a->q, j->src->queue, j->msgs[0].id, j->msgs[0].receipt, 5000,
                               &err);
    } else {
        settle_delete(j);
    }
    job_done(j);
}

typedef struct sent_ctx {
    job *j;
    int ok, status;
} sent_ctx;

static void sent_on_loop(void *ud)
{
    sent_ctx *c = ud;
    /* 503 (the disk, the store full) may pass; anything else (413, 404: the target went) will
     * not, and retrying it would only run the function again. */
    if (!c->ok && c->status == 503) c->j->send_failed = 1;
    if (!c->ok && c->status != 503) c->j->send_lost = 1;
    job *j = c->j;
    free(c);
    sends_settled(j);
}

/* On the queue's writer thread: back to the dispatcher's loop. */
static void sent_cb(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    (void)ids;
    (void)n;
    sent_ctx *c = ud;
    c->ok = status == 0;
    c->status = status;
    if (status != 0) nb_warn("async", "destination send failed: %s", msg ? msg : "");
    nb_async_post(c->j->a->port, sent_on_loop, c);
}

/* Sends body to queue as one more of the job's pending sends. */
static void job_send(job *j, const char *queue, const char *body, size_t len, const json_t *attrs,
                     int64_t delay_ms, const char *keep_id, int64_t keep_sent)
{
    nb_q_out out = {body, len, attrs, delay_ms, keep_id, keep_sent};
    sent_ctx *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->j = j;
    j->pending_sends++;
    nb_err err = {0};
    if (nb_q_send(j->a->q, queue, &out, 1, sent_cb, c, &err) < 0) {
        nb_warn("async", "send to %s refused: %s", queue, err.msg);
        c->ok = 0;
        c->status = err.status;
        sent_on_loop(c);
    }
}

/* The destination "function:NAME" or "queue:NAME" of namespace ns as a queue name, creating a
 * function's async queue if needed. 0, or -1 when it cannot be used. */
int nb_async_target_queue(nb_q *q, const char *ns, const char *target, char *out, size_t size)
{
    nb_err err = {0};
    if (strncmp(target, "queue:", 6) == 0) {
        nb_async_user_queue(ns, target + 6, out, size);
        return nb_q_exists(q, out) ? 0 : -1;
    }
    if (strncmp(target, "topic:", 6) == 0) {
        nb_async_topic_queue(ns, target + 6, out, size);
        return nb_q_exists(q, out) ? 0 : -1;
    }
    if (strncmp(target, "function:", 9) == 0) {
        nb_async_fn_queue(ns, target + 9, out, size);
        return nb_async_ensure_queue(q, out, &err);
    }
    return -1;
}

int nb_async_check_attrs(const json_t *attrs, nb_err *err)
{
    if (!attrs) return 0;
    if (!json_is_object(attrs))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "attributes must be an object of strings");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)attrs, k, v)
    {
        if (!json_is_string(v))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "attribute '%.64s' must be a string",
                              k);
    }
    return 0;
}

/* The chain of calls an async event belongs to, in its message's attributes: a retry copies
 * them, so every attempt runs at the same depth, with the same caller and trace. */
#define ATTR_DEPTH  "nimbus_depth"
#define ATTR_CALLER "nimbus_caller"
#define ATTR_TRACE  "nimbus_trace"
/* The calling function's name, for metering's caller (the request id above names an
 * invocation, not who pays). */
#define ATTR_CALLER_FN "nimbus_caller_fn"

json_t *nb_async_chain_attrs(const nb_inv_ctx *ctx)
{
    if (!ctx || ctx->depth <= 0) return NULL;
    char d[16];
    snprintf(d, sizeof d, "%d", ctx->depth);
    return json_pack("{s:s, s:s, s:s, s:s}", ATTR_DEPTH, d, ATTR_CALLER,
                     ctx->caller_request_id ? ctx->caller_request_id : "", ATTR_TRACE,
                     ctx->trace_id ? ctx->trace_id : "", ATTR_CALLER_FN,
                     ctx->caller ? ctx->caller : "");
}

int nb_async_chain_copy(const json_t *from, json_t *to)
{
    static const char *const keys[] = {ATTR_DEPTH, ATTR_CALLER, ATTR_TRACE, ATTR_CALLER_FN};
    if (!json_object_get(from, ATTR_DEPTH)) return 0;
    for (size_t i = 0; i < NB_ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(from, keys[i]);
        if (json_is_string(v)) json_object_set(to, keys[i], v);
    }
    return 1;
}

int nb_async_ensure_queue(nb_q *q, const char *name, nb_err *err)
{
    /* Kept 14 days, longer than any max_event_age_s: an event leaves only by being processed
     * or failed, never by expiring. Their consumers receive with visibilities of their own;
     * the default is for an operator's receive. */
    nb_q_config cfg = {.visibility_timeout_ms = 60000, .retention_ms = 14 * 86400000LL};
    return nb_q_ensure(q, name, &cfg, err);
}

int nb_async_enqueue(nb_q *q, const char *ns, const char *fn, const char *event, size_t len,
                     const char *request_id, const nb_inv_ctx *ctx, char id_out[37],
                     nb_q_sent_cb cb, void *ud, nb_err *err)
{
    char name[NB_Q_NAME_MAX + 1];
    nb_async_fn_queue(ns, fn, name, sizeof name);
    if (nb_async_ensure_queue(q, name, err) < 0) return -1;
    if (request_id)
        snprintf(id_out, 37, "%s", request_id);
    else
        nb_uuid4(id_out);
    json_t *attrs = nb_async_chain_attrs(ctx);
    nb_q_out out = {event ? event : "", len, attrs, 0, id_out, 0};
    int rc = nb_q_send(q, name, &out, 1, cb, ud, err);
    json_decref(attrs);
    return rc;
}

/* The event's id: the request id of every attempt. A retry is a new message (a queue keeps one
 * message per id), so the first message's id travels in the copies' attributes. */
static const char *event_id(const nb_q_msg *m)
{
    const char *id = json_string_value(json_object_get(m->attrs, "event_id"));
    return id ? id : m->id;
}

/* What put an event on a function's queue, from the attributes its producer set (and retries
 * copy): an explicit nimbus_trigger (topics), a schedule's or a rule's name, else a plain
 * async invoke (by a function when nimbus_caller_fn says so). docs/internals/metering.md. */
static void async_trigger(const json_t *attrs, nb_inv_ctx *ctx)
{
    const char *t = json_string_value(json_object_get(attrs, NB_ASYNC_ATTR_TRIGGER));
    const char *sched = json_string_value(json_object_get(attrs, "schedule"));
    const char *rule = json_string_value(json_object_get(attrs, "rule"));
    ctx->trigger = NB_TRIG_ASYNC;
    ctx->caller = json_string_value(json_object_get(attrs, ATTR_CALLER_FN));
    if (t && strcmp(t, "topic") == 0) {
        ctx->trigger = NB_TRIG_TOPIC;
        ctx->caller = json_string_value(json_object_get(attrs, NB_ASYNC_ATTR_SOURCE));
    } else if (sched) {
        ctx->trigger = NB_TRIG_SCHEDULE;
        ctx->caller = sched;
    } else if (rule) {
        ctx->trigger = NB_TRIG_EVENT;
        ctx->caller = rule;
    }
}

/* Lambda's invocation record, for destinations. */
/* A payload for a record: its JSON when it is JSON, else the text; too big (Lambda's destination
 * records hold at most 256 KB) or not UTF-8: a stub saying so, so a record always fits a
 * message and always encodes. */
static json_t *record_value(const char *p, size_t len)
{
    if (len > (256u << 10)) return json_pack("{s:b, s:I}", "truncated", 1, "size", (json_int_t)len);
    json_t *v = json_loadb(p, len, JSON_DECODE_ANY, NULL);
    if (!v) v = json_stringn(p, len);
    if (!v) v = json_pack("{s:b, s:I}", "binary", 1, "size", (json_int_t)len);
    return v;
}

/* with_payload 0: the record leaves requestPayload null, for the failure log, whose message
 * body is the event itself. */
static char *invocation_record(job *j, const char *condition, int with_payload, size_t *len)
{
    const nb_q_msg *m = &j->msgs[0];
    char ts[32], arn[256];
    nb_time_iso8601(nb_now_ms(), ts, sizeof ts);
    snprintf(arn, sizeof arn, "arn:aws:lambda:us-east-1:000000000000:function:%s:$LATEST",
             j->src->fn);
    json_t *payload = with_payload ? record_value(m->body, m->body_len) : json_null();
    json_t *resp = j->response ? record_value(j->response, j->response_len) : json_null();
    json_t *rc = json_pack("{s:i, s:s}", "statusCode", 200, "executedVersion", "$LATEST");
    if (j->error_type[0]) json_object_set_new(rc, "functionError", json_string("Unhandled"));
    json_t *rec =
        json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:i}, s:o, s:o, s:o}", "version", "1.0",
                  "timestamp", ts, "requestContext", "requestId", event_id(m), "functionArn", arn,
                  "condition", condition, "approximateInvokeCount", j->attempts, "requestPayload",
                  payload, "responseContext", rc, "responsePayload", resp);
    char *s = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (!s) abort(); /* every value above is valid JSON by construction: only OOM gets here */
    *len = strlen(s);
    return s;
}

/* A destination record is also a platform event (docs/api.md: nimbus.invocation.*). An event
 * delivered by a rule carries its hop count, so a chain of rules through results ends. */
static void record_event(job *j, const char *type, const char *rec, size_t len)
{
    if (!j->a->bus || nb_bus_enabled_rules(j->a->bus, j->src->ns) == 0) return;
    const char *hops = json_string_value(json_object_get(j->msgs[0].attrs, NB_BUS_HOPS_ATTR));
    char uri[2 * NB_NAME_MAX + 32];
    snprintf(uri, sizeof uri, "nimbus://%s/functions/%s", j->src->ns, j->src->fn);
    json_t *data = json_loadb(rec, len, 0, NULL);
    nb_bus_platform_event(j->a->bus, j->src->ns, type, uri, event_id(&j->msgs[0]), NULL, data,
                          hops ? atoi(hops) + 1 : 0);
    json_decref(data);
}

/* Success: the record to on_success, then the message goes. */
static void succeed(job *j, const nb_fn_scaling *sc)
{
    j->pending_sends = 1; /* held until every send is started */
    char q[NB_Q_NAME_MAX + 1];
    if (sc->on_success[0]) {
        if (nb_async_target_queue(j->a->q, j->src->ns, sc->on_success, q, sizeof q) == 0) {
            size_t len;
            char *rec = invocation_record(j, "Success", 1, &len);
            job_send(j, q, rec, len, NULL, 0, NULL, 0);
            record_event(j, "nimbus.invocation.success", rec, len);
            free(rec);
        } else {
            nb_warn("async", "%s/%s: on_success %s does not exist; the record is dropped",
                    j->src->ns, j->src->fn, sc->on_success);
        }
    }
    sends_settled(j);
}

/* Failure: the record to on_failure, the event to dead_letter, or both to the failure log. */
static void fail(job *j, const nb_fn_scaling *sc, const char *condition)
{
    nb_async *a = j->a;
    const nb_q_msg *m = &j->msgs[0];
    size_t len;
    char *rec = invocation_record(j, condition, 1, &len);
    char q[NB_Q_NAME_MAX + 1];
    int delivered = 0;
    j->pending_sends = 1;
    nb_info("async", "%s/%s: event %s failed (%s after %d attempts)", j->src->ns, j->src->fn,
            event_id(m), condition, j->attempts);
    if (sc && sc->on_failure[0] &&
        nb_async_target_queue(a->q, j->src->ns, sc->on_failure, q, sizeof q) == 0) {
        job_send(j, q, rec, len, NULL, 0, NULL, 0);
        record_event(j, "nimbus.invocation.failure", rec, len);
        delivered = 1;
    }
    if (sc && sc->dead_letter[0] &&
        nb_async_target_queue(a->q, j->src->ns, sc->dead_letter, q, sizeof q) == 0) {
        json_t *attrs =
            json_pack("{s:s, s:s, s:s}", "RequestID", event_id(m), "ErrorCode", condition,
                      "ErrorMessage", j->error_type[0] ? j->error_type : condition);
        job_send(j, q, m->body, m->body_len, attrs, 0, event_id(m), m->sent_ms);
        json_decref(attrs);
        delivered = 1;
    }
    if (!delivered) {
        /* Never dropped: the failure log keeps the event, with its record, for redrive. */
        nb_async_failed_queue(j->src->ns, j->src->fn, q, sizeof q);
        nb_err err = {0};
        if (nb_async_ensure_queue(a->q, q, &err) < 0)
            nb_warn("async", "failure log %s: %s", q, err.msg);
        size_t slen;
        char *slim = invocation_record(j, condition, 0, &slen);
        json_t *attrs = json_pack("{s:s}", "record", slim);
        free(slim);
        job_send(j, q, m->body, m->body_len, attrs, 0, event_id(m), m->sent_ms);
        json_decref(attrs);
    }
    free(rec);
    sends_settled(j);
}

/* Again later: a copy with the attempt counts made durable, then the original goes. */
static void retry(job *j, int64_t delay_ms, int attempts, int throttles)
{
    const nb_q_msg *m = &j->msgs[0];
    json_t *attrs = m->attrs ? json_deep_copy(m->attrs) : json_object();
    json_object_del(attrs, "record"); /* a redriven event's failure record: not needed again */
    char n[24];
    snprintf(n, sizeof n, "%d", attempts);
    json_object_set_new(attrs, "attempts", json_string(n));
    snprintf(n, sizeof n, "%d", throttles);
    json_object_set_new(attrs, "throttles", json_string(n));
    json_object_set_new(attrs, "event_id", json_string(event_id(m)));
    if (j->error_type[0]) json_object_set_new(attrs, "last_error", json_string(j->error_type));
    j->src->retries++;
    j->pending_sends = 1;
    job_send(j, j->src->queue, m->body, m->body_len, attrs, delay_ms, NULL, m->sent_ms);
    json_decref(attrs);
    sends_settled(j);
}

static int attr_int(const json_t *attrs, const char *k)
{
    const char *v = json_string_value(json_object_get(attrs, k));
    return v ? atoi(v) : 0;
}

/* ---------- async invocations ---------- */

static void on_async_result(nb_inv *inv, void *ud)
{
    job *j = ud;
    j->inv = NULL;
    nb_async *a = j->a;
    const nb_q_msg *m = &j->msgs[0];
    nb_fn_version *ver = nb_invoker_latest(a->iv, j->src->ns, j->src->fn);
    if (!ver) {
        /* Deleted while it ran: kept, and failed to the log once its age is up. */
        j->error_type[0] = 0;
        fail(j, NULL, "FunctionDeleted");
        return;
    }
    const nb_fn_scaling *sc = &ver->cfg.scaling;
    int throttles = attr_int(m->attrs, "throttles");
    int attempts = attr_int(m->attrs, "attempts");
    int64_t age = nb_now_ms() - m->sent_ms;
    free(j->response);
    j->response = malloc(inv->body_len + 1);
    if (!j->response) abort();
    memcpy(j->response, inv->body, inv->body_len);
    j->response[inv->body_len] = 0;
    j->response_len = inv->body_len;
    snprintf(j->error_type, sizeof j->error_type, "%s",
             inv->outcome == NB_OUTCOME_OK ? "" : inv->error_type);
    if (!inv->throttled && strcmp(inv->error_type, "Sandbox.Failure") != 0) {
        j->src->limit++; /* regrows by one per invocation that got through */
        int64_t run = inv->ended_us - inv->started_us;
        if (inv->started_us > 0 && run >= 0)
            j->src->run_us = j->src->run_us ? (j->src->run_us * 7 + run) / 8 : run + 1;
        j->attempts = attempts + 1;
        if (inv->outcome == NB_OUTCOME_OK) {
            succeed(j, sc);
        } else if (attempts < sc->max_retry_attempts &&
                   age + (int64_t)sc->retry_delay_ms * (attempts + 1) <
                       (int64_t)sc->max_event_age_s * 1000) {
            retry(j, (int64_t)sc->retry_delay_ms * (attempts + 1), attempts + 1, throttles);
        } else {
            fail(j, sc,
                 attempts < sc->max_retry_attempts ? "EventAgeExceeded" : "RetriesExhausted");
        }
        return;
    }
    /* Throttled or the platform failed: not the function's fault, no attempt counted; back off
     * (1 s doubling, at most 5 min) while the event is young enough. */
    j->attempts = attempts;
    /* Backs off itself too: the limit halves, so a burst does not keep hitting the caps. */
    j->src->limit = j->src->inflight / 2 > 0 ? j->src->inflight / 2 : 1;
    int64_t backoff = 1000;
    for (int i = 0; i < throttles && backoff < 300000; i++)
        backoff *= 2;
    if (backoff > 300000) backoff = 300000;
    if (age + backoff >= (int64_t)sc->max_event_age_s * 1000)
        fail(j, sc, "EventAgeExceeded");
    else
        retry(j, backoff, attempts, throttles + 1);
}

/* How many of the function's invocations async events may run at once: their share of its
 * max_concurrency, or of what the daemon's caps allow of it. */
static int async_cap(nb_async *a, const nb_fn_version *ver)
{
    const nb_fn_scaling *sc = &ver->cfg.scaling;
    int base = sc->max_concurrency;
    if (base == NB_SCALE_UNSET) {
        int64_t mem;
        nb_invoker_caps(a->iv, &base, &mem);
        int64_t by_mem = mem / (ver->cfg.memory_mb > 0 ? ver->cfg.memory_mb : 128);
        if (by_mem < base) base = (int)by_mem;
    }
    int cap = (int)((int64_t)base * sc->async_share / 100);
    return cap < 1 ? 1 : cap;
}

/* Events a function's backlog needs running at once: enough to drain it within
 * DRAIN_TARGET_MS at the function's measured run time, or as many as run now plus its idle
 * instances (using those costs nothing). A burst of events for a fast function then runs on a
 * few warm instances instead of starting one instance per event. Growth is gradual (at most
 * RAMP instances starting at once for the function), and stops near the daemon's caps: events
 * can wait, and at the caps every new instance would evict another function's idle one, whose
 * events would then evict back. Until a run time is known, a few at once. Re-evaluated at
 * every pump, so a growing backlog grows the concurrency. */
#define DRAIN_TARGET_MS 1000
#define RAMP            2
static int demand(nb_async *a, source *s, const nb_fn_version *ver, int cap)
{
    int64_t need = 4;
    if (s->run_us > 0) {
        nb_q_stats st = {0};
        nb_err err = {0};
        nb_q_get_stats(a->q, s->queue, &st, &err);
        need = (st.visible + s->inflight) * s->run_us / (DRAIN_TARGET_MS * 1000) + 1;
    }
    nb_fn_stats fs;
    if (nb_invoker_stats(a->iv, s->ns, s->fn, &fs) == 0) {
        int64_t have = fs.idle + fs.busy; /* ready instances */
        int64_t most = have + (nb_sched_near_caps(nb_invoker_sched(a->iv), ver->cfg.memory_mb)
                                   ? (have ? 0 : 1)
                                   : RAMP - fs.starting);
        if (need > most) need = most;
        if (need < s->inflight + fs.idle) need = s->inflight + fs.idle;
    }
    if (need < 1) need = 1;
    return need < cap ? (int)need : cap;
}

static void pump_fn(nb_async *a, source *s)
{
    nb_fn_version *ver = nb_invoker_latest(a->iv, s->ns, s->fn);
    int cap = ver ? async_cap(a, ver) : 1;
    if (s->limit <= 0 || s->limit > cap) s->limit = cap;
    int allowed = ver ? demand(a, s, ver, s->limit) : s->limit;
    int want = allowed - s->inflight;
    if (want <= 0) return;
    if (want > 64) want = 64;
    nb_q_msg *msgs;
    nb_err err = {0};
    /* Long enough for the whole invocation: the wait for capacity, a cold start, the run, and
     * the settlement's commit; a message that came back while its job still ran would start
     * a second chain of attempts. */
    int64_t vis =
        ver ? (int64_t)ver->cfg.timeout_s * 1000 + ver->cfg.scaling.queue_timeout_ms + 120000
            : 60000;
    int n = nb_q_receive(a->q, s->queue, want, vis, &msgs, &err);
    if (n <= 0) return;
    for (int i = 0; i < n; i++) {
        nb_q_msg *one = malloc(sizeof *one);
        if (!one) abort();
        *one = msgs[i]; /* the job takes the message's allocations */
        job *j = job_new(a, s, one, 1);
        const nb_q_msg *m = &j->msgs[0];
        j->attempts = attr_int(m->attrs, "attempts");
        if (!ver) {
            /* The function is gone: its events go to the failure log, never silently away. */
            fail(j, NULL, "FunctionDeleted");
            continue;
        }
        if (nb_now_ms() - m->sent_ms >= (int64_t)ver->cfg.scaling.max_event_age_s * 1000) {
            snprintf(j->error_type, sizeof j->error_type, "%s",
                     json_string_value(json_object_get(m->attrs, "last_error"))
                         ? json_string_value(json_object_get(m->attrs, "last_error"))
                         : "");
            fail(j, &ver->cfg.scaling, "EventAgeExceeded");
            continue;
        }
        nb_inv_ctx ctx = {
            .depth = attr_int(m->attrs, ATTR_DEPTH),
            .caller_request_id = json_string_value(json_object_get(m->attrs, ATTR_CALLER)),
            .trace_id = json_string_value(json_object_get(m->attrs, ATTR_TRACE)),
        };
        async_trigger(m->attrs, &ctx);
        nb_invoke_ex(a->iv, ver, m->body, m->body_len, event_id(m), &ctx, on_async_result, j,
                     &j->inv);
    }
    free(msgs); /* the messages' contents now belong to their jobs */
}

/* ---------- subscriptions ---------- */

static void on_batch_result(nb_inv *inv, void *ud)
{
    job *j = ud;
    j->inv = NULL;
    nb_async *a = j->a;
    nb_err err = {0};
    if (inv->outcome == NB_OUTCOME_OK && !inv->throttled) {
        /* Partial batch failure: the ids listed stay (they come back after the visibility
         * timeout); every other message of the batch is done. */
        json_t *r = json_loadb(inv->body, inv->body_len, JSON_DECODE_ANY, NULL);
        json_t *fails = json_object_get(r, "batchItemFailures");
        /* As Lambda: a report that is not a list of ids of this batch fails the whole batch
         * (deleting on a malformed report would lose the messages it meant to keep). */
        int valid = !fails || json_is_array(fails) || json_is_null(fails);
        size_t k;
        json_t *f;
        json_array_foreach(fails, k, f)
        {
            const char *id = json_string_value(json_object_get(f, "itemIdentifier"));
            int known = 0;
            for (int i = 0; id && i < j->nmsgs; i++)
                known |= strcmp(id, j->msgs[i].id) == 0;
            valid &= known;
        }
        for (int i = 0; valid && i < j->nmsgs; i++) {
            int failed = 0;
            json_array_foreach(fails, k, f)
            {
                const char *id = json_string_value(json_object_get(f, "itemIdentifier"));
                if (id && strcmp(id, j->msgs[i].id) == 0) failed = 1;
            }
            if (!failed &&
                nb_q_delete(a->q, j->src->queue, j->msgs[i].id, j->msgs[i].receipt, &err) < 0 &&
                err.status != 404)
                nb_warn("async", "%s: delete %s: %s", j->src->queue, j->msgs[i].id, err.msg);
        }
        json_decref(r);
    }
    /* A failed batch is left alone: each message reappears after the visibility timeout, and
     * the queue's max_receives sends it to its dead-letter queue. */
    job_done(j);
}

static char *sqs_event(const source *s, const nb_q_msg *m, int n, size_t *len)
{
    json_t *recs = json_array();
    char arn[256];
    snprintf(arn, sizeof arn, "arn:aws:sqs:us-east-1:000000000000:%s",
             strrchr(s->queue, '/') ? strrchr(s->queue, '/') + 1 : s->queue);
    for (int i = 0; i < n; i++) {
        char md5[65], sent[24], first[24], count[16];
        nb_sha256_hex(m[i].body, m[i].body_len, md5); /* a digest of the body (not MD5) */
        snprintf(sent, sizeof sent, "%lld", (long long)m[i].sent_ms);
        snprintf(first, sizeof first, "%lld", (long long)m[i].first_receive_ms);
        snprintf(count, sizeof count, "%d", m[i].receive_count);
        json_t *ma = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(m[i].attrs, k, v)
        {
            json_object_set_new(ma, k,
                                json_pack("{s:O, s:s}", "stringValue", v, "dataType", "String"));
        }
        json_array_append_new(
            recs, json_pack("{s:s, s:s, s:s%, s:{s:s, s:s, s:s, s:s}, s:o, s:s, s:s, s:s, s:s}",
                            "messageId", m[i].id, "receiptHandle", m[i].receipt, "body", m[i].body,
                            m[i].body_len, "attributes", "ApproximateReceiveCount", count,
                            "SentTimestamp", sent, "SenderId", "nimbus",
                            "ApproximateFirstReceiveTimestamp", first, "messageAttributes", ma,
                            "md5OfBody", md5, "eventSource", "aws:sqs", "eventSourceARN", arn,
                            "awsRegion", "us-east-1"));
    }
    json_t *ev = json_pack("{s:o}", "Records", recs);
    char *out = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!out) abort();
    *len = strlen(out);
    return out;
}

static void pump_sub(nb_async *a, source *s)
{
    if (s->inflight >= s->max_concurrency) return;
    nb_fn_version *ver = nb_invoker_latest(a->iv, s->ns, s->fn);
    if (!ver) return;
    nb_q_stats st;
    nb_err err = {0};
    if (nb_q_get_stats(a->q, s->queue, &st, &err) < 0 || st.visible == 0) return;
    /* A batch window: a partial batch waits, up to the window, for more messages. */
    int64_t now = nb_now_ms();
    if (st.visible < s->batch_size && s->batch_window_ms > 0) {
        if (!s->waiting_since_ms) s->waiting_since_ms = now;
        if (now - s->waiting_since_ms < s->batch_window_ms) return;
    }
    s->waiting_since_ms = 0;
    nb_q_msg *msgs;
    /* The queue's visibility timeout, which the subscription made sure covers the function's
     * timeout (as Lambda requires). */
    int n = nb_q_receive(a->q, s->queue, s->batch_size, 0, &msgs, &err);
    if (n <= 0) return;
    job *j = job_new(a, s, msgs, n);
    size_t len;
    char *ev = sqs_event(s, msgs, n, &len);
    char rid[37];
    nb_uuid4(rid);
    const char *slash = strrchr(s->queue, '/');
    nb_inv_ctx ctx = {.trigger = NB_TRIG_QUEUE, .caller = slash ? slash + 1 : s->queue};
    nb_invoke_ex(a->iv, ver, ev, len, rid, &ctx, on_batch_result, j, &j->inv);
    free(ev);
}

/* ---------- the loop ---------- */

static void pump_all(nb_async *a)
{
    if (a->stopping) return;
    pthread_mutex_lock(&a->mu);
    int reload = a->reload;
    a->reload = 0;
    pthread_mutex_unlock(&a->mu);
    if (reload) load_subscriptions(a);
    /* Async queues appear with their first event: look for new ones. */
    size_t n;
    char **names = nb_q_list(a->q, "fn/", &n);
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < n; i++)
        fn_source(a, names[i]);
    pthread_mutex_unlock(&a->mu);
    nb_q_names_free(names, n);
    for (source *s = a->sources; s; s = s->next) {
        if (!s->seen) continue;
        if (s->is_sub)
            pump_sub(a, s);
        else
            pump_fn(a, s);
    }
}

static void on_wake(uv_async_t *w)
{
    pump_all(w->data);
}

static void on_tick(uv_timer_t *t)
{
    pump_all(t->data);
}

nb_async *nb_async_new(uv_loop_t *loop, nb_invoker *iv, nb_q *q, nb_store *store)
{
    nb_async *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->loop = loop;
    a->iv = iv;
    a->q = q;
    a->store = store;
    pthread_mutex_init(&a->mu, NULL);
    a->port = nb_async_port_new(loop);
    uv_async_init(loop, &a->wake, on_wake);
    a->wake.data = a;
    uv_timer_init(loop, &a->tick);
    a->tick.data = a;
    /* The tick catches what no notification announces: retries whose delay ended, capacity
     * that came back on another loop, batch windows. */
    uv_timer_start(&a->tick, on_tick, 100, 100);
    a->reload = 1;
    uv_async_send(&a->wake);
    return a;
}

void nb_async_notify(nb_async *a, const char *queue)
{
    (void)queue;
    if (a) uv_async_send(&a->wake);
}

void nb_async_reload(nb_async *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->reload = 1;
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->wake);
}

void nb_async_stop(nb_async *a)
{
    if (!a) return;
    a->stopping = 1;
    uv_timer_stop(&a->tick);
}

void nb_async_set_bus(nb_async *a, nb_bus *bus)
{
    if (a) a->bus = bus;
}

int nb_async_inflight(const nb_async *a)
{
    return a ? a->inflight : 0;
}

static void handle_closed(uv_handle_t *h)
{
    nb_async *a = h->data;
    if (--a->closing > 0) return;
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void nb_async_free(nb_async *a)
{
    if (!a) return;
    nb_async_port_free(a->port);
    for (source *s = a->sources; s;) {
        source *next = s->next;
        free(s);
        s = next;
    }
    a->sources = NULL;
    /* Freed when both handles have closed (the loop's next run). */
    a->closing = 2;
    uv_close((uv_handle_t *)&a->wake, handle_closed);
    uv_close((uv_handle_t *)&a->tick, handle_closed);
}

void nb_async_fn_stats(nb_async *a, const char *ns, const char *fn, nb_async_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!a) return;
    char q[NB_Q_NAME_MAX + 1];
    nb_q_stats st;
    nb_err err = {0};
    nb_async_fn_queue(ns, fn, q, sizeof q);
    if (nb_q_get_stats(a->q, q, &st, &err) == 0) {
        out->depth = st.visible + st.delayed;
        out->oldest_ms = st.oldest_ms;
    }
    nb_async_failed_queue(ns, fn, q, sizeof q);
    if (nb_q_get_stats(a->q, q, &st, &err) == 0)
        out->failed = st.visible + st.delayed + st.inflight;
    pthread_mutex_lock(&a->mu);
    nb_async_fn_queue(ns, fn, q, sizeof q);
    source *s = find_source(a, q, NULL);
    if (s) {
        out->inflight = s->inflight;
        out->retries = s->retries;
    }
    pthread_mutex_unlock(&a->mu);
}
