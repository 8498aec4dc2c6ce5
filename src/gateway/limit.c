/* Rate limits (GCRA) and calendar quotas: lock-free cells in a registry that only grows. */
#include "gateway/limit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RELAXED memory_order_relaxed

/* Bounds keep every sum below overflow: tat <= now + tolerance + interval, and a monotonic
 * clock stays far below 2^62 ns (146 years of uptime). */
#define INTERVAL_MAX  ((int64_t)1000000000 * 86400 * 365) /* a year per request */
#define TOLERANCE_MAX ((int64_t)1 << 61)

typedef struct lim_entry {
    nb_lim_cell cell; /* first: its address is the entry's, stable for the registry's life */
    uint64_t hash;
    char key[];
} lim_entry;

struct nb_lim_registry {
    pthread_mutex_t mu;
    lim_entry **slots; /* open addressing, linear probing; cap is a power of two */
    size_t cap, n;
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) abort(); /* the contract: nb_lim_get never fails */
    return p;
}

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void cell_init(nb_lim_cell *c)
{
    atomic_init(&c->tat_ns, 0);
    atomic_init(&c->interval_ns, 0);
    atomic_init(&c->tolerance_ns, 0);
    atomic_init(&c->quota_limit, 0);
    atomic_init(&c->quota_period, NB_LIM_DAY);
    atomic_init(&c->quota_start, 0);
    atomic_init(&c->quota_used, 0);
    atomic_init(&c->quota_flushed, 0);
}

nb_lim_registry *nb_lim_registry_new(void)
{
    nb_lim_registry *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->cap = 64;
    r->slots = xcalloc(r->cap, sizeof *r->slots);
    return r;
}

void nb_lim_registry_free(nb_lim_registry *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->cap; i++)
        free(r->slots[i]);
    free(r->slots);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void grow(nb_lim_registry *r)
{
    size_t cap = r->cap * 2;
    lim_entry **slots = xcalloc(cap, sizeof *slots);
    for (size_t i = 0; i < r->cap; i++) {
        lim_entry *e = r->slots[i];
        if (!e) continue;
        size_t j = e->hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    free(r->slots);
    r->slots = slots;
    r->cap = cap;
}

nb_lim_cell *nb_lim_get(nb_lim_registry *r, const char *key)
{
    uint64_t h = hash_key(key);
    pthread_mutex_lock(&r->mu);
    size_t i = h & (r->cap - 1);
    for (lim_entry *e; (e = r->slots[i]); i = (i + 1) & (r->cap - 1)) {
        if (e->hash == h && strcmp(e->key, key) == 0) {
            pthread_mutex_unlock(&r->mu);
            return &e->cell;
        }
    }
    size_t klen = strlen(key);
    lim_entry *e = xcalloc(1, sizeof *e + klen + 1);
    cell_init(&e->cell);
    e->hash = h;
    memcpy(e->key, key, klen + 1);
    r->slots[i] = e;
    if (++r->n * 2 >= r->cap) grow(r);
    pthread_mutex_unlock(&r->mu);
    return &e->cell;
}

void nb_lim_each(nb_lim_registry *r, void (*fn)(const char *key, nb_lim_cell *c, void *ud),
                 void *ud)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->cap; i++)
        if (r->slots[i]) fn(r->slots[i]->key, &r->slots[i]->cell, ud);
    pthread_mutex_unlock(&r->mu);
}

void nb_lim_set_rate(nb_lim_cell *c, double rate_per_s, int burst)
{
    if (!(rate_per_s > 0)) { /* also NaN */
        atomic_store(&c->interval_ns, 0);
        return;
    }
    if (burst < 1) burst = 1;
    double iv = 1e9 / rate_per_s;
    int64_t interval = iv < 1 ? 1 : iv > (double)INTERVAL_MAX ? INTERVAL_MAX : (int64_t)(iv + 0.5);
    /* An exact multiple of the interval, so a fresh cell allows exactly `burst` at once. */
    int64_t tolerance =
        (int64_t)burst > TOLERANCE_MAX / interval ? TOLERANCE_MAX : interval * (int64_t)burst;
    if (atomic_load(&c->interval_ns) == interval && atomic_load(&c->tolerance_ns) == tolerance)
        return;
    /* A new rate starts from a full burst: carrying the old debt over would make a raised
     * limit refuse requests for up to the old refill time. The three stores are not one
     * atomic step; a take racing with them sees a mix once, which errs by at most one
     * request. The interval goes last because a nonzero interval is what enables the cell. */
    atomic_store(&c->tat_ns, 0);
    atomic_store(&c->tolerance_ns, tolerance);
    atomic_store(&c->interval_ns, interval);
}

int64_t nb_lim_rate_take(nb_lim_cell *c, int64_t now_mono_ns)
{
    int64_t interval = atomic_load_explicit(&c->interval_ns, RELAXED);
    if (interval <= 0) return 0;
    int64_t tolerance = atomic_load_explicit(&c->tolerance_ns, RELAXED);
    int64_t tat = atomic_load_explicit(&c->tat_ns, RELAXED);
    /* Every success moves the one shared TAT by exactly one interval, and the CAS orders the
     * moves: N threads together can never pass tolerance + elapsed time worth of intervals. */
    for (;;) {
        int64_t next = (tat > now_mono_ns ? tat : now_mono_ns) + interval;
        if (next - now_mono_ns > tolerance) {
            int64_t wait_ns = next - tolerance - now_mono_ns;
            int64_t ms = (wait_ns + 999999) / 1000000;
            return ms < 1 ? 1 : ms;
        }
        if (atomic_compare_exchange_weak_explicit(&c->tat_ns, &tat, next, RELAXED, RELAXED))
            return 0;
    }
}

void nb_lim_rate_refund(nb_lim_cell *c)
{
    int64_t interval = atomic_load_explicit(&c->interval_ns, RELAXED);
    /* A TAT pushed below the clock is harmless: takes start from max(tat, now). */
    if (interval > 0) atomic_fetch_sub_explicit(&c->tat_ns, interval, RELAXED);
}

void nb_lim_set_quota(nb_lim_cell *c, int64_t limit, nb_lim_period period)
{
    if (period != NB_LIM_MONTH) period = NB_LIM_DAY;
    /* Another period kind makes the current count meaningless: a zero start forces the next
     * take to roll over, which resets the count. */
    if (atomic_exchange(&c->quota_period, (int)period) != (int)period)
        atomic_store(&c->quota_start, 0);
    atomic_store(&c->quota_limit, limit > 0 ? limit : 0);
}

void nb_lim_restore_quota(nb_lim_cell *c, int64_t start_s, int64_t used)
{
    if (used < 0) used = 0;
    atomic_store(&c->quota_used, used);
    atomic_store(&c->quota_flushed, used);
    atomic_store(&c->quota_start, start_s);
}

int64_t nb_lim_quota_take(nb_lim_cell *c, int64_t now_epoch_s)
{
    int64_t limit = atomic_load_explicit(&c->quota_limit, RELAXED);
    if (limit <= 0) return 0;
    nb_lim_period p = (nb_lim_period)atomic_load_explicit(&c->quota_period, RELAXED);
    int64_t start = nb_lim_period_start(p, now_epoch_s);
    int64_t cur = atomic_load_explicit(&c->quota_start, memory_order_acquire);
    /* Rollover: the thread whose CAS wins resets the count. While it does, quota_start holds
     * the new start negated, and a take that sees that passes uncounted: otherwise it would
     * be checked against the old period's count and refused for a whole new period. At most
     * the few requests of that instant go uncounted, and no thread ever waits. */
    while (cur >= 0 && start > cur) {
        if (atomic_compare_exchange_weak_explicit(&c->quota_start, &cur, -start,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            atomic_store_explicit(&c->quota_used, 0, RELAXED);
            atomic_store_explicit(&c->quota_flushed, -1, RELAXED); /* not persisted yet */
            atomic_store_explicit(&c->quota_start, start, memory_order_release);
            cur = start;
            break;
        }
    }
    if (cur < 0) return 0;
    /* A clock that went back (or a restored later period) counts against the stored period. */
    int64_t n = atomic_fetch_add_explicit(&c->quota_used, 1, RELAXED) + 1;
    if (n <= limit) return 0;
    atomic_fetch_sub_explicit(&c->quota_used, 1, RELAXED);
    int64_t left = nb_lim_period_end(p, cur > start ? cur : start) - now_epoch_s;
    return left < 1 ? 1 : left;
}

void nb_lim_quota_refund(nb_lim_cell *c)
{
    /* Never below zero: the take being refunded may have been in an earlier period, or passed
     * uncounted during a rollover. */
    int64_t used = atomic_load_explicit(&c->quota_used, RELAXED);
    while (used > 0 && !atomic_compare_exchange_weak_explicit(&c->quota_used, &used, used - 1,
                                                              RELAXED, RELAXED)) {
    }
}

int64_t nb_lim_period_start(nb_lim_period p, int64_t t_epoch_s)
{
    if (p == NB_LIM_MONTH) {
        time_t t = (time_t)t_epoch_s;
        struct tm tm;
        gmtime_r(&t, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        return (int64_t)timegm(&tm);
    }
    int64_t d = t_epoch_s / 86400;
    if (t_epoch_s % 86400 < 0) d--; /* floor, for times before the epoch */
    return d * 86400;
}

int64_t nb_lim_period_end(nb_lim_period p, int64_t t_epoch_s)
{
    if (p == NB_LIM_MONTH) {
        time_t t = (time_t)t_epoch_s;
        struct tm tm;
        gmtime_r(&t, &tm);
        tm.tm_mon += 1; /* timegm normalises December + 1 into January of the next year */
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        return (int64_t)timegm(&tm);
    }
    return nb_lim_period_start(p, t_epoch_s) + 86400;
}
