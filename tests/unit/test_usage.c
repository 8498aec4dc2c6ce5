/* nb_use: billed rounding, sums, pricing in exact micro-dollars, the price sheet, the rollup
 * through SQLite (sums per group add up to the total), the bounded batch (records dropped and
 * counted when full, never blocking). The .c is included for the writer's hold switch, which
 * makes the full-batch case deterministic. */
#include "metering/usage.c"

#include <stdio.h>
#include <unistd.h>
#include "check.h"

static char dir[] = "/tmp/nb-usage-XXXXXX";

static nb_use_rec rec(const char *ns, const char *fn, const char *caller, int64_t us, int mb,
                      int outcome)
{
    nb_use_rec r;
    memset(&r, 0, sizeof r);
    r.start_ms = nb_now_ms();
    r.duration_us = us;
    r.billed_ms = nb_use_billed_ms(us);
    r.memory_mb = mb;
    r.cpu_us = us / 2;
    r.outcome = outcome;
    r.version = 1;
    snprintf(r.ns, sizeof r.ns, "%s", ns);
    snprintf(r.fn, sizeof r.fn, "%s", fn);
    snprintf(r.caller, sizeof r.caller, "%s", caller);
    snprintf(r.request_id, sizeof r.request_id, "rid");
    return r;
}

static void test_billed(void)
{
    CHECK(nb_use_billed_ms(10) == 1);   /* 0.01 ms */
    CHECK(nb_use_billed_ms(1000) == 1); /* 1.0 ms */
    CHECK(nb_use_billed_ms(1001) == 2); /* 1.001 ms */
    CHECK(nb_use_billed_ms(0) == 1);
    CHECK(nb_use_billed_ms(99999) == 100);
    CHECK(nb_use_billed_ms(100000) == 100);
    CHECK(nb_use_billed_ms(100001) == 101);
}

static void test_sums(void)
{
    nb_use_sums s = {0};
    nb_use_rec a = rec("default", "f", "", 1500, 128, NB_USE_SUCCESS); /* billed 2 */
    nb_use_rec b = rec("default", "f", "", 2000, 128, NB_USE_ERROR);   /* billed 2 */
    nb_use_rec t = rec("default", "f", "", 0, 128, NB_USE_THROTTLED);
    t.billed_ms = 0;
    b.cold = 1;
    nb_use_sums_add(&s, &a);
    nb_use_sums_add(&s, &b);
    nb_use_sums_add(&s, &t);
    CHECK(s.requests == 2 && s.errors == 1 && s.throttles == 1 && s.cold_starts == 1);
    CHECK(s.billed_ms == 4 && s.duration_us == 3500 && s.mb_ms == 4 * 128);
    CHECK(s.cpu_us == 750 + 1000);
    nb_use_rec k;
    memset(&k, 0, sizeof k);
    k.kept_ms = 1000;
    k.memory_mb = 512;
    nb_use_sums_add(&s, &k);
    CHECK(s.kept_mb_ms == 512000 && s.requests == 2);
}

static void test_pricing(void)
{
    nb_use_prices p;
    nb_use_prices_default(&p);
    /* 1M requests cost $0.20. */
    nb_use_sums s = {.requests = 1000000};
    CHECK(nb_use_cost_micro(&s, &p) == 200000);
    /* 1000 GB-s: $0.0166667 = 16666.7 micro-dollars, rounded once to 16667. */
    nb_use_sums g = {.mb_ms = 1000LL * 1024000};
    CHECK(nb_use_cost_micro(&g, &p) == 16667);
    /* 1000 invocations of 1 s at 1024 MB: requests and compute together, rounded once:
     * 200 + 16666.7 = 16866.7 -> 16867. */
    nb_use_sums both = {.requests = 1000, .mb_ms = 1000LL * 1024000};
    CHECK(nb_use_cost_micro(&both, &p) == 16867);
    /* Provisioned: 1 GB kept for an hour = 3600 GB-s x $0.0000041667 = $0.01500012. */
    nb_use_sums k = {.kept_mb_ms = 3600LL * 1024000};
    CHECK(nb_use_cost_micro(&k, &p) == 15000);
    /* CPU-ms is free by default and priced when configured. */
    nb_use_sums c = {.cpu_us = 5000000};
    CHECK(nb_use_cost_micro(&c, &p) == 0);
    nb_err err = {0};
    const char *sheet = "{\"cpu_ms\": 0.000002, \"request_per_million\": 0.4}";
    CHECK(nb_use_prices_parse(&p, sheet, strlen(sheet), &err) == 0);
    CHECK(nb_use_cost_micro(&c, &p) == 10000); /* 5000 ms x $0.000002 */
    CHECK(nb_use_cost_micro(&s, &p) == 400000);
    CHECK(p.gb_second_f == 16666700000); /* untouched */
    /* Huge figures do not overflow: a year of a 10 GB function. */
    nb_use_sums big = {.mb_ms = 10240LL * 86400000 * 365};
    nb_use_prices_default(&p);
    CHECK(nb_use_cost_micro(&big, &p) == 5256010512); /* 315360000 GB-s x $0.0000166667 */
    /* Bad sheets are refused whole. */
    nb_use_prices q = p;
    const char *bad[] = {"{\"gb_second\": -1}", "{\"nope\": 1}", "[1]", "{\"cpu_ms\": \"1\"}", "{"};
    for (size_t i = 0; i < NB_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        CHECK(nb_use_prices_parse(&q, bad[i], strlen(bad[i]), &err) < 0);
        CHECK(err.status == 400);
        CHECK(memcmp(&q, &p, sizeof p) == 0);
    }
}

static const json_t *row_of(const json_t *rows, const char *by, const char *key)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        const char *k = json_string_value(json_object_get(r, by));
        if (k && strcmp(k, key) == 0 && !json_object_get(r, "total")) return r;
    }
    return NULL;
}

static int64_t ival(const json_t *r, const char *k)
{
    return json_integer_value(json_object_get(r, k));
}

static void test_rollup(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/usage.db", dir);
    nb_err err = {0};
    nb_use *u = nb_use_open(path, NULL, &err);
    if (!u) fprintf(stderr, "open: %s\n", err.msg);
    CHECK(u);
    /* f: 3 requests (one error) by two keys; g: 2 requests, one throttle; h in another ns. */
    nb_use_rec rs[] = {
        rec("default", "f", "alice", 1500, 128, NB_USE_SUCCESS),
        rec("default", "f", "alice", 10, 128, NB_USE_ERROR),
        rec("default", "f", "bob", 250000, 128, NB_USE_SUCCESS),
        rec("default", "g", "", 1000, 1024, NB_USE_SUCCESS),
        rec("default", "g", "", 1001, 1024, NB_USE_TIMEOUT),
        rec("default", "g", "", 0, 1024, NB_USE_THROTTLED),
        rec("team", "h", "", 3000, 256, NB_USE_SUCCESS),
    };
    rs[5].billed_ms = 0;
    for (size_t i = 0; i < NB_ARRAY_LEN(rs); i++)
        nb_use_record(u, &rs[i]);
    nb_use_flush(u);

    nb_use_filter f = {.by = "function"};
    json_t *rows = nb_use_query(u, &f, &err);
    CHECK(rows);
    CHECK(json_array_size(rows) == 4);
    const json_t *rf = row_of(rows, "function", "f"), *rg = row_of(rows, "function", "g");
    CHECK(rf && rg);
    CHECK(ival(rf, "requests") == 3 && ival(rf, "errors") == 1);
    CHECK(ival(rf, "billed_ms") == 2 + 1 + 250);
    CHECK(ival(rg, "requests") == 2 && ival(rg, "errors") == 1 && ival(rg, "throttles") == 1);
    CHECK(ival(rg, "billed_ms") == 1 + 2);
    const json_t *tot = json_array_get(rows, json_array_size(rows) - 1);
    CHECK(json_is_true(json_object_get(tot, "total")));
    CHECK(ival(tot, "requests") == 6 && ival(tot, "billed_ms") == 253 + 3 + 3);
    int64_t sum = 0;
    for (size_t i = 0; i + 1 < json_array_size(rows); i++)
        sum += ival(json_array_get(rows, i), "cost_micro_usd");
    CHECK(sum == ival(tot, "cost_micro_usd"));
    json_decref(rows);

    f.by = "key";
    rows = nb_use_query(u, &f, &err);
    CHECK(ival(row_of(rows, "key", "alice"), "requests") == 2);
    CHECK(ival(row_of(rows, "key", "bob"), "requests") == 1);
    json_decref(rows);
    f.by = "namespace";
    f.ns = "team";
    rows = nb_use_query(u, &f, &err);
    CHECK(json_array_size(rows) == 2 && ival(row_of(rows, "namespace", "team"), "requests") == 1);
    json_decref(rows);
    f.ns = NULL;
    f.by = "day";
    f.from_ms = 1000;
    f.to_ms = 2000; /* 1970: nothing */
    rows = nb_use_query(u, &f, &err);
    CHECK(json_array_size(rows) == 1 && ival(json_array_get(rows, 0), "requests") == 0);
    json_decref(rows);
    f.by = "nope";
    memset(&err, 0, sizeof err);
    CHECK(!nb_use_query(u, &f, &err) && err.status == 400);

    /* The raw window has every invocation (not the throttle's billing, but its record). */
    sqlite3_stmt *st;
    pthread_mutex_lock(&u->rmu);
    CHECK(sqlite3_prepare_v2(u->rdb, "SELECT SUM(n) FROM raw_batch", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 7);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&u->rmu);

    /* Recent invocations: one function's, newest first, across batches. */
    nb_use_rec late = rec("default", "f", "", 5000, 128, NB_USE_SUCCESS);
    nb_use_record(u, &late);
    nb_use_flush(u);
    json_t *r = nb_use_recent(u, "default", "f", 10, &err);
    json_t *inv = json_object_get(r, "invocations");
    CHECK(json_array_size(inv) == 4);
    CHECK(json_real_value(json_object_get(json_array_get(inv, 0), "duration_ms")) == 5.0);
    CHECK(json_real_value(json_object_get(json_array_get(inv, 1), "duration_ms")) == 250.0);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(inv, 2), "outcome")), "error") ==
          0);
    json_decref(r);
    r = nb_use_recent(u, "default", "f", 1, &err);
    CHECK(json_array_size(json_object_get(r, "invocations")) == 1);
    json_decref(r);
    r = nb_use_recent(u, "default", "nobody", 10, &err);
    CHECK(json_array_size(json_object_get(r, "invocations")) == 0);
    json_decref(r);
    memset(&err, 0, sizeof err);
    CHECK(!nb_use_recent(u, "default", "f", 0, &err) && err.status == 400);
    nb_use_close(u);
}

static void test_bounded_batch(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/bounded.db", dir);
    nb_err err = {0};
    nb_use_config cfg = {.max_pending = 16};
    nb_use *u = nb_use_open(path, &cfg, &err);
    CHECK(u);
    pthread_mutex_lock(&u->mu);
    u->hold = true;
    pthread_mutex_unlock(&u->mu);
    nb_use_rec r = rec("default", "f", "", 1000, 128, NB_USE_SUCCESS);
    for (int i = 0; i < 20; i++)
        nb_use_record(u, &r); /* never blocks: the last 4 are dropped */
    CHECK(nb_use_dropped(u) == 4);
    pthread_mutex_lock(&u->mu);
    CHECK(u->npending == 16);
    u->hold = false;
    pthread_mutex_unlock(&u->mu);
    nb_use_flush(u);
    nb_use_filter f = {.by = "function"};
    json_t *rows = nb_use_query(u, &f, &err);
    CHECK(ival(row_of(rows, "function", "f"), "requests") == 16);
    json_decref(rows);
    /* Room again once committed. */
    nb_use_record(u, &r);
    nb_use_close(u); /* close commits what is pending */
    u = nb_use_open(path, &cfg, &err);
    CHECK(u);
    rows = nb_use_query(u, &f, &err);
    CHECK(ival(row_of(rows, "function", "f"), "requests") == 17);
    json_decref(rows);
    nb_use_close(u);
    nb_use_record(NULL, &r); /* metering off: nothing */
}

/* One batch of many keys: the in-memory rollup table probes past collisions and loses none. */
static void test_many_keys(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/keys.db", dir);
    nb_err err = {0};
    nb_use *u = nb_use_open(path, NULL, &err);
    CHECK(u);
    pthread_mutex_lock(&u->mu);
    u->hold = true; /* one batch */
    pthread_mutex_unlock(&u->mu);
    char fn[16];
    for (int i = 0; i < 3000; i++) {
        snprintf(fn, sizeof fn, "f%d", i % 500);
        nb_use_rec r =
            rec("default", fn, i % 2 ? "a" : "b", 1000 * (1 + i % 7), 128, NB_USE_SUCCESS);
        nb_use_record(u, &r);
    }
    pthread_mutex_lock(&u->mu);
    u->hold = false;
    pthread_mutex_unlock(&u->mu);
    nb_use_flush(u);
    nb_use_filter f = {.by = "function"};
    json_t *rows = nb_use_query(u, &f, &err);
    CHECK(json_array_size(rows) == 501);
    int64_t billed = 0;
    for (int i = 0; i < 3000; i++)
        billed += 1 + i % 7;
    for (size_t i = 0; i + 1 < json_array_size(rows); i++)
        CHECK(ival(json_array_get(rows, i), "requests") == 6);
    CHECK(ival(json_array_get(rows, 500), "billed_ms") == billed);
    json_decref(rows);
    f.by = "key";
    rows = nb_use_query(u, &f, &err);
    CHECK(ival(row_of(rows, "key", "a"), "requests") == 1500);
    json_decref(rows);
    nb_use_close(u);
}

static int64_t raw_count(nb_use *u, const char *sql)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&u->rmu);
    CHECK(sqlite3_prepare_v2(u->rdb, sql, -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&u->rmu);
    return n;
}

/* The raw window's bounds: whole batches beyond the newest max_records records go, and batches
 * older than max_age_s; the rollup keeps them all. */
static void test_raw_window(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/window.db", dir);
    nb_err err = {0};
    nb_use_config cfg = {.max_records = 10};
    nb_use *u = nb_use_open(path, &cfg, &err);
    CHECK(u);
    for (int b = 0; b < 3; b++) {
        for (int i = 0; i < 8; i++) {
            nb_use_rec r = rec("default", "f", "", 1000, 128, NB_USE_SUCCESS);
            r.version = b;
            nb_use_record(u, &r);
        }
        nb_use_flush(u);
    }
    /* The writer trims after its first commit, then every 10 s: all three are there. */
    CHECK(raw_count(u, "SELECT SUM(n) FROM raw_batch") == 24);
    retain(u); /* the count bound: the two newest batches hold the newest 10 */
    CHECK(raw_count(u, "SELECT SUM(n) FROM raw_batch") == 16);
    json_t *r = nb_use_recent(u, "default", "f", 500, &err);
    json_t *inv = json_object_get(r, "invocations");
    CHECK(json_array_size(inv) == 16);
    CHECK(ival(json_array_get(inv, 15), "version") == 1);
    json_decref(r);
    nb_use_close(u);

    /* The age bound, at the first commit after a start. */
    cfg = (nb_use_config){.max_age_s = 3600};
    u = nb_use_open(path, &cfg, &err);
    CHECK(u);
    nb_use_rec old = rec("default", "f", "", 1000, 128, NB_USE_SUCCESS);
    old.start_ms -= 7200 * 1000;
    nb_use_record(u, &old);
    nb_use_flush(u);
    CHECK(raw_count(u, "SELECT COUNT(*) FROM raw_batch") == 2);
    CHECK(raw_count(u, "SELECT SUM(requests) FROM minute") == 25); /* rollups keep everything */
    nb_use_close(u);
}

static int collect(const nb_use_rec *r, void *ud)
{
    nb_use_rec **p = ud;
    *(*p)++ = *r;
    return 0;
}

/* The raw blob: records come back field for field; a truncated or altered blob is refused,
 * never read past its end. */
static void test_blob(void)
{
    nb_use_rec in[3];
    in[0] = rec("team", "f", "alice", 1234567, 512, NB_USE_SUCCESS);
    in[1] = rec("default", "g", "", 0, 128, NB_USE_THROTTLED);
    in[2] = rec("default", "h", "schedule:nightly", 3000000, 10240, NB_USE_TIMEOUT);
    in[1].cpu_us = -1;
    in[1].kept_ms = 1000; /* a provisioned sample */
    in[2].cold = 1;
    in[2].init_us = 180000;
    in[2].trigger = NB_TRIG_SCHEDULE;
    in[2].max_memory_mb = 9000;
    in[2].version = 42;
    memset(in[2].request_id, 'r', sizeof in[2].request_id - 1); /* the longest strings */
    in[2].request_id[sizeof in[2].request_id - 1] = 0;
    memset(in[2].error_type, 'e', sizeof in[2].error_type - 1);
    in[2].error_type[sizeof in[2].error_type - 1] = 0;
    uint8_t *blob = malloc(NB_USE_BLOB_MAX(3));
    size_t len = nb_use_encode(in, 3, blob);
    nb_use_rec out[3], *p = out;
    CHECK(nb_use_decode(blob, len, collect, &p) == 0 && p == out + 3);
    for (int i = 0; i < 3; i++) {
        CHECK(out[i].start_ms == in[i].start_ms && out[i].duration_us == in[i].duration_us);
        CHECK(out[i].billed_ms == in[i].billed_ms && out[i].cpu_us == in[i].cpu_us);
        CHECK(out[i].init_us == in[i].init_us && out[i].max_memory_mb == in[i].max_memory_mb);
        CHECK(out[i].version == in[i].version && out[i].memory_mb == in[i].memory_mb);
        CHECK(out[i].kept_ms == in[i].kept_ms);
        CHECK(out[i].cold == in[i].cold && out[i].trigger == in[i].trigger);
        CHECK(out[i].outcome == in[i].outcome);
        CHECK(strcmp(out[i].request_id, in[i].request_id) == 0);
        CHECK(strcmp(out[i].ns, in[i].ns) == 0 && strcmp(out[i].fn, in[i].fn) == 0);
        CHECK(strcmp(out[i].caller, in[i].caller) == 0);
        CHECK(strcmp(out[i].error_type, in[i].error_type) == 0);
    }
    for (size_t cut = 0; cut < len; cut++)
        CHECK(nb_use_decode(blob, cut, NULL, NULL) == -1);
    blob[len - 1 - strlen(in[2].error_type)] = 200; /* a string longer than its field */
    CHECK(nb_use_decode(blob, len, NULL, NULL) == -1);
    memcpy(blob, "XXXX", 4);
    CHECK(nb_use_decode(blob, len, NULL, NULL) == -1);
    free(blob);
}

int main(void)
{
    CHECK(mkdtemp(dir));
    test_billed();
    test_sums();
    test_pricing();
    test_blob();
    test_rollup();
    test_many_keys();
    test_raw_window();
    test_bounded_batch();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("ok\n");
    return 0;
}
