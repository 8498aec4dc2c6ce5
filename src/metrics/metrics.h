/* nb_met: the daemon's Prometheus metrics (GET /metrics, docs/internals/metrics.md).
 *
 * Two parts. The exposition writer (nb_met_w) turns families of samples into Prometheus text
 * format 0.0.4: one HELP and one TYPE line per family, label values escaped (\ " newline),
 * families sorted by name and series by their labels so two scrapes of the same state are
 * byte-identical. The registry (nb_met) holds the counters the data plane bumps: invocations
 * by outcome, errors by type, cold starts, duration and init-duration histograms per function,
 * and gateway requests per API by status class. Gauges (concurrency, instances, queues,
 * process) are read from their owners at scrape time, never kept twice.
 *
 * Cardinality: at most NB_MET_MAX_LABELLED functions and as many APIs get their own labels;
 * the rest are counted together under the name "_other". Error types are folded into a fixed
 * set (nb_met_error_type). Queues are bounded by the queue store itself.
 *
 * Threads: nb_met_invocation and nb_met_gateway may be called from any thread and take no
 * lock once a function or API has its entry (a lock-free probe, then relaxed atomic adds);
 * the first sighting of a name takes a mutex once. nb_met_render takes the scrape mutex, so
 * scrapes run one at a time; it reads the scheduler and the queue store through their own
 * thread-safe calls. nb_met_w is a plain value owned by one thread.
 *
 * Memory: nb_met owns its entries until nb_met_free, which must come after every caller is
 * gone. The writer owns its lines until nb_met_w_free. */
#ifndef NB_METRICS_H
#define NB_METRICS_H

#include "base/buf.h"
#include "base/err.h"
#include "events/queue.h"
#include "invoke/invoke.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define NB_MET_MAX_LABELLED 500
/* The duration histograms' upper bounds in seconds, 1 ms to 60 s (+Inf is implicit). */
#define NB_MET_BUCKETS 15
extern const double nb_met_buckets[NB_MET_BUCKETS];
/* The rendered page's cap: 500 functions' series take about 3 MiB. */
#define NB_MET_MAX_PAGE (32u << 20)

/* ---------- the exposition writer ---------- */

typedef enum nb_met_type { NB_MET_COUNTER, NB_MET_GAUGE, NB_MET_HISTOGRAM } nb_met_type;

typedef struct nb_met_w {
    struct met_fam *fams;
    size_t nfams, fcap;
    struct met_line *lines;
    size_t nlines, lcap;
    int failed; /* a bad name or an allocation failed: render reports it */
} nb_met_w;

void nb_met_w_init(nb_met_w *w);
void nb_met_w_free(nb_met_w *w);
/* Declares a family (once per name; a second declaration is ignored). help is copied.
 * A counter's name must end in _total; names follow [a-zA-Z_:][a-zA-Z0-9_:]*. -1 otherwise. */
int nb_met_w_family(nb_met_w *w, const char *name, nb_met_type type, const char *help);
/* One sample of a declared counter or gauge. labels: NULL, or name/value pairs ending with a
 * NULL name; values may hold any bytes (escaped here). */
int nb_met_w_sample(nb_met_w *w, const char *family, const char *const *labels, double value);
/* One series of a declared histogram: counts[i] observations in bucket i (not cumulative;
 * counts[nbounds] is above the last bound), sum their total. Written cumulatively with
 * le="+Inf", _sum and _count. */
int nb_met_w_histogram(nb_met_w *w, const char *family, const char *const *labels,
                       const double *bounds, size_t nbounds, const uint64_t *counts, double sum);
/* Appends the sorted page to out. 0, or -1 (err) when a call above failed or out is full. */
int nb_met_w_finish(nb_met_w *w, nb_buf *out, nb_err *err);

/* ---------- the registry ---------- */

typedef struct nb_met nb_met;

nb_met *nb_met_new(void);
void nb_met_free(nb_met *m);
/* Where the scrape reads gauges; either may be NULL. Call before any scrape. */
void nb_met_set_sources(nb_met *m, nb_sched *sched, nb_q *q);

/* The invocation's end (its done state not yet set): ran says it had an instance (a duration
 * to observe), init_us its init duration when it was a cold start (else < 0). m NULL: nothing. */
void nb_met_invocation(nb_met *m, const nb_inv *inv, int ran, int64_t init_us);
/* One gateway request answered with status; ns/api "" when it matched no API. */
void nb_met_gateway(nb_met *m, const char *ns, const char *api, int status);

/* The error type label an invocation's error maps to: Handled, Unhandled, Runtime.ExitError,
 * Sandbox.Timedout, Runtime.OutOfMemory or other. */
const char *nb_met_error_type(int outcome, const char *error_type);

/* The whole page into out. 0 or -1 (err). */
int nb_met_render(nb_met *m, nb_buf *out, nb_err *err);

/* The web console's dashboard series (metrics/series.h). nb_met_sample sums every function's
 * counters and the scheduler's in-flight count into one sample of second now_s (the daemon
 * calls it once a second); nb_met_series answers GET /v1/metrics/series (caller owns the
 * result; NULL and err on a bad argument). Any thread. */
void nb_met_sample(nb_met *m, int64_t now_s);
json_t *nb_met_series(nb_met *m, int seconds, nb_err *err);

#endif
