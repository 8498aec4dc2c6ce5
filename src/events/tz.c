/* nb_tz: TZif parsing and offset arithmetic. See tz.h for the contract. */
#include "events/tz.h"

#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Instants are clamped to about +-2 million years so that adding offsets and multiplying days
 * can never overflow, whatever a caller (or the fuzzer) passes. */
#define T_LIMIT   ((int64_t)1 << 46)
#define MAX_OFF   93599 /* RFC 8536: |utoff| below 26 hours */
#define MAX_TYPES 256

/* One end of a DST period in a POSIX TZ rule: "Mm.w.d", "Jn" or "n", then "/time". */
typedef struct tz_rule {
    char kind;    /* 'M', 'J' (1..365, Feb 29 never counted) or 'D' (0..365, counted) */
    int m, w, d;  /* month 1-12, week 1-5 (5 = last), weekday 0-6 (0 = Sunday) */
    int n;        /* day number for 'J' and 'D' */
    int32_t time; /* seconds after local midnight, -167h..167h */
} tz_rule;

struct nb_tz {
    char name[NB_TZ_NAME_MAX + 1];
    size_t ntrans;
    int64_t *trans;      /* ascending transition instants */
    uint8_t *trans_type; /* type in effect from trans[i] */
    size_t ntypes;
    int32_t type_off[MAX_TYPES];
    int has_footer, has_dst;
    int32_t std_off, dst_off; /* east-positive */
    tz_rule start, end;
    int min_off, max_off;
};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t nb_tz_days_from_civil(int64_t y, int mo, int d)
{
    /* Count from March so the leap day is the last day of the "year". */
    y -= mo <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void nb_tz_civil_from_days(int64_t days, int64_t *y, int *mo, int *d)
{
    int64_t z = days + 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *mo = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*mo <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int nb_tz_days_in_month(int64_t y, int mo)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return mo == 2 && is_leap(y) ? 29 : len[mo - 1];
}

/* ---- POSIX TZ footer ---- */

static int parse_abbr(const char **pp)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
               (p[n] >= '0' && p[n] <= '9') || p[n] == '+' || p[n] == '-')
            n++;
        if (p[n] != '>' || n < 3) return -1;
        *pp = p + n + 1;
        return 0;
    }
    while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z'))
        n++;
    if (n < 3) return -1;
    *pp = p + n;
    return 0;
}

static int parse_num(const char **pp, int maxdigits, int *out)
{
    const char *p = *pp;
    int v = 0, n = 0;
    while (*p >= '0' && *p <= '9' && n < maxdigits) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0) return -1;
    *pp = p;
    *out = v;
    return 0;
}

/* [+-]hh[:mm[:ss]] with hours up to max_h; returns the signed seconds. */
static int parse_hms(const char **pp, int max_h, int32_t *out)
{
    const char *p = *pp;
    int sign = 1, h, m = 0, s = 0;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (parse_num(&p, 3, &h) < 0 || h > max_h) return -1;
    if (*p == ':') {
        p++;
        if (parse_num(&p, 2, &m) < 0 || m > 59) return -1;
        if (*p == ':') {
            p++;
            if (parse_num(&p, 2, &s) < 0 || s > 59) return -1;
        }
    }
    *out = sign * (h * 3600 + m * 60 + s);
    *pp = p;
    return 0;
}

static int parse_rule(const char **pp, tz_rule *r)
{
    const char *p = *pp;
    memset(r, 0, sizeof *r);
    if (*p == 'M') {
        p++;
        r->kind = 'M';
        if (parse_num(&p, 2, &r->m) < 0 || r->m < 1 || r->m > 12 || *p++ != '.') return -1;
        if (parse_num(&p, 1, &r->w) < 0 || r->w < 1 || r->w > 5 || *p++ != '.') return -1;
        if (parse_num(&p, 1, &r->d) < 0 || r->d > 6) return -1;
    } else if (*p == 'J') {
        p++;
        r->kind = 'J';
        if (parse_num(&p, 3, &r->n) < 0 || r->n < 1 || r->n > 365) return -1;
    } else {
        r->kind = 'D';
        if (parse_num(&p, 3, &r->n) < 0 || r->n > 365) return -1;
    }
    r->time = 7200; /* POSIX default: 02:00 */
    if (*p == '/') {
        p++;
        /* RFC 8536 (v3) widens the rule time to -167..167 hours. */
        if (parse_hms(&p, 167, &r->time) < 0) return -1;
    }
    *pp = p;
    return 0;
}

static int parse_footer(nb_tz *tz, const char *s)
{
    const char *p = s;
    int32_t off;
    if (parse_abbr(&p) < 0 || parse_hms(&p, 24, &off) < 0) return -1;
    tz->std_off = -off; /* POSIX counts west of Greenwich as positive */
    tz->has_footer = 1;
    if (*p == 0) return 0;
    if (parse_abbr(&p) < 0) return -1;
    tz->has_dst = 1;
    tz->dst_off = tz->std_off + 3600;
    if (*p != ',' && *p != 0) {
        if (parse_hms(&p, 24, &off) < 0) return -1;
        tz->dst_off = -off;
    }
    /* TZif footers always carry the rule; POSIX's implementation-defined default is not
     * guessed. */
    if (*p++ != ',' || parse_rule(&p, &tz->start) < 0) return -1;
    if (*p++ != ',' || parse_rule(&p, &tz->end) < 0) return -1;
    return *p == 0 ? 0 : -1;
}

/* Local seconds (since the epoch, as if local time were UTC) of a rule's moment in year y. */
static int64_t rule_local(const tz_rule *r, int64_t y)
{
    int64_t day;
    if (r->kind == 'M') {
        int64_t first = nb_tz_days_from_civil(y, r->m, 1);
        int wd_first = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
        int64_t dd = (r->d - wd_first + 7) % 7 + (int64_t)(r->w - 1) * 7;
        int len = nb_tz_days_in_month(y, r->m);
        while (dd >= len)
            dd -= 7; /* week 5 means the last such weekday */
        day = first + dd;
    } else if (r->kind == 'J') {
        day = nb_tz_days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    } else {
        day = nb_tz_days_from_civil(y, 1, 1) + r->n;
    }
    return day * 86400 + r->time;
}

static int footer_offset(const nb_tz *tz, int64_t t)
{
    if (!tz->has_dst) return tz->std_off;
    int64_t y;
    int mo, d;
    nb_tz_civil_from_days(floor_div(t + tz->std_off, 86400), &y, &mo, &d);
    /* The start moment is given in standard time, the end moment in daylight time. */
    int64_t s = rule_local(&tz->start, y) - tz->std_off;
    int64_t e = rule_local(&tz->end, y) - tz->dst_off;
    int dst = s < e ? (t >= s && t < e) : !(t >= e && t < s); /* southern: spans new year */
    return dst ? tz->dst_off : tz->std_off;
}

/* ---- TZif ---- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct tzif_hdr {
    uint32_t isut, isstd, leap, time, type, chars;
} tzif_hdr;

static int read_hdr(const uint8_t *p, size_t avail, tzif_hdr *h)
{
    if (avail < 44 || memcmp(p, "TZif", 4) != 0) return -1;
    h->isut = be32(p + 20);
    h->isstd = be32(p + 24);
    h->leap = be32(p + 28);
    h->time = be32(p + 32);
    h->type = be32(p + 36);
    h->chars = be32(p + 40);
    return 0;
}

/* Size of a data block; 64-bit sums of 32-bit counts cannot overflow. */
static uint64_t block_size(const tzif_hdr *h, unsigned tsize)
{
    return (uint64_t)h->time * (tsize + 1) + (uint64_t)h->type * 6 + h->chars +
           (uint64_t)h->leap * (tsize + 4) + h->isstd + h->isut;
}

static nb_tz *bad(nb_tz *tz, nb_err *err, const char *name, const char *what)
{
    /* name may point into tz: format before freeing */
    nb_err_set(err, 400, NB_E_INVALID_VALUE, "time zone '%s': %s", name, what);
    nb_tz_free(tz);
    return NULL;
}

static void set_range(nb_tz *tz)
{
    tz->min_off = tz->max_off = tz->has_footer ? tz->std_off : tz->type_off[0];
    for (size_t i = 0; i < tz->ntypes; i++) {
        if (tz->type_off[i] < tz->min_off) tz->min_off = tz->type_off[i];
        if (tz->type_off[i] > tz->max_off) tz->max_off = tz->type_off[i];
    }
    if (tz->has_footer) {
        int o[2] = {tz->std_off, tz->has_dst ? tz->dst_off : tz->std_off};
        for (int i = 0; i < 2; i++) {
            if (o[i] < tz->min_off) tz->min_off = o[i];
            if (o[i] > tz->max_off) tz->max_off = o[i];
        }
    }
}

nb_tz *nb_tz_parse(const void *data, size_t len, const char *name, nb_err *err)
{
    const uint8_t *p = data, *end = p + len;
    nb_tz *tz = calloc(1, sizeof *tz);
    if (!tz) {
        nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(tz->name, sizeof tz->name, "%s", name);
    name = tz->name;
    if (len > NB_TZ_FILE_MAX) return bad(tz, err, name, "file too large");
    tzif_hdr h;
    if (read_hdr(p, len, &h) < 0) return bad(tz, err, name, "not a TZif file");
    unsigned tsize = 4;
    if (p[4] >= '2') {
        /* v2+: skip the 32-bit block; the 64-bit one follows with its own header. */
        uint64_t skip = 44 + block_size(&h, 4);
        if (skip > len) return bad(tz, err, name, "truncated");
        p += skip;
        if (read_hdr(p, (size_t)(end - p), &h) < 0) return bad(tz, err, name, "bad v2 header");
        tsize = 8;
    }
    p += 44;
    if (block_size(&h, tsize) > (uint64_t)(end - p)) return bad(tz, err, name, "truncated");
    if (h.leap) return bad(tz, err, name, "leap-second zones are not supported");
    if (h.type == 0 || h.type > MAX_TYPES) return bad(tz, err, name, "bad type count");
    if ((h.isstd && h.isstd != h.type) || (h.isut && h.isut != h.type))
        return bad(tz, err, name, "bad indicator count");

    tz->ntrans = h.time;
    tz->ntypes = h.type;
    tz->trans = malloc((h.time ? h.time : 1) * sizeof *tz->trans);
    tz->trans_type = malloc(h.time ? h.time : 1);
    if (!tz->trans || !tz->trans_type) {
        nb_tz_free(tz);
        nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
        return NULL;
    }
    for (uint32_t i = 0; i < h.time; i++, p += tsize) {
        tz->trans[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
        if (i && tz->trans[i] <= tz->trans[i - 1])
            return bad(tz, err, name, "transitions out of order");
    }
    for (uint32_t i = 0; i < h.time; i++, p++) {
        if (*p >= h.type) return bad(tz, err, name, "bad type index");
        tz->trans_type[i] = *p;
    }
    for (uint32_t i = 0; i < h.type; i++, p += 6) {
        int32_t off = (int32_t)be32(p);
        if (off < -MAX_OFF || off > MAX_OFF || p[4] > 1 || p[5] >= h.chars)
            return bad(tz, err, name, "bad local time type");
        tz->type_off[i] = off;
    }
    p += h.chars + h.isstd + h.isut; /* abbreviations and indicators: not needed */

    if (tsize == 8) {
        /* Footer: "\n<POSIX TZ string>\n"; empty means "no rule after the last transition". */
        if (p >= end || *p != '\n') return bad(tz, err, name, "missing footer");
        const uint8_t *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
        if (!nl) return bad(tz, err, name, "unterminated footer");
        size_t flen = (size_t)(nl - p - 1);
        if (flen) {
            char footer[128];
            if (flen >= sizeof footer || memchr(p + 1, 0, flen))
                return bad(tz, err, name, "bad footer");
            memcpy(footer, p + 1, flen);
            footer[flen] = 0;
            if (parse_footer(tz, footer) < 0) return bad(tz, err, name, "bad footer rule");
        }
    }
    set_range(tz);
    return tz;
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NB_TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/') return 0;
    if (strstr(name, "..") || strstr(name, "//")) return 0;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '+' || *c == '-' || *c == '/'))
            return 0;
    /* "right/" holds leap-second variants, "posix/" duplicates; neither is a zone name. */
    if (!strncmp(name, "right/", 6) || !strncmp(name, "posix/", 6)) return 0;
    return 1;
}

nb_tz *nb_tz_load(const char *name, nb_err *err)
{
    if (!name || !name_ok(name))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "time zone '%.*s': bad name",
                          NB_TZ_NAME_MAX, name ? name : ""),
               NULL;
    if (!strcmp(name, "UTC")) {
        nb_tz *tz = calloc(1, sizeof *tz);
        if (!tz) return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory"), NULL;
        snprintf(tz->name, sizeof tz->name, "UTC");
        tz->ntypes = 1; /* type_off[0] = 0 */
        set_range(tz);
        return tz;
    }
    char path[sizeof NB_TZ_DIR + NB_TZ_NAME_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", NB_TZ_DIR, name);
    size_t len;
    char *data = nb_read_file(path, NB_TZ_FILE_MAX, &len);
    if (!data) {
        if (errno == ENOENT || errno == EISDIR || errno == ENOTDIR)
            nb_err_set(err, 400, NB_E_INVALID_VALUE, "time zone '%s': unknown", name);
        else
            nb_err_sys(err, errno, "time zone '%s': read %s", name, path);
        return NULL;
    }
    nb_tz *tz = nb_tz_parse(data, len, name, err);
    free(data);
    return tz;
}

void nb_tz_free(nb_tz *tz)
{
    if (!tz) return;
    free(tz->trans);
    free(tz->trans_type);
    free(tz);
}

const char *nb_tz_name(const nb_tz *tz)
{
    return tz ? tz->name : "UTC";
}

int nb_tz_offset(const nb_tz *tz, int64_t t)
{
    if (!tz) return 0;
    if (t > T_LIMIT) t = T_LIMIT;
    if (t < -T_LIMIT) t = -T_LIMIT;
    size_t n = tz->ntrans;
    if (n == 0 || t >= tz->trans[n - 1]) {
        if (tz->has_footer) return footer_offset(tz, t);
        return tz->type_off[n ? tz->trans_type[n - 1] : 0];
    }
    if (t < tz->trans[0]) return tz->type_off[0];
    size_t lo = 0, hi = n - 1; /* trans[lo] <= t < trans[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return tz->type_off[tz->trans_type[lo]];
}

void nb_tz_offset_range(const nb_tz *tz, int *min_off, int *max_off)
{
    *min_off = tz ? tz->min_off : 0;
    *max_off = tz ? tz->max_off : 0;
}

int64_t nb_tz_local_to_utc(const nb_tz *tz, int y, int mo, int d, int h, int mi, int s)
{
    /* Normalise the month so day arithmetic below can carry freely. */
    int64_t yy = (int64_t)y + floor_div(mo - 1, 12);
    int mm = (int)(mo - 1 - floor_div(mo - 1, 12) * 12) + 1;
    int64_t L = (nb_tz_days_from_civil(yy, mm, 1) + d - 1) * 86400 + (int64_t)h * 3600 +
                (int64_t)mi * 60 + s;
    if (!tz) return L;
    if (L > T_LIMIT) L = T_LIMIT;
    if (L < -T_LIMIT) L = -T_LIMIT;
    /* Offsets stay within 26 h, so the offsets a day either side bracket every instant that
     * could read L; zones never change twice within two days. */
    int ob = nb_tz_offset(tz, L - 86400), oa = nb_tz_offset(tz, L + 86400);
    int64_t tb = L - ob, ta = L - oa;
    int vb = nb_tz_offset(tz, tb) == ob, va = nb_tz_offset(tz, ta) == oa;
    if (vb && va) return tb < ta ? tb : ta; /* overlap: the first occurrence */
    if (va) return ta;
    /* Valid with the old offset, or a gap: read with the offset before the jump, L lands
     * exactly the gap's length later on the new clock. */
    return tb;
}
