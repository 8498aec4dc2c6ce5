/* nb_alog: records from several threads, flush, query filters, usage sums, retention by count
 * and age, dropping at the cap, logged bodies, reopening. The .c is included for the writer's
 * hold switch, which makes the full-batch case deterministic. */
#include "gateway/alog.c"

#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include "check.h"

#define DAY_MS ((int64_t)86400000)

static char dir[] = "/tmp/nb-alog-XXXXXX";

static const char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static nb_alog *open_db_at(const char *name, int64_t max_records, int64_t max_age_s)
{
    nb_alog_limits lim = {max_records, max_age_s};
    nb_err err = {0};
    nb_alog *a = nb_alog_open(db_path(name), &lim, &err);
    if (!a) fprintf(stderr, "open: %s\n", err.msg);
    CHECK(a);
    return a;
}

static nb_alog_rec rec(const char *ns, const char *api, int status, int64_t time_ms)
{
    nb_alog_rec r = {
        .time_ms = time_ms,
        .ns = ns,
        .api = api,
        .route = "GET /items/{id}",
        .method = "GET",
        .path = "/items/1?x=2",
        .status = status,
        .latency_us = 1000,
        .consumer = "",
        .consumer_kind = "",
        .request_id = "rid",
        .source_ip = "10.0.0.1",
        .bytes_in = 1,
        .bytes_out = 2,
        .error_code = "",
    };
    return r;
}

/* All records of ns, counted by the usage view. */
static int64_t count(nb_alog *a, const char *ns)
{
    nb_alog_filter f = {.ns = ns};
    nb_err err = {0};
    json_t *u = nb_alog_usage(a, &f, "api", &err);
    CHECK(u);
    int64_t n = 0;
    size_t i;
    json_t *g;
    json_array_foreach(u, i, g) n += json_integer_value(json_object_get(g, "requests"));
    json_decref(u);
    return n;
}

static json_t *query(nb_alog *a, nb_alog_filter f, int64_t *last_id)
{
    nb_err err = {0};
    json_t *q = nb_alog_query(a, &f, last_id, &err);
    if (!q) fprintf(stderr, "query: %s\n", err.msg);
    CHECK(q && json_is_array(q));
    return q;
}

static int64_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    CHECK(json_is_integer(v));
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- several threads, then queries and usage ---- */

#define THREADS 4
#define PER     2500
static const int statuses[5] = {200, 201, 404, 500, 503};
static int64_t base_ms; /* 2026-11-23T10:00:00Z */

typedef struct producer {
    nb_alog *a;
    int id;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    char consumer[16], rid[32];
    snprintf(consumer, sizeof consumer, "k%d", p->id);
    for (int i = 0; i < PER; i++) {
        /* Thread 3 writes to another namespace; half the records fall on the next day. */
        nb_alog_rec r = rec(p->id == 3 ? "other" : "default", i % 2 ? "b" : "a", statuses[i % 5],
                            base_ms + (i % 2) * DAY_MS + i);
        r.consumer = consumer;
        r.consumer_kind = "key";
        r.latency_us = 1000 + i % 7;
        r.bytes_in = 10;
        r.bytes_out = i % 3;
        snprintf(rid, sizeof rid, "r-%d-%d", p->id, i);
        r.request_id = rid;
        nb_alog_record(p->a, &r);
    }
    return NULL;
}

static json_t *usage(nb_alog *a, nb_alog_filter f, const char *by)
{
    nb_err err = {0};
    json_t *u = nb_alog_usage(a, &f, by, &err);
    if (!u) fprintf(stderr, "usage: %s\n", err.msg);
    CHECK(u && json_is_array(u));
    return u;
}

static void test_threads_query_usage(void)
{
    nb_alog *a = open_db_at("main.db", 0, 3650L * 86400);
    pthread_t th[THREADS];
    producer p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (producer){a, i};
        CHECK(pthread_create(&th[i], NULL, produce, &p[i]) == 0);
    }
    for (int i = 0; i < 5; i++)
        nb_alog_flush(a); /* flushes racing with recording neither hang nor lose records */
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    nb_alog_flush(a);
    CHECK(nb_alog_dropped(a) == 0);
    CHECK(count(a, "default") == 3 * PER);
    CHECK(count(a, "other") == PER);
    CHECK(count(a, "none") == 0);

    /* By key: one group per consumer, sums equal to what was sent. */
    json_t *u = usage(a, (nb_alog_filter){.ns = "default"}, "key");
    CHECK(json_array_size(u) == 3);
    int64_t total = 0;
    size_t i;
    json_t *g;
    json_array_foreach(u, i, g)
    {
        const char *k = jstr(g, "key");
        CHECK(k && k[0] == 'k' && k[1] >= '0' && k[1] <= '2');
        CHECK(jint(g, "requests") == PER);
        CHECK(jint(g, "errors_4xx") == PER / 5);
        CHECK(jint(g, "errors_5xx") == 2 * PER / 5);
        CHECK(jint(g, "bytes_in") == 10 * PER);
        int64_t out = 0;
        for (int n = 0; n < PER; n++)
            out += n % 3;
        CHECK(jint(g, "bytes_out") == out);
        CHECK(fabs(json_real_value(json_object_get(g, "latency_ms_max")) - 1.006) < 1e-9);
        double avg = json_real_value(json_object_get(g, "latency_ms_avg"));
        CHECK(avg > 1.0 && avg < 1.006);
        total += jint(g, "requests");
    }
    CHECK(total == 3 * PER);
    json_decref(u);

    /* By status: integers, sorted by requests descending. */
    u = usage(a, (nb_alog_filter){.ns = "default"}, "status");
    CHECK(json_array_size(u) == 5);
    json_array_foreach(u, i, g)
    {
        CHECK(json_is_integer(json_object_get(g, "status")));
        CHECK(jint(g, "requests") == 3 * PER / 5);
    }
    json_decref(u);

    u = usage(a, (nb_alog_filter){.ns = "default"}, "route");
    CHECK(json_array_size(u) == 1);
    CHECK_STR(jstr(json_array_get(u, 0), "route"), "GET /items/{id}");
    CHECK(jint(json_array_get(u, 0), "requests") == 3 * PER);
    json_decref(u);

    u = usage(a, (nb_alog_filter){.ns = "default"}, "day");
    CHECK(json_array_size(u) == 2);
    CHECK(jint(json_array_get(u, 0), "requests") == 3 * PER / 2);
    const char *d0 = jstr(json_array_get(u, 0), "day"), *d1 = jstr(json_array_get(u, 1), "day");
    CHECK(d0 && d1);
    CHECK((strcmp(d0, "2026-11-23") == 0 && strcmp(d1, "2026-11-24") == 0) ||
          (strcmp(d1, "2026-11-23") == 0 && strcmp(d0, "2026-11-24") == 0));
    json_decref(u);

    /* One API, and since: the next day only. */
    u = usage(a, (nb_alog_filter){.ns = "default", .api = "b"}, "api");
    CHECK(json_array_size(u) == 1);
    CHECK_STR(jstr(json_array_get(u, 0), "api"), "b");
    CHECK(jint(json_array_get(u, 0), "requests") == 3 * PER / 2);
    json_decref(u);
    u = usage(a, (nb_alog_filter){.ns = "default", .since_ms = base_ms + DAY_MS}, "day");
    CHECK(json_array_size(u) == 1);
    CHECK_STR(jstr(json_array_get(u, 0), "day"), "2026-11-24");
    json_decref(u);

    nb_err err = {0};
    CHECK(!nb_alog_usage(a, &(nb_alog_filter){.ns = "default"}, "color", &err));
    CHECK(err.status == 400);
    CHECK(!nb_alog_query(a, &(nb_alog_filter){0}, NULL, &err));
    CHECK(!nb_alog_query(a, &(nb_alog_filter){.ns = "default", .status_class = 7}, NULL, &err));

    /* limit keeps the newest, oldest first; last_id is the highest id. */
    int64_t last = -1;
    json_t *q = query(a, (nb_alog_filter){.ns = "default", .limit = 10}, &last);
    CHECK(json_array_size(q) == 10);
    for (size_t k = 1; k < 10; k++)
        CHECK(jint(json_array_get(q, k), "id") > jint(json_array_get(q, k - 1), "id"));
    CHECK(jint(json_array_get(q, 9), "id") == last);
    json_decref(q);
    int64_t all_last = -1;
    q = query(a, (nb_alog_filter){.ns = "other", .limit = 1}, &all_last);
    json_decref(q);
    q = query(a, (nb_alog_filter){.ns = "default"}, NULL);
    CHECK(json_array_size(q) == 100); /* the default limit */
    json_decref(q);

    /* Exact status, status class, since, API. */
    q = query(a, (nb_alog_filter){.ns = "default", .status = 404, .limit = 10000}, NULL);
    CHECK(json_array_size(q) == 3 * PER / 5);
    json_array_foreach(q, i, g) CHECK(jint(g, "status") == 404);
    json_decref(q);
    q = query(a, (nb_alog_filter){.ns = "default", .status_class = 5, .limit = 10000}, NULL);
    CHECK(json_array_size(q) == 2 * 3 * PER / 5);
    json_array_foreach(q, i, g) CHECK(jint(g, "status") >= 500);
    json_decref(q);
    q = query(a, (nb_alog_filter){.ns = "default", .status_class = 2, .api = "a", .limit = 10000},
              NULL);
    json_array_foreach(q, i, g)
    {
        CHECK(jint(g, "status") / 100 == 2);
        CHECK_STR(jstr(g, "api"), "a");
    }
    CHECK(json_array_size(q) > 0);
    json_decref(q);
    q = query(
        a,
        (nb_alog_filter){.ns = "default", .since_ms = base_ms + DAY_MS + PER - 10, .limit = 10000},
        NULL);
    CHECK(json_array_size(q) == 3 * 5); /* odd i in [PER - 10, PER) from each thread */
    json_decref(q);

    /* Follow: nothing after the last id, then exactly the new records. */
    int64_t follow = -1;
    q = query(a, (nb_alog_filter){.ns = "default", .after_id = last}, &follow);
    CHECK(json_array_size(q) == 0);
    CHECK(follow == last);
    json_decref(q);
    for (int k = 0; k < 3; k++) {
        nb_alog_rec r = rec("default", "a", 200, base_ms);
        r.latency_us = 1234;
        r.cold = k == 1;
        nb_alog_record(a, &r);
    }
    nb_alog_flush(a);
    q = query(a, (nb_alog_filter){.ns = "default", .after_id = last}, &follow);
    CHECK(json_array_size(q) == 3);
    CHECK(follow > last && follow > all_last);
    json_t *o = json_array_get(q, 1);
    CHECK(fabs(json_real_value(json_object_get(o, "latency_ms")) - 1.234) < 1e-9);
    CHECK(json_is_true(json_object_get(o, "cold_start")));
    CHECK(json_is_false(json_object_get(json_array_get(q, 0), "cold_start")));
    CHECK_STR(jstr(o, "time"), "2026-11-23T10:00:00.000Z");
    CHECK_STR(jstr(o, "route"), "GET /items/{id}");
    CHECK_STR(jstr(o, "method"), "GET");
    CHECK_STR(jstr(o, "path"), "/items/1?x=2");
    CHECK_STR(jstr(o, "consumer"), "");
    CHECK_STR(jstr(o, "consumer_kind"), "");
    CHECK_STR(jstr(o, "request_id"), "rid");
    CHECK_STR(jstr(o, "source_ip"), "10.0.0.1");
    CHECK_STR(jstr(o, "error_code"), "");
    CHECK(jint(o, "bytes_in") == 1 && jint(o, "bytes_out") == 2);
    CHECK(!json_object_get(o, "body")); /* not logged */
    json_decref(q);
    nb_alog_close(a);
}

/* ---- retention ---- */

static void test_retention_count(void)
{
    nb_alog *a = open_db_at("count.db", 100, 0);
    int64_t now = nb_now_ms();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < (round < 2 ? 100 : 50); i++) {
            nb_alog_rec r = rec("default", "a", 200, now);
            nb_alog_record(a, &r);
        }
        nb_alog_flush(a);
        CHECK(count(a, "default") == 100);
    }
    int64_t last = 0;
    json_t *q = query(a, (nb_alog_filter){.ns = "default", .limit = 1000}, &last);
    CHECK(json_array_size(q) == 100);
    CHECK(jint(json_array_get(q, 0), "id") == last - 99); /* the newest were kept */
    CHECK(last == 250);
    json_decref(q);
    nb_alog_close(a);
}

static void test_retention_age_and_reopen(void)
{
    nb_alog *a = open_db_at("age.db", 0, 3600);
    int64_t now = nb_now_ms();
    for (int i = 0; i < 30; i++) {
        nb_alog_rec r = rec("default", "a", 200, now - 2 * 3600 * 1000 + i);
        nb_alog_record(a, &r);
    }
    for (int i = 0; i < 20; i++) {
        nb_alog_rec r = rec("default", "a", 200, now + i);
        nb_alog_record(a, &r);
    }
    nb_alog_flush(a);
    CHECK(count(a, "default") == 20);
    int64_t last = 0;
    json_decref(query(a, (nb_alog_filter){.ns = "default"}, &last));
    CHECK(last == 50);

    nb_alog_close(a);

    /* Reopened: the data is there and ids go on. */
    a = open_db_at("age.db", 0, 3600);
    CHECK(count(a, "default") == 20);
    nb_alog_rec r = rec("default", "a", 200, now);
    nb_alog_record(a, &r);
    nb_alog_close(a); /* close flushes */
    a = open_db_at("age.db", 0, 3600);
    json_t *q = query(a, (nb_alog_filter){.ns = "default", .after_id = 50}, &last);
    CHECK(json_array_size(q) == 1);
    CHECK(last == 51);
    json_decref(q);
    CHECK(count(a, "default") == 21);
    nb_alog_close(a);

    /* Everything old: the table empties, and ids still never go back (a follower's after_id
     * stays meaningful). */
    a = open_db_at("empty.db", 0, 3600);
    for (int i = 0; i < 5; i++) {
        r = rec("default", "a", 200, now - 3 * 3600 * 1000);
        nb_alog_record(a, &r);
    }
    nb_alog_flush(a);
    CHECK(count(a, "default") == 0);
    r = rec("default", "a", 200, now);
    nb_alog_record(a, &r);
    nb_alog_flush(a);
    json_decref(query(a, (nb_alog_filter){.ns = "default"}, &last));
    CHECK(last == 6);
    /* An old record logged after a recent one stays until the records before it have gone:
     * retention cuts a prefix of ids. */
    r = rec("default", "a", 200, now - 3 * 3600 * 1000);
    nb_alog_record(a, &r);
    nb_alog_flush(a);
    CHECK(count(a, "default") == 2);
    nb_alog_close(a);
}

/* ---- the cap ---- */

static void test_dropped(void)
{
    nb_alog *a = open_db_at("cap.db", 0, 0);
    pthread_mutex_lock(&a->mu);
    a->hold = true;
    pthread_mutex_unlock(&a->mu);
    int64_t now = nb_now_ms();
    for (int i = 0; i < NB_ALOG_MAX_PENDING + 25; i++) {
        nb_alog_rec r = rec("default", "a", 200, now);
        nb_alog_record(a, &r);
    }
    CHECK(nb_alog_dropped(a) == 25);
    pthread_mutex_lock(&a->mu);
    a->hold = false;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    nb_alog_flush(a);
    CHECK(count(a, "default") == NB_ALOG_MAX_PENDING);
    /* Room again once the batch is committed. */
    nb_alog_rec r = rec("default", "a", 200, now);
    nb_alog_record(a, &r);
    nb_alog_flush(a);
    CHECK(count(a, "default") == NB_ALOG_MAX_PENDING + 1);
    CHECK(nb_alog_dropped(a) == 25);
    nb_alog_close(a);
}

/* ---- bodies and bytes that are not UTF-8 ---- */

static void test_bodies(void)
{
    nb_alog *a = open_db_at("body.db", 0, 0);
    int64_t now = nb_now_ms();
    static const char text[] = "{\"msg\":\"h\xc3\xa9llo\"}";
    static const char bin[] = "\xff\x00\x01"
                              "abc";
    static const char *bodies[] = {text, bin, "", "\xed\xa0\x80", "\xc0\xaf"};
    static const size_t lens[] = {sizeof text - 1, sizeof bin - 1, 0, 3, 2};
    for (int i = 0; i < 5; i++) {
        nb_alog_rec r = rec("default", "a", 200, now);
        r.body = bodies[i];
        r.body_len = lens[i];
        if (i == 0) r.path = "/p\xff\xfeq";
        nb_alog_record(a, &r);
    }
    nb_alog_flush(a);
    json_t *q = query(a, (nb_alog_filter){.ns = "default"}, NULL);
    CHECK(json_array_size(q) == 5);
    json_t *o = json_array_get(q, 0);
    CHECK_STR(jstr(o, "body"), text);
    CHECK(!json_object_get(o, "body_base64"));
    CHECK_STR(jstr(o, "path"), "/p??q");
    o = json_array_get(q, 1);
    CHECK_STR(jstr(o, "body"), "/wABYWJj");
    CHECK(json_is_true(json_object_get(o, "body_base64")));
    o = json_array_get(q, 2);
    CHECK_STR(jstr(o, "body"), ""); /* logged and empty, unlike not logged */
    CHECK(!json_object_get(o, "body_base64"));
    /* A surrogate and an overlong form are not UTF-8 either. */
    CHECK_STR(jstr(json_array_get(q, 3), "body"), "7aCA");
    CHECK(json_is_true(json_object_get(json_array_get(q, 3), "body_base64")));
    CHECK_STR(jstr(json_array_get(q, 4), "body"), "wK8=");
    json_decref(q);
    nb_alog_close(a);
}

static void test_open_fails(void)
{
    nb_err err = {0};
    CHECK(!nb_alog_open("/nonexistent-dir/x/gateway.db", NULL, &err));
    CHECK(err.status == 500);
    CHECK(strstr(err.msg, "access log") != NULL);
}

int main(void)
{
    CHECK(mkdtemp(dir));
    struct tm tm = {.tm_year = 126, .tm_mon = 10, .tm_mday = 23, .tm_hour = 10};
    base_ms = (int64_t)timegm(&tm) * 1000;
    test_threads_query_usage();
    test_retention_count();
    test_retention_age_and_reopen();
    test_dropped();
    test_bodies();
    test_open_fails();
    nb_alog_close(NULL);
    CHECK(nb_rm_rf(dir) == 0);
    printf("alog: ok\n");
    return 0;
}
