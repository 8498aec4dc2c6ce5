#include "events/calls.h"

#include "base/log.h"
#include "base/util.h"
#include "events/bus.h"
#include "events/cloudevent.h"
#include "events/topics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nb_calls {
    nb_q *q;
    nb_async_port *port;
    nb_bus *bus; /* platform events of the queue sends; NULL until set */
};

void nb_calls_set_bus(nb_calls *c, nb_bus *bus)
{
    if (c) c->bus = bus;
}

nb_calls *nb_calls_new(nb_q *q, nb_async_port *port)
{
    nb_calls *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->q = q;
    c->port = port;
    return c;
}

void nb_calls_free(nb_calls *c)
{
    free(c);
}

/* One durable send on its way: filled on the writer thread, answered on the loop. */
typedef struct pending {
    nb_calls *calls;
    nb_call *call;
    const char *id_field; /* the answer's {"<id_field>": id} */
    int status;           /* nb_q's: 0 durable */
    char msg[256];
    char id[256]; /* an emitted event's own id may be longer than a UUID */
    int id_known; /* invoke_async: the id was chosen before the send */
    /* A user queue's send, kept for its platform event when the namespace has rules. */
    char ns[NB_NAME_MAX + 1], queue[NB_NAME_MAX + 1];
    char *body;
    size_t len;
    json_t *attrs;
} pending;

static const char *code_of(int status)
{
    return status == 404   ? NB_E_NOT_FOUND
           : status == 413 ? NB_E_TOO_LARGE
           : status == 400 ? NB_E_INVALID_VALUE
           : status == 409 ? NB_E_CONFLICT
                           : NB_E_UNAVAILABLE;
}

static void answer_on_loop(void *ud)
{
    pending *p = ud;
    if (p->status != 0) {
        nb_call_fail(p->call, p->status, code_of(p->status), "%s", p->msg);
    } else {
        if (p->body)
            nb_bus_queue_message(p->calls->bus, p->ns, p->queue, p->id, p->body, p->len, p->attrs);
        json_t *o = json_pack("{s:s}", p->id_field, p->id);
        char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (body)
            nb_call_finish(p->call, 202, "", body, strlen(body));
        else /* an id that is not UTF-8 (cut inside a character): the send still happened */
            nb_call_finish(p->call, 202, "", "{}", 2);
        free(body);
    }
    free(p->body);
    json_decref(p->attrs);
    free(p);
}

/* The queue's writer thread: back to the loop of the call. */
static void sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    pending *p = ud;
    p->status = status;
    snprintf(p->msg, sizeof p->msg, "%s", msg ? msg : "");
    if (status == 0 && n && !p->id_known) snprintf(p->id, sizeof p->id, "%s", ids[0]);
    nb_async_post(p->calls->port, answer_on_loop, p);
}

static pending *pending_new(nb_calls *c, nb_call *call, const char *id_field)
{
    pending *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->calls = c;
    p->call = call;
    p->id_field = id_field;
    return p;
}

/* The call's attributes: NULL when none were given, or a JSON value (the caller decref's). */
static int parse_attrs(const nb_inst_call *k, json_t **out, nb_err *err)
{
    *out = NULL;
    if (k->attrs_len == 0) return 0;
    json_error_t je;
    *out = json_loadb(k->attrs, k->attrs_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "attributes must be a JSON object");
    }
    return 0;
}

static void do_invoke_async(nb_calls *c, nb_call *call, const nb_call_info *in)
{
    const nb_inst_call *k = in->call;
    nb_fn_version *ver = nb_invoker_latest(in->iv, in->ns, k->target);
    if (!ver) {
        nb_call_fail(call, 404, NB_E_NOT_FOUND, "function '%s' not found", k->target);
        return;
    }
    if (k->len > NB_ASYNC_MAX_EVENT) {
        nb_call_fail(call, 413, NB_E_TOO_LARGE, "an async event is at most %u bytes",
                     NB_ASYNC_MAX_EVENT);
        return;
    }
    /* Events travel on as text (records, the failure log's view), as over the admin API. */
    if (!nb_utf8_valid(k->body, k->len)) {
        nb_call_fail(call, 400, NB_E_INVALID_VALUE, "an async event must be UTF-8 text");
        return;
    }
    pending *p = pending_new(c, call, "requestId");
    p->id_known = 1;
    nb_err err = {0};
    /* The async hop keeps the chain: depth, caller and trace ride in the message. No deadline:
     * nobody waits for it. */
    nb_inv_ctx ctx = in->next;
    ctx.deadline_ms = 0;
    if (nb_async_enqueue(c->q, in->ns, k->target, k->body, k->len, NULL, &ctx, p->id, sent, p,
                         &err) < 0) {
        free(p);
        nb_call_fail(call, err.status ? err.status : 503, err.code ? err.code : NB_E_UNAVAILABLE,
                     "%s", err.msg);
    }
}

static void do_send(nb_calls *c, nb_call *call, const nb_call_info *in)
{
    const nb_inst_call *k = in->call;
    char q[NB_Q_NAME_MAX + 1];
    nb_async_user_queue(in->ns, k->target, q, sizeof q);
    nb_err err = {0};
    json_t *attrs = NULL;
    if (!k->target[0] || strchr(k->target, '/') || !nb_q_exists(c->q, q))
        nb_err_set(&err, 404, NB_E_NOT_FOUND, "queue '%s' not found", k->target);
    else if (parse_attrs(k, &attrs, &err) == 0 && nb_async_check_attrs(attrs, &err) == 0 &&
             !nb_utf8_valid(k->body, k->len))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "a message body must be UTF-8 text");
    if (err.status) {
        json_decref(attrs);
        nb_call_fail(call, err.status, err.code, "%s", err.msg);
        return;
    }
    pending *p = pending_new(c, call, "messageId");
    if (nb_bus_enabled_rules(c->bus, in->ns) > 0) {
        snprintf(p->ns, sizeof p->ns, "%s", in->ns);
        snprintf(p->queue, sizeof p->queue, "%s", k->target);
        p->body = malloc(k->len + 1);
        if (!p->body) abort();
        memcpy(p->body, k->body, k->len);
        p->body[k->len] = 0;
        p->len = k->len;
        p->attrs = json_incref(attrs);
    }
    nb_q_out out = {k->body, k->len, attrs, 0, NULL, 0};
    if (nb_q_send(c->q, q, &out, 1, sent, p, &err) < 0) {
        free(p->body);
        json_decref(p->attrs);
        free(p);
        nb_call_fail(call, err.status ? err.status : 503, err.code ? err.code : NB_E_UNAVAILABLE,
                     "%s", err.msg);
    }
    json_decref(attrs);
}

/* {"attributes": {...}, "subject": "..."}: the topic's own rules (nb_topic_publish) judge the
 * values, so a message published from a function and over the admin API are one thing. */
static void do_publish(nb_calls *c, nb_call *call, const nb_call_info *in)
{
    const nb_inst_call *k = in->call;
    nb_err err = {0};
    json_t *attrs = NULL;
    const char *key;
    json_t *v;
    if (parse_attrs(k, &attrs, &err) == 0) {
        json_object_foreach(attrs, key, v)
        {
            if (strcmp(key, "attributes") != 0 && strcmp(key, "subject") != 0) {
                nb_err_set(&err, 400, NB_E_UNKNOWN_FIELD, "unknown publish field '%.64s'", key);
                break;
            }
        }
    }
    json_t *subject = json_object_get(attrs, "subject");
    if (!err.status && subject && !json_is_null(subject) && !json_is_string(subject))
        nb_err_set(&err, 400, NB_E_INVALID_VALUE, "subject must be a string");
    pending *p = err.status ? NULL : pending_new(c, call, "messageId");
    json_t *chain = nb_async_chain_attrs(&in->next);
    if (p && nb_topic_publish(c->q, in->ns, k->target, k->body, k->len,
                              json_object_get(attrs, "attributes"), json_string_value(subject),
                              chain, sent, p, &err) < 0) {
        free(p);
        p = NULL;
    }
    json_decref(attrs);
    json_decref(chain);
    if (!p)
        nb_call_fail(call, err.status ? err.status : 503, err.code ? err.code : NB_E_UNAVAILABLE,
                     "%s", err.msg);
}

static void do_emit(nb_calls *c, nb_call *call, const nb_call_info *in)
{
    const nb_inst_call *k = in->call;
    nb_err err = {0};
    if (k->len > NB_CE_MAX_BODY) {
        nb_call_fail(call, 413, NB_E_TOO_LARGE, "an event is at most %u bytes", NB_CE_MAX_BODY);
        return;
    }
    json_error_t je;
    json_t *ev = json_loadb(k->body, k->len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        nb_call_fail(call, 400, NB_E_INVALID_JSON,
                     "emit takes one CloudEvent in structured JSON (an object)");
        return;
    }
    /* What the platform knows better than the function: who sent it, and when. */
    if (!json_object_get(ev, "specversion"))
        json_object_set_new(ev, "specversion", json_string("1.0"));
    if (!json_object_get(ev, "id")) {
        char id[37];
        nb_uuid4(id);
        json_object_set_new(ev, "id", json_string(id));
    }
    if (!json_object_get(ev, "source")) {
        char src[2 * NB_NAME_MAX + 32];
        snprintf(src, sizeof src, "nimbus://%s/functions/%s", in->ns, in->fn);
        json_object_set_new(ev, "source", json_string(src));
    }
    if (!json_object_get(ev, "time")) {
        char ts[32];
        nb_time_iso8601(nb_now_ms(), ts, sizeof ts);
        json_object_set_new(ev, "time", json_string(ts));
    }
    if (in->next.depth > 0) json_object_set_new(ev, NB_BUS_DEPTH_EXT, json_integer(in->next.depth));
    if (nb_ce_validate(ev, &err) < 0) {
        json_decref(ev);
        nb_call_fail(call, err.status, err.code, "%s", err.msg);
        return;
    }
    char q[NB_Q_NAME_MAX + 1];
    nb_async_bus_queue(in->ns, q, sizeof q);
    if (nb_async_ensure_queue(c->q, q, &err) < 0) {
        json_decref(ev);
        nb_call_fail(call, err.status ? err.status : 503, err.code ? err.code : NB_E_UNAVAILABLE,
                     "%s", err.msg);
        return;
    }
    char *text = json_dumps(ev, JSON_COMPACT);
    pending *p = pending_new(c, call, "id");
    p->id_known = 1;
    snprintf(p->id, sizeof p->id, "%s", json_string_value(json_object_get(ev, "id")));
    json_decref(ev);
    if (!text) abort(); /* a validated event always encodes: only OOM gets here */
    nb_q_out out = {text, strlen(text), NULL, 0, NULL, 0};
    nb_err serr = {0};
    if (nb_q_send(c->q, q, &out, 1, sent, p, &serr) < 0) {
        free(p);
        nb_call_fail(call, serr.status ? serr.status : 503,
                     serr.code ? serr.code : NB_E_UNAVAILABLE, "%s", serr.msg);
    }
    free(text);
}

static void handle(void *ud, nb_call *call, const nb_call_info *in)
{
    nb_calls *c = ud;
    const char *op = in->call->op;
    if (strcmp(op, "invoke_async") == 0)
        do_invoke_async(c, call, in);
    else if (strcmp(op, "send") == 0)
        do_send(c, call, in);
    else if (strcmp(op, "publish") == 0)
        do_publish(c, call, in);
    else if (strcmp(op, "emit") == 0)
        do_emit(c, call, in);
    else
        nb_call_fail(call, 400, NB_E_BAD_REQUEST,
                     "unknown call '%.32s' (invoke, invoke_async, send, publish, emit)", op);
}

const nb_call_ops nb_calls_ops = {.handle = handle};
