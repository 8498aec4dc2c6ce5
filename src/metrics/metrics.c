#include "metrics/metrics.h"

#include "base/util.h"
#include "metrics/series.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const double nb_met_buckets[NB_MET_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1,      2.5,   5,    10,    30,   60};

/* ---------- the exposition writer ---------- */

struct met_fam {
    char name[128];
    nb_met_type type;
    char *help;
};

/* One output line; sorted by (family, series, order) at finish. */
struct met_line {
    size_t fam;
    char *series; /* the rendered labels without le: the sort key within a family */
    int order;    /* a histogram's buckets, then _sum, then _count */
    char *text;
};

void nb_met_w_init(nb_met_w *w)
{
    memset(w, 0, sizeof *w);
}

void nb_met_w_free(nb_met_w *w)
{
    for (size_t i = 0; i < w->nfams; i++)
        free(w->fams[i].help);
    for (size_t i = 0; i < w->nlines; i++) {
        free(w->lines[i].series);
        free(w->lines[i].text);
    }
    free(w->fams);
    free(w->lines);
    memset(w, 0, sizeof *w);
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) >= 100 || (!isalpha((unsigned char)*s) && *s != '_' && *s != ':'))
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != ':') return 0;
    return 1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static long find_fam(const nb_met_w *w, const char *name)
{
    for (size_t i = 0; i < w->nfams; i++)
        if (strcmp(w->fams[i].name, name) == 0) return (long)i;
    return -1;
}

int nb_met_w_family(nb_met_w *w, const char *name, nb_met_type type, const char *help)
{
    if (find_fam(w, name) >= 0) return 0;
    if (!valid_name(name) || (type == NB_MET_COUNTER) != ends_with(name, "_total")) {
        w->failed = 1;
        return -1;
    }
    if (w->nfams == w->fcap) {
        size_t cap = w->fcap ? w->fcap * 2 : 32;
        struct met_fam *f = realloc(w->fams, cap * sizeof *f);
        if (!f) return w->failed = 1, -1;
        w->fams = f;
        w->fcap = cap;
    }
    struct met_fam *f = &w->fams[w->nfams];
    snprintf(f->name, sizeof f->name, "%s", name);
    f->type = type;
    f->help = strdup(help);
    if (!f->help) return w->failed = 1, -1;
    w->nfams++;
    return 0;
}

/* Prometheus text escaping: label values escape \ " and newline; HELP escapes \ and newline. */
static int append_escaped(nb_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        int r = *s == '\\'           ? nb_buf_append(b, "\\\\", 2)
                : *s == '\n'         ? nb_buf_append(b, "\\n", 2)
                : *s == '"' && quote ? nb_buf_append(b, "\\\"", 2)
                                     : nb_buf_append(b, s, 1);
        if (r < 0) return -1;
    }
    return 0;
}

static int append_labels(nb_buf *b, const char *const *labels)
{
    for (size_t i = 0; labels && labels[i]; i += 2) {
        if (!valid_name(labels[i]) || strncmp(labels[i], "__", 2) == 0) return -1;
        if (nb_buf_appendf(b, "%s%s=\"", i ? "," : "", labels[i]) < 0 ||
            append_escaped(b, labels[i + 1] ? labels[i + 1] : "", 1) < 0 ||
            nb_buf_append(b, "\"", 1) < 0)
            return -1;
    }
    return 0;
}

/* The shortest text that reads back as v (integers without a fraction), so counters print as
 * integers and bucket bounds as 0.001, never 0.0010000000000000000208. */
static void format_value(double v, char *out, size_t size)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, size, "%lld", (long long)v);
    } else {
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(out, size, "%.*g", prec, v);
            if (strtod(out, NULL) == v) break;
        }
    }
}

static int add_line(nb_met_w *w, size_t fam, const char *series, int order, nb_buf *text)
{
    if (w->nlines == w->lcap) {
        size_t cap = w->lcap ? w->lcap * 2 : 256;
        struct met_line *l = realloc(w->lines, cap * sizeof *l);
        if (!l) return -1;
        w->lines = l;
        w->lcap = cap;
    }
    struct met_line *l = &w->lines[w->nlines];
    l->fam = fam;
    l->order = order;
    l->series = strdup(series);
    l->text = nb_buf_steal(text, NULL);
    if (!l->series || !l->text) {
        free(l->series);
        free(l->text);
        return -1;
    }
    w->nlines++;
    return 0;
}

/* name{labels[,extra]} value\n into one line. */
static int emit(nb_met_w *w, size_t fam, const char *name, const char *series, int order,
                const char *extra, double value)
{
    nb_buf t;
    nb_buf_init(&t, 64 << 10);
    char num[64];
    format_value(value, num, sizeof num);
    int has = series[0] || extra;
    int rc = nb_buf_appendf(&t, "%s%s%s%s%s%s %s\n", name, has ? "{" : "", series,
                            series[0] && extra ? "," : "", extra ? extra : "", has ? "}" : "", num);
    if (rc == 0) rc = add_line(w, fam, series, order, &t);
    nb_buf_free(&t);
    return rc;
}

static int render_series(const char *const *labels, nb_buf *s)
{
    nb_buf_init(s, 64 << 10);
    if (append_labels(s, labels) < 0) return -1;
    if (!s->data && nb_buf_append(s, "", 0) < 0) return -1;
    return 0;
}

int nb_met_w_sample(nb_met_w *w, const char *family, const char *const *labels, double value)
{
    long f = find_fam(w, family);
    nb_buf s;
    nb_buf_init(&s, 0);
    int rc = f < 0 || w->fams[f].type == NB_MET_HISTOGRAM || render_series(labels, &s) < 0 ||
                     emit(w, (size_t)f, family, s.data, 0, NULL, value) < 0
                 ? -1
                 : 0;
    nb_buf_free(&s);
    if (rc < 0) w->failed = 1;
    return rc;
}

int nb_met_w_histogram(nb_met_w *w, const char *family, const char *const *labels,
                       const double *bounds, size_t nbounds, const uint64_t *counts, double sum)
{
    long f = find_fam(w, family);
    if (f < 0 || w->fams[f].type != NB_MET_HISTOGRAM) return w->failed = 1, -1;
    nb_buf s;
    int rc = render_series(labels, &s);
    char name[160], le[80], num[64];
    uint64_t cum = 0;
    for (size_t i = 0; rc == 0 && i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            format_value(bounds[i], num, sizeof num);
        else
            snprintf(num, sizeof num, "+Inf");
        snprintf(le, sizeof le, "le=\"%s\"", num);
        snprintf(name, sizeof name, "%s_bucket", family);
        rc = emit(w, (size_t)f, name, s.data, (int)i, le, (double)cum);
    }
    if (rc == 0) {
        snprintf(name, sizeof name, "%s_sum", family);
        rc = emit(w, (size_t)f, name, s.data, (int)nbounds + 1, NULL, sum);
    }
    if (rc == 0) {
        snprintf(name, sizeof name, "%s_count", family);
        rc = emit(w, (size_t)f, name, s.data, (int)nbounds + 2, NULL, (double)cum);
    }
    nb_buf_free(&s);
    if (rc < 0) w->failed = 1;
    return rc;
}

static const nb_met_w *sort_w; /* qsort has no user pointer; finish holds the writer's lock */
static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

static int line_cmp(const void *a, const void *b)
{
    const struct met_line *x = a, *y = b;
    int c = strcmp(sort_w->fams[x->fam].name, sort_w->fams[y->fam].name);
    if (!c) c = strcmp(x->series, y->series);
    if (!c) c = (x->order > y->order) - (x->order < y->order);
    return c;
}

static const char *type_name(nb_met_type t)
{
    return t == NB_MET_COUNTER ? "counter" : t == NB_MET_GAUGE ? "gauge" : "histogram";
}

int nb_met_w_finish(nb_met_w *w, nb_buf *out, nb_err *err)
{
    if (w->failed) return nb_err_set(err, 500, NB_E_INTERNAL, "metrics: a family or sample failed");
    pthread_mutex_lock(&sort_mu);
    sort_w = w;
    if (w->nlines) qsort(w->lines, w->nlines, sizeof *w->lines, line_cmp);
    sort_w = NULL;
    pthread_mutex_unlock(&sort_mu);
    /* Families with no sample are still announced, sorted with the rest. */
    char *done = calloc(w->nfams ? w->nfams : 1, 1);
    if (!done) return nb_err_set(err, 500, NB_E_INTERNAL, "metrics: out of memory");
    size_t li = 0;
    for (;;) {
        /* The next family by name: the smallest not yet written. */
        long next = -1;
        for (size_t i = 0; i < w->nfams; i++)
            if (!done[i] && (next < 0 || strcmp(w->fams[i].name, w->fams[next].name) < 0))
                next = (long)i;
        if (next < 0) break;
        done[next] = 1;
        const struct met_fam *f = &w->fams[next];
        if (nb_buf_appendf(out, "# HELP %s ", f->name) < 0 || append_escaped(out, f->help, 0) < 0 ||
            nb_buf_appendf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type)) < 0)
            goto full;
        while (li < w->nlines && w->lines[li].fam == (size_t)next)
            if (nb_buf_append(out, w->lines[li].text, strlen(w->lines[li].text)) < 0)
                goto full;
            else
                li++;
    }
    free(done);
    return 0;
full:
    free(done);
    return nb_err_set(err, 500, NB_E_INTERNAL, "metrics: the page is over %u bytes",
                      (unsigned)out->max);
}

/* ---------- the registry ---------- */

enum { OUT_SUCCESS, OUT_ERROR, OUT_TIMEOUT, OUT_OOM, OUT_THROTTLED, N_OUT };
static const char *const out_names[N_OUT] = {"success", "error", "timeout", "oom", "throttled"};
enum { ERR_HANDLED, ERR_UNHANDLED, ERR_EXIT, ERR_TIMEOUT, ERR_OOM, ERR_OTHER, N_ERR };
static const char *const err_names[N_ERR] = {
    "Handled",          "Unhandled",           "Runtime.ExitError",
    "Sandbox.Timedout", "Runtime.OutOfMemory", "other"};
enum { N_CLASS = 6 }; /* 1xx..5xx at 1..5, anything else at 0 */

/* The key every entry starts with. Written once before the entry is published. */
typedef struct met_key {
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
} met_key;

typedef struct met_hist {
    atomic_llong counts[NB_MET_BUCKETS + 1];
    atomic_llong sum_us;
} met_hist;

typedef struct met_fn {
    met_key key;
    atomic_llong outcomes[N_OUT];
    atomic_llong errors[N_ERR];
    atomic_llong cold;
    met_hist duration, init;
    /* Scrape scratch, under scrape_mu only. */
    int64_t in_flight;
    int seen;
} met_fn;

typedef struct met_api {
    met_key key;
    atomic_llong classes[N_CLASS];
} met_api;

/* Open addressing, never removed from: a reader probes without a lock (acquire loads of
 * pointers to entries whose keys were written before their release store). */
#define TABLE_SLOTS 1024 /* a power of two, over twice NB_MET_MAX_LABELLED */
typedef struct met_table {
    _Atomic(met_key *) slots[TABLE_SLOTS];
    atomic_size_t n;    /* written under mu; read without it to skip mu once full */
    size_t entry_size;  /* met_fn or met_api */
    met_key *other;     /* "_other": everything past NB_MET_MAX_LABELLED */
    pthread_mutex_t mu; /* inserts */
} met_table;

struct nb_met {
    met_table fns, apis;
    pthread_mutex_t scrape_mu;
    nb_sched *sched;
    nb_q *q;
    nb_ser *series;
};

static uint64_t key_hash(const char *ns, const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static met_key *new_entry(size_t size, const char *ns, const char *name)
{
    met_key *k = calloc(1, size);
    if (!k) abort();
    snprintf(k->ns, sizeof k->ns, "%s", ns);
    snprintf(k->name, sizeof k->name, "%s", name);
    return k;
}

static void table_init(met_table *t, size_t entry_size)
{
    memset(t, 0, sizeof *t);
    t->entry_size = entry_size;
    t->other = new_entry(entry_size, "_other", "_other");
    pthread_mutex_init(&t->mu, NULL);
}

static void table_release(met_table *t)
{
    for (size_t i = 0; i < TABLE_SLOTS; i++)
        free(atomic_load(&t->slots[i]));
    free(t->other);
    pthread_mutex_destroy(&t->mu);
}

/* The entry of ns/name; created at its first sighting while there is room, else "_other". */
static met_key *table_get(met_table *t, const char *ns, const char *name)
{
    size_t h = (size_t)key_hash(ns, name) & (TABLE_SLOTS - 1);
    for (size_t i = 0; i < TABLE_SLOTS; i++) {
        met_key *k =
            atomic_load_explicit(&t->slots[(h + i) & (TABLE_SLOTS - 1)], memory_order_acquire);
        if (!k) break;
        if (strcmp(k->name, name) == 0 && strcmp(k->ns, ns) == 0) return k;
    }
    /* Full: every new name is "_other" for good, so the mutex is never taken again. */
    if (strlen(ns) > NB_NAME_MAX || strlen(name) > NB_NAME_MAX ||
        atomic_load_explicit(&t->n, memory_order_relaxed) >= NB_MET_MAX_LABELLED)
        return t->other;
    pthread_mutex_lock(&t->mu);
    met_key *found = t->other;
    for (size_t i = 0; i < TABLE_SLOTS; i++) {
        _Atomic(met_key *) *slot = &t->slots[(h + i) & (TABLE_SLOTS - 1)];
        met_key *k = atomic_load_explicit(slot, memory_order_relaxed);
        if (k && strcmp(k->name, name) == 0 && strcmp(k->ns, ns) == 0) {
            found = k;
            break;
        }
        if (!k) {
            if (atomic_load_explicit(&t->n, memory_order_relaxed) < NB_MET_MAX_LABELLED) {
                found = new_entry(t->entry_size, ns, name);
                atomic_store_explicit(slot, found, memory_order_release);
                atomic_fetch_add_explicit(&t->n, 1, memory_order_relaxed);
            }
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

nb_met *nb_met_new(void)
{
    nb_met *m = calloc(1, sizeof *m);
    if (!m) abort();
    table_init(&m->fns, sizeof(met_fn));
    table_init(&m->apis, sizeof(met_api));
    pthread_mutex_init(&m->scrape_mu, NULL);
    m->series = nb_ser_new();
    return m;
}

void nb_met_free(nb_met *m)
{
    if (!m) return;
    table_release(&m->fns);
    table_release(&m->apis);
    pthread_mutex_destroy(&m->scrape_mu);
    nb_ser_free(m->series);
    free(m);
}

void nb_met_set_sources(nb_met *m, nb_sched *sched, nb_q *q)
{
    m->sched = sched;
    m->q = q;
}

const char *nb_met_error_type(int outcome, const char *error_type)
{
    if (outcome == NB_OUTCOME_HANDLED) return err_names[ERR_HANDLED];
    for (int i = ERR_EXIT; i <= ERR_OOM; i++)
        if (strcmp(error_type, err_names[i]) == 0) return err_names[i];
    /* A function's own exception is Unhandled (Lambda's X-Amz-Function-Error); the platform's
     * other failures (Runtime.*, Sandbox.*, undelivered) are folded into "other". */
    if (outcome == NB_OUTCOME_UNHANDLED && strncmp(error_type, "Runtime.", 8) != 0 &&
        strncmp(error_type, "Sandbox.", 8) != 0)
        return err_names[ERR_UNHANDLED];
    return err_names[ERR_OTHER];
}

static int error_index(int outcome, const char *error_type)
{
    const char *t = nb_met_error_type(outcome, error_type);
    for (int i = 0; i < N_ERR; i++)
        if (t == err_names[i]) return i;
    return ERR_OTHER;
}

static void observe(met_hist *h, int64_t us)
{
    if (us < 0) us = 0;
    double s = (double)us / 1e6;
    size_t b = 0;
    while (b < NB_MET_BUCKETS && s > nb_met_buckets[b])
        b++;
    atomic_fetch_add_explicit(&h->counts[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void nb_met_invocation(nb_met *m, const nb_inv *inv, int ran, int64_t init_us)
{
    if (!m) return;
    met_fn *f = (met_fn *)table_get(&m->fns, inv->ver->ns, inv->ver->name);
    int out;
    if (inv->throttled)
        out = OUT_THROTTLED;
    else if (inv->outcome == NB_OUTCOME_OK)
        out = OUT_SUCCESS;
    else if (strcmp(inv->error_type, "Sandbox.Timedout") == 0)
        out = OUT_TIMEOUT;
    else if (strcmp(inv->error_type, "Runtime.OutOfMemory") == 0)
        out = OUT_OOM;
    else
        out = OUT_ERROR;
    atomic_fetch_add_explicit(&f->outcomes[out], 1, memory_order_relaxed);
    if (out != OUT_SUCCESS && out != OUT_THROTTLED)
        atomic_fetch_add_explicit(&f->errors[error_index((int)inv->outcome, inv->error_type)], 1,
                                  memory_order_relaxed);
    if (ran) observe(&f->duration, inv->ended_us - inv->started_us);
    if (ran && init_us >= 0) {
        atomic_fetch_add_explicit(&f->cold, 1, memory_order_relaxed);
        observe(&f->init, init_us);
    }
}

void nb_met_gateway(nb_met *m, const char *ns, const char *api, int status)
{
    if (!m) return;
    met_api *a = (met_api *)table_get(&m->apis, *ns ? ns : "_none", *api ? api : "_none");
    int c = status >= 100 && status < 600 ? status / 100 : 0;
    atomic_fetch_add_explicit(&a->classes[c], 1, memory_order_relaxed);
}

/* ---------- the scrape ---------- */

#define LBL(...) ((const char *const[]){__VA_ARGS__, NULL})

static void hist_read(const met_hist *h, uint64_t *counts, double *sum)
{
    for (int i = 0; i <= NB_MET_BUCKETS; i++)
        counts[i] = (uint64_t)atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    *sum = (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
}

typedef struct scrape {
    nb_met *m;
    int64_t inst[4]; /* starting, idle, busy, draining */
} scrape;

static void on_fn(void *ud, const char *ns, const char *name, const nb_fn_stats *st)
{
    scrape *s = ud;
    met_fn *f = (met_fn *)table_get(&s->m->fns, ns, name);
    f->in_flight += st->in_flight;
    f->seen = 1;
    s->inst[0] += st->starting;
    s->inst[1] += st->idle;
    s->inst[2] += st->busy;
    s->inst[3] += st->draining;
}

/* Calls fn for every entry of the table, "_other" last. */
static void table_each(met_table *t, void (*fn)(met_key *k, void *ud), void *ud)
{
    for (size_t i = 0; i < TABLE_SLOTS; i++) {
        met_key *k = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (k) fn(k, ud);
    }
    fn(t->other, ud);
}

static void scratch_reset(met_key *k, void *ud)
{
    ((met_fn *)k)->in_flight = 0;
    ((met_fn *)k)->seen = 0;
}

static void write_fn(met_key *k, void *ud)
{
    nb_met_w *w = ud;
    met_fn *f = (met_fn *)k;
    const char *ns = k->ns, *fn = k->name;
    int64_t total = 0;
    for (int i = 0; i < N_OUT; i++)
        total += atomic_load_explicit(&f->outcomes[i], memory_order_relaxed);
    /* "_other" appears once something falls into it; a labelled function from its first
     * invocation or while it is deployed. */
    if (!total && !f->seen) return;
    for (int i = 0; i < N_OUT; i++)
        nb_met_w_sample(w, "nimbus_invocations_total",
                        LBL("namespace", ns, "function", fn, "outcome", out_names[i]),
                        (double)atomic_load_explicit(&f->outcomes[i], memory_order_relaxed));
    if (f->seen || f->in_flight)
        nb_met_w_sample(w, "nimbus_concurrency", LBL("namespace", ns, "function", fn),
                        (double)f->in_flight);
    for (int i = 0; i < N_ERR; i++) {
        int64_t v = atomic_load_explicit(&f->errors[i], memory_order_relaxed);
        if (v)
            nb_met_w_sample(w, "nimbus_errors_total",
                            LBL("namespace", ns, "function", fn, "type", err_names[i]), (double)v);
    }
    nb_met_w_sample(
        w, "nimbus_throttles_total", LBL("namespace", ns, "function", fn),
        (double)atomic_load_explicit(&f->outcomes[OUT_THROTTLED], memory_order_relaxed));
    nb_met_w_sample(w, "nimbus_cold_starts_total", LBL("namespace", ns, "function", fn),
                    (double)atomic_load_explicit(&f->cold, memory_order_relaxed));
    uint64_t counts[NB_MET_BUCKETS + 1];
    double sum;
    hist_read(&f->duration, counts, &sum);
    nb_met_w_histogram(w, "nimbus_invocation_duration_seconds",
                       LBL("namespace", ns, "function", fn), nb_met_buckets, NB_MET_BUCKETS, counts,
                       sum);
    hist_read(&f->init, counts, &sum);
    nb_met_w_histogram(w, "nimbus_init_duration_seconds", LBL("namespace", ns, "function", fn),
                       nb_met_buckets, NB_MET_BUCKETS, counts, sum);
}

static void write_api(met_key *k, void *ud)
{
    nb_met_w *w = ud;
    met_api *a = (met_api *)k;
    static const char *const classes[N_CLASS] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < N_CLASS; i++) {
        int64_t v = atomic_load_explicit(&a->classes[i], memory_order_relaxed);
        if (v)
            nb_met_w_sample(w, "nimbus_gateway_requests_total",
                            LBL("namespace", k->ns, "api", k->name, "status_class", classes[i]),
                            (double)v);
    }
}

/* "fn/NS/NAME" -> kind "async", queue "NS/NAME": the name users know, with what it is for. */
static const char *queue_kind(const char *full, const char **rest)
{
    static const struct {
        const char *prefix, *kind;
    } kinds[] = {{"fn/", "async"}, {"q/", "user"},        {"t/", "topic"},
                 {"bus/", "bus"},  {"failed/", "failed"}, {"wh/", "webhook"}};
    for (size_t i = 0; i < NB_ARRAY_LEN(kinds); i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(full, kinds[i].prefix, n) == 0) {
            *rest = full + n;
            return kinds[i].kind;
        }
    }
    *rest = full;
    return "other";
}

static void write_queues(nb_met_w *w, nb_q *q)
{
    size_t n = 0;
    char **names = nb_q_list(q, "", &n);
    for (size_t i = 0; i < n; i++) {
        nb_q_stats st;
        nb_err err = {0};
        if (nb_q_get_stats(q, names[i], &st, &err) < 0) continue; /* deleted meanwhile */
        const char *rest;
        const char *kind = queue_kind(names[i], &rest);
        nb_met_w_sample(w, "nimbus_queue_depth", LBL("kind", kind, "queue", rest),
                        (double)(st.visible + st.inflight + st.delayed));
        nb_met_w_sample(w, "nimbus_queue_oldest_age_seconds", LBL("kind", kind, "queue", rest),
                        (double)st.oldest_ms / 1000.0);
    }
    nb_q_names_free(names, n);
}

/* The process_* metrics every Prometheus client exports, from /proc. */
static void write_process(nb_met_w *w)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    size_t len;
    char *stat = nb_read_file("/proc/self/stat", 4096, &len);
    /* After the last ')' (the command may hold anything): field 3 onwards. */
    char *p = stat ? strrchr(stat, ')') : NULL;
    unsigned long long utime = 0, stime = 0, start = 0;
    long long rss = 0;
    if (p && tck > 0 &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %*u %lld",
               &utime, &stime, &start, &rss) == 4) {
        nb_met_w_sample(w, "process_cpu_seconds_total", NULL,
                        (double)(utime + stime) / (double)tck);
        nb_met_w_sample(w, "process_resident_memory_bytes", NULL, (double)rss * (double)page);
        char *ps = nb_read_file("/proc/stat", 1 << 20, &len);
        char *bt = ps ? strstr(ps, "\nbtime ") : NULL;
        if (bt)
            nb_met_w_sample(w, "process_start_time_seconds", NULL,
                            (double)strtoll(bt + 7, NULL, 10) + (double)start / (double)tck);
        free(ps);
    }
    free(stat);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        nb_met_w_sample(w, "process_open_fds", NULL, (double)(n - 1)); /* not opendir's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        nb_met_w_sample(w, "process_max_fds", NULL, (double)rl.rlim_cur);
}

static void declare(nb_met_w *w)
{
    static const struct {
        const char *name;
        nb_met_type type;
        const char *help;
    } fams[] = {
        {"nimbus_invocations_total", NB_MET_COUNTER,
         "Invocations ended, by outcome (success, error, timeout, oom, throttled)."},
        {"nimbus_errors_total", NB_MET_COUNTER,
         "Failed invocations by error type (Handled, Unhandled, Runtime.ExitError, "
         "Sandbox.Timedout, Runtime.OutOfMemory, other)."},
        {"nimbus_throttles_total", NB_MET_COUNTER, "Invocations answered 429 without running."},
        {"nimbus_cold_starts_total", NB_MET_COUNTER,
         "Invocations served by an instance started for them."},
        {"nimbus_invocation_duration_seconds", NB_MET_HISTOGRAM,
         "Time from handing the event to an instance to its result."},
        {"nimbus_init_duration_seconds", NB_MET_HISTOGRAM,
         "Init duration of the instances that served cold starts."},
        {"nimbus_concurrency", NB_MET_GAUGE, "Invocations running now."},
        {"nimbus_instances", NB_MET_GAUGE, "Instances by state, every function."},
        {"nimbus_queue_depth", NB_MET_GAUGE,
         "Messages held by a durable queue: visible, in flight and delayed."},
        {"nimbus_queue_oldest_age_seconds", NB_MET_GAUGE,
         "Age of the oldest message of a durable queue (0 when empty)."},
        {"nimbus_gateway_requests_total", NB_MET_COUNTER,
         "Requests the API gateway answered, by status class."},
        {"process_cpu_seconds_total", NB_MET_COUNTER, "User and system CPU time spent in seconds."},
        {"process_resident_memory_bytes", NB_MET_GAUGE, "Resident memory size in bytes."},
        {"process_open_fds", NB_MET_GAUGE, "Number of open file descriptors."},
        {"process_max_fds", NB_MET_GAUGE, "Maximum number of open file descriptors."},
        {"process_start_time_seconds", NB_MET_GAUGE,
         "Start time of the process since unix epoch in seconds."},
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(fams); i++)
        nb_met_w_family(w, fams[i].name, fams[i].type, fams[i].help);
}

int nb_met_render(nb_met *m, nb_buf *out, nb_err *err)
{
    pthread_mutex_lock(&m->scrape_mu);
    nb_met_w w;
    nb_met_w_init(&w);
    declare(&w);
    scrape s = {.m = m};
    table_each(&m->fns, scratch_reset, NULL);
    if (m->sched) nb_sched_foreach(m->sched, on_fn, &s);
    table_each(&m->fns, write_fn, &w);
    static const char *const states[4] = {"starting", "idle", "busy", "draining"};
    for (int i = 0; i < 4; i++)
        nb_met_w_sample(&w, "nimbus_instances", LBL("state", states[i]), (double)s.inst[i]);
    if (m->q) write_queues(&w, m->q);
    table_each(&m->apis, write_api, &w);
    write_process(&w);
    int rc = nb_met_w_finish(&w, out, err);
    nb_met_w_free(&w);
    pthread_mutex_unlock(&m->scrape_mu);
    return rc;
}

/* ---------- the dashboard's series ---------- */

static void sum_fn(met_key *k, void *ud)
{
    nb_ser_sample *x = ud;
    met_fn *f = (met_fn *)k;
    for (int i = 0; i < N_OUT; i++) {
        uint64_t v = (uint64_t)atomic_load_explicit(&f->outcomes[i], memory_order_relaxed);
        if (i == OUT_THROTTLED)
            x->throttles += v;
        else
            x->invocations += v;
        if (i != OUT_SUCCESS && i != OUT_THROTTLED) x->errors += v;
    }
    x->cold_starts += (uint64_t)atomic_load_explicit(&f->cold, memory_order_relaxed);
    for (int i = 0; i <= NB_MET_BUCKETS; i++)
        x->duration[i] +=
            (uint64_t)atomic_load_explicit(&f->duration.counts[i], memory_order_relaxed);
}

static void sum_in_flight(void *ud, const char *ns, const char *name, const nb_fn_stats *st)
{
    ((nb_ser_sample *)ud)->concurrency += st->in_flight;
}

void nb_met_sample(nb_met *m, int64_t now_s)
{
    if (!m) return;
    /* Summed at each tick rather than counted twice on the invocation path: a second's walk
     * over at most 501 entries costs less than one more atomic add per invocation. */
    nb_ser_sample x = {.t = now_s};
    table_each(&m->fns, sum_fn, &x);
    if (m->sched) nb_sched_foreach(m->sched, sum_in_flight, &x);
    nb_ser_record(m->series, &x);
}

json_t *nb_met_series(nb_met *m, int seconds, nb_err *err)
{
    return nb_ser_query(m->series, seconds, err);
}
