#include "events/cloudevent.h"

#include "base/util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small text helpers ---- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hexval(int c)
{
    if (is_digit(c)) return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Case-insensitive: s[0..n) equals lit / starts with lit / ends with lit. */
static int ieq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n != l) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != lit[i]) return 0;
    return 1;
}

static int istarts(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && ieq(s, l, lit);
}

static int iends(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && ieq(s + n - l, l, lit);
}

/* The media type of a Content-Type value without its parameters and surrounding blanks. */
static void media_type(const char *ct, const char **p, size_t *n)
{
    if (!ct) ct = "";
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t len = strcspn(ct, ";");
    while (len && (ct[len - 1] == ' ' || ct[len - 1] == '\t'))
        len--;
    *p = ct;
    *n = len;
}

static int is_json_type(const char *ct)
{
    const char *p;
    size_t n;
    media_type(ct, &p, &n);
    return iends(p, n, "/json") || iends(p, n, "+json");
}

static int is_text_type(const char *ct)
{
    const char *p;
    size_t n;
    media_type(ct, &p, &n);
    return istarts(p, n, "text/");
}

/* The spec's String excludes C0 controls, DEL and C1 controls (U+0080..U+009F, which UTF-8
 * writes as C2 80..C2 9F). The text is already valid UTF-8 here. */
static int has_control(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) return 1;
        if (p[i] == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f) return 1;
    }
    return 0;
}

/* A name from the request, fit for a message: printable ASCII only, at most 40 characters. */
static const char *shown(char out[48], const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w < 40; i++)
        out[w++] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > 40) {
        memcpy(out + w, "...", 3);
        w += 3;
    }
    out[w] = 0;
    return out;
}

/* ---- attribute value formats ---- */

/* RFC 3986 URI-reference (absolute = 0) or absolute-URI (§4.3: a scheme, no fragment). The
 * check is on characters and the scheme, which is what tells a URI from free text; the
 * authority and path grammar beyond that are not enforced. */
static int valid_uri(const char *s, size_t n, int absolute)
{
    static const char other[] = "-._~:/?#[]@!$&'()*+,;=";
    if (n == 0) return 0;
    size_t first = strcspn(s, ":/?#");
    int has_scheme = first < n && s[first] == ':';
    if (has_scheme) {
        /* a colon in the first segment of a relative reference would read as a scheme */
        if (first == 0 || !is_alpha((unsigned char)s[0])) return 0;
        for (size_t i = 1; i < first; i++) {
            int c = (unsigned char)s[i];
            if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return 0;
        }
    } else if (absolute) {
        return 0;
    }
    int hashes = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0)
                return 0;
            i += 2;
        } else if (c == '#') {
            if (absolute || ++hashes > 1) return 0;
        } else if (!is_alpha(c) && !is_digit(c) && (c == 0 || !strchr(other, c))) {
            return 0;
        }
    }
    return 1;
}

static int digits(const char *s, size_t at, size_t count, size_t n, int *out)
{
    int v = 0;
    if (at + count > n) return 0;
    for (size_t i = at; i < at + count; i++) {
        if (!is_digit((unsigned char)s[i])) return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* RFC 3339 date-time: 2018-04-05T17:31:00Z, 2018-04-05T17:31:00.123+02:00. T and Z in either
 * case as the RFC allows; a second of 60 for leap seconds. */
static int valid_time(const char *s, size_t n)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec;
    if (!digits(s, 0, 4, n, &y) || n < 20 || s[4] != '-' || !digits(s, 5, 2, n, &mo) ||
        s[7] != '-' || !digits(s, 8, 2, n, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s, 11, 2, n, &h) || s[13] != ':' || !digits(s, 14, 2, n, &mi) || s[16] != ':' ||
        !digits(s, 17, 2, n, &sec))
        return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return 0;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && is_digit((unsigned char)s[i]))
            i++;
        if (i == start) return 0;
    }
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == n;
    int oh, om;
    if (i + 6 != n || (s[i] != '+' && s[i] != '-') || !digits(s, i + 1, 2, n, &oh) ||
        s[i + 3] != ':' || !digits(s, i + 4, 2, n, &om))
        return 0;
    return oh <= 23 && om <= 59;
}

static int b64_char(int c)
{
    return is_alpha(c) || is_digit(c) || c == '+' || c == '/';
}

/* Standard base64 (RFC 4648 §4) with padding, as data_base64 is. */
static int valid_base64(const char *s, size_t n)
{
    if (n % 4) return 0;
    for (size_t i = 0; i < n; i++) {
        if (b64_char((unsigned char)s[i])) continue;
        if (s[i] != '=' || i + 2 < n) return 0;
        if (i + 2 == n && s[n - 1] != '=') return 0; /* "x=" then a letter */
    }
    return 1;
}

static char *base64(const unsigned char *p, size_t len, size_t *out_len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1), *w = out;
    if (!out) abort();
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *w++ = tab[v >> 18];
        *w++ = tab[(v >> 12) & 63];
        *w++ = tab[(v >> 6) & 63];
        *w++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *w++ = tab[v >> 18];
        *w++ = tab[(v >> 12) & 63];
        *w++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *w++ = '=';
    }
    *w = 0;
    *out_len = n;
    return out;
}

/* ---- validation ---- */

static int bad(nb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(nb_err *err, const char *fmt, ...)
{
    char msg[NB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s", msg);
}

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n > NB_CE_MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !is_digit((unsigned char)s[i])) return 0;
    return 1;
}

static const char *const core_attrs[] = {"specversion",     "id",         "source",  "type",
                                         "datacontenttype", "dataschema", "subject", "time"};

static int is_core(const char *k)
{
    for (size_t i = 0; i < NB_ARRAY_LEN(core_attrs); i++)
        if (strcmp(k, core_attrs[i]) == 0) return 1;
    return 0;
}

/* The attribute's string, or NULL when absent (missing or null). */
static const json_t *attr(const json_t *ev, const char *name)
{
    const json_t *v = json_object_get(ev, name);
    return json_is_null(v) ? NULL : v;
}

static int check_members(const json_t *ev, nb_err *err, int *has_data, int *has_b64)
{
    const char *k;
    json_t *v;
    char nb[48];
    json_object_foreach((json_t *)ev, k, v)
    {
        if (json_is_null(v)) continue;
        if (strcmp(k, "data") == 0) {
            *has_data = 1;
            continue;
        }
        if (strcmp(k, "data_base64") == 0) {
            if (!json_is_string(v) || !valid_base64(json_string_value(v), json_string_length(v)))
                return bad(err, "data_base64 must be a base64 string");
            *has_b64 = 1;
            continue;
        }
        size_t klen = strlen(k);
        if (!valid_name(k, klen))
            return bad(err,
                       "attribute name \"%s\" is invalid: only a-z and 0-9, 1 to %d characters",
                       shown(nb, k, klen), NB_CE_MAX_NAME);
        if (is_core(k) && !json_is_string(v))
            return bad(err, "attribute \"%s\" must be a string, not %s", k, nb_json_kind(v));
        if (json_is_string(v)) {
            if (has_control(json_string_value(v), json_string_length(v)))
                return bad(err, "attribute \"%s\" holds a control character", k);
        } else if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            if (i < INT32_MIN || i > INT32_MAX)
                return bad(err, "attribute \"%s\" is outside the 32-bit integer range", k);
        } else if (json_is_real(v)) {
            return bad(err, "attribute \"%s\" must be an integer, not a fraction", k);
        } else if (!json_is_boolean(v)) {
            return bad(err, "attribute \"%s\" must be a string, integer or boolean, not %s", k,
                       nb_json_kind(v));
        }
    }
    return 0;
}

int nb_ce_validate(const json_t *ev, nb_err *err)
{
    if (!json_is_object(ev))
        return bad(err, "an event must be a JSON object, not %s", nb_json_kind(ev));
    int has_data = 0, has_b64 = 0;
    if (check_members(ev, err, &has_data, &has_b64) < 0) return -1;
    /* member types are checked: every core attribute present below is a string */
    const json_t *sv = attr(ev, "specversion");
    if (!sv) return bad(err, "attribute \"specversion\" is missing");
    if (strcmp(json_string_value(sv), "1.0") != 0) {
        char shown_v[48];
        return bad(err, "specversion must be \"1.0\", not \"%s\"",
                   shown(shown_v, json_string_value(sv), json_string_length(sv)));
    }
    static const char *const required[] = {"id", "source", "type"};
    for (size_t i = 0; i < NB_ARRAY_LEN(required); i++) {
        const json_t *v = attr(ev, required[i]);
        if (!v) return bad(err, "attribute \"%s\" is missing", required[i]);
        if (json_string_length(v) == 0) return bad(err, "attribute \"%s\" is empty", required[i]);
    }
    const json_t *v = attr(ev, "source");
    if (!valid_uri(json_string_value(v), json_string_length(v), 0))
        return bad(err, "attribute \"source\" is not a URI-reference");
    if ((v = attr(ev, "dataschema")) && !valid_uri(json_string_value(v), json_string_length(v), 1))
        return bad(err, "attribute \"dataschema\" is not an absolute URI");
    if ((v = attr(ev, "time")) && !valid_time(json_string_value(v), json_string_length(v)))
        return bad(err, "attribute \"time\" is not an RFC 3339 timestamp");
    if ((v = attr(ev, "subject")) && json_string_length(v) == 0)
        return bad(err, "attribute \"subject\" is empty");
    if ((v = attr(ev, "datacontenttype")) && json_string_length(v) == 0)
        return bad(err, "attribute \"datacontenttype\" is empty");
    if (has_data && has_b64) return bad(err, "data and data_base64 are exclusive: send one");
    return 0;
}

/* A copy without null attributes: the format says null means absent, and a consumer should not
 * have to know that. "data": null stays, being an explicit null payload. */
static json_t *normalized(json_t *ev)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(ev, k, v)
    {
        if (json_is_null(v) && strcmp(k, "data") != 0) continue;
        json_object_set(out, k, v);
    }
    return out;
}

/* ---- the three modes ---- */

/* A ce-* header value: an RFC 7230 quoted-string from older senders is unquoted first, then
 * one round of percent-decoding; the result must be UTF-8. Returns the length, -1 on error. */
static long decode_value(const char *s, size_t n, char *out)
{
    char *tmp = out;
    size_t len = 0;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        for (size_t i = 1; i + 1 < n; i++) {
            if (s[i] == '\\' && i + 2 < n) i++;
            tmp[len++] = s[i];
        }
    } else {
        memcpy(tmp, s, n);
        len = n;
    }
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (tmp[i] != '%') {
            out[w++] = tmp[i];
            continue;
        }
        int hi = i + 2 < len ? hexval((unsigned char)tmp[i + 1]) : -1;
        int lo = i + 2 < len ? hexval((unsigned char)tmp[i + 2]) : -1;
        if (hi < 0 || lo < 0) return -1;
        out[w++] = (char)(hi << 4 | lo); /* in place: w never passes i */
        i += 2;
    }
    return nb_utf8_valid(out, w) ? (long)w : -1;
}

static json_t *from_binary(const char *content_type, const nb_ce_header *h, size_t nh,
                           const char *body, size_t len, nb_err *err)
{
    json_t *ev = json_object();
    char nb[48];
    for (size_t i = 0; i < nh; i++) {
        if (h[i].name_len < 3 || !istarts(h[i].name, h[i].name_len, "ce-")) continue;
        char name[NB_CE_MAX_NAME + 1];
        size_t nlen = h[i].name_len - 3;
        const char *raw = h[i].name + 3;
        int ok = nlen >= 1 && nlen <= NB_CE_MAX_NAME;
        for (size_t k = 0; ok && k < nlen; k++) {
            name[k] = (char)lower((unsigned char)raw[k]);
            ok = (name[k] >= 'a' && name[k] <= 'z') || is_digit((unsigned char)name[k]);
        }
        if (!ok) {
            bad(err, "header %s: attribute names are a-z and 0-9 only, 1 to %d characters",
                shown(nb, h[i].name, h[i].name_len), NB_CE_MAX_NAME);
            goto fail;
        }
        name[nlen] = 0;
        if (strcmp(name, "data") == 0) {
            bad(err, "header ce-data: \"data\" is reserved, the body is the data");
            goto fail;
        }
        if (strcmp(name, "datacontenttype") == 0) {
            bad(err, "header ce-datacontenttype: binary mode carries it as Content-Type");
            goto fail;
        }
        if (json_object_get(ev, name)) {
            bad(err, "header ce-%s appears twice", name);
            goto fail;
        }
        char *val = malloc(h[i].value_len + 1);
        if (!val) abort();
        long vlen = decode_value(h[i].value, h[i].value_len, val);
        if (vlen < 0) {
            free(val);
            bad(err, "header ce-%s: bad percent-encoding or not UTF-8", name);
            goto fail;
        }
        json_object_set_new(ev, name, json_stringn(val, (size_t)vlen));
        free(val);
    }
    if (content_type && content_type[0]) {
        json_t *ct = json_string(content_type);
        if (!ct) {
            bad(err, "Content-Type is not UTF-8");
            goto fail;
        }
        json_object_set_new(ev, "datacontenttype", ct);
    }
    if (len > 0) {
        json_t *data = NULL;
        if (is_json_type(content_type)) {
            json_error_t je;
            data = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!data) {
                nb_err_set(err, 400, NB_E_INVALID_JSON,
                           "the body is not valid JSON as Content-Type says: %s (line %d)", je.text,
                           je.line);
                goto fail;
            }
            json_object_set_new(ev, "data", data);
        } else if (is_text_type(content_type) && nb_utf8_valid(body, len)) {
            json_object_set_new(ev, "data", json_stringn(body, len));
        } else {
            size_t blen;
            char *b = base64((const unsigned char *)body, len, &blen);
            json_object_set_new(ev, "data_base64", json_stringn(b, blen));
            free(b);
        }
    }
    if (nb_ce_validate(ev, err) < 0) {
        nb_err_prefix(err, "binary mode (ce- headers)");
        goto fail;
    }
    return ev;
fail:
    json_decref(ev);
    return NULL;
}

static json_t *parse_body(const char *body, size_t len, const char *what, nb_err *err)
{
    json_error_t je;
    /* Duplicate members are refused: an event saying two ids is not one event. */
    json_t *j = json_loadb(body ? body : "", len,
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j)
        nb_err_set(err, 400, NB_E_INVALID_JSON, "%s: not valid JSON: %s (line %d, column %d)", what,
                   je.text, je.line, je.column);
    return j;
}

json_t *nb_ce_from_http(const char *content_type, const nb_ce_header *headers, size_t nheaders,
                        const char *body, size_t len, nb_err *err)
{
    if (len > NB_CE_MAX_BODY) {
        nb_err_set(err, 413, NB_E_TOO_LARGE, "the body is %zu bytes; the limit is %u", len,
                   NB_CE_MAX_BODY);
        return NULL;
    }
    const char *mt;
    size_t mtlen;
    media_type(content_type, &mt, &mtlen);
    char nb[48];
    int batch = istarts(mt, mtlen, "application/cloudevents-batch");
    if (batch && !ieq(mt, mtlen, "application/cloudevents-batch+json")) {
        nb_err_set(err, 415, NB_E_BAD_REQUEST,
                   "batch format \"%s\" is not supported: use application/cloudevents-batch+json",
                   shown(nb, mt, mtlen));
        return NULL;
    }
    if (!batch && istarts(mt, mtlen, "application/cloudevents")) {
        if (!ieq(mt, mtlen, "application/cloudevents+json")) {
            nb_err_set(err, 415, NB_E_BAD_REQUEST,
                       "event format \"%s\" is not supported: use application/cloudevents+json",
                       shown(nb, mt, mtlen));
            return NULL;
        }
        json_t *ev = parse_body(body, len, "structured event", err);
        if (!ev) return NULL;
        if (nb_ce_validate(ev, err) < 0) {
            json_decref(ev);
            return NULL;
        }
        json_t *out = json_array();
        json_array_append_new(out, normalized(ev));
        json_decref(ev);
        return out;
    }
    if (!batch) {
        json_t *ev = from_binary(content_type, headers, nheaders, body, len, err);
        if (!ev) return NULL;
        json_t *out = json_array();
        json_array_append_new(out, ev);
        return out;
    }
    json_t *arr = parse_body(body, len, "batch", err);
    if (!arr) return NULL;
    if (!json_is_array(arr)) {
        nb_err_set(err, 400, NB_E_INVALID_VALUE, "batch: must be a JSON array of events, not %s",
                   nb_json_kind(arr));
        json_decref(arr);
        return NULL;
    }
    size_t n = json_array_size(arr);
    if (n > NB_CE_MAX_BATCH) {
        nb_err_set(err, 400, NB_E_INVALID_VALUE, "batch: %zu events; the limit is %d", n,
                   NB_CE_MAX_BATCH);
        json_decref(arr);
        return NULL;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *ev = json_array_get(arr, i);
        if (nb_ce_validate(ev, err) < 0) {
            nb_err_prefix(err, "batch[%zu]", i);
            json_decref(out);
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(out, normalized(ev));
    }
    json_decref(arr);
    return out;
}

json_t *nb_ce_make(const char *id, const char *source, const char *type, const char *subject,
                   const json_t *data)
{
    if (!source || !source[0] || !type || !type[0]) return NULL;
    char uuid[37], now[32];
    if (!id) {
        nb_uuid4(uuid);
        id = uuid;
    }
    nb_time_iso8601(nb_now_ms(), now, sizeof now);
    json_t *ev = json_object();
    json_t *vals[] = {json_string("1.0"), json_string(id), json_string(source), json_string(type),
                      subject ? json_string(subject) : NULL};
    int ok = 1;
    for (size_t i = 0; i < 4; i++)
        ok &= vals[i] != NULL;
    if (subject && !vals[4]) ok = 0;
    if (!ok) { /* not UTF-8 */
        for (size_t i = 0; i < NB_ARRAY_LEN(vals); i++)
            json_decref(vals[i]);
        json_decref(ev);
        return NULL;
    }
    json_object_set_new(ev, "specversion", vals[0]);
    json_object_set_new(ev, "id", vals[1]);
    json_object_set_new(ev, "source", vals[2]);
    json_object_set_new(ev, "type", vals[3]);
    if (vals[4]) json_object_set_new(ev, "subject", vals[4]);
    json_object_set_new(ev, "time", json_string(now));
    json_object_set_new(ev, "datacontenttype", json_string("application/json"));
    if (data) json_object_set_new(ev, "data", json_deep_copy(data));
    return ev;
}
