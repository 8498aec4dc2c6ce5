/* nimbus top: a live per-function view, like top(1): requests and errors per second, p50/p99
 * duration, concurrency and instances by state, refreshed every interval.
 *
 * Rates and percentiles come from two scrapes of the daemon's /metrics (counters and the
 * duration histogram's buckets, differenced over the interval); instances from GET
 * /v1/functions. On a terminal each frame replaces the last; otherwise (or with --json) frames
 * follow each other, which is what scripts and tests read. */
#include "cli/internal.h"

#include "base/util.h"
#include "cli/prom.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FNS     500 /* as many as /metrics labels; the rest are not shown */
#define MAX_BUCKETS 32

static const nb_cli_opt opts[] = {
    {"interval", 0, "S", "seconds between frames, 1..60 (default 2)"},
    {"iterations", 'n', "N", "frames to print, then exit (default: until interrupted)"},
    {"json", 0, NULL, "one JSON object per frame, one per line"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "top",
    .synopsis = "[--interval S] [--iterations N] [--json] [options]",
    .description = "Shows every function of the default namespace with its requests and errors\n"
                   "per second, p50 and p99 duration (from the daemon's histograms, so bucket\n"
                   "bounds), invocations running and instances by state, refreshed every\n"
                   "interval. Needs the daemon's /metrics.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 0,
    .max_pos = 0,
};

typedef struct fn_view {
    char name[NB_PROM_VALUE_MAX];
    double invocations, errors, throttles, cold, concurrency;
    int nb;
    double le[MAX_BUCKETS], count[MAX_BUCKETS]; /* cumulative, as exposed */
} fn_view;

typedef struct snapshot {
    fn_view fns[MAX_FNS];
    int n;
    int64_t at_us;
} snapshot;

static fn_view *fn_of(snapshot *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->fns[i].name, name) == 0) return &s->fns[i];
    if (s->n == MAX_FNS) return NULL;
    fn_view *f = &s->fns[s->n++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

static void take_sample(snapshot *s, const nb_prom_sample *m)
{
    const char *ns = nb_prom_label(m, "namespace"), *name = nb_prom_label(m, "function");
    if (!ns || !name || strcmp(ns, "default") != 0) return;
    fn_view *f = fn_of(s, name);
    if (!f) return;
    if (strcmp(m->name, "nimbus_invocations_total") == 0) {
        const char *o = nb_prom_label(m, "outcome");
        f->invocations += m->value;
        if (o && strcmp(o, "success") != 0 && strcmp(o, "throttled") != 0) f->errors += m->value;
        if (o && strcmp(o, "throttled") == 0) f->throttles += m->value;
    } else if (strcmp(m->name, "nimbus_cold_starts_total") == 0) {
        f->cold += m->value;
    } else if (strcmp(m->name, "nimbus_concurrency") == 0) {
        f->concurrency = m->value;
    } else if (strcmp(m->name, "nimbus_invocation_duration_seconds_bucket") == 0 &&
               f->nb < MAX_BUCKETS) {
        const char *le = nb_prom_label(m, "le");
        if (!le) return;
        f->le[f->nb] = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        f->count[f->nb++] = m->value;
    }
}

static int scrape(nb_cli__client *c, snapshot *s, nb_err *err)
{
    nb_cli__resp r;
    nb_cli__resp_init(&r, 16u << 20);
    int rc = nb_cli__request(c, "GET", "/metrics", NULL, 0, NULL, &r, err) < 0 ||
                     nb_cli__check(c, &r, err) < 0
                 ? -1
                 : 0;
    s->n = 0;
    s->at_us = nb_mono_us();
    for (size_t i = 0; rc == 0 && i < r.body.len;) {
        const char *line = r.body.data + i;
        const char *nl = memchr(line, '\n', r.body.len - i);
        size_t len = nl ? (size_t)(nl - line) : r.body.len - i;
        nb_prom_sample m;
        if (nb_prom_parse_line(line, len, &m) == 1) take_sample(s, &m);
        i += len + 1;
    }
    nb_cli__resp_free(&r);
    return rc;
}

/* The q-quantile of the observations between two scrapes, as the bucket bound it falls in (in
 * ms); -1 when nothing was observed. */
static double quantile_ms(const fn_view *now, const fn_view *before, double q)
{
    double total =
        now->nb ? now->count[now->nb - 1] - (before ? before->count[now->nb - 1] : 0) : 0;
    if (total <= 0) return -1;
    for (int i = 0; i < now->nb; i++) {
        double c = now->count[i] - (before && i < before->nb ? before->count[i] : 0);
        if (c >= q * total) return isinf(now->le[i]) ? INFINITY : now->le[i] * 1000;
    }
    return INFINITY;
}

static const fn_view *find(const snapshot *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->fns[i].name, name) == 0) return &s->fns[i];
    return NULL;
}

static void ms_cell(char *out, size_t size, double ms)
{
    if (ms < 0)
        snprintf(out, size, "-");
    else if (isinf(ms))
        snprintf(out, size, ">max");
    else
        snprintf(out, size, "%g", ms);
}

static json_t *ms_json(double ms)
{
    return ms < 0 || isinf(ms) ? json_null() : json_real(ms);
}

/* One frame: every function of the list, with the rates since the previous scrape. */
static void frame(const snapshot *now, const snapshot *before, const json_t *list, int json,
                  int tty)
{
    double secs = (double)(now->at_us - before->at_us) / 1e6;
    if (secs <= 0) secs = 1;
    json_t *rows = json_array();
    size_t i;
    json_t *fo;
    json_array_foreach(json_object_get(list, "functions"), i, fo)
    {
        const char *name = nb_cli__str(fo, "name");
        const fn_view *f = find(now, name), *b = find(before, name);
        fn_view zero = {0};
        if (!f) f = &zero;
        json_t *inst = json_object_get(json_object_get(fo, "stats"), "instances");
        json_array_append_new(
            rows,
            json_pack("{s:s, s:f, s:f, s:f, s:o, s:o, s:f, s:{s:I, s:I, s:I}, s:f}", "function",
                      name, "rps", (f->invocations - (b ? b->invocations : 0)) / secs,
                      "errors_per_s", (f->errors - (b ? b->errors : 0)) / secs, "throttles_per_s",
                      (f->throttles - (b ? b->throttles : 0)) / secs, "p50_ms",
                      ms_json(quantile_ms(f, b, 0.5)), "p99_ms", ms_json(quantile_ms(f, b, 0.99)),
                      "concurrency", f->concurrency, "instances", "idle",
                      (json_int_t)nb_cli__int(inst, "idle"), "busy",
                      (json_int_t)nb_cli__int(inst, "busy"), "starting",
                      (json_int_t)nb_cli__int(inst, "starting"), "cold_starts", f->cold));
    }
    if (json) {
        char *s =
            json_dumps(json_pack("{s:I, s:o}", "time", (json_int_t)nb_now_ms(), "functions", rows),
                       JSON_COMPACT);
        if (s) printf("%s\n", s);
        free(s);
        fflush(stdout);
        return;
    }
    char when[32];
    nb_time_iso8601(nb_now_ms(), when, sizeof when);
    if (tty) fputs("\033[H\033[2J", stdout);
    printf("nimbus top  %s  %zu functions  every %.0f s\n\n", when, json_array_size(rows), secs);
    printf("%-24s %9s %8s %9s %9s %5s %5s %5s %5s %6s\n", "FUNCTION", "RPS", "ERR/S", "P50_MS",
           "P99_MS", "CONC", "IDLE", "BUSY", "START", "COLD");
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        char p50[16], p99[16];
        json_t *v50 = json_object_get(row, "p50_ms"), *v99 = json_object_get(row, "p99_ms");
        ms_cell(p50, sizeof p50, json_is_null(v50) ? -1 : json_real_value(v50));
        ms_cell(p99, sizeof p99, json_is_null(v99) ? -1 : json_real_value(v99));
        json_t *inst = json_object_get(row, "instances");
        printf("%-24.24s %9.1f %8.1f %9s %9s %5.0f %5lld %5lld %5lld %6.0f\n",
               json_string_value(json_object_get(row, "function")),
               json_real_value(json_object_get(row, "rps")),
               json_real_value(json_object_get(row, "errors_per_s")), p50, p99,
               json_real_value(json_object_get(row, "concurrency")),
               (long long)nb_cli__int(inst, "idle"), (long long)nb_cli__int(inst, "busy"),
               (long long)nb_cli__int(inst, "starting"),
               json_real_value(json_object_get(row, "cold_starts")));
    }
    json_decref(rows);
    fflush(stdout);
}

int nb_cli_top(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    int64_t interval = 2, iterations = 0;
    const char *v;
    if ((v = nb_cli_args_get(&a, "interval")) && nb_cli_parse_int(v, 1, 60, &interval) < 0) {
        rc = nb_cli__usage("top", "--interval must be 1..60 seconds, not '%s'", v);
        nb_cli_args_free(&a);
        return rc;
    }
    if ((v = nb_cli_args_get(&a, "iterations")) &&
        nb_cli_parse_int(v, 1, INT32_MAX, &iterations) < 0) {
        rc = nb_cli__usage("top", "--iterations must be a positive number, not '%s'", v);
        nb_cli_args_free(&a);
        return rc;
    }
    int json = nb_cli_args_has(&a, "json"), tty = isatty(1);
    nb_err err;
    nb_err_clear(&err);
    snapshot *s[2] = {calloc(1, sizeof(snapshot)), calloc(1, sizeof(snapshot))};
    if (!s[0] || !s[1]) abort();
    nb_cli__client c;
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
        goto out;
    }
    rc = NB_CLI_OK;
    if (scrape(&c, s[0], &err) < 0) {
        rc = nb_cli__fail(&err);
        goto close;
    }
    for (int64_t k = 0; iterations == 0 || k < iterations; k++) {
        struct timespec ts = {(time_t)interval, 0};
        nanosleep(&ts, NULL);
        snapshot *before = s[k % 2], *now = s[(k + 1) % 2];
        json_t *list = NULL;
        if (scrape(&c, now, &err) < 0 ||
            nb_cli__call_json(&c, "GET", "/v1/functions", NULL, 0, NULL, &list, &err) < 0) {
            rc = nb_cli__fail(&err);
            break;
        }
        frame(now, before, list, json, tty && !json);
        json_decref(list);
    }
close:
    nb_cli__client_close(&c);
out:
    free(s[0]);
    free(s[1]);
    nb_cli_args_free(&a);
    return rc;
}
