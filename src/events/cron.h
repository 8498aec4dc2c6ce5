/* nb_cron: schedule expressions with EventBridge Scheduler's syntax and semantics.
 *
 *   rate(N minute|minutes|hour|hours|day|days)   every N units from the schedule's start
 *   rate(N second|seconds)                      nimbus's extension, same rule
 *   at(yyyy-mm-ddThh:mm:ss)                     once, local time in the schedule's zone
 *   cron(min hour day-of-month month day-of-week year)
 *
 * cron fields (AWS's six-field syntax): `*`, ranges `a-b`, lists `a,b`, steps `a/n`, `*` + `/n`,
 * `a-b/n`; months 1-12 or JAN-DEC; days of week 1-7 or SUN-SAT (1 = Sunday); years 1970-2199.
 * Exactly one of day-of-month and day-of-week is `?` (the other one decides). Day-of-month also
 * takes `L` (last day), `LW` (last weekday), `nW` (weekday nearest day n, within the month);
 * day-of-week also takes `dL` (last such weekday of the month) and `d#n` (n-th, 1-5). These
 * special forms stand alone in their field (no lists). With N = 1 a rate unit is singular,
 * otherwise plural, as AWS requires.
 *
 * Evaluation is in the schedule's zone: cron fields match local wall-clock minutes; a matching
 * local time in a DST gap fires once at the shifted instant (nb_tz's policy), one in an overlap
 * fires once, at its first occurrence. rate() is zone-free: fixed periods of seconds.
 *
 * An nb_cron is a plain value (no heap, copyable); parse and next are pure functions, safe on
 * any thread. */
#ifndef NB_CRON_H
#define NB_CRON_H

#include "base/err.h"
#include "events/tz.h"

#include <stddef.h>
#include <stdint.h>

#define NB_CRON_EXPR_MAX 256
#define NB_CRON_YEAR_MIN 1970
#define NB_CRON_YEAR_MAX 2199
#define NB_CRON_RATE_MAX 1000000 /* N in rate(N unit) */
#define NB_CRON_NO_END   INT64_MAX

typedef enum nb_cron_kind { NB_CRON_RATE = 1, NB_CRON_AT, NB_CRON_CRON } nb_cron_kind;

typedef struct nb_cron {
    nb_cron_kind kind;
    int64_t period_s; /* rate */
    int at[6];        /* at: y, mo, d, h, mi, s (local) */
    /* cron: bit v set when value v matches */
    uint64_t minutes;  /* 0-59 */
    uint32_t hours;    /* 0-23 */
    uint32_t mdays;    /* 1-31 */
    uint16_t months;   /* 1-12 */
    uint8_t wdays;     /* 1-7, 1 = Sunday */
    uint64_t years[4]; /* bit y - NB_CRON_YEAR_MIN */
    int dom_any;       /* day-of-month is `?`: day-of-week decides */
    int dom_last;      /* L */
    int dom_last_wday; /* LW */
    int dom_near;      /* nW: n, else 0 */
    int dow_last;      /* dL: d (1-7), else 0 */
    int dow_nth_day;   /* d#n: d (1-7) and n (1-5), else 0 */
    int dow_nth;
} nb_cron;

/* Parses expr into *out. Errors: 400 invalid_value, the message naming the field and the
 * problem ("cron day-of-week: '9' out of range 1-7"). */
int nb_cron_parse(nb_cron *out, const char *expr, nb_err *err);

/* The first fire time strictly after `after` (Unix seconds), or -1 when there is none.
 * `start` is the schedule's start (or its creation time): rate() fires at start + k*period,
 * k >= 0, and nothing fires before start. `end` is the last instant allowed (NB_CRON_NO_END
 * for none). at() ignores both, as EventBridge does for one-time schedules. tz NULL is UTC. */
int64_t nb_cron_next(const nb_cron *c, const nb_tz *tz, int64_t after, int64_t start, int64_t end);

/* A short English description ("every 5 minutes", "cron in Europe/Berlin"...) for listings;
 * always NUL-terminated, truncated to size. */
void nb_cron_describe(const nb_cron *c, char *buf, size_t size);

#endif
