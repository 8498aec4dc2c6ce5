/* nb_topic: attribute normalisation, SNS's shapes (Lambda event, notification), the admin
 * functions against a real store and queue store, the planner's decisions (which subscriber
 * gets which copy, in which shape, on which queue) through its add() hook, a whole fan-out
 * through nb_fan on a loop, and the webhook deliverer's backoff. */
#include "events/topics.c"

#include "check.h"
#include "events/webhook.h"

#include <unistd.h>

static char dir[] = "/tmp/nb-topics-XXXXXX";

static void on_notify(void *ud, const char *queue)
{
    (void)ud;
    (void)queue;
}

/* ---------- attributes ---------- */

static json_t *norm(const char *in_text, nb_err *err)
{
    json_t *in = json_loads(in_text, 0, NULL);
    CHECK(in);
    char *out = NULL;
    int rc = nb_topic_attrs_normalise(in, &out, err);
    json_decref(in);
    if (rc < 0) {
        CHECK(out == NULL);
        return NULL;
    }
    json_t *j = out ? json_loads(out, 0, NULL) : json_object();
    free(out);
    return j;
}

static void expect_attr(const json_t *a, const char *name, const char *type, const char *value)
{
    json_t *v = json_object_get(a, name);
    CHECK_STR(json_string_value(json_object_get(v, "Type")), type);
    CHECK_STR(json_string_value(json_object_get(v, "Value")), value);
    CHECK(json_object_size(v) == 2);
}

static void expect_bad(const char *in_text, const char *needle)
{
    nb_err err = {0};
    json_t *j = norm(in_text, &err);
    if (j) fprintf(stderr, "accepted: %s\n", in_text);
    CHECK(!j);
    CHECK(err.status == 400);
    if (!strstr(err.msg, needle)) fprintf(stderr, "'%s' lacks '%s'\n", err.msg, needle);
    CHECK(strstr(err.msg, needle));
}

static void test_attrs(void)
{
    nb_err err = {0};
    char *out = (char *)1;
    CHECK(nb_topic_attrs_normalise(NULL, &out, &err) == 0 && out == NULL);
    CHECK(nb_topic_attrs_normalise(json_null(), &out, &err) == 0 && out == NULL);
    json_t *a = norm("{}", &err);
    CHECK(a && json_object_size(a) == 0);
    json_decref(a);
    a = norm("{\"s\":\"red\", \"i\":15, \"r\":0.1, \"big\":-2.5e3, \"arr\":[\"a\",1,true,null],"
             "\"o\":{\"Type\":\"Number\",\"Value\":\"1e2\"}, \"os\":{\"Type\":\"String\","
             "\"Value\":\"10\"}, \"oa\":{\"Type\":\"String.Array\",\"Value\":\"[\\\"x\\\"]\"},"
             "\"a.b-c_d\":\"x\"}",
             &err);
    CHECK(a);
    expect_attr(a, "s", "String", "red");
    expect_attr(a, "i", "Number", "15");
    expect_attr(a, "r", "Number", "0.1");
    expect_attr(a, "big", "Number", "-2500");
    expect_attr(a, "arr", "String.Array", "[\"a\",1,true,null]");
    expect_attr(a, "o", "Number", "1e2");
    expect_attr(a, "os", "String", "10");
    expect_attr(a, "oa", "String.Array", "[\"x\"]");
    expect_attr(a, "a.b-c_d", "String", "x");
    json_decref(a);

    expect_bad("[]", "must be an object");
    expect_bad("{\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"h\":1,\"i\":1,\"j\":1,"
               "\"k\":1}",
               "at most 10");
    expect_bad("{\"a b\":\"x\"}", "invalid name");
    expect_bad("{\".a\":\"x\"}", "invalid name");
    expect_bad("{\"a..b\":\"x\"}", "invalid name");
    expect_bad("{\"AWS.x\":\"x\"}", "invalid name");
    expect_bad("{\"amazon.x\":\"x\"}", "invalid name");
    expect_bad("{\"e\":\"\"}", "attributes.e: the value must not be empty");
    expect_bad("{\"b\":true}", "attributes.b must be");
    expect_bad("{\"n\":[[1]]}", "String.Array");
    expect_bad("{\"n\":[{\"a\":1}]}", "String.Array");
    expect_bad("{\"n\":{\"Type\":\"Number\",\"Value\":\"10 apples\"}}", "a Number's Value");
    expect_bad("{\"n\":{\"Type\":\"Number\",\"Value\":\"0x10\"}}", "a Number's Value");
    expect_bad("{\"n\":{\"Type\":\"Number\",\"Value\":\"1e999\"}}", "a Number's Value");
    expect_bad("{\"n\":{\"Type\":\"Number\",\"Value\":\" 5\"}}", "a Number's Value");
    expect_bad("{\"n\":{\"Type\":\"Binary\",\"Value\":\"AA==\"}}", "Type must be");
    expect_bad("{\"n\":{\"Type\":\"String\"}}", "{\"Type\"");
    expect_bad("{\"n\":{\"Type\":\"String\",\"Value\":\"x\",\"More\":1}}", "{\"Type\"");
    expect_bad("{\"n\":{\"Type\":\"String.Array\",\"Value\":\"nope\"}}", "String.Array");

    char name[300];
    memset(name, 'a', 257);
    name[257] = 0;
    char text[400];
    snprintf(text, sizeof text, "{\"%s\":\"x\"}", name);
    expect_bad(text, "invalid name");
    name[256] = 0;
    snprintf(text, sizeof text, "{\"%s\":\"x\"}", name);
    a = norm(text, &err);
    CHECK(a && json_object_size(a) == 1);
    json_decref(a);
}

/* ---------- shapes ---------- */

static void test_shapes(void)
{
    json_t *attrs =
        json_loads("{\"color\":{\"Type\":\"String\",\"Value\":\"red\"},"
                   "\"tags\":{\"Type\":\"String.Array\",\"Value\":\"[\\\"a\\\",\\\"b\\\"]\"}}",
                   0, NULL);
    nb_topic_msg m = {.ns = "default",
                      .topic = "orders",
                      .id = "11111111-2222-4333-8444-555555555555",
                      .message = "hello \"x\"",
                      .len = 9,
                      .subject = "Subj",
                      .attrs = attrs,
                      .sent_ms = 1795000000123};
    json_t *ev = nb_topic_lambda_event(&m, "sub-1");
    CHECK(json_array_size(json_object_get(ev, "Records")) == 1);
    json_t *r = json_array_get(json_object_get(ev, "Records"), 0);
    CHECK_STR(json_string_value(json_object_get(r, "EventSource")), "aws:sns");
    CHECK_STR(json_string_value(json_object_get(r, "EventVersion")), "1.0");
    CHECK_STR(json_string_value(json_object_get(r, "EventSubscriptionArn")),
              "arn:nimbus:sns:local:default:orders:sub-1");
    json_t *sns = json_object_get(r, "Sns");
    CHECK_STR(json_string_value(json_object_get(sns, "Type")), "Notification");
    CHECK_STR(json_string_value(json_object_get(sns, "MessageId")), m.id);
    CHECK_STR(json_string_value(json_object_get(sns, "TopicArn")),
              "arn:nimbus:sns:local:default:orders");
    CHECK_STR(json_string_value(json_object_get(sns, "Subject")), "Subj");
    CHECK_STR(json_string_value(json_object_get(sns, "Message")), "hello \"x\"");
    CHECK_STR(json_string_value(json_object_get(sns, "Timestamp")), "2026-11-18T11:06:40.123Z");
    CHECK_STR(json_string_value(json_object_get(sns, "SignatureVersion")), "1");
    CHECK_STR(json_string_value(json_object_get(sns, "Signature")), "");
    CHECK_STR(json_string_value(json_object_get(sns, "SigningCertUrl")), "");
    CHECK_STR(json_string_value(json_object_get(sns, "UnsubscribeUrl")), "");
    CHECK(json_equal(json_object_get(sns, "MessageAttributes"), attrs));
    CHECK(json_object_size(sns) == 11);
    json_decref(ev);

    /* Without subject and attributes: Lambda's event keeps Subject null and an empty object;
     * the notification leaves both out. */
    m.subject = NULL;
    m.attrs = NULL;
    ev = nb_topic_lambda_event(&m, "s");
    sns = json_object_get(json_array_get(json_object_get(ev, "Records"), 0), "Sns");
    CHECK(json_is_null(json_object_get(sns, "Subject")));
    CHECK(json_object_size(json_object_get(sns, "MessageAttributes")) == 0);
    json_decref(ev);
    json_t *n = nb_topic_notification(&m);
    CHECK(!json_object_get(n, "Subject") && !json_object_get(n, "MessageAttributes"));
    CHECK_STR(json_string_value(json_object_get(n, "SigningCertURL")), "");
    CHECK_STR(json_string_value(json_object_get(n, "UnsubscribeURL")), "");
    CHECK(json_object_size(n) == 9);
    json_decref(n);
    m.attrs = attrs;
    m.subject = "S";
    n = nb_topic_notification(&m);
    CHECK(json_equal(json_object_get(n, "MessageAttributes"), attrs));
    CHECK_STR(json_string_value(json_object_get(n, "Subject")), "S");
    json_decref(n);

    /* What filters see: Values, a String.Array as its array. */
    json_t *ma = nb_topic_match_attrs(attrs);
    json_t *want = json_loads("{\"color\":\"red\",\"tags\":[\"a\",\"b\"]}", 0, NULL);
    CHECK(json_equal(ma, want));
    json_decref(want);
    json_decref(ma);
    json_decref(attrs);

    char arn[256];
    nb_topic_arn("ns1", "t", NULL, arn, sizeof arn);
    CHECK_STR(arn, "arn:nimbus:sns:local:ns1:t");
}

/* ---------- admin and planner ---------- */

typedef struct copy {
    char queue[NB_Q_NAME_MAX + 1];
    char *body;
    json_t *attrs;
} copy;

typedef struct rec {
    copy c[16];
    int n;
} rec;

static int record(void *ud, const char *queue, const char *body, size_t len, const json_t *attrs)
{
    rec *r = ud;
    CHECK(r->n < 16);
    copy *c = &r->c[r->n++];
    snprintf(c->queue, sizeof c->queue, "%s", queue);
    c->body = strndup(body, len);
    c->attrs = attrs ? json_deep_copy(attrs) : NULL;
    return 0;
}

static void rec_clear(rec *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->c[i].body);
        json_decref(r->c[i].attrs);
    }
    r->n = 0;
}

static const copy *copy_to(const rec *r, const char *prefix)
{
    for (int i = 0; i < r->n; i++)
        if (strncmp(r->c[i].queue, prefix, strlen(prefix)) == 0) return &r->c[i];
    return NULL;
}

static char *sub(nb_store *s, nb_q *q, const char *body_text, int want_status)
{
    json_t *in = json_loads(body_text, 0, NULL), *out = NULL;
    CHECK(in);
    nb_err err = {0};
    int created = 0;
    int rc = nb_topic_subscribe(s, q, "default", "orders", in, &out, &created, &err);
    json_decref(in);
    if (want_status) {
        if (rc == 0 || err.status != want_status)
            fprintf(stderr, "%s: %d %s\n", body_text, err.status, err.msg);
        CHECK(rc < 0 && err.status == want_status);
        return NULL;
    }
    if (rc < 0) fprintf(stderr, "%s: %s\n", body_text, err.msg);
    CHECK(rc == 0 && created == 1);
    char *id = strdup(json_string_value(json_object_get(out, "id")));
    json_decref(out);
    return id;
}

/* A message of t/default/orders as the planner receives it. */
static void plan_one(nb_topics *t, const char *attrs_in, const char *subject, rec *r)
{
    json_t *in = attrs_in ? json_loads(attrs_in, 0, NULL) : NULL;
    char *text = NULL;
    nb_err err = {0};
    CHECK(nb_topic_attrs_normalise(in, &text, &err) == 0);
    json_decref(in);
    nb_q_msg m = {.id = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
                  .body = "the message",
                  .body_len = 11,
                  .sent_ms = 1795000000000};
    m.attrs = json_object();
    if (text) json_object_set_new(m.attrs, "attributes", json_string(text));
    if (subject) json_object_set_new(m.attrs, "subject", json_string(subject));
    free(text);
    rec_clear(r);
    CHECK(nb_topics_plan(t, "t/default/orders", &m, record, r) == 0);
    json_decref(m.attrs);
}

static void test_admin_and_planner(void)
{
    char path[256];
    nb_err err = {0};
    snprintf(path, sizeof path, "%s/nimbus.db", dir);
    nb_store *s = nb_store_locked(nb_store_sqlite_open(path, &err));
    snprintf(path, sizeof path, "%s/events.db", dir);
    nb_q *q = nb_q_open(path, on_notify, NULL, &err);
    CHECK(s && q);
    nb_fn_config cfg;
    nb_fn_config_init(&cfg);
    json_t *fj = json_loads("{\"runtime\":\"python3\",\"handler\":\"app.handler\",\"code_sha256\":"
                            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                            0, NULL);
    CHECK(nb_fn_config_apply(&cfg, fj, 1, &err) == 0);
    json_decref(fj);
    nb_put_result pr;
    CHECK(s->ops->fn_put(s, "default", "good", &cfg, &pr, &err) == 0);
    nb_fn_version_unref(pr.version);
    nb_fn_config_release(&cfg);
    CHECK(nb_q_create(q, "q/default/inbox", NULL, &err) == 0);

    /* Topics: created with their queue, idempotent, conflicts, validation. */
    json_t *in = json_loads("{\"name\":\"orders\"}", 0, NULL), *out = NULL;
    int created = 0;
    CHECK(nb_topic_create(s, q, "default", in, &out, &created, &err) == 0 && created == 1);
    CHECK(nb_q_exists(q, "t/default/orders"));
    CHECK_STR(json_string_value(json_object_get(out, "arn")),
              "arn:nimbus:sns:local:default:orders");
    json_decref(out);
    CHECK(nb_topic_create(s, q, "default", in, &out, &created, &err) == 0 && created == 0);
    json_decref(out);
    json_decref(in);
    in = json_loads("{\"name\":\"orders\",\"display_name\":\"other\"}", 0, NULL);
    CHECK(nb_topic_create(s, q, "default", in, &out, &created, &err) < 0 && err.status == 409);
    json_decref(in);
    in = json_loads("{\"name\":\"x\",\"colour\":1}", 0, NULL);
    CHECK(nb_topic_create(s, q, "default", in, &out, &created, &err) < 0 &&
          strcmp(err.code, NB_E_UNKNOWN_FIELD) == 0);
    json_decref(in);
    in = json_loads("{\"name\":\"a/b\"}", 0, NULL);
    CHECK(nb_topic_create(s, q, "default", in, &out, &created, &err) < 0 && err.status == 400);
    json_decref(in);

    /* Subscriptions: validation first (nothing is stored when refused). */
    sub(s, q, "{\"target\":\"function:nosuch\"}", 400);
    sub(s, q, "{\"target\":\"queue:nosuch\"}", 400);
    sub(s, q, "{\"target\":\"webhook:ftp://x/\"}", 400);
    sub(s, q, "{\"target\":\"webhook:http://\"}", 400);
    sub(s, q, "{\"target\":\"webhook:http://a b/\"}", 400);
    sub(s, q, "{\"target\":\"nope\"}", 400);
    sub(s, q, "{\"target\":\"function:good\",\"raw\":true}", 400);
    sub(s, q, "{\"target\":\"queue:inbox\",\"filter\":{\"a\":[{\"prefx\":\"x\"}]}}", 400);
    sub(s, q, "{\"target\":\"queue:inbox\",\"filter\":{\"a\":{\"b\":[1]}}}", 400);
    sub(s, q, "{\"target\":\"queue:inbox\",\"filter\":[1]}", 400);
    sub(s, q, "{\"target\":\"queue:inbox\",\"extra\":1}", 400);
    json_t *subs = nb_topic_subscriptions(s, q, "default", "orders", &err);
    CHECK(json_array_size(json_object_get(subs, "subscriptions")) == 0);
    json_decref(subs);

    char *fn_id = sub(s, q,
                      "{\"target\":\"function:good\",\"filter\":{\"color\":[{\"prefix\":\"re\"}],"
                      "\"size\":[{\"numeric\":[\">=\",10,\"<\",20]}]}}",
                      0);
    char *q_id = sub(s, q,
                     "{\"target\":\"queue:inbox\",\"raw\":true,\"filter\":{\"region\":"
                     "[{\"anything-but\":[\"eu\"]}]}}",
                     0);
    char *wh_id = sub(s, q,
                      "{\"target\":\"webhook:http://127.0.0.1:9/hook\",\"filter\":{\"vip\":"
                      "[{\"exists\":true}],\"tags\":[\"urgent\"]}}",
                      0);
    char qn[NB_Q_NAME_MAX + 1];
    wh_queue("default", "orders", wh_id, qn, sizeof qn);
    CHECK(nb_q_exists(q, qn));
    nb_q_config qc;
    CHECK(nb_q_get_config(q, qn, &qc, &err) == 0 && qc.max_receives == NB_TOPIC_WH_RECEIVES);
    CHECK(strncmp(qc.dead_letter, "failed/wh/default/orders/", 25) == 0);
    /* The same target again: the same subscription; with other settings: 409. */
    in = json_loads("{\"target\":\"queue:inbox\",\"raw\":true,\"filter\":{\"region\":"
                    "[{\"anything-but\":[\"eu\"]}]}}",
                    0, NULL);
    CHECK(nb_topic_subscribe(s, q, "default", "orders", in, &out, &created, &err) == 0 &&
          created == 0);
    CHECK_STR(json_string_value(json_object_get(out, "id")), q_id);
    json_decref(out);
    json_decref(in);
    sub(s, q, "{\"target\":\"queue:inbox\"}", 409);

    /* The planner: which subscriber gets which message. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    nb_fan *fan = nb_fan_new(&loop, q);
    nb_topics *t = nb_topics_new(&loop, q, s, fan);
    rec r = {0};

    /* color prefix + size range: the function; region absent: not the queue (anything-but
     * needs the attribute); no vip: not the webhook. */
    plan_one(t, "{\"color\":\"red\",\"size\":15}", "Hi", &r);
    CHECK(r.n == 1);
    CHECK_STR(r.c[0].queue, "fn/default/good");
    CHECK(nb_q_exists(q, "fn/default/good")); /* made on demand */
    json_t *ev = json_loads(r.c[0].body, 0, NULL);
    json_t *rec0 = json_array_get(json_object_get(ev, "Records"), 0);
    char arn[320];
    nb_topic_arn("default", "orders", fn_id, arn, sizeof arn);
    CHECK_STR(json_string_value(json_object_get(rec0, "EventSubscriptionArn")), arn);
    json_t *sns = json_object_get(rec0, "Sns");
    CHECK_STR(json_string_value(json_object_get(sns, "Message")), "the message");
    CHECK_STR(json_string_value(json_object_get(sns, "Subject")), "Hi");
    CHECK_STR(json_string_value(json_object_get(sns, "MessageId")),
              "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    CHECK_STR(json_string_value(json_object_get(
                  json_object_get(json_object_get(sns, "MessageAttributes"), "size"), "Type")),
              "Number");
    json_decref(ev);

    /* 20 is out of [10, 20); region us passes anything-but eu: the queue, raw, with the
     * attributes as the queue message's. */
    plan_one(t, "{\"color\":\"red\",\"size\":20,\"region\":\"us\"}", NULL, &r);
    CHECK(r.n == 1);
    CHECK_STR(r.c[0].queue, "q/default/inbox");
    CHECK_STR(r.c[0].body, "the message");
    CHECK_STR(json_string_value(json_object_get(r.c[0].attrs, "region")), "us");
    CHECK_STR(json_string_value(json_object_get(r.c[0].attrs, "size")), "20");

    /* region eu: not the queue. A String.Array matches when one element does; vip exists. */
    plan_one(t, "{\"region\":\"eu\",\"vip\":\"y\",\"tags\":[\"x\",\"urgent\"]}", NULL, &r);
    CHECK(r.n == 1);
    CHECK_STR(r.c[0].queue, qn);
    CHECK_STR(json_string_value(json_object_get(r.c[0].attrs, "message_id")),
              "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    json_t *notif = json_loads(r.c[0].body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(notif, "Type")), "Notification");
    CHECK_STR(json_string_value(json_object_get(notif, "Message")), "the message");
    CHECK(!json_object_get(notif, "Subject"));
    json_decref(notif);
    plan_one(t, "{\"vip\":\"y\",\"tags\":[\"later\"]}", NULL, &r);
    CHECK(r.n == 0);
    /* Numbers sent as strings still match numeric filters (SNS carries them as text). */
    plan_one(t, "{\"color\":\"reddish\",\"size\":{\"Type\":\"String\",\"Value\":\"12.5\"}}", NULL,
             &r);
    CHECK(r.n == 1 && copy_to(&r, "fn/"));
    /* No attributes: only subscriptions without a filter would match; all three have one. */
    plan_one(t, NULL, NULL, &r);
    CHECK(r.n == 0);

    /* A subscription made after the planner last read them is seen at once (reload). */
    char *all_id =
        sub(s, q, "{\"target\":\"webhook:https://example.invalid/all\",\"raw\":true}", 0);
    nb_topics_reload(t);
    plan_one(t, "{\"region\":\"us\"}", NULL, &r);
    CHECK(r.n == 2 && copy_to(&r, "q/default/inbox") && copy_to(&r, "wh/"));
    CHECK_STR(copy_to(&r, "wh/")->body, "the message");
    /* The webhook deliverer finds the subscription's URL from its queue's name. */
    nb_wh_target wt;
    char all_q[NB_Q_NAME_MAX + 1];
    wh_queue("default", "orders", all_id, all_q, sizeof all_q);
    CHECK(resolve(t, all_q, &wt) == 1 && wt.raw == 1);
    CHECK_STR(wt.url, "https://example.invalid/all");
    CHECK_STR(wt.topic_arn, "arn:nimbus:sns:local:default:orders");
    CHECK(resolve(t, "wh/default/orders/nosuch", &wt) == 0);

    /* A deleted queue's subscriber is skipped, the others still get theirs. */
    CHECK(nb_q_delete_queue(q, "q/default/inbox", &err) == 0);
    plan_one(t, "{\"region\":\"us\"}", NULL, &r);
    CHECK(r.n == 1 && copy_to(&r, "wh/"));

    /* Unsubscribe: gone from the planner and its delivery queues deleted. */
    CHECK(nb_topic_unsubscribe(s, q, "default", "orders", all_id, &err) == 0);
    CHECK(!nb_q_exists(q, all_q));
    CHECK(nb_topic_unsubscribe(s, q, "default", "orders", all_id, &err) < 0 && err.status == 404);
    nb_topics_reload(t);
    plan_one(t, "{\"region\":\"us\"}", NULL, &r);
    CHECK(r.n == 0);

    /* Publishing checks. */
    CHECK(nb_topic_publish(q, "default", "nosuch", "m", 1, NULL, NULL, NULL, NULL, NULL, &err) <
              0 &&
          err.status == 404);
    CHECK(nb_topic_publish(q, "default", "orders", "", 0, NULL, NULL, NULL, NULL, NULL, &err) < 0 &&
          err.status == 400);
    char *big = malloc(NB_TOPIC_MAX_MESSAGE + 1);
    memset(big, 'x', NB_TOPIC_MAX_MESSAGE + 1);
    CHECK(nb_topic_publish(q, "default", "orders", big, NB_TOPIC_MAX_MESSAGE + 1, NULL, NULL, NULL,
                           NULL, NULL, &err) < 0 &&
          err.status == 413);
    /* Within the cap but six times as long once escaped: refused up front, not at fan-out. */
    memset(big, 1, NB_TOPIC_MAX_MESSAGE);
    CHECK(nb_topic_publish(q, "default", "orders", big, NB_TOPIC_MAX_MESSAGE, NULL, NULL, NULL,
                           NULL, NULL, &err) < 0 &&
          err.status == 413);
    free(big);
    CHECK(nb_topic_publish(q, "default", "orders", "\xff", 1, NULL, NULL, NULL, NULL, NULL, &err) <
              0 &&
          err.status == 400);
    CHECK(nb_topic_publish(q, "default", "orders", "m", 1, NULL, "line\nbreak", NULL, NULL, NULL,
                           &err) < 0 &&
          err.status == 400);

    /* Deleting the topic deletes its subscriptions and their queues, then its own. */
    CHECK(nb_topic_delete(s, q, "default", "orders", &err) == 0);
    CHECK(!nb_q_exists(q, "t/default/orders") && !nb_q_exists(q, qn));
    CHECK(nb_topic_delete(s, q, "default", "orders", &err) < 0 && err.status == 404);
    nb_obj *objs;
    size_t n;
    CHECK(s->ops->obj_list(s, "default", NB_TOPIC_SUB_KIND, NULL, &objs, &n, &err) == 0 && n == 0);
    nb_obj_free_list(objs, n);
    CHECK(nb_topic_subscriptions(s, q, "default", "orders", &err) == NULL && err.status == 404);

    /* Start-up repairs: a topic queue without its object goes. */
    CHECK(nb_q_create(q, "t/default/orphan", NULL, &err) == 0);
    reconcile(t);
    CHECK(!nb_q_exists(q, "t/default/orphan"));

    rec_clear(&r);
    free(fn_id);
    free(q_id);
    free(wh_id);
    free(all_id);
    nb_topics_stop(t);
    nb_fan_stop(fan);
    nb_q_close(q);
    nb_fan_free(fan);
    nb_topics_free(t);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    s->ops->close(s);
}

static void test_backoff(void)
{
    CHECK(nb_wh_backoff_ms(1) == 1000);
    CHECK(nb_wh_backoff_ms(2) == 2000);
    CHECK(nb_wh_backoff_ms(3) == 4000);
    CHECK(nb_wh_backoff_ms(9) == 256000);
    CHECK(nb_wh_backoff_ms(10) == NB_WH_BACKOFF_MAX);
    CHECK(nb_wh_backoff_ms(1000) == NB_WH_BACKOFF_MAX);
}

int main(void)
{
    CHECK(mkdtemp(dir));
    test_attrs();
    test_shapes();
    test_admin_and_planner();
    test_backoff();
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("test_topics: ok\n");
    return 0;
}
