/* nb_ser: the web console's dashboard series (GET /v1/metrics/series, docs/internals/console.md).
 *
 * A ring of one sample per second over the last NB_SER_SECONDS: the daemon's cumulative
 * invocations, errors, throttles, cold starts and duration histogram (every function summed),
 * and the invocations in flight at that second. A query turns the samples into per-step rates
 * (the difference of two cumulative samples over the time between them), the step's highest
 * concurrency, and p50/p99 durations estimated from the histogram buckets' differences. Kept in
 * memory only: a restart starts the series again, which is what a live dashboard needs.
 *
 * Memory: fixed, NB_SER_SLOTS samples allocated once by nb_ser_new.
 *
 * Threads: nb_ser_record and nb_ser_query may be called from any thread; a mutex inside
 * serialises them (one record a second, a query copies at most NB_SER_SLOTS samples' worth of
 * work). nb_ser_quantile is a pure function. */
#ifndef NB_SERIES_H
#define NB_SERIES_H

#include "base/err.h"
#include "metrics/metrics.h"

#include <jansson.h>
#include <stdint.h>

#define NB_SER_SECONDS 900
#define NB_SER_SLOTS   (NB_SER_SECONDS + 1) /* the oldest step needs the sample before it */

typedef struct nb_ser_sample {
    int64_t t;                                            /* Unix epoch seconds */
    uint64_t invocations, errors, throttles, cold_starts; /* cumulative since the start */
    int64_t concurrency;                                  /* invocations running at t */
    uint64_t duration[NB_MET_BUCKETS + 1]; /* cumulative per bucket of nb_met_buckets; the last is
                                              above 60 s */
} nb_ser_sample;

typedef struct nb_ser nb_ser;

nb_ser *nb_ser_new(void);
void nb_ser_free(nb_ser *s);
/* Appends x (copied). A sample of the same second as the newest replaces it; one older than
 * the newest by more than a few seconds (the clock went back) starts the series again. */
void nb_ser_record(nb_ser *s, const nb_ser_sample *x);
/* The last `seconds` (1..NB_SER_SECONDS) as {"step_s","t":[...],"invocations":[...],"errors",
 * "throttles","cold_starts" (per second), "concurrency" (the step's highest), "p50_ms","p99_ms"
 * (null when the step had no invocation)}. Steps are 1 s up to 120 s, else 5 s, aligned to
 * multiples of the step; only steps with samples at both ends are listed. NULL (err) on a bad
 * argument. The caller owns the result. */
json_t *nb_ser_query(nb_ser *s, int seconds, nb_err *err);
/* The q-quantile (0..1) of durations in milliseconds from per-bucket counts (not cumulative,
 * NB_MET_BUCKETS + 1 of them), interpolating linearly inside the bucket as Prometheus's
 * histogram_quantile does; the last bucket, which has no upper bound, answers its lower bound.
 * NAN when every count is 0. */
double nb_ser_quantile(const uint64_t *counts, double q);

#endif
