#include "metrics/series.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct nb_ser {
    pthread_mutex_t mu;
    nb_ser_sample slots[NB_SER_SLOTS];
    size_t start, n; /* the oldest sample's slot and how many there are */
};

nb_ser *nb_ser_new(void)
{
    nb_ser *s = calloc(1, sizeof *s);
    if (!s) abort();
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void nb_ser_free(nb_ser *s)
{
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static nb_ser_sample *at(nb_ser *s, size_t i)
{
    return &s->slots[(s->start + i) % NB_SER_SLOTS];
}

void nb_ser_record(nb_ser *s, const nb_ser_sample *x)
{
    pthread_mutex_lock(&s->mu);
    if (s->n) {
        nb_ser_sample *last = at(s, s->n - 1);
        if (x->t == last->t) {
            *last = *x;
            pthread_mutex_unlock(&s->mu);
            return;
        }
        /* A timer tick a little early next to a second boundary gives an older second: kept
         * out. A clock set back for real leaves the old samples in the future: dropped. */
        if (x->t < last->t) {
            if (last->t - x->t <= 5) {
                pthread_mutex_unlock(&s->mu);
                return;
            }
            s->n = 0;
        }
    }
    if (s->n == NB_SER_SLOTS) {
        s->start = (s->start + 1) % NB_SER_SLOTS;
        s->n--;
    }
    *at(s, s->n++) = *x;
    pthread_mutex_unlock(&s->mu);
}

/* The index of the newest sample at or before t, or -1. Samples are in increasing t. */
static long find(nb_ser *s, int64_t t)
{
    long lo = 0, hi = (long)s->n - 1, found = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (at(s, (size_t)mid)->t <= t) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

double nb_ser_quantile(const uint64_t *counts, double q)
{
    uint64_t total = 0;
    for (int i = 0; i <= NB_MET_BUCKETS; i++)
        total += counts[i];
    if (!total) return NAN;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    double rank = q * (double)total, below = 0;
    for (int i = 0; i <= NB_MET_BUCKETS; i++) {
        double lower = i == 0 ? 0 : nb_met_buckets[i - 1] * 1000;
        if (i == NB_MET_BUCKETS) return lower;
        double c = (double)counts[i];
        if (c > 0 && below + c >= rank) {
            double upper = nb_met_buckets[i] * 1000;
            return lower + (upper - lower) * (rank - below) / c;
        }
        below += c;
    }
    return nb_met_buckets[NB_MET_BUCKETS - 1] * 1000;
}

static json_t *num_or_null(double v)
{
    return isnan(v) ? json_null() : json_real(round(v * 1000) / 1000);
}

json_t *nb_ser_query(nb_ser *s, int seconds, nb_err *err)
{
    if (seconds < 1 || seconds > NB_SER_SECONDS) {
        nb_err_set(err, 400, NB_E_INVALID_VALUE, "seconds must be in 1..%d", NB_SER_SECONDS);
        return NULL;
    }
    int step = seconds <= 120 ? 1 : 5;
    json_t *t = json_array(), *inv = json_array(), *errs = json_array(), *thr = json_array(),
           *cold = json_array(), *conc = json_array(), *p50 = json_array(), *p99 = json_array();
    pthread_mutex_lock(&s->mu);
    if (s->n) {
        int64_t end = at(s, s->n - 1)->t / step * step;
        for (int64_t k = seconds / step - 1; k >= 0; k--) {
            int64_t when = end - k * step;
            long b = find(s, when), a = find(s, when - step);
            /* The first step since the start is partial: from the first sample. */
            if (a < 0 && b > 0) a = 0;
            if (a < 0 || b <= a) continue;
            const nb_ser_sample *x = at(s, (size_t)a), *y = at(s, (size_t)b);
            double dt = (double)(y->t - x->t);
            int64_t peak = 0;
            for (long i = a + 1; i <= b; i++)
                if (at(s, (size_t)i)->concurrency > peak) peak = at(s, (size_t)i)->concurrency;
            uint64_t d[NB_MET_BUCKETS + 1];
            for (int i = 0; i <= NB_MET_BUCKETS; i++)
                d[i] = y->duration[i] - x->duration[i];
            json_array_append_new(t, json_integer(when));
            json_array_append_new(inv, num_or_null((double)(y->invocations - x->invocations) / dt));
            json_array_append_new(errs, num_or_null((double)(y->errors - x->errors) / dt));
            json_array_append_new(thr, num_or_null((double)(y->throttles - x->throttles) / dt));
            json_array_append_new(cold,
                                  num_or_null((double)(y->cold_starts - x->cold_starts) / dt));
            json_array_append_new(conc, json_integer(peak));
            json_array_append_new(p50, num_or_null(nb_ser_quantile(d, 0.50)));
            json_array_append_new(p99, num_or_null(nb_ser_quantile(d, 0.99)));
        }
    }
    pthread_mutex_unlock(&s->mu);
    return json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "step_s", step, "t", t,
                     "invocations", inv, "errors", errs, "throttles", thr, "cold_starts", cold,
                     "concurrency", conc, "p50_ms", p50, "p99_ms", p99);
}
