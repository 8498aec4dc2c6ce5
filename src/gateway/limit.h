/* nb_lim: request rate limits and quotas shared by every event loop of the daemon.
 *
 * A rate is a GCRA (generic cell rate algorithm) cell: one 64-bit "theoretical arrival time"
 * advanced with compare-and-swap, equivalent to a token bucket of `burst` tokens refilled at
 * `rate` per second, with no lock and no per-thread share: N loops together get exactly the
 * configured rate. A quota counts requests in the current calendar period (UTC day or month)
 * and resets when the period changes.
 *
 * Cells live in a registry keyed by string (e.g. "plan/default/basic/key/k1"); a cell's address
 * is stable for the registry's life, so a route table built from the config can keep pointers
 * to its cells and a config change does not reset counters. The registry only grows (an
 * entry is a few dozen bytes; entries of deleted keys are dropped at the next restart).
 *
 * Threads: take/peek on any thread, lock-free. nb_lim_get takes a mutex (call it when building
 * a config, not per request). */
#ifndef NB_LIMIT_H
#define NB_LIMIT_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum nb_lim_period { NB_LIM_DAY = 1, NB_LIM_MONTH = 2 } nb_lim_period;

typedef struct nb_lim_cell {
    /* rate: 0 interval = unlimited */
    _Atomic int64_t tat_ns;      /* theoretical arrival time, monotonic ns */
    _Atomic int64_t interval_ns; /* 1e9 / rate */
    _Atomic int64_t tolerance_ns;
    /* quota: 0 limit = unlimited */
    _Atomic int64_t quota_limit;
    _Atomic int quota_period;      /* nb_lim_period */
    _Atomic int64_t quota_start;   /* epoch s of the current period's start (negated while
                                      a rollover resets the count: skip the cell then) */
    _Atomic int64_t quota_used;    /* requests counted in it */
    _Atomic int64_t quota_flushed; /* quota_used when last persisted; -1 after a rollover */
} nb_lim_cell;

typedef struct nb_lim_registry nb_lim_registry;

nb_lim_registry *nb_lim_registry_new(void);
void nb_lim_registry_free(nb_lim_registry *r);
/* The cell for key, created (unlimited) if new. Never NULL (aborts on OOM). */
nb_lim_cell *nb_lim_get(nb_lim_registry *r, const char *key);
/* Calls fn for every cell (under the registry's mutex): the quota flusher's walk. */
void nb_lim_each(nb_lim_registry *r, void (*fn)(const char *key, nb_lim_cell *c, void *ud),
                 void *ud);

/* Sets a cell's limits (any thread; takes effect for the next take). rate <= 0: unlimited;
 * burst < 1 is taken as 1. Changing the rate keeps the cell's state when the rate is the same. */
void nb_lim_set_rate(nb_lim_cell *c, double rate_per_s, int burst);
/* limit <= 0: unlimited. */
void nb_lim_set_quota(nb_lim_cell *c, int64_t limit, nb_lim_period period);
/* Restores a persisted count (at start): used requests in the period starting at start_s. */
void nb_lim_restore_quota(nb_lim_cell *c, int64_t start_s, int64_t used);

/* Takes one request from the rate. 0 when allowed; else the ms until one would be (>= 1). */
int64_t nb_lim_rate_take(nb_lim_cell *c, int64_t now_mono_ns);
/* Gives back a request taken by nb_lim_rate_take (a later check refused the request). */
void nb_lim_rate_refund(nb_lim_cell *c);
/* Counts one request against the quota. 0 when allowed; else the seconds until the period
 * ends (>= 1), and nothing is counted. */
int64_t nb_lim_quota_take(nb_lim_cell *c, int64_t now_epoch_s);
void nb_lim_quota_refund(nb_lim_cell *c);
/* Start of the UTC day or month containing t. */
int64_t nb_lim_period_start(nb_lim_period p, int64_t t_epoch_s);
int64_t nb_lim_period_end(nb_lim_period p, int64_t t_epoch_s);

#endif
