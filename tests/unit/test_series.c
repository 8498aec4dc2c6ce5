/* nb_ser: percentiles from histogram bucket counts (interpolation inside a bucket, the open
 * last bucket, empty steps), the ring's wrap after NB_SER_SLOTS samples, per-second rates,
 * step alignment, a step's peak concurrency, and argument checks. */
#include "metrics/series.h"

#include <math.h>

#include "check.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

static void test_quantile(void)
{
    uint64_t c[NB_MET_BUCKETS + 1] = {0};
    CHECK(isnan(nb_ser_quantile(c, 0.5)));
    /* 10 observations in (5 ms, 10 ms]: the median is halfway, p99 near the top. */
    c[3] = 10;
    CHECK(NEAR(nb_ser_quantile(c, 0.5), 7.5));
    CHECK(NEAR(nb_ser_quantile(c, 0.99), 5 + 5 * 0.99));
    CHECK(NEAR(nb_ser_quantile(c, 1), 10));
    CHECK(NEAR(nb_ser_quantile(c, 0), 5));
    /* The first bucket starts at 0. */
    memset(c, 0, sizeof c);
    c[0] = 4;
    CHECK(NEAR(nb_ser_quantile(c, 0.5), 0.5));
    /* Two buckets: 90 in (1, 2.5] ms, 10 in (250, 500] ms. */
    memset(c, 0, sizeof c);
    c[1] = 90;
    c[8] = 10;
    CHECK(NEAR(nb_ser_quantile(c, 0.5), 1 + 1.5 * 50 / 90.0));
    CHECK(NEAR(nb_ser_quantile(c, 0.9), 2.5)); /* exactly the first bucket's top */
    CHECK(NEAR(nb_ser_quantile(c, 0.99), 250 + 250 * 9 / 10.0));
    /* Above the last bound: no upper edge, so its lower bound (60 s). */
    memset(c, 0, sizeof c);
    c[NB_MET_BUCKETS] = 3;
    CHECK(NEAR(nb_ser_quantile(c, 0.5), 60000));
    /* Empty buckets in between are skipped, never divided by. */
    memset(c, 0, sizeof c);
    c[2] = 1;
    c[12] = 1;
    CHECK(NEAR(nb_ser_quantile(c, 0.5), 2.5 + 2.5));
    CHECK(NEAR(nb_ser_quantile(c, 1), 10000));
}

/* Second t of a steady load: 10 invocations a second, one error every second, each invocation
 * in bucket 3, concurrency t % 7. */
static nb_ser_sample at_second(int64_t t0, int64_t t)
{
    nb_ser_sample x = {.t = t};
    uint64_t n = (uint64_t)(t - t0);
    x.invocations = 10 * n;
    x.errors = n;
    x.cold_starts = n / 10;
    x.concurrency = t % 7;
    x.duration[3] = 10 * n;
    return x;
}

static json_t *query(nb_ser *s, int seconds)
{
    nb_err err = {0};
    json_t *j = nb_ser_query(s, seconds, &err);
    CHECK(j);
    return j;
}

static void test_ring_and_rates(void)
{
    nb_ser *s = nb_ser_new();
    json_t *j = query(s, 60);
    CHECK(json_array_size(json_object_get(j, "t")) == 0);
    json_decref(j);

    /* Far more samples than the ring holds: only the newest NB_SER_SLOTS stay. */
    const int64_t t0 = 1000000;
    const int64_t last = t0 + 3 * NB_SER_SLOTS + 17;
    for (int64_t t = t0; t <= last; t++) {
        nb_ser_sample x = at_second(t0, t);
        nb_ser_record(s, &x);
    }
    j = query(s, 60);
    CHECK(json_integer_value(json_object_get(j, "step_s")) == 1);
    json_t *t = json_object_get(j, "t"), *inv = json_object_get(j, "invocations");
    CHECK(json_array_size(t) == 60);
    CHECK(json_integer_value(json_array_get(t, 59)) == last);
    CHECK(json_integer_value(json_array_get(t, 0)) == last - 59);
    for (size_t i = 0; i < 60; i++) {
        CHECK(NEAR(json_real_value(json_array_get(inv, i)), 10));
        CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "errors"), i)), 1));
        CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "p50_ms"), i)), 7.5));
        int64_t when = json_integer_value(json_array_get(t, i));
        CHECK(json_integer_value(json_array_get(json_object_get(j, "concurrency"), i)) == when % 7);
    }
    json_decref(j);

    /* The whole window: 5-second steps on multiples of 5, the oldest still complete. */
    j = query(s, NB_SER_SECONDS);
    CHECK(json_integer_value(json_object_get(j, "step_s")) == 5);
    t = json_object_get(j, "t");
    CHECK(json_array_size(t) == NB_SER_SECONDS / 5);
    int64_t end = last / 5 * 5;
    CHECK(json_integer_value(json_array_get(t, json_array_size(t) - 1)) == end);
    CHECK(json_integer_value(json_array_get(t, 0)) == end - NB_SER_SECONDS + 5);
    for (size_t i = 0; i < json_array_size(t); i++) {
        int64_t when = json_integer_value(json_array_get(t, i));
        CHECK(when % 5 == 0);
        CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "invocations"), i)), 10));
        /* The step's highest concurrency: the largest t % 7 over its five seconds. */
        int64_t peak = 0;
        for (int64_t k = when - 4; k <= when; k++)
            if (k % 7 > peak) peak = k % 7;
        CHECK(json_integer_value(json_array_get(json_object_get(j, "concurrency"), i)) == peak);
    }
    json_decref(j);
    nb_ser_free(s);
}

static void test_quiet_steps_and_gaps(void)
{
    nb_ser *s = nb_ser_new();
    /* Nothing happens: rates 0, percentiles null. A missed second is bridged by the one before
     * it, and the rate divides by the real time between the samples. */
    nb_ser_sample x = {.t = 5000};
    nb_ser_record(s, &x);
    x.t = 5001;
    nb_ser_record(s, &x);
    x.t = 5003; /* 5002 missed */
    x.invocations = 4;
    x.duration[0] = 4;
    nb_ser_record(s, &x);
    json_t *j = query(s, 10);
    json_t *t = json_object_get(j, "t");
    CHECK(json_array_size(t) == 2); /* 5001 and 5003: no step ends at the missed 5002 */
    CHECK(json_integer_value(json_array_get(t, 0)) == 5001);
    CHECK(json_is_null(json_array_get(json_object_get(j, "p50_ms"), 0)));
    CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "invocations"), 0)), 0));
    /* 5003: 4 invocations over the two seconds since 5001's sample. */
    CHECK(json_integer_value(json_array_get(t, 1)) == 5003);
    CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "invocations"), 1)), 2));
    CHECK(NEAR(json_real_value(json_array_get(json_object_get(j, "p50_ms"), 1)), 0.5));
    json_decref(j);

    /* The same second again replaces it; a little older is ignored; far older restarts. */
    x.t = 5003;
    x.invocations = 6;
    nb_ser_record(s, &x);
    x.t = 5001;
    x.invocations = 0;
    nb_ser_record(s, &x);
    j = query(s, 10);
    t = json_object_get(j, "t");
    CHECK(json_integer_value(json_array_get(t, json_array_size(t) - 1)) == 5003);
    CHECK(NEAR(
        json_real_value(json_array_get(json_object_get(j, "invocations"), json_array_size(t) - 1)),
        3));
    json_decref(j);
    x.t = 100;
    nb_ser_record(s, &x);
    j = query(s, 10);
    CHECK(json_array_size(json_object_get(j, "t")) == 0); /* one sample: no step yet */
    json_decref(j);

    nb_err err = {0};
    CHECK(!nb_ser_query(s, 0, &err) && err.status == 400);
    CHECK(!nb_ser_query(s, NB_SER_SECONDS + 1, &err));
    nb_ser_free(s);
}

int main(void)
{
    test_quantile();
    test_ring_and_rates();
    test_quiet_steps_and_gaps();
    printf("test_series: ok\n");
    return 0;
}
