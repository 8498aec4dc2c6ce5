/* nb_bus over a real store, queue store, fan and loop: rule validation (fields, pattern paths,
 * targets); the planner's decisions (a copy per matching enabled rule of the event's
 * namespace, over type, source prefix, subject, extensions and data fields; disabled rules,
 * other namespaces and missing targets skipped; topic copies carry ce_* message attributes,
 * function copies the hop count); platform events built with id/source/type/time/data, and
 * written only for namespaces with an enabled rule and within the hop limit. */
#include "events/bus.h"

#include "check.h"
#include "events/async.h"
#include "base/util.h"
#include "events/cloudevent.h"

#include <stdatomic.h>
#include <unistd.h>

static char dir[] = "/tmp/nb-bus-XXXXXX";
static _Atomic(nb_fan *) fan;
static uv_loop_t loop;

static void on_notify(void *ud, const char *queue)
{
    (void)ud;
    nb_fan_notify(atomic_load(&fan), queue);
}

static int64_t depth(nb_q *q, const char *queue)
{
    nb_q_stats st;
    nb_err err = {0};
    if (nb_q_get_stats(q, queue, &st, &err) < 0) return -1;
    return st.visible + st.inflight + st.delayed;
}

#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        for (int i_ = 0; i_ < 5000 && !(cond); i_++) {                                             \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
            usleep(1000);                                                                          \
        }                                                                                          \
        CHECK(cond);                                                                               \
    } while (0)

/* Lets the loop run a while: for what must NOT happen. */
static void settle(void)
{
    for (int i = 0; i < 300; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j) fprintf(stderr, "bad test JSON: %s: %s\n", s, je.text);
    CHECK(j);
    return j;
}

/* nb_rule_admin on JSON text: the stored body, or NULL with err. */
static json_t *admin(const char *in, const char *cur, nb_err *err)
{
    json_t *i = parse(in), *c = cur ? parse(cur) : NULL;
    memset(err, 0, sizeof *err);
    json_t *o = nb_rule_admin(i, c, err);
    json_decref(i);
    json_decref(c);
    return o;
}

static void check_admin(void)
{
    nb_err err;
    json_t *o = admin("{\"match\":{\"type\":[\"a\"]},\"target\":\"queue:out\"}", NULL, &err);
    CHECK(o);
    CHECK(json_is_true(json_object_get(o, "enabled")));
    CHECK_STR(json_string_value(json_object_get(o, "description")), "");
    char *cur = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    /* An update keeps what it leaves out. */
    o = admin("{\"enabled\":false,\"description\":\"d\"}", cur, &err);
    CHECK(o && json_is_false(json_object_get(o, "enabled")));
    CHECK_STR(json_string_value(json_object_get(o, "target")), "queue:out");
    json_decref(o);
    free(cur);

    static const struct {
        const char *in, *msg;
        const char *code;
    } bad[] = {
        {"{\"target\":\"queue:out\"}", "match is required", "invalid_value"},
        {"{\"match\":[1],\"target\":\"queue:out\"}", "match is required", "invalid_value"},
        {"{\"match\":{\"type\":[{\"prefx\":\"a\"}]},\"target\":\"queue:out\"}",
         "match: pattern: type[0]: unknown operator", "invalid_value"},
        {"{\"match\":{\"type\":\"a\"},\"target\":\"queue:out\"}", "match: pattern: type",
         "invalid_value"},
        {"{\"match\":{}}", "target is required", "invalid_value"},
        {"{\"match\":{},\"target\":\"lambda:x\"}", "target must be", "invalid_value"},
        {"{\"match\":{},\"target\":\"queue:bad name\"}", "target must be", "invalid_value"},
        {"{\"match\":{},\"target\":\"function:\"}", "target must be", "invalid_value"},
        {"{\"match\":{},\"target\":\"queue:q\",\"enabled\":\"yes\"}", "enabled", "invalid_value"},
        {"{\"match\":{},\"target\":\"queue:q\",\"description\":7}", "description", "invalid_value"},
        {"{\"match\":{},\"target\":\"queue:q\",\"colour\":1}", "unknown field 'colour'",
         "unknown_field"},
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(bad); i++) {
        o = admin(bad[i].in, NULL, &err);
        if (o || err.status != 400 || !strstr(err.msg, bad[i].msg) ||
            strcmp(err.code, bad[i].code) != 0) {
            fprintf(stderr, "case %zu: %s -> %d %s %s\n", i, bad[i].in, err.status,
                    err.code ? err.code : "", err.msg);
            CHECK(0);
        }
    }
    char longdesc[400];
    memset(longdesc, 'x', sizeof longdesc - 1);
    longdesc[sizeof longdesc - 1] = 0;
    json_t *in =
        json_pack("{s:{}, s:s, s:s}", "match", "target", "queue:q", "description", longdesc);
    o = nb_rule_admin(in, NULL, &err);
    CHECK(!o && strstr(err.msg, "description"));
    json_decref(in);
    CHECK(nb_rule_target_check("function:f", &err) == 0);
    CHECK(nb_rule_target_check("topic:t-1", &err) == 0);
    CHECK(nb_rule_target_check("queue:", &err) < 0);
    CHECK(nb_rule_target_check(NULL, &err) < 0);
}

static void put_rule(nb_store *st, const char *ns, const char *name, const char *body)
{
    nb_err err = {0};
    CHECK(st->ops->obj_put(st, ns, "rule", name, body, NB_OBJ_UPSERT, NULL, &err) == 0);
}

static void sent_cb(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    (void)msg;
    (void)ids;
    (void)n;
    atomic_store((_Atomic int *)ud, status == 0 ? 1 : -1);
}

static void put_event(nb_bus *b, const char *ns, const char *text)
{
    json_t *ev = parse(text);
    CHECK(nb_bus_put(b, ns, ev) == 0);
    json_decref(ev);
}

/* Receives every message of queue (deleting them), as a JSON array of {body, attrs}. */
static json_t *drain(nb_q *q, const char *queue)
{
    json_t *out = json_array();
    nb_q_msg *m = NULL;
    nb_err err = {0};
    int n = nb_q_receive(q, queue, 100, 0, &m, &err);
    for (int i = 0; i < n; i++) {
        json_t *body = json_loadb(m[i].body, m[i].body_len, 0, NULL);
        CHECK(body);
        json_array_append_new(out, json_pack("{s:o, s:O}", "body", body, "attrs",
                                             m[i].attrs ? m[i].attrs : json_null()));
        CHECK(nb_q_delete(q, queue, m[i].id, m[i].receipt, &err) == 0);
    }
    nb_q_msgs_free(m, n > 0 ? (size_t)n : 0);
    return out;
}

static const char *body_str(const json_t *got, size_t i, const char *k)
{
    return json_string_value(json_object_get(json_object_get(json_array_get(got, i), "body"), k));
}

int main(void)
{
    check_admin();

    CHECK(mkdtemp(dir));
    char path[128];
    nb_err err = {0};
    snprintf(path, sizeof path, "%s/nimbus.db", dir);
    nb_store *st = nb_store_sqlite_open(path, &err);
    CHECK(st);
    st = nb_store_locked(st);
    snprintf(path, sizeof path, "%s/events.db", dir);
    nb_q *q = nb_q_open(path, on_notify, NULL, &err);
    CHECK(q);
    for (const char *n = "q/default/out\0q/default/prices\0t/default/tp\0q/other/out\0"; *n;
         n += strlen(n) + 1)
        CHECK(nb_q_create(q, n, NULL, &err) == 0);
    uv_loop_init(&loop);

    put_rule(st, "default", "orders",
             "{\"match\":{\"type\":[\"order.created\"],\"source\":[{\"prefix\":\"shop/\"}]},"
             "\"target\":\"queue:out\",\"enabled\":true}");
    put_rule(st, "default", "big",
             "{\"match\":{\"data\":{\"total\":[{\"numeric\":[\">\",100]}],"
             "\"state\":[{\"anything-but\":\"test\"}]}},\"target\":\"queue:prices\","
             "\"enabled\":true}");
    put_rule(st, "default", "off", "{\"match\":{},\"target\":\"queue:prices\",\"enabled\":false}");
    put_rule(st, "default", "tenant",
             "{\"match\":{\"tenant\":[\"acme\"],\"subject\":[{\"suffix\":\".jpg\"}]},"
             "\"target\":\"topic:tp\",\"enabled\":true}");
    put_rule(st, "default", "fn",
             "{\"match\":{\"type\":[\"run.me\"]},\"target\":\"function:worker\",\"enabled\":true}");
    put_rule(st, "default", "gone",
             "{\"match\":{\"type\":[\"order.created\"]},\"target\":\"queue:nosuch\","
             "\"enabled\":true}");
    put_rule(st, "other", "all", "{\"match\":{},\"target\":\"queue:out\",\"enabled\":true}");

    nb_fan *f = nb_fan_new(&loop, q);
    nb_bus *b = nb_bus_new(q, st, f, NULL);
    atomic_store(&fan, f);
    CHECK(nb_bus_enabled_rules(b, "default") == 5);
    CHECK(nb_bus_enabled_rules(b, "other") == 1);
    CHECK(nb_bus_enabled_rules(b, "empty") == 0);
    CHECK(nb_bus_enabled_rules(NULL, "default") == 0);

    /* type + source prefix: to "out" (the rule to a missing queue is skipped). */
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"shop/web\","
              "\"type\":\"order.created\",\"data\":{\"total\":5,\"state\":\"test\"}}");
    /* Not matching: wrong prefix; and for "big", anything-but "test". */
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e2\",\"source\":\"blog/web\","
              "\"type\":\"order.created\",\"data\":{\"total\":500,\"state\":\"test\"}}");
    /* data numeric + anything-but: to "prices". */
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e3\",\"source\":\"blog/web\","
              "\"type\":\"x\",\"data\":{\"total\":101.5,\"state\":\"live\"}}");
    /* an extension and the subject: to the topic, with message attributes for filters. */
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e4\",\"source\":\"cam\",\"type\":\"photo\","
              "\"subject\":\"a.jpg\",\"tenant\":\"acme\"}");
    /* to a function: its queue is made on demand, the hop count travels. */
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e5\",\"source\":\"s\",\"type\":\"run.me\","
              "\"nimbushops\":3}");
    /* another namespace's rules only. */
    put_event(b, "other",
              "{\"specversion\":\"1.0\",\"id\":\"e6\",\"source\":\"s\",\"type\":\"t\"}");
    /* Not an event: dropped, nothing routed. */
    _Atomic int done = 0;
    nb_q_out junk = {.body = "not json", .body_len = 8};
    CHECK(nb_q_send(q, "bus/default", &junk, 1, sent_cb, &done, &err) == 0);
    while (!atomic_load(&done))
        usleep(1000);

    RUN_UNTIL(depth(q, "bus/default") == 0 && depth(q, "bus/other") == 0 &&
              depth(q, "q/default/out") == 1 && depth(q, "q/default/prices") == 1 &&
              depth(q, "t/default/tp") == 1 && depth(q, "fn/default/worker") == 1 &&
              depth(q, "q/other/out") == 1);
    settle();
    CHECK(depth(q, "q/default/out") == 1 && depth(q, "q/default/prices") == 1);

    json_t *got = drain(q, "q/default/out");
    CHECK(json_array_size(got) == 1);
    CHECK_STR(body_str(got, 0, "id"), "e1");
    CHECK_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(got, 0), "attrs"), "rule")),
              "orders");
    json_decref(got);
    got = drain(q, "q/default/prices");
    CHECK_STR(body_str(got, 0, "id"), "e3");
    json_decref(got);
    got = drain(q, "t/default/tp");
    CHECK_STR(body_str(got, 0, "id"), "e4");
    const char *ta = json_string_value(
        json_object_get(json_object_get(json_array_get(got, 0), "attrs"), "attributes"));
    json_t *tattrs = parse(ta);
    CHECK_STR(json_string_value(json_object_get(json_object_get(tattrs, "ce_type"), "Value")),
              "photo");
    CHECK_STR(json_string_value(json_object_get(json_object_get(tattrs, "ce_subject"), "Type")),
              "String");
    CHECK_STR(json_string_value(json_object_get(json_object_get(tattrs, "ce_source"), "Value")),
              "cam");
    json_decref(tattrs);
    json_decref(got);
    got = drain(q, "fn/default/worker");
    CHECK_STR(body_str(got, 0, "id"), "e5");
    CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(got, 0), "attrs"),
                                                NB_BUS_HOPS_ATTR)),
              "3");
    json_decref(got);
    got = drain(q, "q/other/out");
    CHECK_STR(body_str(got, 0, "id"), "e6");
    json_decref(got);

    /* Platform events: none for a namespace without rules (not even its bus queue). */
    json_t *data = json_pack("{s:s, s:i}", "schedule", "nightly", "n", 1);
    CHECK(nb_bus_platform_event(b, "empty", "nimbus.schedule.fired", "nimbus://empty/schedules/s",
                                NULL, NULL, data, 0) == 0);
    CHECK(!nb_q_exists(q, "bus/empty"));
    CHECK(nb_bus_platform_event(NULL, "default", "t", "s", NULL, NULL, NULL, 0) == 0);
    /* Past the hop limit: nothing. */
    CHECK(nb_bus_platform_event(b, "other", "nimbus.invocation.success", "nimbus://other/f", NULL,
                                NULL, NULL, NB_BUS_MAX_HOPS + 1) == 0);
    /* Within it: a full CloudEvent, routed by the catch-all rule of "other". */
    CHECK(nb_bus_platform_event(b, "other", "nimbus.schedule.fired",
                                "nimbus://other/schedules/nightly", "sub", "fixed-id", data,
                                2) == 1);
    CHECK(nb_bus_platform_event(b, "other", "nimbus.queue.message", "nimbus://other/queues/q", NULL,
                                NULL, NULL, 0) == 1);
    RUN_UNTIL(depth(q, "q/other/out") == 2 && depth(q, "bus/other") == 0);
    got = drain(q, "q/other/out");
    CHECK(json_array_size(got) == 2);
    json_t *ev = json_object_get(json_array_get(got, 0), "body");
    nb_err verr = {0};
    CHECK(nb_ce_validate(ev, &verr) == 0);
    CHECK_STR(json_string_value(json_object_get(ev, "id")), "fixed-id");
    CHECK_STR(json_string_value(json_object_get(ev, "specversion")), "1.0");
    CHECK_STR(json_string_value(json_object_get(ev, "type")), "nimbus.schedule.fired");
    CHECK_STR(json_string_value(json_object_get(ev, "source")), "nimbus://other/schedules/nightly");
    CHECK_STR(json_string_value(json_object_get(ev, "subject")), "sub");
    CHECK(json_integer_value(json_object_get(ev, "nimbushops")) == 2);
    CHECK(strlen(json_string_value(json_object_get(ev, "time"))) == 24);
    CHECK(json_equal(json_object_get(ev, "data"), data));
    ev = json_object_get(json_array_get(got, 1), "body");
    CHECK(strlen(json_string_value(json_object_get(ev, "id"))) == 36); /* a fresh UUID */
    CHECK(!json_object_get(ev, "nimbushops") && !json_object_get(ev, "subject"));
    json_decref(got);
    json_decref(data);

    /* A rule deleted or disabled routes nothing once the bus is reloaded. */
    CHECK(st->ops->obj_delete(st, "other", "rule", "all", &err) == 0);
    put_rule(st, "default", "orders",
             "{\"match\":{\"type\":[\"order.created\"]},\"target\":\"queue:out\","
             "\"enabled\":false}");
    CHECK(nb_bus_reload(b, &err) == 0);
    CHECK(nb_bus_enabled_rules(b, "other") == 0);
    CHECK(nb_bus_enabled_rules(b, "default") == 4);
    put_event(b, "default",
              "{\"specversion\":\"1.0\",\"id\":\"e7\",\"source\":\"shop/web\","
              "\"type\":\"order.created\"}");
    RUN_UNTIL(depth(q, "bus/default") == 0);
    settle();
    CHECK(depth(q, "q/default/out") == 0);

    nb_fan_stop(f);
    atomic_store(&fan, NULL);
    nb_q_close(q);
    nb_fan_free(f);
    nb_bus_free(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    st->ops->close(st);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("ok\n");
    return 0;
}
