/* nb_lim: GCRA exactness on a fake clock and across threads, quota periods and rollover,
 * refunds, rate changes, the registry's stable cells. */
#include "gateway/limit.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include "check.h"

#define MS ((int64_t)1000000)
#define S  ((int64_t)1000000000)

static void test_gcra_single(void)
{
    nb_lim_cell c;
    memset(&c, 0, sizeof c);
    int64_t now = 1000 * S;
    CHECK(nb_lim_rate_take(&c, now) == 0); /* a zeroed cell is unlimited */

    nb_lim_set_rate(&c, 10, 5); /* 100 ms per request, 5 at once */
    for (int i = 0; i < 5; i++)
        CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 100);
    CHECK(nb_lim_rate_take(&c, now + 40 * MS) == 60);
    /* A fraction of a ms still waits a whole one. */
    CHECK(nb_lim_rate_take(&c, now + 99 * MS + 1) == 1);
    CHECK(nb_lim_rate_take(&c, now + 100 * MS) == 0);
    CHECK(nb_lim_rate_take(&c, now + 100 * MS) == 100);

    /* Refill at the rate: one every 100 ms, never more. */
    int64_t t = now + 100 * MS;
    for (int i = 0; i < 20; i++) {
        t += 100 * MS;
        CHECK(nb_lim_rate_take(&c, t) == 0);
        CHECK(nb_lim_rate_take(&c, t) > 0);
    }
    /* Idle long enough and the whole burst is back, not more. */
    t += 10 * S;
    int ok = 0;
    while (nb_lim_rate_take(&c, t) == 0)
        ok++;
    CHECK(ok == 5);

    /* Over 10 s from empty: burst + 10 s * rate. */
    t += 60 * S;
    ok = 0;
    for (int64_t x = t; x <= t + 10 * S; x += MS)
        while (nb_lim_rate_take(&c, x) == 0)
            ok++;
    CHECK(ok == 5 + 100);
}

static void test_refund_and_set_rate(void)
{
    nb_lim_cell c;
    memset(&c, 0, sizeof c);
    int64_t now = 50 * S;
    nb_lim_set_rate(&c, 1, 2);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 1000);
    nb_lim_rate_refund(&c);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 1000);

    /* The same rate again keeps the state: still empty. */
    nb_lim_set_rate(&c, 1, 2);
    CHECK(nb_lim_rate_take(&c, now) == 1000);
    /* burst < 1 is 1, and it is the same as that. */
    nb_lim_set_rate(&c, 1, 0);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 1000);
    nb_lim_set_rate(&c, 1, 1);
    CHECK(nb_lim_rate_take(&c, now) == 1000);

    /* Another rate starts from a full burst at the new rate. */
    nb_lim_set_rate(&c, 4, 3);
    for (int i = 0; i < 3; i++)
        CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 250);

    /* Unlimited, and back. */
    nb_lim_set_rate(&c, 0, 3);
    for (int i = 0; i < 1000; i++)
        CHECK(nb_lim_rate_take(&c, now) == 0);
    nb_lim_set_rate(&c, -1, 3);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    nb_lim_set_rate(&c, 4, 3);
    for (int i = 0; i < 3; i++)
        CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 250);

    /* Extremes neither overflow nor divide to zero. */
    nb_lim_set_rate(&c, 1e-30, 1000000000);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    nb_lim_set_rate(&c, 1e30, 1);
    CHECK(nb_lim_rate_take(&c, now) == 0);
    CHECK(nb_lim_rate_take(&c, now) == 1);
    CHECK(nb_lim_rate_take(&c, now + 1) == 0);
}

#define THREADS 4
#define TRIES   20000

typedef struct hammer {
    nb_lim_cell *c;
    int64_t now;
    int allowed;
} hammer;

static void *hammer_run(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < TRIES; i++)
        if (nb_lim_rate_take(h->c, h->now) == 0) h->allowed++;
    return NULL;
}

static void test_gcra_threads(void)
{
    nb_lim_cell c;
    memset(&c, 0, sizeof c);
    nb_lim_set_rate(&c, 1e-6, 1000); /* almost no refill: the burst is all there is */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t start = (int64_t)ts.tv_sec * S + ts.tv_nsec;

    /* Same instant for all, then a real clock: neither may pass the burst. */
    for (int round = 0; round < 2; round++) {
        pthread_t th[THREADS];
        hammer h[THREADS];
        for (int i = 0; i < THREADS; i++) {
            h[i] = (hammer){&c, start + round * MS, 0};
            CHECK(pthread_create(&th[i], NULL, hammer_run, &h[i]) == 0);
        }
        int total = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            total += h[i].allowed;
        }
        CHECK(total == (round == 0 ? 1000 : 0));
    }

    /* A real rate over a real clock: 2000/s with burst 10 for ~100 ms. */
    nb_lim_set_rate(&c, 2000, 10);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t0 = (int64_t)ts.tv_sec * S + ts.tv_nsec;
    int total = 0;
    int64_t t1;
    do {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t1 = (int64_t)ts.tv_sec * S + ts.tv_nsec;
        if (nb_lim_rate_take(&c, t1) == 0) total++;
    } while (t1 - t0 < 100 * MS);
    CHECK(total <= 10 + (t1 - t0) * 2000 / S + 1);
    CHECK(total >= 10); /* at least the burst; more depends on the scheduler */
}

static int64_t utc(int y, int mon, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static void test_periods(void)
{
    CHECK(nb_lim_period_start(NB_LIM_DAY, utc(2026, 11, 23, 17, 5, 9)) ==
          utc(2026, 11, 23, 0, 0, 0));
    CHECK(nb_lim_period_end(NB_LIM_DAY, utc(2026, 11, 23, 17, 5, 9)) == utc(2026, 11, 24, 0, 0, 0));
    CHECK(nb_lim_period_start(NB_LIM_DAY, utc(2026, 11, 23, 0, 0, 0)) ==
          utc(2026, 11, 23, 0, 0, 0));
    CHECK(nb_lim_period_start(NB_LIM_DAY, -1) == -86400);
    CHECK(nb_lim_period_start(NB_LIM_MONTH, utc(2026, 11, 23, 17, 5, 9)) ==
          utc(2026, 11, 1, 0, 0, 0));
    CHECK(nb_lim_period_end(NB_LIM_MONTH, utc(2026, 12, 31, 23, 59, 59)) ==
          utc(2027, 1, 1, 0, 0, 0));
    CHECK(nb_lim_period_start(NB_LIM_MONTH, utc(2027, 1, 1, 0, 0, 0)) == utc(2027, 1, 1, 0, 0, 0));
    /* February: 29 days in a leap year, 28 otherwise. */
    CHECK(nb_lim_period_end(NB_LIM_MONTH, utc(2028, 2, 10, 0, 0, 0)) -
              nb_lim_period_start(NB_LIM_MONTH, utc(2028, 2, 10, 0, 0, 0)) ==
          29 * 86400);
    CHECK(nb_lim_period_end(NB_LIM_MONTH, utc(2027, 2, 28, 23, 0, 0)) == utc(2027, 3, 1, 0, 0, 0));
    CHECK(nb_lim_period_start(NB_LIM_MONTH, utc(2028, 2, 29, 23, 59, 59)) ==
          utc(2028, 2, 1, 0, 0, 0));
}

static void test_quota(void)
{
    nb_lim_cell c;
    memset(&c, 0, sizeof c);
    int64_t t = utc(2026, 11, 23, 23, 59, 50);
    CHECK(nb_lim_quota_take(&c, t) == 0); /* unlimited */

    nb_lim_set_quota(&c, 3, NB_LIM_DAY);
    for (int i = 0; i < 3; i++)
        CHECK(nb_lim_quota_take(&c, t) == 0);
    CHECK(nb_lim_quota_take(&c, t) == 10);  /* seconds to midnight */
    CHECK(atomic_load(&c.quota_used) == 3); /* a refused take counts nothing */
    CHECK(nb_lim_quota_take(&c, t + 9) == 1);
    nb_lim_quota_refund(&c);
    CHECK(nb_lim_quota_take(&c, t + 9) == 0);
    CHECK(nb_lim_quota_take(&c, t + 9) == 1);

    /* Midnight: a new day, a new count, and a rollover not yet persisted. */
    CHECK(nb_lim_quota_take(&c, t + 10) == 0);
    CHECK(atomic_load(&c.quota_start) == utc(2026, 11, 24, 0, 0, 0));
    CHECK(atomic_load(&c.quota_used) == 1);
    CHECK(atomic_load(&c.quota_flushed) == -1);
    CHECK(nb_lim_quota_take(&c, t + 10) == 0);
    CHECK(nb_lim_quota_take(&c, t + 10) == 0);
    CHECK(nb_lim_quota_take(&c, t + 10) == 86400);

    /* Refunds never go below zero. */
    nb_lim_cell z;
    memset(&z, 0, sizeof z);
    nb_lim_set_quota(&z, 5, NB_LIM_DAY);
    nb_lim_quota_refund(&z);
    CHECK(atomic_load(&z.quota_used) == 0);

    /* Month, over a leap-year February's end. */
    nb_lim_set_quota(&c, 2, NB_LIM_MONTH);
    int64_t feb = utc(2028, 2, 29, 12, 0, 0);
    CHECK(nb_lim_quota_take(&c, feb) == 0);
    CHECK(atomic_load(&c.quota_start) == utc(2028, 2, 1, 0, 0, 0));
    CHECK(nb_lim_quota_take(&c, feb) == 0);
    CHECK(nb_lim_quota_take(&c, feb) == 12 * 3600);
    CHECK(nb_lim_quota_take(&c, utc(2028, 3, 1, 0, 0, 0)) == 0);
    CHECK(atomic_load(&c.quota_used) == 1);
    /* New year. */
    nb_lim_restore_quota(&c, utc(2028, 12, 1, 0, 0, 0), 2);
    CHECK(nb_lim_quota_take(&c, utc(2028, 12, 31, 23, 0, 0)) == 3600);
    CHECK(nb_lim_quota_take(&c, utc(2029, 1, 1, 0, 0, 0)) == 0);
    CHECK(atomic_load(&c.quota_start) == utc(2029, 1, 1, 0, 0, 0));

    /* A restored count of the current period keeps counting; of a past one, rolls over. */
    nb_lim_set_quota(&c, 10, NB_LIM_DAY);
    int64_t d = utc(2029, 5, 5, 10, 0, 0);
    nb_lim_restore_quota(&c, utc(2029, 5, 5, 0, 0, 0), 9);
    CHECK(atomic_load(&c.quota_flushed) == 9);
    CHECK(nb_lim_quota_take(&c, d) == 0);
    CHECK(nb_lim_quota_take(&c, d) == 14 * 3600);
    nb_lim_restore_quota(&c, utc(2029, 5, 4, 0, 0, 0), 10);
    CHECK(nb_lim_quota_take(&c, d) == 0);
    CHECK(atomic_load(&c.quota_used) == 1);
    /* A clock that went back counts against the stored period. */
    CHECK(nb_lim_quota_take(&c, d - 86400) == 0);
    CHECK(atomic_load(&c.quota_used) == 2);

    /* Changing the period kind starts a fresh count; limit 0 is unlimited again. */
    nb_lim_set_quota(&c, 10, NB_LIM_MONTH);
    CHECK(nb_lim_quota_take(&c, d) == 0);
    CHECK(atomic_load(&c.quota_used) == 1);
    CHECK(atomic_load(&c.quota_start) == utc(2029, 5, 1, 0, 0, 0));
    nb_lim_set_quota(&c, 0, NB_LIM_MONTH);
    for (int i = 0; i < 100; i++)
        CHECK(nb_lim_quota_take(&c, d) == 0);
}

typedef struct qhammer {
    nb_lim_cell *c;
    int64_t t;
    int allowed;
} qhammer;

static void *qhammer_run(void *arg)
{
    qhammer *h = arg;
    for (int i = 0; i < TRIES; i++)
        if (nb_lim_quota_take(h->c, h->t + i / 1000) == 0) h->allowed++;
    return NULL;
}

static void test_quota_threads(void)
{
    nb_lim_cell c;
    memset(&c, 0, sizeof c);
    nb_lim_set_quota(&c, 777, NB_LIM_DAY);
    /* The first take rolls over into the day; requests racing with a rollover pass uncounted,
     * so it happens before the threads start. */
    int64_t t = utc(2026, 1, 1, 12, 0, 0);
    CHECK(nb_lim_quota_take(&c, t) == 0);
    pthread_t th[THREADS];
    qhammer h[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (qhammer){&c, t, 0};
        CHECK(pthread_create(&th[i], NULL, qhammer_run, &h[i]) == 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].allowed;
    }
    CHECK(total == 776);
    CHECK(atomic_load(&c.quota_used) == 777);
}

static void count_cell(const char *key, nb_lim_cell *c, void *ud)
{
    (void)c;
    CHECK(key[0] == 'k');
    (*(int *)ud)++;
}

static void test_registry(void)
{
    nb_lim_registry *r = nb_lim_registry_new();
    enum { N = 5000 };
    static nb_lim_cell *cells[N];
    char key[64];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key/%d", i);
        cells[i] = nb_lim_get(r, key);
        CHECK(cells[i]);
        CHECK(nb_lim_rate_take(cells[i], 0) == 0); /* new cells are unlimited */
        if (i == 0) nb_lim_set_rate(cells[0], 1, 1);
    }
    /* Growth moved no cell, and state survives. */
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key/%d", i);
        CHECK(nb_lim_get(r, key) == cells[i]);
    }
    CHECK(nb_lim_rate_take(nb_lim_get(r, "key/0"), S) == 0);
    CHECK(nb_lim_rate_take(nb_lim_get(r, "key/0"), S) == 1000);
    CHECK(nb_lim_get(r, "key/1") != nb_lim_get(r, "key/10"));
    int n = 0;
    nb_lim_each(r, count_cell, &n);
    CHECK(n == N);
    nb_lim_registry_free(r);
    nb_lim_registry_free(NULL);
}

int main(void)
{
    test_gcra_single();
    test_refund_and_set_rate();
    test_gcra_threads();
    test_periods();
    test_quota();
    test_quota_threads();
    test_registry();
    printf("limit: ok\n");
    return 0;
}
