#include "events/bus.h"

#include "base/log.h"
#include "base/util.h"
#include "events/async.h"
#include "events/cloudevent.h"
#include "events/pattern.h"
#include "function/function.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Minutes: the bus is drained by nb_fan at once, this only bounds a message taken by a
 * forwarding that never settled (nb_fan sets its own visibility on receive anyway). */

/* ---------- the admin side ---------- */

int nb_rule_target_check(const char *target, nb_err *err)
{
    static const char *const kinds[] = {"function:", "queue:", "topic:"};
    for (size_t i = 0; target && i < NB_ARRAY_LEN(kinds); i++) {
        size_t n = strlen(kinds[i]);
        if (strncmp(target, kinds[i], n) == 0) {
            if (nb_fn_valid_name(target + n)) return 0;
            break;
        }
    }
    return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                      "target must be function:NAME, queue:NAME or topic:NAME (names match "
                      "[A-Za-z0-9_-]{1,64})");
}

json_t *nb_rule_admin(const json_t *in, const json_t *cur, nb_err *err)
{
    static const char *const fields[] = {"match", "target", "description", "enabled", NULL};
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    const char *k;
    json_t *v;
    json_t *o =
        cur ? json_deep_copy(cur) : json_pack("{s:s, s:b}", "description", "", "enabled", 1);
    json_object_foreach((json_t *)in, k, v)
    {
        json_object_set(o, k, v);
    }
    json_t *match = json_object_get(o, "match");
    const char *target = json_string_value(json_object_get(o, "target"));
    json_t *desc = json_object_get(o, "description");
    int rc = 0;
    if (!json_is_object(match)) {
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                        "match is required: an event pattern object such as "
                        "{\"type\":[\"order.created\"]}");
    } else {
        /* Compiled once here for its errors; the bus compiles the stored text again. */
        char *text = json_dumps(match, JSON_COMPACT);
        nb_pat *p = text ? nb_pat_compile(text, strlen(text), err) : NULL;
        if (!p)
            rc = text ? nb_err_prefix(err, "match")
                      : nb_err_set(err, 400, NB_E_INVALID_VALUE, "match: cannot encode");
        nb_pat_free(p);
        free(text);
    }
    if (rc == 0 && !target)
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                        "target is required: function:NAME, queue:NAME or topic:NAME");
    else if (rc == 0)
        rc = nb_rule_target_check(target, err);
    if (rc == 0 && (!json_is_string(desc) || json_string_length(desc) > NB_BUS_DESC_MAX))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                        "description must be a string of at most %d "
                        "bytes",
                        NB_BUS_DESC_MAX);
    if (rc == 0 && !json_is_boolean(json_object_get(o, "enabled")))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "enabled must be true or false");
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---------- the rules' snapshot ---------- */

typedef struct rule {
    char ns[NB_NAME_MAX + 1], name[NB_NAME_MAX + 1];
    char target[NB_NAME_MAX + 16];
    nb_pat *pat;
} rule;

/* Immutable once published; freed by whoever drops the last reference. Only enabled rules are
 * kept (a disabled one routes nothing and counts for nothing). */
typedef struct snap {
    int refs; /* under nb_bus.mu */
    rule *v;
    size_t n;
} snap;

struct nb_bus {
    nb_q *q;
    nb_store *store;
    nb_invoker *iv;
    pthread_mutex_t mu;        /* cur, refs */
    pthread_mutex_t reload_mu; /* one reload at a time: a slower, older read never wins */
    snap *cur;
};

static void snap_free(snap *s)
{
    for (size_t i = 0; i < s->n; i++)
        nb_pat_free(s->v[i].pat);
    free(s->v);
    free(s);
}

static snap *snap_get(nb_bus *b)
{
    pthread_mutex_lock(&b->mu);
    snap *s = b->cur;
    s->refs++;
    pthread_mutex_unlock(&b->mu);
    return s;
}

static void snap_put(nb_bus *b, snap *s)
{
    pthread_mutex_lock(&b->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (last) snap_free(s);
}

/* One stored rule into r; 0 when it is enabled and usable. */
static int rule_load(const nb_obj *o, rule *r)
{
    json_t *j = json_loads(o->body, 0, NULL);
    int ok = 0;
    if (j && json_is_true(json_object_get(j, "enabled"))) {
        const char *target = json_string_value(json_object_get(j, "target"));
        char *text = json_dumps(json_object_get(j, "match"), JSON_COMPACT);
        nb_err err = {0};
        memset(r, 0, sizeof *r);
        snprintf(r->ns, sizeof r->ns, "%s", o->ns);
        snprintf(r->name, sizeof r->name, "%s", o->name);
        if (target && nb_rule_target_check(target, &err) == 0 && text &&
            (r->pat = nb_pat_compile(text, strlen(text), &err)) != NULL) {
            snprintf(r->target, sizeof r->target, "%s", target);
            ok = 1;
        } else {
            nb_warn("bus", "rule %s/%s skipped: %s", o->ns, o->name, err.msg);
        }
        free(text);
    }
    json_decref(j);
    return ok ? 0 : -1;
}

int nb_bus_reload(nb_bus *b, nb_err *err)
{
    if (!b) return 0;
    pthread_mutex_lock(&b->reload_mu);
    nb_obj *objs = NULL;
    size_t n = 0;
    if (b->store->ops->obj_list(b->store, NULL, "rule", NULL, &objs, &n, err) < 0) {
        pthread_mutex_unlock(&b->reload_mu);
        nb_warn("bus", "read rules: %s", err->msg);
        return -1;
    }
    snap *s = calloc(1, sizeof *s);
    if (!s || !(s->v = calloc(n + 1, sizeof *s->v))) abort();
    s->refs = 1;
    for (size_t i = 0; i < n; i++)
        if (rule_load(&objs[i], &s->v[s->n]) == 0) s->n++;
    nb_obj_free_list(objs, n);
    pthread_mutex_lock(&b->mu);
    snap *old = b->cur;
    b->cur = s;
    pthread_mutex_unlock(&b->mu);
    if (old) snap_put(b, old);
    pthread_mutex_unlock(&b->reload_mu);
    return 0;
}

int nb_bus_enabled_rules(nb_bus *b, const char *ns)
{
    if (!b) return 0;
    snap *s = snap_get(b);
    int n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += strcmp(s->v[i].ns, ns) == 0;
    snap_put(b, s);
    return n;
}

/* ---------- writing to the bus ---------- */

typedef struct put_ctx {
    char ns[NB_NAME_MAX + 1];
    char type[128];
} put_ctx;

/* The queue's writer thread. */
static void put_done(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    (void)ids;
    (void)n;
    put_ctx *c = ud;
    if (status != 0)
        nb_warn("bus", "%s: event %s was refused (%d): %s", c->ns, c->type, status, msg ? msg : "");
    free(c);
}

/* bus/NS, made on demand. */
static int bus_queue(nb_bus *b, const char *ns, char *q, size_t size)
{
    nb_async_bus_queue(ns, q, size);
    nb_err err = {0};
    if (nb_async_ensure_queue(b->q, q, &err) < 0) {
        nb_warn("bus", "%s: %s", q, err.msg);
        return -1;
    }
    return 0;
}

int nb_bus_put(nb_bus *b, const char *ns, const json_t *event)
{
    char q[NB_Q_NAME_MAX + 1];
    nb_err err = {0};
    if (bus_queue(b, ns, q, sizeof q) < 0) return -1;
    char *body = json_dumps(event, JSON_COMPACT);
    if (!body) return -1;
    put_ctx *c = calloc(1, sizeof *c);
    if (!c) abort();
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    snprintf(c->type, sizeof c->type, "%s",
             json_string_value(json_object_get(event, "type")) ?: "");
    nb_q_out out = {.body = body, .body_len = strlen(body)};
    int rc = nb_q_send(b->q, q, &out, 1, put_done, c, &err);
    if (rc < 0) {
        nb_warn("bus", "%s: event %s was refused: %s", ns, c->type, err.msg);
        free(c);
    }
    free(body);
    return rc;
}

/* The platform event, or NULL when there is none to emit. */
static json_t *platform_make(nb_bus *b, const char *ns, const char *type, const char *source,
                             const char *subject, const char *id, const json_t *data, int hops)
{
    /* The cheap check first: a namespace without rules gets no write at all. */
    if (!b || hops > NB_BUS_MAX_HOPS || nb_bus_enabled_rules(b, ns) == 0) {
        if (b && hops > NB_BUS_MAX_HOPS)
            nb_warn("bus", "%s: %s from %s not emitted: %d rule hops (a loop of rules?)", ns, type,
                    source, hops);
        return NULL;
    }
    json_t *ev = nb_ce_make(id, source, type, subject, data);
    if (ev && hops > 0) json_object_set_new(ev, "nimbushops", json_integer(hops));
    return ev;
}

int nb_bus_platform_event(nb_bus *b, const char *ns, const char *type, const char *source,
                          const char *subject, const char *id, const json_t *data, int hops)
{
    json_t *ev = platform_make(b, ns, type, source, subject, id, data, hops);
    if (!ev) return 0;
    int rc = nb_bus_put(b, ns, ev);
    json_decref(ev);
    return rc < 0 ? -1 : 1;
}

char *nb_bus_platform_text(nb_bus *b, const char *ns, const char *type, const char *source,
                           const char *subject, const char *id, const json_t *data, char *queue,
                           size_t qsize)
{
    json_t *ev = platform_make(b, ns, type, source, subject, id, data, 0);
    char *text = ev && bus_queue(b, ns, queue, qsize) == 0 ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    return text;
}

/* ---------- routing ---------- */

/* The topic message convention: attributes as SNS message attributes, JSON text. */
static json_t *topic_attrs(const json_t *ev)
{
    static const char *const from[][2] = {
        {"type", "ce_type"}, {"source", "ce_source"}, {"subject", "ce_subject"}};
    json_t *a = json_object();
    for (size_t i = 0; i < NB_ARRAY_LEN(from); i++) {
        const char *v = json_string_value(json_object_get(ev, from[i][0]));
        if (v)
            json_object_set_new(a, from[i][1],
                                json_pack("{s:s, s:s}", "Type", "String", "Value", v));
    }
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    json_t *attrs = json_pack("{s:s}", "attributes", text ? text : "{}");
    free(text);
    return attrs;
}

/* nb_fan's planner for "bus/NS": one copy per enabled rule of NS whose pattern matches. */
static int plan(void *ud, const char *queue, const nb_q_msg *m, nb_fan_plan *p)
{
    nb_bus *b = ud;
    const char *ns = queue + 4; /* "bus/" */
    json_t *ev = json_loadb(m->body, m->body_len, 0, NULL);
    if (!json_is_object(ev)) {
        /* Never parsable: keeping it would only retry it forever. */
        nb_warn("bus", "%s: message %s is not an event; dropped", queue, m->id);
        json_decref(ev);
        return 0;
    }
    /* The count may come from a client's event: only 0..MAX means anything (a negative one
     * would otherwise lift the limit). */
    json_int_t hops = json_integer_value(json_object_get(ev, "nimbushops"));
    if (hops < 0) hops = 0;
    if (hops > NB_BUS_MAX_HOPS + 1) hops = NB_BUS_MAX_HOPS + 1;
    json_int_t depth = json_integer_value(json_object_get(ev, NB_BUS_DEPTH_EXT));
    if (depth < 0) depth = 0;
    if (depth > 1000) depth = 1000; /* past any --max-call-depth */
    char hops_text[24];
    snprintf(hops_text, sizeof hops_text, "%lld", (long long)hops);
    snap *s = snap_get(b);
    for (size_t i = 0; i < s->n; i++) {
        const rule *r = &s->v[i];
        if (strcmp(r->ns, ns) != 0 || !nb_pat_match(r->pat, ev)) continue;
        if (strncmp(r->target, "function:", 9) == 0 && b->iv &&
            !nb_invoker_latest(b->iv, ns, r->target + 9)) {
            nb_warn("bus", "rule %s/%s: function %s does not exist; event %s not delivered to it",
                    ns, r->name, r->target + 9, m->id);
            continue;
        }
        char tq[NB_Q_NAME_MAX + 1];
        if (nb_async_target_queue(b->q, ns, r->target, tq, sizeof tq) < 0) {
            nb_warn("bus", "rule %s/%s: target %s does not exist; event %s not delivered to it", ns,
                    r->name, r->target, m->id);
            continue;
        }
        json_t *attrs;
        if (strncmp(r->target, "topic:", 6) == 0)
            attrs = topic_attrs(ev);
        else if (strncmp(r->target, "function:", 9) == 0) {
            attrs = json_pack("{s:s, s:s}", "rule", r->name, NB_BUS_HOPS_ATTR, hops_text);
            /* An event a function emitted: its chain goes on in the function the rule starts,
             * so a function whose events come back to it stops at the call depth limit. */
            if (depth > 0) {
                char d[16];
                snprintf(d, sizeof d, "%lld", (long long)depth);
                json_object_set_new(attrs, "nimbus_depth", json_string(d));
            }
        } else
            attrs = json_pack("{s:s}", "rule", r->name);
        if (nb_fan_plan_add(p, tq, m->body, m->body_len, attrs, 0) < 0)
            nb_warn("bus", "%s: event %s matches more rules than can be copied", queue, m->id);
        json_decref(attrs);
    }
    snap_put(b, s);
    json_decref(ev);
    return 0;
}

nb_bus *nb_bus_new(nb_q *q, nb_store *store, nb_fan *fan, nb_invoker *iv)
{
    nb_bus *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->q = q;
    b->store = store;
    b->iv = iv;
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->reload_mu, NULL);
    b->cur = calloc(1, sizeof *b->cur);
    if (!b->cur) abort();
    b->cur->refs = 1;
    nb_err err = {0};
    nb_bus_reload(b, &err);
    if (fan) nb_fan_source(fan, "bus/", plan, b);
    return b;
}

void nb_bus_queue_message(nb_bus *b, const char *ns, const char *queue, const char *id,
                          const char *body, size_t len, const json_t *attrs)
{
    if (nb_bus_enabled_rules(b, ns) == 0) return;
    char source[2 * NB_NAME_MAX + 32];
    snprintf(source, sizeof source, "nimbus://%s/queues/%s", ns, queue);
    json_t *data = json_pack("{s:s, s:s, s:s%, s:O}", "queue", queue, "messageId", id, "body", body,
                             len, "attributes", attrs ? (json_t *)attrs : json_object());
    if (data) nb_bus_platform_event(b, ns, "nimbus.queue.message", source, NULL, id, data, 0);
    json_decref(data);
}

void nb_bus_free(nb_bus *b)
{
    if (!b) return;
    snap_free(b->cur);
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->reload_mu);
    free(b);
}
