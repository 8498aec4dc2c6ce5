/* nb_cron: parsing and next-fire computation. See cron.h for the contract and
 * docs/internals/cron.md for the design. */
#include "events/cron.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Instants are clamped to this range (about +-2 million years) so sums never overflow. */
#define CRON_T_LIMIT ((int64_t)1 << 46)

static int64_t div_floor(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t clamp(int64_t t)
{
    return t > CRON_T_LIMIT ? CRON_T_LIMIT : t < -CRON_T_LIMIT ? -CRON_T_LIMIT : t;
}

/* Copies at most 32 bytes of user text for an error message, printable ASCII only, so the
 * message stays valid JSON material whatever the input. */
static const char *show(const char *s, size_t n, char out[40])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 32; i++)
        out[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > 32) out[k++] = '.', out[k++] = '.', out[k++] = '.';
    out[k] = 0;
    return out;
}

static int invalid(nb_err *err, const char *fmt, const char *a, size_t n, const char *b)
{
    char tok[40];
    return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s '%s'%s", fmt, show(a, n, tok), b);
}

/* ---- rate() and at() ---- */

static int parse_rate(nb_cron *c, const char *s, nb_err *err)
{
    static const struct {
        const char *one;
        int64_t secs;
    } units[] = {{"second", 1}, {"minute", 60}, {"hour", 3600}, {"day", 86400}};
    const char *p = s;
    while (*p == ' ')
        p++;
    int64_t n = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (*p++ - '0');
        if (n > NB_CRON_RATE_MAX)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "rate value: over %d",
                              NB_CRON_RATE_MAX);
    }
    if (p == digits) return invalid(err, "rate value: not a positive integer:", s, strlen(s), "");
    if (n == 0) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "rate value: must be at least 1");
    if (*p != ' ') return invalid(err, "rate: expected 'value unit', got", s, strlen(s), "");
    while (*p == ' ')
        p++;
    const char *u = p;
    while (*p >= 'a' && *p <= 'z')
        p++;
    size_t ulen = (size_t)(p - u);
    while (*p == ' ')
        p++;
    if (*p) return invalid(err, "rate: unexpected text after the unit:", p, strlen(p), "");
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t l = strlen(units[i].one);
        if (strncmp(u, units[i].one, l) != 0) continue;
        int plural = ulen == l + 1 && u[l] == 's';
        if (ulen != l && !plural) continue;
        if (plural != (n > 1))
            return invalid(err, "rate unit:", u, ulen,
                           n > 1 ? " must be plural when the value is over 1"
                                 : " must be singular when the value is 1");
        c->kind = NB_CRON_RATE;
        c->period_s = n * units[i].secs;
        return 0;
    }
    return invalid(err, "rate unit:", u, ulen,
                   " is not one of minute(s), hour(s), day(s), second(s)");
}

static int parse_at(nb_cron *c, const char *s, nb_err *err)
{
    /* yyyy-mm-ddThh:mm:ss, every digit where the template has a 'd' */
    static const char tmpl[] = "dddd-dd-ddTdd:dd:dd";
    static const int pos[6] = {0, 5, 8, 11, 14, 17}, len[6] = {4, 2, 2, 2, 2, 2};
    size_t n = strlen(s);
    int ok = n == sizeof tmpl - 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = tmpl[i] == 'd' ? s[i] >= '0' && s[i] <= '9' : s[i] == tmpl[i];
    if (!ok) return invalid(err, "at:", s, n, " is not yyyy-mm-ddThh:mm:ss");
    int v[6];
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int k = 0; k < len[f]; k++)
            v[f] = v[f] * 10 + (s[pos[f] + k] - '0');
    }
    const char *what = NULL;
    if (v[0] < NB_CRON_YEAR_MIN || v[0] > NB_CRON_YEAR_MAX)
        what = " has a year outside 1970-2199";
    else if (v[1] < 1 || v[1] > 12)
        what = " has a month outside 1-12";
    else if (v[2] < 1 || v[2] > nb_tz_days_in_month(v[0], v[1]))
        what = " has no such day in that month";
    else if (v[3] > 23 || v[4] > 59 || v[5] > 59)
        what = " has a time outside 00:00:00-23:59:59";
    if (what) return invalid(err, "at:", s, n, what);
    c->kind = NB_CRON_AT;
    memcpy(c->at, v, sizeof v);
    return 0;
}

/* ---- cron() ---- */

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const wday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

typedef struct field {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] is value min + i */
} field;

static const field F_MIN = {"minutes", 0, 59, NULL};
static const field F_HOUR = {"hours", 0, 23, NULL};
static const field F_MDAY = {"day-of-month", 1, 31, NULL};
static const field F_MON = {"month", 1, 12, month_names};
static const field F_WDAY = {"day-of-week", 1, 7, wday_names};
static const field F_YEAR = {"year", NB_CRON_YEAR_MIN, NB_CRON_YEAR_MAX, NULL};

/* A field's value set: bit (v - min); 256 bits cover the 230 years. */
typedef struct vset {
    uint64_t w[4];
} vset;

static int field_err(nb_err *err, const field *f, const char *tok, size_t n, const char *what)
{
    char t[40];
    return nb_err_set(err, 400, NB_E_INVALID_VALUE, "cron %s: '%s' %s", f->name, show(tok, n, t),
                      what);
}

static int parse_value(const field *f, const char *s, size_t n, int *out, nb_err *err)
{
    if (n == 0) return field_err(err, f, s, n, "is empty");
    if (s[0] >= '0' && s[0] <= '9') {
        int v = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') return field_err(err, f, s, n, "is not a number");
            if (v > 100000) return field_err(err, f, s, n, "is out of range");
            v = v * 10 + (s[i] - '0');
        }
        if (v < f->min || v > f->max) {
            char what[64];
            snprintf(what, sizeof what, "is out of range %d-%d", f->min, f->max);
            return field_err(err, f, s, n, what);
        }
        *out = v;
        return 0;
    }
    if (f->names && n == 3)
        for (int i = 0; i <= f->max - f->min; i++)
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->min + i;
                return 0;
            }
    if (s[0] == '?')
        return field_err(err, f, s, n, "is only allowed in day-of-month or day-of-week");
    return field_err(err, f, s, n, f->names ? "is not a number or a name" : "is not a number");
}

/* One list item: `*`, `a`, `a-b`, each optionally followed by `/step`. */
static int parse_item(const field *f, const char *s, size_t n, vset *set, nb_err *err)
{
    const char *slash = memchr(s, '/', n);
    size_t blen = slash ? (size_t)(slash - s) : n;
    int lo, hi, step = 1;
    if (slash) {
        size_t slen = n - blen - 1;
        const char *st = slash + 1;
        int width = f->max - f->min + 1;
        if (slen == 0 || slen > 4) return field_err(err, f, s, n, "has a bad step");
        step = 0;
        for (size_t i = 0; i < slen; i++) {
            if (st[i] < '0' || st[i] > '9') return field_err(err, f, s, n, "has a bad step");
            step = step * 10 + (st[i] - '0');
        }
        if (step < 1 || step > width) {
            char what[64];
            snprintf(what, sizeof what, "has a step outside 1-%d", width);
            return field_err(err, f, s, n, what);
        }
    }
    const char *dash = memchr(s, '-', blen);
    if (blen == 1 && s[0] == '*') {
        lo = f->min;
        hi = f->max;
    } else if (dash) {
        if (parse_value(f, s, (size_t)(dash - s), &lo, err) < 0 ||
            parse_value(f, dash + 1, blen - (size_t)(dash - s) - 1, &hi, err) < 0)
            return -1;
        if (lo > hi) return field_err(err, f, s, n, "is a range whose start is after its end");
    } else {
        if (parse_value(f, s, blen, &lo, err) < 0) return -1;
        hi = slash ? f->max : lo; /* "a/n": from a to the field's end */
    }
    for (int v = lo; v <= hi; v += step)
        set->w[(v - f->min) / 64] |= 1ull << ((v - f->min) % 64);
    return 0;
}

static int parse_list(const field *f, const char *s, size_t n, vset *set, nb_err *err)
{
    memset(set, 0, sizeof *set);
    const char *p = s, *end = s + n;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (e == p) return field_err(err, f, s, n, "has an empty list item");
        if (parse_item(f, p, (size_t)(e - p), set, err) < 0) return -1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

static int parse_mday(nb_cron *c, const char *s, size_t n, nb_err *err)
{
    const field *f = &F_MDAY;
    if (n == 1 && s[0] == '?') return c->dom_any = 1, 0;
    if (n == 1 && s[0] == 'L') return c->dom_last = 1, 0;
    if (n == 2 && s[0] == 'L' && s[1] == 'W') return c->dom_last_wday = 1, 0;
    if (n >= 2 && s[n - 1] == 'W') {
        if (memchr(s, ',', n) || memchr(s, '-', n) || memchr(s, '/', n))
            return field_err(err, f, s, n, "uses 'W' with a list, range or step");
        return parse_value(f, s, n - 1, &c->dom_near, err);
    }
    if (memchr(s, 'L', n) || memchr(s, 'W', n))
        return field_err(err, f, s, n, "uses 'L' or 'W' other than as L, LW or nW alone");
    vset v;
    if (parse_list(f, s, n, &v, err) < 0) return -1;
    c->mdays = (uint32_t)(v.w[0] << 1); /* bit d for day d */
    return 0;
}

static int parse_wday(nb_cron *c, const char *s, size_t n, nb_err *err)
{
    const field *f = &F_WDAY;
    if (n == 1 && s[0] == '?') return 1; /* "is any": the caller checks the pair */
    if (n == 1 && s[0] == 'L') return c->wdays = 1u << 7, 0; /* last day of the week: SAT */
    const char *hash = memchr(s, '#', n);
    if (hash || (n >= 2 && (s[n - 1] == 'L' || s[n - 1] == 'l'))) {
        if (memchr(s, ',', n) || memchr(s, '-', n) || memchr(s, '/', n))
            return field_err(err, f, s, n, "uses 'L' or '#' with a list, range or step");
        if (!hash) return parse_value(f, s, n - 1, &c->dow_last, err);
        size_t dlen = (size_t)(hash - s), nlen = n - dlen - 1;
        if (parse_value(f, s, dlen, &c->dow_nth_day, err) < 0) return -1;
        if (nlen != 1 || hash[1] < '1' || hash[1] > '5')
            return field_err(err, f, s, n, "needs '#n' with n in 1-5");
        c->dow_nth = hash[1] - '0';
        return 0;
    }
    vset v;
    if (parse_list(f, s, n, &v, err) < 0) return -1;
    c->wdays = (uint8_t)(v.w[0] << 1); /* bit d for day d, 1 = SUN */
    return 0;
}

static int parse_cron(nb_cron *c, const char *s, nb_err *err)
{
    const char *tok[6];
    size_t len[6];
    int n = 0;
    for (const char *p = s;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) break;
        const char *b = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (n == 6)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "cron: more than 6 fields (minutes hours day-of-month month "
                              "day-of-week year)");
        tok[n] = b;
        len[n++] = (size_t)(p - b);
    }
    if (n != 6)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "cron: %d fields, want 6 (minutes hours day-of-month month day-of-week "
                          "year)",
                          n);
    vset v;
    if (parse_list(&F_MIN, tok[0], len[0], &v, err) < 0) return -1;
    c->minutes = v.w[0];
    if (parse_list(&F_HOUR, tok[1], len[1], &v, err) < 0) return -1;
    c->hours = (uint32_t)v.w[0];
    if (parse_mday(c, tok[2], len[2], err) < 0) return -1;
    if (parse_list(&F_MON, tok[3], len[3], &v, err) < 0) return -1;
    c->months = (uint16_t)(v.w[0] << 1);
    int wday_any = parse_wday(c, tok[4], len[4], err);
    if (wday_any < 0) return -1;
    if (parse_list(&F_YEAR, tok[5], len[5], &v, err) < 0) return -1;
    memcpy(c->years, v.w, sizeof c->years);
    /* AWS: one of the two day fields decides, the other says '?'. */
    if (c->dom_any && wday_any)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "cron day-of-month, day-of-week: only one of them may be '?'");
    if (!c->dom_any && !wday_any)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "cron day-of-month, day-of-week: one of them must be '?'");
    c->kind = NB_CRON_CRON;
    return 0;
}

int nb_cron_parse(nb_cron *c, const char *expr, nb_err *err)
{
    memset(c, 0, sizeof *c);
    size_t n = expr ? strlen(expr) : 0;
    if (n > NB_CRON_EXPR_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "schedule expression: longer than %d",
                          NB_CRON_EXPR_MAX);
    static const struct {
        const char *prefix;
        int (*parse)(nb_cron *, const char *, nb_err *);
    } kinds[] = {{"rate(", parse_rate}, {"at(", parse_at}, {"cron(", parse_cron}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t pl = strlen(kinds[i].prefix);
        if (n < pl || strncmp(expr, kinds[i].prefix, pl) != 0) continue;
        if (expr[n - 1] != ')') return invalid(err, "schedule expression:", expr, n, " lacks ')'");
        char inner[NB_CRON_EXPR_MAX + 1];
        memcpy(inner, expr + pl, n - pl - 1);
        inner[n - pl - 1] = 0;
        if (kinds[i].parse(c, inner, err) < 0) {
            memset(c, 0, sizeof *c);
            return -1;
        }
        return 0;
    }
    return invalid(err, "schedule expression:", expr ? expr : "", n,
                   " is not rate(...), at(...) or cron(...)");
}

/* ---- evaluation ---- */

static int year_in(const nb_cron *c, int64_t y)
{
    int64_t i = y - NB_CRON_YEAR_MIN;
    return i >= 0 && i < 256 && (c->years[i / 64] >> (i % 64) & 1);
}

/* Lowest set bit of mask at or above `from` (< 64), or -1. */
static int bit_from(uint64_t mask, int from)
{
    mask = from >= 64 ? 0 : mask >> from << from;
    return mask ? __builtin_ctzll(mask) : -1;
}

/* The days (bit d for day d) of month y-mo the day fields select. */
static uint32_t month_days(const nb_cron *c, int64_t y, int mo)
{
    int len = nb_tz_days_in_month(y, mo);
    int64_t first = nb_tz_days_from_civil(y, mo, 1);
    int wd1 = (int)(((first + 4) % 7 + 7) % 7); /* 0 = Sunday; 1970-01-01 was a Thursday */
#define WD(day) ((wd1 + (day)-1) % 7)
    if (!c->dom_any) {
        if (c->dom_last) return 1u << len;
        if (c->dom_last_wday) {
            int d = len - (WD(len) == 6 ? 1 : WD(len) == 0 ? 2 : 0);
            return 1u << d;
        }
        if (c->dom_near) {
            /* Nearest weekday without leaving the month: Saturday the 1st -> Monday the 3rd,
             * Sunday the last -> Friday before. */
            int n = c->dom_near, d = n;
            if (n > len) return 0;
            if (WD(n) == 6) d = n == 1 ? 3 : n - 1;
            if (WD(n) == 0) d = n == len ? n - 2 : n + 1;
            return 1u << d;
        }
        return c->mdays & (uint32_t)((2u << len) - 2);
    }
    uint32_t m = 0;
    for (int d = 1; d <= len; d++) {
        int aws = WD(d) + 1; /* AWS numbering: 1 = Sunday */
        int hit;
        if (c->dow_last)
            hit = aws == c->dow_last && d + 7 > len;
        else if (c->dow_nth_day)
            hit = aws == c->dow_nth_day && (d - 1) / 7 + 1 == c->dow_nth;
        else
            hit = c->wdays >> aws & 1;
        if (hit) m |= 1u << d;
    }
#undef WD
    return m;
}

/* The first matching local minute at or after local second L, or -1 past the last year. Each
 * mismatch jumps to the start of the next candidate of that field, so a search costs at most
 * a few steps per year. */
static int64_t next_local(const nb_cron *c, int64_t L)
{
    L = div_floor(L + 59, 60) * 60;
    int64_t lo = nb_tz_days_from_civil(NB_CRON_YEAR_MIN, 1, 1) * 86400;
    if (L < lo) L = lo;
    for (;;) {
        int64_t days = div_floor(L, 86400), y;
        int secs = (int)(L - days * 86400), mo, d;
        nb_tz_civil_from_days(days, &y, &mo, &d);
        int h = secs / 3600, mi = secs % 3600 / 60;
        if (y > NB_CRON_YEAR_MAX) return -1;
        if (!year_in(c, y)) {
            int64_t ny = y + 1;
            while (ny <= NB_CRON_YEAR_MAX && !year_in(c, ny))
                ny++;
            if (ny > NB_CRON_YEAR_MAX) return -1;
            L = nb_tz_days_from_civil(ny, 1, 1) * 86400;
            continue;
        }
        if (!(c->months >> mo & 1)) {
            int nm = bit_from(c->months, mo + 1);
            L = (nm > 0 ? nb_tz_days_from_civil(y, nm, 1) : nb_tz_days_from_civil(y + 1, 1, 1)) *
                86400;
            continue;
        }
        uint32_t md = month_days(c, y, mo);
        if (!(md >> d & 1)) {
            int nd = bit_from(md, d + 1);
            L = (nd > 0 ? days + (nd - d) : days + nb_tz_days_in_month(y, mo) - d + 1) * 86400;
            continue;
        }
        if (!(c->hours >> h & 1)) {
            int nh = bit_from(c->hours, h + 1);
            L = nh > 0 ? days * 86400 + nh * 3600 : (days + 1) * 86400;
            continue;
        }
        if (!(c->minutes >> mi & 1)) {
            int nm = bit_from(c->minutes, mi + 1);
            L = nm > 0 ? days * 86400 + h * 3600 + nm * 60 : days * 86400 + (h + 1) * 3600;
            continue;
        }
        return L;
    }
}

static int64_t local_secs_to_utc(const nb_tz *tz, int64_t L)
{
    int64_t days = div_floor(L, 86400), y;
    int secs = (int)(L - days * 86400), mo, d;
    nb_tz_civil_from_days(days, &y, &mo, &d);
    return nb_tz_local_to_utc(tz, (int)y, mo, d, secs / 3600, secs % 3600 / 60, secs % 60);
}

int64_t nb_cron_next(const nb_cron *c, const nb_tz *tz, int64_t after, int64_t start, int64_t end)
{
    after = clamp(after);
    start = clamp(start);
    end = clamp(end);
    switch (c->kind) {
    case NB_CRON_AT: {
        int64_t u =
            nb_tz_local_to_utc(tz, c->at[0], c->at[1], c->at[2], c->at[3], c->at[4], c->at[5]);
        return u > after ? u : -1;
    }
    case NB_CRON_RATE: {
        if (c->period_s <= 0) return -1;
        int64_t u =
            after < start ? start : start + ((after - start) / c->period_s + 1) * c->period_s;
        return u <= end ? u : -1;
    }
    case NB_CRON_CRON:
        break;
    default:
        return -1;
    }
    if (after < start - 1) after = start - 1;
    /* Local order and UTC order disagree inside a DST gap (a shifted time lands after the
     * times just past the gap), so take the smallest instant over every local candidate that
     * could map after `after`: a local time L maps into [L - max_off, L - min_off]. */
    int min_off, max_off;
    nb_tz_offset_range(tz, &min_off, &max_off);
    int64_t best = INT64_MAX;
    for (int64_t L = after + min_off + 1;; L += 60) {
        L = next_local(c, L);
        if (L < 0 || L - max_off >= best || L - max_off > end) break;
        int64_t u = local_secs_to_utc(tz, L);
        if (u > after && u < best) best = u;
    }
    return best <= end ? best : -1;
}

void nb_cron_describe(const nb_cron *c, char *buf, size_t size)
{
    if (!size) return;
    switch (c->kind) {
    case NB_CRON_RATE: {
        static const struct {
            int64_t secs;
            const char *unit;
        } u[] = {{86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
        for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
            if (c->period_s % u[i].secs == 0) {
                int64_t n = c->period_s / u[i].secs;
                if (n == 1)
                    snprintf(buf, size, "every %s", u[i].unit);
                else
                    snprintf(buf, size, "every %lld %ss", (long long)n, u[i].unit);
                return;
            }
        break;
    }
    case NB_CRON_AT:
        snprintf(buf, size, "once at %04d-%02d-%02dT%02d:%02d:%02d local time", c->at[0], c->at[1],
                 c->at[2], c->at[3], c->at[4], c->at[5]);
        return;
    case NB_CRON_CRON:
        snprintf(buf, size, "on a cron schedule");
        return;
    }
    snprintf(buf, size, "never");
}
