/* nb_tz and nb_cron: known answers. Zone offsets around real transitions and far past the last
 * one (the footer rule), local-to-UTC in gaps and overlaps, hand-built TZif images for the
 * footer forms, hostile zone names and truncated files; every cron operator, AWS's special
 * day forms around month ends and weekends, leap days, invalid expressions, and schedules
 * crossing DST changes in three zones. The expected instants are written out (they were
 * checked against Python's zoneinfo, whose fold=0 reading is the same policy). A zone missing
 * from /usr/share/zoneinfo fails the test: CI installs tzdata (scripts/deps.sh). */
#include "events/cron.h"

#include "base/util.h"

#include <stdint.h>
#include "check.h"

static int checks;
#define CHECK_T(got, want)                                                                         \
    do {                                                                                           \
        int64_t g_ = (got), w_ = (want);                                                           \
        checks++;                                                                                  \
        if (g_ != w_) {                                                                            \
            char gs_[32], ws_[32];                                                                 \
            fmt(g_, gs_);                                                                          \
            fmt(w_, ws_);                                                                          \
            fprintf(stderr, "%s:%d: got %s (%lld), want %s (%lld)\n", __FILE__, __LINE__, gs_,     \
                    (long long)g_, ws_, (long long)w_);                                            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* "2026-03-08T07:30:00Z" (or "-" for none) -> Unix seconds (-1). */
static int64_t T(const char *s)
{
    if (!strcmp(s, "-")) return -1;
    int y, mo, d, h, mi, sec;
    CHECK(sscanf(s, "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &sec) == 6);
    return nb_tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
}

static void fmt(int64_t t, char out[32])
{
    if (t == -1) {
        snprintf(out, 32, "-");
        return;
    }
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400, y;
    int mo, d, s = (int)(t - days * 86400);
    nb_tz_civil_from_days(days, &y, &mo, &d);
    snprintf(out, 32, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, mo, d, s / 3600,
             s / 60 % 60, s % 60);
}

static nb_tz *zone(const char *name)
{
    nb_err err = {0};
    nb_tz *tz = nb_tz_load(name, &err);
    if (!tz) {
        fprintf(stderr, "FATAL: time zone %s not loadable (%s); install tzdata\n", name, err.msg);
        exit(1);
    }
    return tz;
}

/* ---- nb_tz ---- */

static void test_offsets(void)
{
    nb_tz *ny = zone("America/New_York"), *be = zone("Europe/Berlin");
    nb_tz *lh = zone("Australia/Lord_Howe"), *utc = zone("UTC");
    struct {
        nb_tz *tz;
        const char *at;
        int off;
    } cases[] = {
        /* New York 2026: 2 am EST -> 3 am EDT, then 2 am EDT -> 1 am EST */
        {ny, "2026-03-08T06:59:59Z", -5 * 3600},
        {ny, "2026-03-08T07:00:00Z", -4 * 3600},
        {ny, "2026-11-01T05:59:59Z", -4 * 3600},
        {ny, "2026-11-01T06:00:00Z", -5 * 3600},
        {ny, "2026-07-01T00:00:00Z", -4 * 3600},
        {ny, "1883-01-01T00:00:00Z", -17762}, /* local mean time before the first transition */
        /* 2100: past the table's end, from the footer EST5EDT,M3.2.0,M11.1.0 */
        {ny, "2100-03-14T06:59:59Z", -5 * 3600},
        {ny, "2100-03-14T07:00:00Z", -4 * 3600},
        {ny, "2100-11-07T05:59:59Z", -4 * 3600},
        {ny, "2100-11-07T06:00:00Z", -5 * 3600},
        /* Berlin: changes at 01:00 UTC; footer CET-1CEST,M3.5.0,M10.5.0/3 */
        {be, "2026-03-29T00:59:59Z", 3600},
        {be, "2026-03-29T01:00:00Z", 7200},
        {be, "2026-10-25T00:59:59Z", 7200},
        {be, "2026-10-25T01:00:00Z", 3600},
        {be, "2100-10-31T00:59:59Z", 7200},
        {be, "2100-10-31T01:00:00Z", 3600},
        {be, "1945-06-01T00:00:00Z", 3 * 3600}, /* Berlin's 1945 double summer time */
        /* Lord Howe: half-hour DST, southern: +10:30 standard, +11 summer */
        {lh, "2026-04-04T14:59:59Z", 39600},
        {lh, "2026-04-04T15:00:00Z", 37800},
        {lh, "2026-10-03T15:29:59Z", 37800},
        {lh, "2026-10-03T15:30:00Z", 39600},
        {lh, "2026-12-31T23:00:00Z", 39600},
        {lh, "2150-10-03T15:30:00Z", 39600},
        {lh, "2150-06-01T00:00:00Z", 37800},
        {utc, "2026-07-01T00:00:00Z", 0},
        {NULL, "2026-07-01T00:00:00Z", 0},
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(cases); i++) {
        int got = nb_tz_offset(cases[i].tz, T(cases[i].at));
        if (got != cases[i].off) {
            fprintf(stderr, "offset %s at %s: got %d want %d\n", nb_tz_name(cases[i].tz),
                    cases[i].at, got, cases[i].off);
            exit(1);
        }
        checks++;
    }
    int lo, hi;
    nb_tz_offset_range(be, &lo, &hi);
    CHECK(lo == 3208 && hi == 3 * 3600);
    CHECK_STR(nb_tz_name(be), "Europe/Berlin");

    /* Local to UTC: gaps shift forward, overlaps take the first occurrence. */
    CHECK_T(nb_tz_local_to_utc(ny, 2026, 3, 8, 2, 30, 0), T("2026-03-08T07:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(ny, 2026, 3, 8, 1, 59, 59), T("2026-03-08T06:59:59Z"));
    CHECK_T(nb_tz_local_to_utc(ny, 2026, 3, 8, 3, 0, 0), T("2026-03-08T07:00:00Z"));
    CHECK_T(nb_tz_local_to_utc(ny, 2026, 11, 1, 1, 30, 0), T("2026-11-01T05:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(ny, 2026, 11, 1, 2, 0, 0), T("2026-11-01T07:00:00Z"));
    CHECK_T(nb_tz_local_to_utc(ny, 2100, 3, 14, 2, 30, 0), T("2100-03-14T07:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(be, 2026, 3, 29, 2, 30, 0), T("2026-03-29T01:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(be, 2026, 10, 25, 2, 30, 0), T("2026-10-25T00:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(be, 2026, 10, 25, 3, 0, 0), T("2026-10-25T02:00:00Z"));
    CHECK_T(nb_tz_local_to_utc(be, 2100, 10, 31, 2, 30, 0), T("2100-10-31T00:30:00Z"));
    CHECK_T(nb_tz_local_to_utc(lh, 2026, 10, 4, 2, 15, 0), T("2026-10-03T15:45:00Z"));
    CHECK_T(nb_tz_local_to_utc(lh, 2026, 4, 5, 1, 45, 0), T("2026-04-04T14:45:00Z"));
    CHECK_T(nb_tz_local_to_utc(NULL, 2026, 13, 1, 0, 0, 0), T("2027-01-01T00:00:00Z"));
    CHECK_T(nb_tz_local_to_utc(utc, 2024, 2, 30, 0, 0, 0), T("2024-03-01T00:00:00Z"));
    nb_tz_free(ny);
    nb_tz_free(be);
    nb_tz_free(lh);
    nb_tz_free(utc);
}

static void test_names(void)
{
    const char *bad[] = {"",          "../etc/passwd", "/etc/passwd",    "Europe/../UTC",
                         "Bad Name",  "Europe/",       "Europe//Berlin", "a\\b",
                         "right/UTC", "Nope/Zone",     "Europe",         "zone.tab"};
    for (size_t i = 0; i < NB_ARRAY_LEN(bad); i++) {
        nb_err err = {0};
        CHECK(nb_tz_load(bad[i], &err) == NULL);
        CHECK(err.status == 400 && !strcmp(err.code, NB_E_INVALID_VALUE));
        checks++;
    }
    nb_err err = {0};
    nb_tz *tz = nb_tz_load("Etc/GMT+5", &err); /* POSIX sign: five hours west */
    CHECK(tz && nb_tz_offset(tz, 0) == -5 * 3600);
    nb_tz_free(tz);
}

/* A v2 TZif image with no transitions, one type, and the given footer. */
static size_t make_tzif(uint8_t *out, int32_t utoff, const char *footer)
{
    size_t n = 0;
    for (int part = 0; part < 2; part++) {
        memcpy(out + n, "TZif2", 5);
        memset(out + n + 5, 0, 15);
        n += 20;
        uint32_t counts[6] = {0, 0, 0, 0, 1, 4};
        for (int i = 0; i < 6; i++, n += 4)
            out[n] = 0, out[n + 1] = 0, out[n + 2] = 0, out[n + 3] = (uint8_t)counts[i];
        uint32_t u = (uint32_t)utoff;
        out[n++] = (uint8_t)(u >> 24), out[n++] = (uint8_t)(u >> 16);
        out[n++] = (uint8_t)(u >> 8), out[n++] = (uint8_t)u;
        out[n++] = 0, out[n++] = 0;
        memcpy(out + n, "XXX", 4);
        n += 4;
    }
    n += (size_t)sprintf((char *)out + n, "\n%s\n", footer);
    return n;
}

static void test_footers(void)
{
    uint8_t buf[256];
    nb_err err = {0};
    struct {
        const char *footer, *at;
        int off;
    } cases[] = {
        {"CET-1CEST,M3.5.0,M10.5.0/3", "2031-03-30T00:59:59Z", 3600},
        {"CET-1CEST,M3.5.0,M10.5.0/3", "2031-03-30T01:00:00Z", 7200},
        {"EST5EDT,M3.2.0,M11.1.0", "2027-03-14T07:00:00Z", -4 * 3600},
        {"EST5EDT,M3.2.0,M11.1.0", "2027-11-07T06:00:00Z", -5 * 3600},
        {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "2027-01-15T00:00:00Z", 39600},
        {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "2027-07-15T00:00:00Z", 37800},
        {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "2027-04-03T14:59:59Z", 39600},
        {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "2027-04-03T15:00:00Z", 37800},
        /* Julian forms: J60 is March 1 (Feb 29 never counted), 300 is day 300 from 0 */
        {"AAA3BBB,J60,300", "2028-03-01T04:59:59Z", -3 * 3600},
        {"AAA3BBB,J60,300", "2028-03-01T05:00:00Z", -2 * 3600},
        {"AAA3BBB,J60,300", "2026-10-28T03:59:59Z", -2 * 3600},
        {"AAA3BBB,J60,300", "2026-10-28T04:00:00Z", -3 * 3600},
        /* v3: all-year daylight time with a rule time past 24 h */
        {"EST5EDT,0/0,J365/25", "2030-06-01T00:00:00Z", -4 * 3600},
        {"EST5EDT,0/0,J365/25", "2030-01-01T02:00:00Z", -4 * 3600},
        {"<-03>3", "2030-06-01T00:00:00Z", -3 * 3600},
        {"", "2030-06-01T00:00:00Z", 1234},
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(cases); i++) {
        size_t n = make_tzif(buf, 1234, cases[i].footer);
        nb_tz *tz = nb_tz_parse(buf, n, "test", &err);
        if (!tz) fprintf(stderr, "footer %s: %s\n", cases[i].footer, err.msg);
        CHECK(tz);
        int got = nb_tz_offset(tz, T(cases[i].at));
        if (got != cases[i].off) {
            fprintf(stderr, "footer %s at %s: got %d want %d\n", cases[i].footer, cases[i].at, got,
                    cases[i].off);
            exit(1);
        }
        checks++;
        nb_tz_free(tz);
    }
    const char *bad[] = {"CE",
                         "CET",
                         "CET-1CEST",
                         "CET-1CEST,M13.5.0,M10.5.0",
                         "CET-1CEST,M3.6.0",
                         "CET-1CEST,M3.5.7,M10.5.0",
                         "CET-1CEST,M3.5.0,M10.5.0/200",
                         "<+1>-1",
                         "EST5EDT,J0,J100",
                         "CET-25"};
    for (size_t i = 0; i < NB_ARRAY_LEN(bad); i++) {
        size_t n = make_tzif(buf, 0, bad[i]);
        nb_tz *tz = nb_tz_parse(buf, n, "test", &err);
        if (tz) fprintf(stderr, "footer %s accepted\n", bad[i]);
        CHECK(!tz && err.status == 400);
        checks++;
    }
    /* Every truncation of a real file is refused or parsed, never misread. */
    size_t len;
    char *data = nb_read_file(NB_TZ_DIR "/Europe/Berlin", NB_TZ_FILE_MAX, &len);
    CHECK(data);
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, data, cut);
        nb_tz *tz = nb_tz_parse(copy, cut, "cut", &err);
        CHECK(!tz || nb_tz_offset(tz, T("2026-07-01T00:00:00Z")) != 12345);
        nb_tz_free(tz);
        free(copy);
    }
    nb_tz *tz = nb_tz_parse(data, len, "whole", &err);
    CHECK(tz && nb_tz_offset(tz, T("2026-07-01T00:00:00Z")) == 7200);
    nb_tz_free(tz);
    free(data);
    CHECK(!nb_tz_parse("TZif", 4, "x", &err) && err.status == 400);
}

/* ---- nb_cron ---- */

/* Fires of expr in zone (NULL: UTC) after `after`: each of want[] in turn, "-" for the end. */
static void seq(const char *expr, const char *zname, const char *after, const char *start,
                const char *end, const char *const *want)
{
    nb_err err = {0};
    nb_cron c;
    if (nb_cron_parse(&c, expr, &err) < 0) {
        fprintf(stderr, "%s: %s\n", expr, err.msg);
        exit(1);
    }
    nb_tz *tz = zname ? zone(zname) : NULL;
    int64_t t = T(after), s = start ? T(start) : T("1970-01-01T00:00:00Z");
    int64_t e = end ? T(end) : NB_CRON_NO_END;
    for (int i = 0; want[i]; i++) {
        int64_t got = nb_cron_next(&c, tz, t, s, e);
        if (got != T(want[i])) {
            char g[32];
            fmt(got, g);
            fprintf(stderr, "%s in %s after %s (#%d): got %s want %s\n", expr,
                    zname ? zname : "UTC", after, i, g, want[i]);
            exit(1);
        }
        checks++;
        if (got < 0) break;
        t = got;
    }
    nb_tz_free(tz);
}

#define SEQ(expr, zone, after, ...)                                                                \
    seq(expr, zone, after, NULL, NULL, (const char *const[]){__VA_ARGS__, NULL})

static void test_rate_at(void)
{
    const char *t0 = "2026-01-01T00:00:00Z";
    seq("rate(5 minutes)", NULL, "2025-12-31T23:59:59Z", t0, NULL,
        (const char *const[]){t0, "2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", NULL});
    seq("rate(5 minutes)", NULL, "2026-01-01T00:04:59Z", t0, NULL,
        (const char *const[]){"2026-01-01T00:05:00Z", NULL});
    seq("rate(1 hour)", NULL, t0, t0, "2026-01-01T02:00:00Z",
        (const char *const[]){"2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", "-", NULL});
    seq("rate(2 days)", "America/New_York", "2026-03-07T00:00:00Z", t0, NULL,
        (const char *const[]){"2026-03-08T00:00:00Z", "2026-03-10T00:00:00Z", NULL});
    seq("rate(1 day)", NULL, t0, t0, NULL, (const char *const[]){"2026-01-02T00:00:00Z", NULL});
    seq("rate(30 seconds)", NULL, t0, t0, NULL,
        (const char *const[]){"2026-01-01T00:00:30Z", NULL});
    seq("rate( 1 second )", NULL, t0, t0, NULL,
        (const char *const[]){"2026-01-01T00:00:01Z", NULL});
    seq("rate(1 minute)", NULL, "2025-01-01T00:00:00Z", "2026-01-01T00:00:07Z", NULL,
        (const char *const[]){"2026-01-01T00:00:07Z", "2026-01-01T00:01:07Z", NULL});

    SEQ("at(2026-06-01T12:00:00)", NULL, t0, "2026-06-01T12:00:00Z", "-");
    SEQ("at(2026-06-01T12:00:00)", "Europe/Berlin", t0, "2026-06-01T10:00:00Z", "-");
    SEQ("at(2026-03-08T02:30:00)", "America/New_York", t0, "2026-03-08T07:30:00Z");
    SEQ("at(2026-11-01T01:30:00)", "America/New_York", t0, "2026-11-01T05:30:00Z");
    SEQ("at(2025-06-01T12:00:00)", NULL, t0, "-");
    /* at() ignores start and end, like EventBridge's one-time schedules */
    seq("at(2026-06-01T12:00:00)", NULL, t0, "2027-01-01T00:00:00Z", t0,
        (const char *const[]){"2026-06-01T12:00:00Z", NULL});
}

static void test_cron_utc(void)
{
    const char *t0 = "2026-01-01T00:00:00Z"; /* a Thursday */
    SEQ("cron(0 12 * * ? *)", NULL, t0, "2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z");
    SEQ("cron(*/15 * * * ? *)", NULL, t0, "2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z");
    SEQ("cron(0/20 9-17/4 ? * MON-FRI *)", NULL, t0, "2026-01-01T09:00:00Z", "2026-01-01T09:20:00Z",
        "2026-01-01T09:40:00Z", "2026-01-01T13:00:00Z");
    SEQ("cron(0/20 9-17/4 ? * MON-FRI *)", NULL, "2026-01-02T17:40:00Z", "2026-01-05T09:00:00Z");
    SEQ("cron(15,45 10 1,15 JAN,JUL ? 2026,2027)", NULL, t0, "2026-01-01T10:15:00Z",
        "2026-01-01T10:45:00Z", "2026-01-15T10:15:00Z", "2026-01-15T10:45:00Z",
        "2026-07-01T10:15:00Z");
    SEQ("cron(15,45 10 1,15 JAN,JUL ? 2026,2027)", NULL, "2027-07-15T10:45:00Z", "-");
    SEQ("cron(5 4 ? jan-mar sun 2026)", NULL, t0, "2026-01-04T04:05:00Z");
    SEQ("cron(0 10 ? * 1 *)", NULL, t0, "2026-01-04T10:00:00Z"); /* 1 = Sunday */
    SEQ("cron(0 10 ? * 7 *)", NULL, t0, "2026-01-03T10:00:00Z"); /* 7 = Saturday */
    SEQ("cron(0 10 ? * L *)", NULL, t0, "2026-01-03T10:00:00Z"); /* last day of week */
    SEQ("cron(0 0 1-31/10 * ? 2026)", NULL, t0, "2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z",
        "2026-01-31T00:00:00Z", "2026-02-01T00:00:00Z");
    SEQ("cron(59 23 31 12 ? 2199)", NULL, t0, "2199-12-31T23:59:00Z", "-");
    /* L: last day of the month */
    SEQ("cron(0 0 L * ? *)", NULL, t0, "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z",
        "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z");
    SEQ("cron(0 0 L 2 ? 2028)", NULL, t0, "2028-02-29T00:00:00Z", "-");
    /* LW: Jan 31 2026 is a Saturday, Feb 28 a Saturday, May 31 a Sunday */
    SEQ("cron(0 0 LW * ? 2026)", NULL, t0, "2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z",
        "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z", "2026-05-29T00:00:00Z");
    /* nW: Feb 1 2026 is a Sunday -> Mon 2; Aug 1 a Saturday -> Mon 3 (not July 31) */
    SEQ("cron(0 0 1W * ? 2026)", NULL, t0, "2026-02-02T00:00:00Z", "2026-03-02T00:00:00Z",
        "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z",
        "2026-07-01T00:00:00Z", "2026-08-03T00:00:00Z");
    SEQ("cron(0 0 1W * ? 2026)", NULL, "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z");
    /* 31W: Jan 31 Sat -> Fri 30; no Feb 31; Mar 31 Tue; May 31 Sun (last day) -> Fri 29 */
    SEQ("cron(0 0 31W * ? 2026)", NULL, t0, "2026-01-30T00:00:00Z", "2026-03-31T00:00:00Z",
        "2026-05-29T00:00:00Z", "2026-07-31T00:00:00Z");
    SEQ("cron(0 0 15W * ? 2026)", NULL, "2026-03-01T00:00:00Z", "2026-03-16T00:00:00Z");
    /* dL and d#n */
    SEQ("cron(0 0 ? * 6L 2026)", NULL, t0, "2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z",
        "2026-03-27T00:00:00Z");
    SEQ("cron(0 0 ? * FRIL 2026)", NULL, t0, "2026-01-30T00:00:00Z");
    SEQ("cron(0 0 ? * 6#3 *)", NULL, t0, "2026-01-16T00:00:00Z", "2026-02-20T00:00:00Z");
    SEQ("cron(0 0 ? * MON#5 2026)", NULL, t0, "2026-03-30T00:00:00Z", "2026-06-29T00:00:00Z");
    SEQ("cron(0 0 ? * 1#1 *)", NULL, t0, "2026-01-04T00:00:00Z", "2026-02-01T00:00:00Z");
    /* Leap day: only leap years */
    SEQ("cron(0 12 29 2 ? *)", NULL, t0, "2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z");
    SEQ("cron(0 12 29 2 ? 2029-2031)", NULL, t0, "-");
    SEQ("cron(0 0 31 2 ? *)", NULL, t0, "-");
    SEQ("cron(0 0 30 FEB ? *)", NULL, t0, "-");
    /* Year range exhausted */
    SEQ("cron(0 0 1 1 ? 2026)", NULL, t0, "-");
    SEQ("cron(0 0 1 1 ? 2026)", NULL, "2025-12-31T23:59:59Z", t0, "-");
    /* start and end bound cron schedules */
    seq("cron(0 12 * * ? *)", NULL, t0, "2026-02-01T00:00:00Z", NULL,
        (const char *const[]){"2026-02-01T12:00:00Z", NULL});
    seq("cron(0 12 * * ? *)", NULL, t0, t0, "2026-01-02T11:59:59Z",
        (const char *const[]){"2026-01-01T12:00:00Z", "-", NULL});
    seq("cron(0 12 * * ? *)", NULL, t0, t0, "2026-01-02T12:00:00Z",
        (const char *const[]){"2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z", "-", NULL});
}

static void test_cron_dst(void)
{
    const char *ny = "America/New_York", *be = "Europe/Berlin", *lh = "Australia/Lord_Howe";
    /* 02:30 does not exist on 2026-03-08: fires once at 03:30 EDT */
    SEQ("cron(30 2 * * ? *)", ny, "2026-03-07T12:00:00Z", "2026-03-08T07:30:00Z",
        "2026-03-09T06:30:00Z");
    /* 01:30 happens twice on 2026-11-01: fires once, at the first (EDT) */
    SEQ("cron(30 1 * * ? *)", ny, "2026-10-31T12:00:00Z", "2026-11-01T05:30:00Z",
        "2026-11-02T06:30:00Z");
    SEQ("cron(0/30 * * * ? *)", ny, "2026-03-08T06:00:00Z", "2026-03-08T06:30:00Z",
        "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z");
    /* every local time once: the repeated hour 01:00-01:59 EST is skipped */
    SEQ("cron(0/30 * * * ? *)", ny, "2026-11-01T04:00:00Z", "2026-11-01T04:30:00Z",
        "2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z",
        "2026-11-01T07:30:00Z");
    SEQ("cron(0 9 ? * MON-FRI *)", ny, "2026-03-06T15:00:00Z", "2026-03-09T13:00:00Z");
    SEQ("cron(30 2 * * ? *)", be, "2026-03-28T12:00:00Z", "2026-03-29T01:30:00Z",
        "2026-03-30T00:30:00Z");
    SEQ("cron(30 2 * * ? *)", be, "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z");
    SEQ("cron(0 0 L * ? *)", be, "2026-01-01T00:00:00Z", "2026-01-30T23:00:00Z");
    SEQ("cron(30 2 * * ? *)", be, "2100-03-27T12:00:00Z", "2100-03-28T01:30:00Z");
    /* Lord Howe: 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05 */
    SEQ("cron(15 2 * * ? *)", lh, "2026-10-03T00:00:00Z", "2026-10-03T15:45:00Z",
        "2026-10-04T15:15:00Z");
    SEQ("cron(0/10 2 * * ? *)", lh, "2026-10-03T15:00:00Z", "2026-10-03T15:30:00Z",
        "2026-10-03T15:40:00Z", "2026-10-03T15:50:00Z", "2026-10-04T15:00:00Z");
    /* local order is not UTC order in the gap: 02:40 comes before the shifted 02:15 */
    SEQ("cron(15,40 2 * * ? *)", lh, "2026-10-03T15:00:00Z", "2026-10-03T15:40:00Z",
        "2026-10-03T15:45:00Z", "2026-10-04T15:15:00Z");
    SEQ("cron(45 1 * * ? *)", lh, "2026-04-04T00:00:00Z", "2026-04-04T14:45:00Z",
        "2026-04-05T15:15:00Z");
}

static void test_invalid(void)
{
    const char *bad[] = {
        "",
        "cron(* * * * * *)",         /* neither day field is ? */
        "cron(* * ? * ? *)",         /* both are */
        "cron(0 0 * * ?)",           /* five fields */
        "cron(0 0 * * ? * *)",       /* seven */
        "cron(60 0 * * ? *)",        /* minute out of range */
        "cron(0 24 * * ? *)",        /* hour */
        "cron(0 0 0 * ? *)",         /* day 0 */
        "cron(0 0 32 * ? *)",        /* day 32 */
        "cron(0 0 * 13 ? *)",        /* month */
        "cron(0 0 ? * 0 *)",         /* AWS day-of-week starts at 1 */
        "cron(0 0 ? * 8 *)",         /* and ends at 7 */
        "cron(0 0 * * ? 1969)",      /* year */
        "cron(0 0 * * ? 2200)",      /* year */
        "cron(*/0 0 * * ? *)",       /* step 0 */
        "cron(*/ 0 * * ? *)",        /* empty step */
        "cron(*/x 0 * * ? *)",       /* bad step */
        "cron(*/61 0 * * ? *)",      /* step beyond the field */
        "cron(5-1 0 * * ? *)",       /* backwards range */
        "cron(1,,2 0 * * ? *)",      /* empty list item */
        "cron(0 0 * FOO ? *)",       /* bad month name */
        "cron(0 0 ? * FUNDAY *)",    /* bad day name */
        "cron(0 0 ? JANUARY MON *)", /* long names are not names */
        "cron(? 0 * * ? *)",         /* ? elsewhere */
        "cron(0 0 L,5 * ? *)",       /* L in a list */
        "cron(0 0 1-5W * ? *)",      /* W with a range */
        "cron(0 0 32W * ? *)",       /* W day out of range */
        "cron(0 0 ? * 6#6 *)",       /* n beyond 5 */
        "cron(0 0 ? * 6#0 *)",       /* n below 1 */
        "cron(0 0 ? * 9L *)",        /* day out of range */
        "cron(0 0 ? * 6# *)",        /* missing n */
        "cron(-1 0 * * ? *)",        /* negative */
        "cron(0 0 * * ? *",          /* no ) */
        "cron()",                    /* empty */
        "rate(0 minutes)",           /* zero */
        "rate(-5 minutes)",          /* negative */
        "rate(5 minute)",            /* singular with N > 1 */
        "rate(1 minutes)",           /* plural with N = 1 */
        "rate(5 weeks)",             /* unit */
        "rate(5)",                   /* no unit */
        "rate(minutes)",             /* no value */
        "rate(5 minutes extra)",     /* trailing text */
        "rate(99999999 minutes)",    /* over the cap */
        "at(2026-02-29T00:00:00)",   /* not a leap year */
        "at(2026-13-01T00:00:00)",   /* month */
        "at(2026-01-01T24:00:00)",   /* hour */
        "at(2026-01-01 00:00:00)",   /* separator */
        "at(2026-01-01T00:00)",      /* short */
        "at(1969-12-31T23:59:59)",   /* year */
        "every(5 minutes)",          /* kind */
        "CRON(0 0 * * ? *)",         /* case of the kind */
    };
    for (size_t i = 0; i < NB_ARRAY_LEN(bad); i++) {
        nb_err err = {0};
        nb_cron c;
        if (nb_cron_parse(&c, bad[i], &err) == 0) {
            fprintf(stderr, "accepted invalid '%s'\n", bad[i]);
            exit(1);
        }
        CHECK(err.status == 400 && !strcmp(err.code, NB_E_INVALID_VALUE) && err.msg[0]);
        CHECK(c.kind == 0);
        checks++;
    }
    /* The message names the field and the problem. */
    nb_err err = {0};
    nb_cron c;
    CHECK(nb_cron_parse(&c, "cron(0 0 ? * 9 *)", &err) < 0);
    CHECK_STR(err.msg, "cron day-of-week: '9' is out of range 1-7");
    CHECK(nb_cron_parse(&c, "cron(0 0 * * * *)", &err) < 0);
    CHECK(strstr(err.msg, "one of them must be '?'"));
    CHECK(nb_cron_parse(&c, "cron(0 0 * FOO ? *)", &err) < 0);
    CHECK_STR(err.msg, "cron month: 'FOO' is not a number or a name");
    CHECK(nb_cron_parse(&c, "rate(5 minute)", &err) < 0);
    CHECK(strstr(err.msg, "plural"));
    CHECK(nb_cron_parse(&c, "cron(\x01\xff 0 * * ? *)", &err) < 0);
    CHECK(strstr(err.msg, "'?"
                          "?'"));
    CHECK(nb_cron_parse(&c, NULL, &err) < 0);
    char longx[NB_CRON_EXPR_MAX + 8];
    memset(longx, 'x', sizeof longx - 1);
    longx[sizeof longx - 1] = 0;
    CHECK(nb_cron_parse(&c, longx, &err) < 0);
}

static void test_describe(void)
{
    nb_err err = {0};
    nb_cron c;
    char buf[80];
    CHECK(nb_cron_parse(&c, "rate(5 minutes)", &err) == 0);
    nb_cron_describe(&c, buf, sizeof buf);
    CHECK_STR(buf, "every 5 minutes");
    CHECK(nb_cron_parse(&c, "rate(1 hour)", &err) == 0);
    nb_cron_describe(&c, buf, sizeof buf);
    CHECK_STR(buf, "every hour");
    CHECK(nb_cron_parse(&c, "rate(120 seconds)", &err) == 0);
    nb_cron_describe(&c, buf, sizeof buf);
    CHECK_STR(buf, "every 2 minutes");
    CHECK(nb_cron_parse(&c, "at(2026-06-01T12:00:00)", &err) == 0);
    nb_cron_describe(&c, buf, sizeof buf);
    CHECK_STR(buf, "once at 2026-06-01T12:00:00 local time");
}

/* A busy schedule over years of a DST zone: always strictly increasing, quickly. */
static void test_walk(void)
{
    nb_err err = {0};
    nb_cron c;
    nb_tz *tz = zone("Australia/Lord_Howe");
    CHECK(nb_cron_parse(&c, "cron(0/7 1-3 ? * SUN-SAT 2025-2028)", &err) == 0);
    int64_t t = T("2025-01-01T00:00:00Z"), n = 0;
    int64_t start_us = nb_mono_us();
    for (;;) {
        int64_t next = nb_cron_next(&c, tz, t, 0, NB_CRON_NO_END);
        if (next < 0) break;
        CHECK(next > t);
        t = next;
        n++;
    }
    checks++;
    printf("walk: %lld fires in %lld ms\n", (long long)n,
           (long long)(nb_mono_us() - start_us) / 1000);
    CHECK(n > 4 * 365 * 3 * 8);
    nb_tz_free(tz);
}

int main(void)
{
    test_offsets();
    test_names();
    test_footers();
    test_rate_at();
    test_cron_utc();
    test_cron_dst();
    test_invalid();
    test_describe();
    test_walk();
    printf("test_cron: %d checks passed\n", checks);
    return 0;
}
