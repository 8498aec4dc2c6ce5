#include "events/topics.h"

#include "base/log.h"
#include "base/util.h"
#include "events/async.h"
#include "events/bus.h"
#include "events/pattern.h"
#include "events/webhook.h"
#include "function/function.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Topic queues and webhook delivery queues keep a message until it is forwarded or failed: the
 * longest retention a queue has (their only consumers are the daemon's). */
#define KEEP_MS (14 * 86400000LL)
/* Room for what a copy adds around the message and its attributes (the Lambda event's and the
 * notification's fixed fields and ARNs): a message whose copies could not fit a queue message is
 * refused at publish, not found out at fan-out. */
#define COPY_OVERHEAD (8u << 10)

enum { SUB_FUNCTION, SUB_QUEUE, SUB_WEBHOOK };

/* ---------- names ---------- */

void nb_topic_arn(const char *ns, const char *topic, const char *sub_id, char *out, size_t size)
{
    if (sub_id)
        snprintf(out, size, "arn:nimbus:sns:local:%s:%s:%s", ns, topic, sub_id);
    else
        snprintf(out, size, "arn:nimbus:sns:local:%s:%s", ns, topic);
}

static void wh_queue(const char *ns, const char *topic, const char *id, char *out, size_t size)
{
    snprintf(out, size, "wh/%s/%s/%s", ns, topic, id);
}

static void wh_failed_queue(const char *ns, const char *topic, const char *id, char *out,
                            size_t size)
{
    snprintf(out, size, "failed/wh/%s/%s/%s", ns, topic, id);
}

/* "t/NS/T" or "wh/NS/T/ID" split at its slashes into parts (each at most NB_NAME_MAX, or 36
 * for an id). n parts after the prefix; 0 or -1. */
static int split_name(const char *q, const char *prefix, int n, char parts[][NB_NAME_MAX + 1])
{
    size_t pl = strlen(prefix);
    if (strncmp(q, prefix, pl) != 0) return -1;
    const char *p = q + pl;
    for (int i = 0; i < n; i++) {
        const char *end = i + 1 < n ? strchr(p, '/') : p + strlen(p);
        if (!end || end == p || (size_t)(end - p) > NB_NAME_MAX) return -1;
        snprintf(parts[i], NB_NAME_MAX + 1, "%.*s", (int)(end - p), p);
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* ---------- attributes ---------- */

/* A JSON-style number: what nb_pat compares numerically in attributes. */
static int is_number_text(const char *s)
{
    size_t i = 0, len = strlen(s);
    if (s[i] == '-') i++;
    if (i == len || s[i] < '0' || s[i] > '9') return 0;
    if (s[i] == '0' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') return 0;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start) return 0;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start) return 0;
    }
    if (i != len || len > 64) return 0;
    errno = 0;
    double d = strtod(s, NULL);
    return isfinite(d) && !(errno == ERANGE && fabs(d) > 1.0);
}

/* An array of scalars, as SNS's String.Array holds. */
static int scalar_array(const json_t *a)
{
    size_t i;
    json_t *v;
    if (!json_is_array(a)) return 0;
    json_array_foreach(a, i, v)
    {
        if (json_is_array(v) || json_is_object(v)) return 0;
    }
    return 1;
}

static int valid_attr_name(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > NB_TOPIC_ATTR_NAME_MAX || k[0] == '.' || k[n - 1] == '.' || strstr(k, ".."))
        return 0;
    /* SNS reserves these prefixes for its own attributes. */
    if (strncasecmp(k, "AWS.", 4) == 0 || strncasecmp(k, "Amazon.", 7) == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* Shortest text that reads back as d ("0.1", not "0.10000000000000001"). */
static void real_text(double d, char *out, size_t size)
{
    if (d == floor(d) && fabs(d) < 1e15) { /* -2.5e3 is -2500, as a person would write it */
        snprintf(out, size, "%.0f", d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, d);
        if (strtod(out, NULL) == d) return;
    }
}

/* One attribute value into {"Type","Value"} (new ref), or NULL with err. */
static json_t *attr_value(const char *k, const json_t *v, nb_err *err)
{
    char num[40];
    if (json_is_string(v)) {
        if (json_string_length(v) == 0) goto empty;
        return json_pack("{s:s, s:O}", "Type", "String", "Value", v);
    }
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        return json_pack("{s:s, s:s}", "Type", "Number", "Value", num);
    }
    if (json_is_real(v)) {
        real_text(json_real_value(v), num, sizeof num);
        return json_pack("{s:s, s:s}", "Type", "Number", "Value", num);
    }
    if (json_is_array(v)) {
        if (!scalar_array(v)) goto bad_array;
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) abort();
        json_t *o = json_pack("{s:s, s:s}", "Type", "String.Array", "Value", text);
        free(text);
        return o;
    }
    if (json_is_object(v)) {
        const char *type = json_string_value(json_object_get(v, "Type"));
        const json_t *val = json_object_get(v, "Value");
        if (json_object_size(v) != 2 || !type || !json_is_string(val)) {
            nb_err_set(err, 400, NB_E_INVALID_VALUE,
                       "attributes.%.64s: an object must be {\"Type\": ..., \"Value\": \"...\"}",
                       k);
            return NULL;
        }
        const char *s = json_string_value(val);
        if (json_string_length(val) == 0) goto empty;
        if (strcmp(type, "String") == 0) return json_pack("{s:s, s:O}", "Type", type, "Value", val);
        if (strcmp(type, "Number") == 0) {
            if (!is_number_text(s)) {
                nb_err_set(err, 400, NB_E_INVALID_VALUE,
                           "attributes.%.64s: a Number's Value must be a number such as 12 or "
                           "-2.5e3, not '%.64s'",
                           k, s);
                return NULL;
            }
            return json_pack("{s:s, s:O}", "Type", type, "Value", val);
        }
        if (strcmp(type, "String.Array") == 0) {
            json_t *a = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
            int ok = scalar_array(a);
            json_decref(a);
            if (!ok) goto bad_array;
            return json_pack("{s:s, s:O}", "Type", type, "Value", val);
        }
        nb_err_set(err, 400, NB_E_INVALID_VALUE,
                   "attributes.%.64s: Type must be String, Number or String.Array, not '%.32s'", k,
                   type);
        return NULL;
    }
    nb_err_set(err, 400, NB_E_INVALID_VALUE,
               "attributes.%.64s must be a string, a number, an array or {\"Type\", \"Value\"}", k);
    return NULL;
empty:
    nb_err_set(err, 400, NB_E_INVALID_VALUE, "attributes.%.64s: the value must not be empty", k);
    return NULL;
bad_array:
    nb_err_set(err, 400, NB_E_INVALID_VALUE,
               "attributes.%.64s: a String.Array is a JSON array of strings, numbers, booleans or "
               "null",
               k);
    return NULL;
}

int nb_topic_attrs_normalise(const json_t *in, char **json_text_out, nb_err *err)
{
    *json_text_out = NULL;
    if (!in || json_is_null(in)) return 0;
    if (!json_is_object(in))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "attributes must be an object");
    if (json_object_size(in) > NB_TOPIC_MAX_ATTRS)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "attributes: %zu of them; a message has at most %d", json_object_size(in),
                          NB_TOPIC_MAX_ATTRS);
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        if (!valid_attr_name(k)) {
            json_decref(out);
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "attributes: invalid name '%.64s': [A-Za-z0-9_.-]{1,256}, no "
                              "leading, trailing or double '.', no AWS. or Amazon. prefix",
                              k);
        }
        json_t *a = attr_value(k, v, err);
        if (!a) {
            json_decref(out);
            return -1;
        }
        json_object_set_new(out, k, a);
    }
    if (json_object_size(out) > 0) {
        *json_text_out = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        if (!*json_text_out) abort();
    }
    json_decref(out);
    return 0;
}

/* Bytes of s once JSON-escaped as jansson writes it. */
static size_t escaped_len(const char *s, size_t len)
{
    size_t n = 2;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f')
            n += 2;
        else if (c < 0x20 || c == 0x7f)
            n += 6;
        else
            n++;
    }
    return n;
}

int nb_topic_publish(nb_q *q, const char *ns, const char *topic, const char *message, size_t len,
                     const json_t *attributes, const char *subject, const json_t *chain,
                     nb_q_sent_cb cb, void *ud, nb_err *err)
{
    if (!nb_fn_valid_name(ns) || !nb_fn_valid_name(topic))
        return nb_err_set(err, 400, NB_E_INVALID_NAME, "invalid topic name: [A-Za-z0-9_-]{1,64}");
    if (len == 0) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "message must not be empty");
    if (len > NB_TOPIC_MAX_MESSAGE)
        return nb_err_set(err, 413, NB_E_TOO_LARGE, "message is %zu bytes; the limit is %u", len,
                          NB_TOPIC_MAX_MESSAGE);
    if (!nb_utf8_valid(message, len))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "message must be UTF-8 text");
    if (subject) {
        size_t sl = strlen(subject);
        int ok = sl >= 1 && sl <= NB_TOPIC_SUBJECT_MAX && subject[0] != ' ';
        for (size_t i = 0; ok && i < sl; i++)
            ok = subject[i] >= 0x20 && subject[i] < 0x7f;
        if (!ok)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "subject must be 1..%d printable ASCII characters, not starting "
                              "with a blank",
                              NB_TOPIC_SUBJECT_MAX);
    }
    char *attrs_text = NULL;
    if (nb_topic_attrs_normalise(attributes, &attrs_text, err) < 0) return -1;
    /* SNS's cap is on the message and its attributes; a copy also JSON-escapes the message. */
    size_t alen = attrs_text ? strlen(attrs_text) : 0;
    if (len + alen > NB_TOPIC_MAX_MESSAGE ||
        escaped_len(message, len) + 2 * alen + COPY_OVERHEAD > NB_Q_MAX_BODY) {
        free(attrs_text);
        return nb_err_set(err, 413, NB_E_TOO_LARGE,
                          "message with its attributes is over %u bytes (or over %u once "
                          "JSON-escaped)",
                          NB_TOPIC_MAX_MESSAGE, NB_Q_MAX_BODY - COPY_OVERHEAD);
    }
    char qn[NB_Q_NAME_MAX + 1];
    nb_async_topic_queue(ns, topic, qn, sizeof qn);
    if (!nb_q_exists(q, qn)) {
        free(attrs_text);
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "topic '%s' not found", topic);
    }
    json_t *qa = json_object();
    if (attrs_text) json_object_set_new(qa, "attributes", json_string(attrs_text));
    if (subject) json_object_set_new(qa, "subject", json_string(subject));
    if (chain) nb_async_chain_copy(chain, qa);
    free(attrs_text);
    nb_q_out out = {message, len, json_object_size(qa) ? qa : NULL, 0, NULL, 0};
    int rc = nb_q_send(q, qn, &out, 1, cb, ud, err);
    json_decref(qa);
    if (rc < 0 && err->status == 404)
        nb_err_set(err, 404, NB_E_NOT_FOUND, "topic '%s' not found", topic);
    return rc;
}

/* ---------- SNS's shapes ---------- */

json_t *nb_topic_match_attrs(const json_t *attrs)
{
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)attrs, k, v)
    {
        const char *type = json_string_value(json_object_get(v, "Type"));
        const char *val = json_string_value(json_object_get(v, "Value"));
        if (!val) continue;
        json_t *arr = type && strcmp(type, "String.Array") == 0 ? json_loads(val, 0, NULL) : NULL;
        json_object_set_new(o, k, json_is_array(arr) ? arr : json_string(val));
        if (arr && !json_is_array(arr)) json_decref(arr);
    }
    return o;
}

/* The fields the notification and the Lambda event share, with the two spellings SNS uses
 * for the URL keys (SigningCertURL in notifications, SigningCertUrl in Lambda events). */
static json_t *sns_fields(const nb_topic_msg *m, int lambda)
{
    char arn[256], ts[32];
    nb_topic_arn(m->ns, m->topic, NULL, arn, sizeof arn);
    nb_time_iso8601(m->sent_ms, ts, sizeof ts);
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "Type", "Notification", "MessageId", m->id, "TopicArn", arn);
    if (m->subject || lambda)
        json_object_set_new(o, "Subject", m->subject ? json_string(m->subject) : json_null());
    json_t *msg = json_stringn(m->message, m->len);
    if (!msg) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "Message", msg);
    json_object_set_new(o, "Timestamp", json_string(ts));
    json_object_set_new(o, "SignatureVersion", json_string("1"));
    /* nimbus holds no signing certificate: empty, where SNS puts its signature and URLs. */
    json_object_set_new(o, "Signature", json_string(""));
    json_object_set_new(o, lambda ? "SigningCertUrl" : "SigningCertURL", json_string(""));
    json_object_set_new(o, lambda ? "UnsubscribeUrl" : "UnsubscribeURL", json_string(""));
    if (lambda || json_object_size(m->attrs) > 0)
        json_object_set_new(o, "MessageAttributes",
                            m->attrs ? json_deep_copy(m->attrs) : json_object());
    return o;
}

json_t *nb_topic_notification(const nb_topic_msg *m)
{
    return sns_fields(m, 0);
}

json_t *nb_topic_lambda_event(const nb_topic_msg *m, const char *sub_id)
{
    json_t *sns = sns_fields(m, 1);
    if (!sns) return NULL;
    char arn[320];
    nb_topic_arn(m->ns, m->topic, sub_id, arn, sizeof arn);
    return json_pack("{s:[{s:s, s:s, s:s, s:o}]}", "Records", "EventSource", "aws:sns",
                     "EventVersion", "1.0", "EventSubscriptionArn", arn, "Sns", sns);
}

/* ---------- the admin side ---------- */

static json_t *body_of(const nb_obj *o)
{
    json_t *j = json_loads(o->body, 0, NULL);
    return j ? j : json_object();
}

/* 1 found (o filled), 0 absent (err 404 set), -1 error. */
static int get_topic(nb_store *s, const char *ns, const char *name, nb_obj *o, nb_err *err)
{
    int rc = s->ops->obj_get(s, ns, NB_TOPIC_KIND, name, o, err);
    if (rc == 0) nb_err_set(err, 404, NB_E_NOT_FOUND, "topic '%s' not found", name);
    return rc;
}

static int list_subs(nb_store *s, const char *ns, const char *topic, nb_obj **out, size_t *n,
                     nb_err *err)
{
    char prefix[NB_NAME_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", topic);
    return s->ops->obj_list(s, ns, NB_TOPIC_SUB_KIND, prefix, out, n, err);
}

static json_t *stats_view(nb_q *q, const char *queue)
{
    nb_q_stats st;
    nb_err err = {0};
    if (nb_q_get_stats(q, queue, &st, &err) < 0) return json_null();
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "visible", (json_int_t)st.visible, "in_flight",
                     (json_int_t)st.inflight, "delayed", (json_int_t)st.delayed, "oldest_ms",
                     (json_int_t)st.oldest_ms, "sent", (json_int_t)st.sent);
}

static json_t *topic_view(nb_q *q, const nb_obj *o, size_t nsubs)
{
    json_t *b = body_of(o);
    char arn[256], qn[NB_Q_NAME_MAX + 1], t[32];
    nb_topic_arn(o->ns, o->name, NULL, arn, sizeof arn);
    nb_async_topic_queue(o->ns, o->name, qn, sizeof qn);
    json_t *v =
        json_pack("{s:s, s:s, s:s, s:s, s:I}", "namespace", o->ns, "name", o->name, "display_name",
                  json_string_value(json_object_get(b, "display_name")) ?: "", "arn", arn,
                  "subscriptions", (json_int_t)nsubs);
    nb_time_iso8601(o->created_at, t, sizeof t);
    json_object_set_new(v, "created_at", json_string(t));
    nb_time_iso8601(o->updated_at, t, sizeof t);
    json_object_set_new(v, "updated_at", json_string(t));
    json_object_set_new(v, "stats", stats_view(q, qn));
    json_decref(b);
    return v;
}

json_t *nb_topic_views(nb_store *s, nb_q *q, const char *ns, const char *name, nb_err *err)
{
    nb_obj *topics = NULL, *subs = NULL, one = {0};
    size_t nt = 0, ns_ = 0;
    if (name) {
        if (get_topic(s, ns, name, &one, err) != 1) return NULL;
        topics = &one;
        nt = 1;
    } else if (s->ops->obj_list(s, ns, NB_TOPIC_KIND, NULL, &topics, &nt, err) < 0) {
        return NULL;
    }
    if (s->ops->obj_list(s, ns, NB_TOPIC_SUB_KIND, name ? name : NULL, &subs, &ns_, err) < 0) {
        if (name)
            nb_obj_clear(&one);
        else
            nb_obj_free_list(topics, nt);
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < nt; i++) {
        size_t count = 0, tl = strlen(topics[i].name);
        for (size_t k = 0; k < ns_; k++)
            count += strncmp(subs[k].name, topics[i].name, tl) == 0 && subs[k].name[tl] == '/';
        json_array_append_new(arr, topic_view(q, &topics[i], count));
    }
    nb_obj_free_list(subs, ns_);
    if (name) {
        nb_obj_clear(&one);
        json_t *v = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        return v;
    }
    nb_obj_free_list(topics, nt);
    return arr;
}

int nb_topic_create(nb_store *s, nb_q *q, const char *ns, const json_t *in, json_t **out,
                    int *created, nb_err *err)
{
    static const char *const fields[] = {"name", "display_name", NULL};
    *out = NULL;
    *created = 0;
    if (!json_is_object(in))
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "body must be a JSON object");
    if (nb_json_known_fields(in, fields, err) < 0) return -1;
    const char *name = json_string_value(json_object_get(in, "name"));
    const json_t *dn = json_object_get(in, "display_name");
    if (!name || !nb_fn_valid_name(name))
        return nb_err_set(err, 400, NB_E_INVALID_NAME,
                          "name must be a topic name: [A-Za-z0-9_-]{1,64}");
    if (dn && !json_is_null(dn) &&
        (!json_is_string(dn) || json_string_length(dn) > NB_TOPIC_SUBJECT_MAX))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "display_name must be a string of at most %d bytes",
                          NB_TOPIC_SUBJECT_MAX);
    const char *display = json_string_value(dn) ?: "";
    char qn[NB_Q_NAME_MAX + 1];
    nb_async_topic_queue(ns, name, qn, sizeof qn);
    nb_obj cur = {0};
    int rc = s->ops->obj_get(s, ns, NB_TOPIC_KIND, name, &cur, err);
    if (rc < 0) return -1;
    nb_q_config cfg = {.visibility_timeout_ms = 60000, .retention_ms = KEEP_MS};
    if (rc == 1) {
        json_t *b = body_of(&cur);
        int same =
            strcmp(json_string_value(json_object_get(b, "display_name")) ?: "", display) == 0;
        json_decref(b);
        nb_obj_clear(&cur);
        if (!same)
            return nb_err_set(err, 409, NB_E_CONFLICT, "topic '%s' exists with other settings",
                              name);
        /* Idempotent, and repairs a queue lost to a crash between the two creations. */
        if (nb_q_ensure(q, qn, &cfg, err) < 0) return -1;
    } else {
        int had_queue = nb_q_exists(q, qn);
        if (!had_queue && nb_q_create(q, qn, &cfg, err) < 0) return -1;
        json_t *b = json_pack("{s:s, s:I}", "display_name", display, "created_s",
                              (json_int_t)(nb_now_ms() / 1000));
        char *text = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(b);
        rc = s->ops->obj_put(s, ns, NB_TOPIC_KIND, name, text, NB_OBJ_CREATE, NULL, err);
        free(text);
        if (rc < 0) {
            nb_err e2 = {0};
            if (!had_queue) nb_q_delete_queue(q, qn, &e2);
            return -1;
        }
        *created = 1;
        nb_info("topics", "created topic %s/%s", ns, name);
    }
    *out = nb_topic_views(s, q, ns, name, err);
    return *out ? 0 : -1;
}

/* Deletes a subscription's delivery queues (webhooks have them). */
static void drop_sub_queues(nb_q *q, const char *ns, const char *topic, const char *id)
{
    char qn[NB_Q_NAME_MAX + 1];
    nb_err err = {0};
    wh_queue(ns, topic, id, qn, sizeof qn);
    if (nb_q_exists(q, qn) && nb_q_delete_queue(q, qn, &err) < 0)
        nb_warn("topics", "delete %s: %s", qn, err.msg);
    wh_failed_queue(ns, topic, id, qn, sizeof qn);
    if (nb_q_exists(q, qn) && nb_q_delete_queue(q, qn, &err) < 0)
        nb_warn("topics", "delete %s: %s", qn, err.msg);
}

/* A webhook subscription's delivery queue, which dead-letters to its failure queue: a message
 * no attempt could deliver is kept for an operator, never dropped. Existing ones are kept. */
static int make_sub_queues(nb_q *q, const char *ns, const char *topic, const char *id, nb_err *err)
{
    char qn[NB_Q_NAME_MAX + 1];
    nb_q_config fcfg = {.retention_ms = KEEP_MS};
    nb_q_config cfg = {.visibility_timeout_ms = 60000,
                       .retention_ms = KEEP_MS,
                       .max_receives = NB_TOPIC_WH_RECEIVES};
    wh_failed_queue(ns, topic, id, cfg.dead_letter, sizeof cfg.dead_letter);
    wh_queue(ns, topic, id, qn, sizeof qn);
    if (nb_q_ensure(q, cfg.dead_letter, &fcfg, err) < 0) return -1;
    return nb_q_ensure(q, qn, &cfg, err);
}

int nb_topic_delete(nb_store *s, nb_q *q, const char *ns, const char *name, nb_err *err)
{
    nb_obj o = {0};
    if (get_topic(s, ns, name, &o, err) != 1) return -1;
    nb_obj_clear(&o);
    nb_obj *subs;
    size_t n;
    if (list_subs(s, ns, name, &subs, &n, err) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        const char *id = strchr(subs[i].name, '/') + 1;
        if (s->ops->obj_delete(s, ns, NB_TOPIC_SUB_KIND, subs[i].name, err) < 0 &&
            err->status != 404) {
            nb_obj_free_list(subs, n);
            return -1;
        }
        drop_sub_queues(q, ns, name, id);
    }
    nb_obj_free_list(subs, n);
    nb_err_clear(err);
    /* The object first: once it is gone nothing plans for the topic; then its queue (and any
     * message not forwarded yet, as SNS drops them with the topic). */
    if (s->ops->obj_delete(s, ns, NB_TOPIC_KIND, name, err) < 0) return -1;
    char qn[NB_Q_NAME_MAX + 1];
    nb_async_topic_queue(ns, name, qn, sizeof qn);
    nb_err e2 = {0};
    if (nb_q_exists(q, qn) && nb_q_delete_queue(q, qn, &e2) < 0)
        nb_warn("topics", "delete %s: %s", qn, e2.msg);
    nb_info("topics", "deleted topic %s/%s and %zu subscriptions", ns, name, n);
    return 0;
}

/* http(s)://host... parsed by curl's own URL parser, so what is accepted here is what the
 * deliverer can send to. */
static int valid_url(const char *url)
{
    size_t n = strlen(url);
    if (n < 8 || n > NB_TOPIC_URL_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) return 0;
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) return 0;
    CURLU *h = curl_url();
    if (!h) abort();
    char *host = NULL;
    int ok = curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
    curl_free(host);
    curl_url_cleanup(h);
    return ok;
}

static json_t *sub_view(nb_q *q, const nb_obj *o)
{
    json_t *b = body_of(o);
    const char *slash = strchr(o->name, '/');
    char topic[NB_NAME_MAX + 1], arn[320], t[32];
    snprintf(topic, sizeof topic, "%.*s", slash ? (int)(slash - o->name) : 0, o->name);
    const char *id = slash ? slash + 1 : o->name;
    nb_topic_arn(o->ns, topic, id, arn, sizeof arn);
    json_t *filter = json_object_get(b, "filter");
    json_t *v = json_pack("{s:s, s:s, s:s, s:O, s:b, s:s}", "id", id, "topic", topic, "target",
                          json_string_value(json_object_get(b, "target")) ?: "", "filter",
                          filter ? filter : json_null(), "raw",
                          json_is_true(json_object_get(b, "raw")), "arn", arn);
    nb_time_iso8601(o->created_at, t, sizeof t);
    json_object_set_new(v, "created_at", json_string(t));
    if (strncmp(json_string_value(json_object_get(b, "target")) ?: "", "webhook:", 8) == 0) {
        char qn[NB_Q_NAME_MAX + 1];
        nb_q_stats st = {0}, fs = {0};
        nb_err err = {0};
        wh_queue(o->ns, topic, id, qn, sizeof qn);
        nb_q_get_stats(q, qn, &st, &err);
        wh_failed_queue(o->ns, topic, id, qn, sizeof qn);
        nb_q_get_stats(q, qn, &fs, &err);
        json_object_set_new(v, "delivery",
                            json_pack("{s:I, s:I, s:I}", "pending",
                                      (json_int_t)(st.visible + st.inflight + st.delayed),
                                      "delivered", (json_int_t)st.deleted, "failed",
                                      (json_int_t)(fs.visible + fs.inflight + fs.delayed)));
    }
    json_decref(b);
    return v;
}

json_t *nb_topic_subscriptions(nb_store *s, nb_q *q, const char *ns, const char *topic, nb_err *err)
{
    nb_obj o = {0};
    if (get_topic(s, ns, topic, &o, err) != 1) return NULL;
    nb_obj_clear(&o);
    nb_obj *subs;
    size_t n;
    if (list_subs(s, ns, topic, &subs, &n, err) < 0) return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, sub_view(q, &subs[i]));
    nb_obj_free_list(subs, n);
    return json_pack("{s:s, s:o}", "topic", topic, "subscriptions", arr);
}

/* The target checked against what exists. 0, or -1 with a 400 naming the field. */
static int check_target(nb_store *s, nb_q *q, const char *ns, const char *target, int raw,
                        nb_err *err)
{
    if (strncmp(target, "function:", 9) == 0) {
        const char *fn = target + 9;
        if (!nb_fn_valid_name(fn))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "target: invalid function name '%.64s'",
                              fn);
        if (raw)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "raw: functions always get SNS's event; raw is for queue and webhook "
                              "targets");
        nb_err e2 = {0};
        nb_fn_version *v = s->ops->fn_get(s, ns, fn, 0, NULL, &e2);
        if (!v)
            return e2.status == 404 ? nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                                 "target: function '%s' not found", fn)
                                    : (*err = e2, -1);
        nb_fn_version_unref(v);
        return 0;
    }
    if (strncmp(target, "queue:", 6) == 0) {
        char qn[NB_Q_NAME_MAX + 1];
        if (!nb_fn_valid_name(target + 6))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "target: invalid queue name '%.64s'",
                              target + 6);
        nb_async_user_queue(ns, target + 6, qn, sizeof qn);
        if (!nb_q_exists(q, qn))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "target: queue '%s' not found",
                              target + 6);
        return 0;
    }
    if (strncmp(target, "webhook:", 8) == 0) {
        if (!valid_url(target + 8))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "target: webhook needs an http:// or https:// URL of at most %d "
                              "bytes",
                              NB_TOPIC_URL_MAX);
        return 0;
    }
    return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                      "target must be function:NAME, queue:NAME or webhook:URL");
}

int nb_topic_subscribe(nb_store *s, nb_q *q, const char *ns, const char *topic, const json_t *in,
                       json_t **out, int *created, nb_err *err)
{
    static const char *const fields[] = {"target", "filter", "raw", NULL};
    *out = NULL;
    *created = 0;
    if (!json_is_object(in))
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "body must be a JSON object");
    nb_obj o = {0};
    if (get_topic(s, ns, topic, &o, err) != 1) return -1;
    nb_obj_clear(&o);
    if (nb_json_known_fields(in, fields, err) < 0) return -1;
    const char *target = json_string_value(json_object_get(in, "target"));
    const json_t *filter = json_object_get(in, "filter"), *raw = json_object_get(in, "raw");
    if (!target)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "target is required: function:NAME, queue:NAME or webhook:URL");
    if (raw && !json_is_boolean(raw))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "raw must be true or false");
    if (filter && json_is_null(filter)) filter = NULL;
    if (filter && !json_is_object(filter))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "filter must be a filter policy object or null");
    if (check_target(s, q, ns, target, json_is_true(raw), err) < 0) return -1;
    if (filter) {
        char *text = json_dumps(filter, JSON_COMPACT);
        nb_pat *p = text ? nb_pat_compile_filter_policy(text, strlen(text), err) : NULL;
        free(text);
        if (!p) return -1;
        nb_pat_free(p);
    }
    json_t *body = json_pack("{s:s, s:O, s:b}", "target", target, "filter",
                             filter ? filter : json_null(), "raw", json_is_true(raw));
    /* The same target again: the existing subscription (SNS's subscribe is idempotent). */
    nb_obj *subs;
    size_t n;
    if (list_subs(s, ns, topic, &subs, &n, err) < 0) {
        json_decref(body);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && !*out && rc == 0; i++) {
        json_t *b = body_of(&subs[i]);
        if (strcmp(json_string_value(json_object_get(b, "target")) ?: "", target) == 0) {
            json_object_del(b, "created_s");
            if (json_equal(b, body))
                *out = sub_view(q, &subs[i]);
            else
                rc = nb_err_set(err, 409, NB_E_CONFLICT,
                                "topic %s already has a subscription to %.200s with other "
                                "settings (unsubscribe it first)",
                                topic, target);
        }
        json_decref(b);
    }
    if (!*out && rc == 0 && n >= NB_TOPIC_MAX_SUBS)
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "topic %s has %d subscriptions, the limit",
                        topic, NB_TOPIC_MAX_SUBS);
    nb_obj_free_list(subs, n);
    if (rc < 0 || *out) {
        json_decref(body);
        return rc;
    }
    char id[37], name[NB_NAME_MAX + 40];
    nb_uuid4(id);
    snprintf(name, sizeof name, "%s/%s", topic, id);
    int webhook = strncmp(target, "webhook:", 8) == 0;
    if (webhook && make_sub_queues(q, ns, topic, id, err) < 0) {
        drop_sub_queues(q, ns, topic, id);
        json_decref(body);
        return -1;
    }
    json_object_set_new(body, "created_s", json_integer(nb_now_ms() / 1000));
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    rc = s->ops->obj_put(s, ns, NB_TOPIC_SUB_KIND, name, text, NB_OBJ_CREATE, NULL, err);
    free(text);
    if (rc < 0) {
        if (webhook) drop_sub_queues(q, ns, topic, id);
        return -1;
    }
    nb_obj made = {0};
    if (s->ops->obj_get(s, ns, NB_TOPIC_SUB_KIND, name, &made, err) != 1) return -1;
    *out = sub_view(q, &made);
    nb_obj_clear(&made);
    *created = 1;
    nb_info("topics", "%s/%s: subscription %s to %.200s", ns, topic, id, target);
    return 0;
}

int nb_topic_unsubscribe(nb_store *s, nb_q *q, const char *ns, const char *topic, const char *id,
                         nb_err *err)
{
    char name[2 * NB_NAME_MAX + 2];
    if (!nb_fn_valid_name(id))
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "subscription '%.64s' of topic '%s' not found",
                          id, topic);
    snprintf(name, sizeof name, "%s/%s", topic, id);
    if (s->ops->obj_delete(s, ns, NB_TOPIC_SUB_KIND, name, err) < 0) {
        if (err->status == 404)
            nb_err_set(err, 404, NB_E_NOT_FOUND, "subscription '%s' of topic '%s' not found", id,
                       topic);
        return -1;
    }
    drop_sub_queues(q, ns, topic, id);
    nb_info("topics", "%s/%s: unsubscribed %s", ns, topic, id);
    return 0;
}

/* ---------- the runtime: a snapshot of the subscriptions ---------- */

typedef struct tsub {
    char ns[NB_NAME_MAX + 1], topic[NB_NAME_MAX + 1], id[NB_NAME_MAX + 1];
    int kind;
    char *target; /* the function's or queue's name, or the URL */
    nb_pat *filter;
    int raw;
} tsub;

/* Immutable once built; shared by the planner (loop 0) and the webhook deliverer's thread. */
typedef struct snap {
    atomic_int refs;
    tsub *v; /* sorted by ns, topic */
    size_t n;
} snap;

struct nb_topics {
    uv_loop_t *loop;
    nb_bus *bus; /* platform events; NULL until set */
    nb_q *q;
    nb_store *store;
    nb_wh *wh;
    pthread_mutex_t mu; /* cur */
    snap *cur;
    atomic_int dirty; /* the store changed since cur was built */
};

static void snap_unref(snap *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].target);
        nb_pat_free(s->v[i].filter);
    }
    free(s->v);
    free(s);
}

static int tsub_cmp(const void *a, const void *b)
{
    const tsub *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    if (!c) c = strcmp(x->topic, y->topic);
    return c ? c : strcmp(x->id, y->id);
}

static snap *snap_load(nb_store *store)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (store->ops->obj_list(store, NULL, NB_TOPIC_SUB_KIND, NULL, &objs, &n, &err) < 0) {
        nb_warn("topics", "read subscriptions: %s", err.msg);
        return NULL;
    }
    snap *s = calloc(1, sizeof *s);
    if (!s) abort();
    atomic_init(&s->refs, 1);
    s->v = calloc(n ? n : 1, sizeof *s->v);
    if (!s->v) abort();
    for (size_t i = 0; i < n; i++) {
        tsub *t = &s->v[s->n];
        const char *slash = strchr(objs[i].name, '/');
        json_t *b = body_of(&objs[i]);
        const char *target = json_string_value(json_object_get(b, "target")) ?: "";
        json_t *filter = json_object_get(b, "filter");
        if (!slash || (size_t)(slash - objs[i].name) > NB_NAME_MAX ||
            strlen(slash + 1) > NB_NAME_MAX) {
            json_decref(b);
            continue;
        }
        snprintf(t->ns, sizeof t->ns, "%s", objs[i].ns);
        snprintf(t->topic, sizeof t->topic, "%.*s", (int)(slash - objs[i].name), objs[i].name);
        snprintf(t->id, sizeof t->id, "%s", slash + 1);
        t->raw = json_is_true(json_object_get(b, "raw"));
        t->kind = strncmp(target, "function:", 9) == 0 ? SUB_FUNCTION
                  : strncmp(target, "queue:", 6) == 0  ? SUB_QUEUE
                                                       : SUB_WEBHOOK;
        t->target = strdup(strchr(target, ':') ? strchr(target, ':') + 1 : "");
        if (!t->target) abort();
        int ok = 1;
        if (json_is_object(filter)) {
            char *text = json_dumps(filter, JSON_COMPACT);
            nb_err e2 = {0};
            t->filter = text ? nb_pat_compile_filter_policy(text, strlen(text), &e2) : NULL;
            free(text);
            /* Validated when stored: only a hand-edited store gets here. Skipped rather than
             * delivering everything to a subscriber that asked for a part. */
            if (!t->filter) {
                nb_warn("topics", "subscription %s/%s skipped: %s", objs[i].ns, objs[i].name,
                        e2.msg);
                free(t->target);
                ok = 0;
            }
        }
        json_decref(b);
        if (ok) s->n++;
    }
    nb_obj_free_list(objs, n);
    qsort(s->v, s->n, sizeof *s->v, tsub_cmp);
    return s;
}

/* The current snapshot (a reference), rebuilt first when the store changed; NULL if the store
 * could not be read and there is none. Any thread. */
static snap *snap_get(nb_topics *t)
{
    pthread_mutex_lock(&t->mu);
    if (atomic_exchange(&t->dirty, 0) || !t->cur) {
        snap *s = snap_load(t->store);
        if (s) {
            snap_unref(t->cur);
            t->cur = s;
        } else {
            atomic_store(&t->dirty, 1); /* tried again next time */
        }
    }
    snap *s = t->cur;
    if (s) atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* The first subscription of ns/topic in s (sorted), or s->n. */
static size_t snap_find(const snap *s, const char *ns, const char *topic)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->v[mid].ns, ns);
        if (!c) c = strcmp(s->v[mid].topic, topic);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---------- the planner ---------- */

static char *dump(json_t *j, size_t *len)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

int nb_topics_plan(nb_topics *t, const char *queue, const nb_q_msg *m, nb_topic_add_fn add,
                   void *ud)
{
    char parts[2][NB_NAME_MAX + 1];
    if (split_name(queue, "t/", 2, parts) < 0) return 0; /* not a topic's: nothing to do */
    const char *ns = parts[0], *topic = parts[1];
    snap *s = snap_get(t);
    if (!s) return -1; /* the store could not be read: try again later */
    const char *text = json_string_value(json_object_get(m->attrs, "attributes"));
    json_t *attrs = text ? json_loads(text, 0, NULL) : NULL;
    json_t *match = nb_topic_match_attrs(attrs);
    nb_topic_msg tm = {.ns = ns,
                       .topic = topic,
                       .id = m->id,
                       .message = m->body,
                       .len = m->body_len,
                       .subject = json_string_value(json_object_get(m->attrs, "subject")),
                       .attrs = attrs,
                       .sent_ms = m->sent_ms};
    char *notif = NULL;
    size_t notif_len = 0;
    int rc = 0;
    for (size_t i = snap_find(s, ns, topic); i < s->n && rc == 0; i++) {
        const tsub *sub = &s->v[i];
        if (strcmp(sub->ns, ns) != 0 || strcmp(sub->topic, topic) != 0) break;
        if (sub->filter && !nb_pat_match_attrs(sub->filter, match)) continue;
        char qn[NB_Q_NAME_MAX + 1], tg[NB_Q_NAME_MAX + 1];
        if (sub->kind == SUB_FUNCTION) {
            snprintf(tg, sizeof tg, "function:%s", sub->target);
            if (nb_async_target_queue(t->q, ns, tg, qn, sizeof qn) < 0) {
                nb_warn("topics", "%s: the async queue of %s cannot be made; retried", queue,
                        sub->target);
                rc = -1;
                break;
            }
            size_t len;
            char *ev = dump(nb_topic_lambda_event(&tm, sub->id), &len);
            /* A publishing function's chain goes on in its subscribers (loops stop at the
             * depth limit). */
            json_t *chain = json_object();
            nb_async_chain_copy(m->attrs, chain);
            /* Metering's trigger and caller (docs/internals/metering.md). */
            json_object_set_new(chain, NB_ASYNC_ATTR_TRIGGER, json_string("topic"));
            json_object_set_new(chain, NB_ASYNC_ATTR_SOURCE, json_string(topic));
            if (!ev || add(ud, qn, ev, len, chain) < 0) rc = -2;
            json_decref(chain);
            free(ev);
            continue;
        }
        if (!sub->raw && !notif) {
            notif = dump(nb_topic_notification(&tm), &notif_len);
            if (!notif) {
                rc = -2;
                break;
            }
        }
        if (sub->kind == SUB_QUEUE) {
            nb_async_user_queue(ns, sub->target, qn, sizeof qn);
            if (!nb_q_exists(t->q, qn)) {
                nb_warn("topics", "%s: subscription %s: queue %s is gone; message %s skipped",
                        queue, sub->id, sub->target, m->id);
                continue;
            }
            /* Raw delivery: SNS passes the message attributes as the queue message's. */
            json_t *qa = NULL;
            if (sub->raw && attrs) {
                qa = json_object();
                const char *k;
                json_t *v;
                json_object_foreach(attrs, k, v)
                {
                    json_object_set(qa, k, json_object_get(v, "Value"));
                }
            }
            if (add(ud, qn, sub->raw ? m->body : notif, sub->raw ? m->body_len : notif_len, qa) < 0)
                rc = -2;
            json_decref(qa);
        } else {
            wh_queue(ns, topic, sub->id, qn, sizeof qn);
            json_t *qa = json_pack("{s:s}", "message_id", m->id);
            if (add(ud, qn, sub->raw ? m->body : notif, sub->raw ? m->body_len : notif_len, qa) < 0)
                rc = -2;
            json_decref(qa);
        }
    }
    if (rc == -2) {
        /* Over NB_FAN_MAX_COPIES (cannot be: subscriptions are capped lower) or an encoding
         * failure: the copies made so far go; trying again would not help. */
        nb_warn("topics", "%s: message %s: not every copy could be planned", queue, m->id);
        rc = 0;
    }
    /* The message is a platform event too (written only when the namespace has rules). Its id
     * is the MessageId, so a repeated forwarding repeats the same event, which a consumer can
     * recognise. */
    if (rc == 0 && nb_bus_enabled_rules(t->bus, ns) > 0) {
        char source[2 * NB_NAME_MAX + 32], bq[NB_Q_NAME_MAX + 1];
        snprintf(source, sizeof source, "nimbus://%s/topics/%s", ns, topic);
        json_t *data = nb_topic_notification(&tm);
        /* One more copy of the forwarding: durable with the others, not repeated by a retry. */
        char *ev = nb_bus_platform_text(t->bus, ns, "nimbus.topic.message", source, tm.subject,
                                        m->id, data, bq, sizeof bq);
        if (ev) add(ud, bq, ev, strlen(ev), NULL);
        free(ev);
        json_decref(data);
    }
    free(notif);
    json_decref(match);
    json_decref(attrs);
    snap_unref(s);
    return rc;
}

static int fan_add(void *ud, const char *queue, const char *body, size_t len, const json_t *attrs)
{
    return nb_fan_plan_add(ud, queue, body, len, attrs, 0);
}

static int planner(void *ud, const char *queue, const nb_q_msg *m, nb_fan_plan *plan)
{
    return nb_topics_plan(ud, queue, m, fan_add, plan);
}

/* The webhook deliverer's lookup of a delivery queue's subscription. Its thread. */
static int resolve(void *ud, const char *queue, nb_wh_target *out)
{
    nb_topics *t = ud;
    char parts[3][NB_NAME_MAX + 1];
    if (split_name(queue, "wh/", 3, parts) < 0) return 0;
    snap *s = snap_get(t);
    if (!s) return 0;
    int found = 0;
    for (size_t i = snap_find(s, parts[0], parts[1]); i < s->n && !found; i++) {
        const tsub *sub = &s->v[i];
        if (strcmp(sub->ns, parts[0]) != 0 || strcmp(sub->topic, parts[1]) != 0) break;
        if (sub->kind != SUB_WEBHOOK || strcmp(sub->id, parts[2]) != 0) continue;
        snprintf(out->url, sizeof out->url, "%s", sub->target);
        nb_topic_arn(sub->ns, sub->topic, NULL, out->topic_arn, sizeof out->topic_arn);
        nb_topic_arn(sub->ns, sub->topic, sub->id, out->sub_arn, sizeof out->sub_arn);
        out->raw = sub->raw;
        found = 1;
    }
    snap_unref(s);
    return found;
}

/* At start: the queues made to agree with the store again (a crash between a queue's creation
 * or deletion and its object's leaves one without the other). */
static void reconcile(nb_topics *t)
{
    nb_obj *topics = NULL, *subs = NULL;
    size_t nt = 0, ns_ = 0;
    nb_err err = {0};
    if (t->store->ops->obj_list(t->store, NULL, NB_TOPIC_KIND, NULL, &topics, &nt, &err) < 0 ||
        t->store->ops->obj_list(t->store, NULL, NB_TOPIC_SUB_KIND, NULL, &subs, &ns_, &err) < 0) {
        nb_warn("topics", "reconcile: %s", err.msg);
        nb_obj_free_list(topics, nt);
        return;
    }
    char qn[NB_Q_NAME_MAX + 1];
    nb_q_config cfg = {.visibility_timeout_ms = 60000, .retention_ms = KEEP_MS};
    for (size_t i = 0; i < nt; i++) {
        nb_async_topic_queue(topics[i].ns, topics[i].name, qn, sizeof qn);
        if (!nb_q_exists(t->q, qn) && nb_q_create(t->q, qn, &cfg, &err) == 0)
            nb_warn("topics", "topic %s/%s had no queue: made", topics[i].ns, topics[i].name);
    }
    size_t n;
    char **names = nb_q_list(t->q, "t/", &n);
    for (size_t i = 0; i < n; i++) {
        char parts[2][NB_NAME_MAX + 1];
        int known = 0;
        for (size_t k = 0; k < nt && !known && split_name(names[i], "t/", 2, parts) == 0; k++)
            known = strcmp(topics[k].ns, parts[0]) == 0 && strcmp(topics[k].name, parts[1]) == 0;
        if (!known && nb_q_delete_queue(t->q, names[i], &err) == 0)
            nb_warn("topics", "queue %s had no topic: deleted", names[i]);
    }
    nb_q_names_free(names, n);
    names = nb_q_list(t->q, "wh/", &n);
    for (size_t i = 0; i < n; i++) {
        char parts[3][NB_NAME_MAX + 1], name[2 * NB_NAME_MAX + 2];
        int known = 0;
        if (split_name(names[i], "wh/", 3, parts) == 0) {
            snprintf(name, sizeof name, "%s/%s", parts[1], parts[2]);
            for (size_t k = 0; k < ns_ && !known; k++)
                known = strcmp(subs[k].ns, parts[0]) == 0 && strcmp(subs[k].name, name) == 0;
        }
        if (!known && split_name(names[i], "wh/", 3, parts) == 0) {
            drop_sub_queues(t->q, parts[0], parts[1], parts[2]);
            nb_warn("topics", "queue %s had no subscription: deleted", names[i]);
        }
    }
    nb_q_names_free(names, n);
    for (size_t k = 0; k < ns_; k++) {
        json_t *b = body_of(&subs[k]);
        const char *slash = strchr(subs[k].name, '/');
        char topic[NB_NAME_MAX + 1];
        if (slash && (size_t)(slash - subs[k].name) <= NB_NAME_MAX &&
            strncmp(json_string_value(json_object_get(b, "target")) ?: "", "webhook:", 8) == 0) {
            snprintf(topic, sizeof topic, "%.*s", (int)(slash - subs[k].name), subs[k].name);
            if (make_sub_queues(t->q, subs[k].ns, topic, slash + 1, &err) < 0)
                nb_warn("topics", "subscription %s/%s: %s", subs[k].ns, subs[k].name, err.msg);
        }
        json_decref(b);
    }
    nb_obj_free_list(topics, nt);
    nb_obj_free_list(subs, ns_);
}

void nb_topics_set_bus(nb_topics *t, nb_bus *bus)
{
    if (t) t->bus = bus;
}

nb_topics *nb_topics_new(uv_loop_t *loop, nb_q *q, nb_store *store, nb_fan *fan)
{
    nb_topics *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->loop = loop;
    t->q = q;
    t->store = store;
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->dirty, 1);
    reconcile(t);
    /* The deliverer is these queues' only consumer: what the previous process had taken is
     * delivered again now. */
    int64_t n = nb_q_release_inflight(q, "wh/");
    if (n)
        nb_info("topics", "%lld webhook deliveries under way at the last stop: sent again",
                (long long)n);
    nb_err err = {0};
    t->wh = nb_wh_new(q, resolve, t, &err);
    if (!t->wh) nb_error("topics", "webhook subscriptions will not be delivered: %s", err.msg);
    nb_fan_source(fan, "t/", planner, t);
    return t;
}

void nb_topics_reload(nb_topics *t)
{
    if (t) atomic_store(&t->dirty, 1);
}

void nb_topics_notify(nb_topics *t, const char *queue)
{
    if (t) nb_wh_notify(t->wh, queue);
}

void nb_topics_stop(nb_topics *t)
{
    if (t) nb_wh_stop(t->wh);
}

void nb_topics_free(nb_topics *t)
{
    if (!t) return;
    nb_wh_free(t->wh);
    snap_unref(t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
