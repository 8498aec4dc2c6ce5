#include "gateway/event.h"

#include "base/util.h"

#include "base/buf.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The event is written straight into one buffer: it is built for every request, and a jansson
 * tree would cost an allocation per field. Its cap is far above anything a capped request can
 * make (6 MiB body, base64 or escaped at worst 6x, plus h2o-capped headers); reaching it is a
 * caller bug, which aborts like OOM does. */
#define EV_MAX_EVENT (256u << 20)

/* ---- output helpers ---- */

static void put_slow(nb_buf *b, const void *p, size_t n)
{
    if (nb_buf_append(b, p, n) < 0) abort();
}

/* The event is a few hundred small appends: the common case stays inline and leaves the NUL
 * for the end (nb_ev_build writes it; the room is there, len + n < cap). */
static inline void put(nb_buf *b, const void *p, size_t n)
{
    if (b->cap - b->len > n) {
        if (n) memcpy(b->data + b->len, p, n); /* p may be NULL when n is 0 (empty nb_ev_str) */
        b->len += n;
        return;
    }
    put_slow(b, p, n);
}

static inline void puts_(nb_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The bytes as the inside of a JSON string: quote, backslash and controls escaped, invalid
 * UTF-8 replaced byte by byte with U+FFFD so the event is always valid JSON. In an object key
 * a NUL is replaced too: "\u0000" is valid JSON, but several parsers (jansson among them)
 * refuse it in a key, and one bad query key must not make the whole event unreadable. */
static void esc(nb_buf *b, const char *s, size_t len, int key)
{
    if (len == 0) return;
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the bytes copied as they are */
    for (size_t i = 0; i < len;) {
        /* eight plain bytes at a time: none below 0x20, none from 0x80, no quote or backslash */
        while (len - i >= 8) {
            uint64_t w, ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
            memcpy(&w, p + i, 8);
            uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
            uint64_t special = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
            if ((special | w) & high) break;
            i += 8;
        }
        if (i == len) break;
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = nb_utf8_seq(p + i, len - i);
            if (n) {
                i += n;
                continue;
            }
        }
        if (c == 0 && key) c = 0x80; /* not valid alone: replaced below */
        put(b, s + run, i - run);
        char e[6] = {'\\', 0};
        size_t en = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        default:
            if (c < 0x20) {
                memcpy(e, "\\u00", 4);
                e[4] = hex[c >> 4];
                e[5] = hex[c & 15];
                en = 6;
            } else {
                memcpy(e, "\xef\xbf\xbd", 3); /* U+FFFD */
                en = 3;
            }
        }
        put(b, e, en);
        run = ++i;
    }
    put(b, s + run, len - run);
}

static void put_esc(nb_buf *b, const char *s, size_t len)
{
    esc(b, s, len, 0);
}

static void put_str(nb_buf *b, const char *s, size_t len)
{
    put(b, "\"", 1);
    put_esc(b, s, len);
    put(b, "\"", 1);
}

static void put_cstr(nb_buf *b, const char *s)
{
    put_str(b, s ? s : "", s ? strlen(s) : 0);
}

/* "name": */
static inline void put_key(nb_buf *b, const char *key)
{
    put(b, "\"", 1);
    puts_(b, key);
    put(b, "\":", 2);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_b64(nb_buf *b, const unsigned char *in, size_t len)
{
    if (nb_buf_reserve(b, (len + 2) / 3 * 4) < 0) abort();
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
}

/* ---- grouping repeated names ---- */

/* A name/value pair and its arrival order; sorting by name then order puts repeats together
 * with their values in the order received, in O(n log n) whatever a client sends. */
typedef struct kv {
    const char *k;
    size_t klen;
    const char *v;
    size_t vlen;
    size_t order;
} kv;

static int kv_cmp_case(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = n ? strncasecmp(x->k, y->k, n) : 0;
    if (c == 0 && x->klen != y->klen) c = x->klen < y->klen ? -1 : 1;
    if (c == 0) c = x->order < y->order ? -1 : 1;
    return c;
}

static int kv_cmp(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = n ? memcmp(x->k, y->k, n) : 0;
    if (c == 0 && x->klen != y->klen) c = x->klen < y->klen ? -1 : 1;
    if (c == 0) c = x->order < y->order ? -1 : 1;
    return c;
}

static int same_name(const kv *a, const kv *b, int icase)
{
    if (a->klen != b->klen) return 0;
    if (a->klen == 0) return 1;
    return (icase ? strncasecmp(a->k, b->k, a->klen) : memcmp(a->k, b->k, a->klen)) == 0;
}

/* {"name":"v1,v2",...} from sorted pairs; names lowercased when icase. */
static void put_grouped(nb_buf *out, const kv *e, size_t n, int icase)
{
    put(out, "{", 1);
    for (size_t i = 0; i < n;) {
        if (i) put(out, ",", 1);
        put(out, "\"", 1);
        if (icase) {
            /* lowercased whole, so a multi-byte sequence is never cut between two escapes */
            char stack[256], *low = e[i].klen <= sizeof stack ? stack : malloc(e[i].klen);
            if (!low) abort();
            for (size_t k = 0; k < e[i].klen; k++) {
                char c = e[i].k[k];
                low[k] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
            }
            esc(out, low, e[i].klen, 1);
            if (low != stack) free(low);
        } else {
            esc(out, e[i].k, e[i].klen, 1);
        }
        put(out, "\":\"", 3);
        size_t j = i;
        do {
            if (j > i) put(out, ",", 1);
            put_esc(out, e[j].v, e[j].vlen);
            j++;
        } while (j < n && same_name(&e[i], &e[j], icase));
        put(out, "\"", 1);
        i = j;
    }
    put(out, "}", 1);
}

static int name_is(const nb_ev_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name.len == n && strncasecmp(h->name.p, name, n) == 0;
}

/* The first value of a header, or NULL. */
static const nb_ev_str *header(const nb_ev_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (name_is(&r->headers[i], name)) return &r->headers[i].value;
    return NULL;
}

/* ---- the event's parts ---- */

static void put_cookies(nb_buf *out, const nb_ev_request *r)
{
    int first = 1;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!name_is(&r->headers[i], "cookie")) continue;
        const char *p = r->headers[i].value.p, *end = p + r->headers[i].value.len;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *e = semi ? semi : end;
            const char *s = p;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            const char *t = e;
            while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
                t--;
            if (t > s) {
                puts_(out, first ? ",\"cookies\":[" : ",");
                first = 0;
                put_str(out, s, (size_t)(t - s));
            }
            p = semi ? semi + 1 : end;
        }
    }
    if (!first) put(out, "]", 1);
}

static void put_headers(nb_buf *out, const nb_ev_request *r)
{
    kv stack[32], *e = r->nheaders <= 32 ? stack : malloc(r->nheaders * sizeof *e);
    if (!e) abort();
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (name_is(&r->headers[i], "cookie")) continue;
        e[n] = (kv){r->headers[i].name.p, r->headers[i].name.len, r->headers[i].value.p,
                    r->headers[i].value.len, i};
        n++;
    }
    qsort(e, n, sizeof *e, kv_cmp_case);
    put_key(out, "headers");
    put_grouped(out, e, n, 1);
    if (e != stack) free(e);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Form decoding: '+' is a space, %XX a byte; a malformed escape stays as it is (browsers send
 * stray '%' and the function can still see rawQueryString). */
static size_t form_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (in[i] == '+') {
            out[o++] = ' ';
        } else if (in[i] == '%' && i + 2 < len && (hi = hexval((unsigned char)in[i + 1])) >= 0 &&
                   (lo = hexval((unsigned char)in[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static void put_query_params(nb_buf *out, const nb_ev_request *r)
{
    const char *q = r->query.p;
    size_t qlen = r->query.len;
    if (qlen == 0) return;
    size_t pieces = 1;
    for (size_t i = 0; i < qlen; i++)
        pieces += q[i] == '&';
    kv stack[32], *e = pieces <= 32 ? stack : malloc(pieces * sizeof *e);
    char *dec = malloc(qlen); /* decoding never lengthens */
    if (!e || !dec) abort();
    size_t n = 0, used = 0;
    for (size_t i = 0; i < qlen;) {
        const char *amp = memchr(q + i, '&', qlen - i);
        size_t end = amp ? (size_t)(amp - q) : qlen;
        if (end > i) {
            const char *eq = memchr(q + i, '=', end - i);
            size_t kend = eq ? (size_t)(eq - q) : end;
            kv *x = &e[n];
            x->k = dec + used;
            x->klen = form_decode(q + i, kend - i, dec + used);
            used += x->klen;
            x->v = dec + used;
            x->vlen = eq ? form_decode(eq + 1, end - kend - 1, dec + used) : 0;
            used += x->vlen;
            x->order = n++;
        }
        i = end + 1;
    }
    if (n) {
        qsort(e, n, sizeof *e, kv_cmp);
        put(out, ",", 1);
        put_key(out, "queryStringParameters");
        put_grouped(out, e, n, 0);
    }
    free(dec);
    if (e != stack) free(e);
}

/* Textual media types travel as text; everything else is base64 (spec §1's list). */
static int textual(const nb_ev_str *ct)
{
    if (ct->len == 0) return 0;
    const char *p = ct->p, *end = ct->p + ct->len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *semi = memchr(p, ';', (size_t)(end - p));
    const char *e = semi ? semi : end;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    const char *slash = memchr(p, '/', (size_t)(e - p));
    if (!slash) return 0;
    size_t tlen = (size_t)(slash - p), slen = (size_t)(e - slash - 1);
    const char *sub = slash + 1;
#define IS(s, n, lit) ((n) == sizeof(lit) - 1 && strncasecmp((s), (lit), (n)) == 0)
#define ENDS(s, n, lit)                                                                            \
    ((n) >= sizeof(lit) - 1 &&                                                                     \
     strncasecmp((s) + (n) - (sizeof(lit) - 1), (lit), sizeof(lit) - 1) == 0)
    if (IS(p, tlen, "text")) return 1;
    if (IS(sub, slen, "json") || IS(sub, slen, "xml") || IS(sub, slen, "javascript") ||
        IS(sub, slen, "x-www-form-urlencoded") || ENDS(sub, slen, "+json") ||
        ENDS(sub, slen, "+xml"))
        return IS(p, tlen, "application");
    return 0;
#undef IS
#undef ENDS
}

static char *two(char *o, int v)
{
    o[0] = (char)('0' + v / 10 % 10);
    o[1] = (char)('0' + v % 10);
    return o + 2;
}

/* "04/Mar/2020:19:03:58 +0000", by hand: strftime's %b follows the locale and the format wants
 * English, and snprintf is a good part of the event's cost. */
static void put_time(nb_buf *out, int64_t ms)
{
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t s = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    if (!gmtime_r(&s, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        memset(&tm, 0, sizeof tm);
    char t[32], *o = t;
    o = two(o, tm.tm_mday);
    *o++ = '/';
    memcpy(o, months[tm.tm_mon >= 0 && tm.tm_mon < 12 ? tm.tm_mon : 0], 3);
    o += 3;
    *o++ = '/';
    o = two(o, (tm.tm_year + 1900) / 100);
    o = two(o, (tm.tm_year + 1900) % 100);
    *o++ = ':';
    o = two(o, tm.tm_hour);
    *o++ = ':';
    o = two(o, tm.tm_min);
    *o++ = ':';
    o = two(o, tm.tm_sec);
    memcpy(o, " +0000", 6);
    o += 6;
    put_key(out, "time");
    put_str(out, t, (size_t)(o - t));
}

static void put_int(nb_buf *out, int64_t v)
{
    char d[24], *o = d + sizeof d;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--o = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--o = '-';
    put(out, o, (size_t)(d + sizeof d - o));
}

char *nb_ev_build(const nb_ev_request *r, size_t *len)
{
    nb_buf out;
    nb_buf_init(&out, EV_MAX_EVENT);
    size_t guess = 1024 + r->path.len * 2 + r->query.len * 3 + r->body.len * 4 / 3;
    for (size_t i = 0; i < r->nheaders; i++)
        guess += r->headers[i].name.len + r->headers[i].value.len + 8;
    if (nb_buf_reserve(&out, guess < EV_MAX_EVENT ? guess : EV_MAX_EVENT) < 0) abort();

    const char *route_key = r->route_key ? r->route_key : "$default";
    puts_(&out, "{\"version\":\"2.0\",");
    put_key(&out, "routeKey");
    put_cstr(&out, route_key);
    put(&out, ",", 1);
    put_key(&out, "rawPath");
    put_str(&out, r->path.p, r->path.len);
    put(&out, ",", 1);
    put_key(&out, "rawQueryString");
    put_str(&out, r->query.p, r->query.len);
    put_cookies(&out, r);
    put(&out, ",", 1);
    put_headers(&out, r);
    put_query_params(&out, r);
    if (r->nparams > 0) {
        puts_(&out, ",\"pathParameters\":{");
        for (int i = 0; i < r->nparams; i++) {
            if (i) put(&out, ",", 1);
            put_cstr(&out, r->param_names[i]);
            put(&out, ":", 1);
            put_cstr(&out, r->param_values[i]);
        }
        put(&out, "}", 1);
    }

    /* domainName is the Host without its port (AWS's are always on 443); its first label is
     * domainPrefix. */
    const nb_ev_str *host = header(r, "host");
    size_t hlen = host ? host->len : 0;
    const char *hp = hlen ? host->p : "";
    size_t dlen = hlen;
    if (hlen && hp[0] == '[') {
        const char *rb = memchr(hp, ']', hlen);
        if (rb) dlen = (size_t)(rb - hp) + 1;
    } else {
        const char *colon = memchr(hp, ':', hlen);
        if (colon) dlen = (size_t)(colon - hp);
    }
    const char *dot = hlen && hp[0] == '[' ? NULL : memchr(hp, '.', dlen);
    size_t plen = dot ? (size_t)(dot - hp) : dlen;
    const nb_ev_str *ua = header(r, "user-agent");

    puts_(&out, ",\"requestContext\":{\"accountId\":\"000000000000\",");
    put_key(&out, "apiId");
    put_cstr(&out, r->api_id);
    put(&out, ",", 1);
    put_key(&out, "domainName");
    put_str(&out, hp, dlen);
    put(&out, ",", 1);
    put_key(&out, "domainPrefix");
    put_str(&out, hp, plen);
    puts_(&out, ",\"http\":{");
    put_key(&out, "method");
    put_str(&out, r->method.p, r->method.len);
    put(&out, ",", 1);
    put_key(&out, "path");
    put_str(&out, r->path.p, r->path.len);
    put(&out, ",", 1);
    put_key(&out, "protocol");
    put_str(&out, r->protocol.p, r->protocol.len);
    put(&out, ",", 1);
    put_key(&out, "sourceIp");
    put_cstr(&out, r->source_ip);
    put(&out, ",", 1);
    put_key(&out, "userAgent");
    put_str(&out, ua ? ua->p : "", ua ? ua->len : 0);
    puts_(&out, "},");
    put_key(&out, "requestId");
    put_cstr(&out, r->request_id);
    put(&out, ",", 1);
    put_key(&out, "routeKey");
    put_cstr(&out, route_key);
    put(&out, ",", 1);
    put_key(&out, "stage");
    put_cstr(&out, r->stage ? r->stage : "$default");
    put(&out, ",", 1);
    put_time(&out, r->time_ms);
    puts_(&out, ",\"timeEpoch\":");
    put_int(&out, r->time_ms);
    if (r->authorizer_json && r->authorizer_json[0]) {
        put(&out, ",", 1);
        put_key(&out, "authorizer");
        puts_(&out, r->authorizer_json);
    }
    put(&out, "}", 1);

    int b64 = 0;
    if (r->body.len) {
        const nb_ev_str *ct = header(r, "content-type");
        /* a textual type with bytes that are not UTF-8 would lose them in a JSON string */
        b64 = (ct && !textual(ct)) || !nb_utf8_valid(r->body.p, r->body.len);
        put(&out, ",", 1);
        put_key(&out, "body");
        put(&out, "\"", 1);
        if (b64)
            put_b64(&out, (const unsigned char *)r->body.p, r->body.len);
        else
            put_esc(&out, r->body.p, r->body.len);
        put(&out, "\"", 1);
    }
    puts_(&out, b64 ? ",\"isBase64Encoded\":true}" : ",\"isBase64Encoded\":false}");
    out.data[out.len] = 0; /* put() leaves it out */
    return nb_buf_steal(&out, len);
}

/* ---- response mapping ---- */

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62; /* the URL-safe alphabet too: both are seen */
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes into out (room for 3 * len / 4 + 3); whitespace is skipped (MIME encoders wrap
 * lines), padding is optional but nothing may follow it. Returns the length or -1. */
static long b64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pad) return -1;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* a lone sextet cannot make a byte; padding must not be more than the group needs */
    if (bits == 6 || pad > 2 || (pad && (bits == 0 || pad != (bits == 4 ? 2 : 1)))) return -1;
    return (long)o;
}

typedef struct hdr_off {
    size_t name, name_len, value, value_len;
} hdr_off;

typedef struct resp_builder {
    nb_buf strs;
    hdr_off *h;
    size_t n, cap;
    int has_ct;
} resp_builder;

static int tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int dropped(const char *name, size_t n)
{
    static const char *const hop[] = {"connection", "transfer-encoding", "content-length",
                                      "keep-alive", "upgrade"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strlen(hop[i]) == n && strncasecmp(name, hop[i], n) == 0) return 1;
    return 0;
}

/* Adds one header line; a name that is not a token or a value with CR, LF or NUL would let
 * a function write its own response framing, so the result is refused. */
static int add_header(resp_builder *rb, const char *name, size_t nlen, const char *value,
                      size_t vlen, nb_err *err)
{
    if (nlen == 0 || nlen > 256)
        return nb_err_set(err, 502, NB_E_INTERNAL, "function result: bad header name length");
    for (size_t i = 0; i < nlen; i++)
        if (!tchar((unsigned char)name[i]))
            return nb_err_set(err, 502, NB_E_INTERNAL,
                              "function result: header name '%.*s' is not a token",
                              (int)(nlen > 64 ? 64 : nlen), name);
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == 0)
            return nb_err_set(err, 502, NB_E_INTERNAL,
                              "function result: header '%.*s' has a control character", (int)nlen,
                              name);
    if (dropped(name, nlen)) return 0;
    if (rb->n == rb->cap) {
        rb->cap = rb->cap ? rb->cap * 2 : 16;
        hdr_off *h = realloc(rb->h, rb->cap * sizeof *h);
        if (!h) abort();
        rb->h = h;
    }
    hdr_off *h = &rb->h[rb->n];
    h->name = rb->strs.len;
    h->name_len = nlen;
    /* each string NUL-terminated in storage, so callers may use them as C strings */
    for (size_t i = 0; i < nlen; i++) {
        char c = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] + 32) : name[i];
        if (nb_buf_append(&rb->strs, &c, 1) < 0) goto big;
    }
    if (nb_buf_append(&rb->strs, "", 1) < 0) goto big;
    h->value = rb->strs.len;
    h->value_len = vlen;
    if (nb_buf_append(&rb->strs, value, vlen) < 0 || nb_buf_append(&rb->strs, "", 1) < 0) goto big;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0) rb->has_ct = 1;
    rb->n++;
    return 0;
big:
    return nb_err_set(err, 502, NB_E_INTERNAL, "function result: headers too large");
}

/* A header value may be a string, number or boolean (JS handlers set numbers). */
static int add_json_header(resp_builder *rb, const char *name, json_t *v, nb_err *err)
{
    char num[64];
    const char *s;
    size_t n;
    if (json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);
    } else if (json_is_integer(v)) {
        n = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
    } else if (json_is_real(v)) {
        n = (size_t)snprintf(num, sizeof num, "%.17g", json_real_value(v));
        s = num;
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
        n = strlen(s);
    } else {
        return nb_err_set(err, 502, NB_E_INTERNAL,
                          "function result: header '%.64s' is not a string, number or boolean",
                          name);
    }
    return add_header(rb, name, strlen(name), s, n, err);
}

static int map_structured(json_t *root, resp_builder *rb, nb_ev_response *out, nb_err *err)
{
    json_t *sc = json_object_get(root, "statusCode");
    if (!json_is_integer(sc) || json_integer_value(sc) < 100 || json_integer_value(sc) > 599)
        return nb_err_set(err, 502, NB_E_INTERNAL,
                          "function result: statusCode is not an integer from 100 to 599");
    out->status = (int)json_integer_value(sc);

    json_t *headers = json_object_get(root, "headers");
    json_t *multi = json_object_get(root, "multiValueHeaders");
    json_t *cookies = json_object_get(root, "cookies");
    json_t *body = json_object_get(root, "body");
    json_t *isb64 = json_object_get(root, "isBase64Encoded");
    if ((headers && !json_is_null(headers) && !json_is_object(headers)) ||
        (multi && !json_is_null(multi) && !json_is_object(multi)))
        return nb_err_set(err, 502, NB_E_INTERNAL, "function result: headers is not an object");
    if (cookies && !json_is_null(cookies) && !json_is_array(cookies))
        return nb_err_set(err, 502, NB_E_INTERNAL, "function result: cookies is not an array");
    if (body && !json_is_null(body) && !json_is_string(body))
        return nb_err_set(err, 502, NB_E_INTERNAL, "function result: body is not a string");
    if (isb64 && !json_is_null(isb64) && !json_is_boolean(isb64))
        return nb_err_set(err, 502, NB_E_INTERNAL,
                          "function result: isBase64Encoded is not a boolean");

    const char *name;
    json_t *v;
    if (json_is_object(headers)) {
        json_object_foreach(headers, name, v)
        {
            /* a name also in multiValueHeaders takes its values from there (AWS's merge) */
            int shadowed = 0;
            if (json_is_object(multi)) {
                const char *mn;
                json_t *mv;
                json_object_foreach(multi, mn, mv)
                {
                    if (strcasecmp(mn, name) == 0) shadowed = 1;
                }
            }
            if (!shadowed && add_json_header(rb, name, v, err) < 0) return -1;
        }
    }
    if (json_is_object(multi)) {
        json_object_foreach(multi, name, v)
        {
            if (!json_is_array(v))
                return nb_err_set(err, 502, NB_E_INTERNAL,
                                  "function result: multiValueHeaders '%.64s' is not an array",
                                  name);
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e)
            {
                if (add_json_header(rb, name, e, err) < 0) return -1;
            }
        }
    }
    if (json_is_array(cookies)) {
        size_t i;
        json_t *e;
        json_array_foreach(cookies, i, e)
        {
            if (!json_is_string(e))
                return nb_err_set(err, 502, NB_E_INTERNAL,
                                  "function result: a cookie is not a string");
            if (add_header(rb, "set-cookie", 10, json_string_value(e), json_string_length(e), err) <
                0)
                return -1;
        }
    }

    const char *b = json_is_string(body) ? json_string_value(body) : "";
    size_t blen = json_is_string(body) ? json_string_length(body) : 0;
    if (json_is_true(isb64)) {
        unsigned char *dec = malloc(blen / 4 * 3 + 4);
        if (!dec) abort();
        long n = b64_decode(b, blen, dec);
        if (n < 0) {
            free(dec);
            return nb_err_set(err, 502, NB_E_INTERNAL, "function result: body is not base64");
        }
        dec[n] = 0;
        out->body = (char *)dec;
        out->body_len = (size_t)n;
    } else {
        out->body = malloc(blen + 1);
        if (!out->body) abort();
        memcpy(out->body, b, blen);
        out->body[blen] = 0;
        out->body_len = blen;
    }
    return 0;
}

int nb_ev_response_map(const char *result, size_t len, nb_ev_response *out, nb_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    /* JSON_ALLOW_NUL: a body string may hold \u0000 (binary sent as text) */
    json_t *root = json_loadb(result, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return nb_err_set(err, 502, NB_E_INTERNAL, "function result is not JSON: %s", jerr.text);
    resp_builder rb = {0};
    nb_buf_init(&rb.strs, NB_EV_MAX_RESPONSE);
    int rc = 0;
    if (json_is_object(root) && json_object_get(root, "statusCode")) {
        rc = map_structured(root, &rb, out, err);
    } else {
        /* The result's own text is the body (trimmed of JSON's whitespace): a re-serialization
         * could change how numbers are written; a JSON string keeps its quotes, which keeps
         * application/json truthful (spec §2, the function-URL behaviour). */
        size_t s = 0, e = len;
        while (s < e && strchr(" \t\r\n", result[s]))
            s++;
        while (e > s && strchr(" \t\r\n", result[e - 1]))
            e--;
        out->status = 200;
        out->body = malloc(e - s + 1);
        if (!out->body) abort();
        memcpy(out->body, result + s, e - s);
        out->body[e - s] = 0;
        out->body_len = e - s;
    }
    json_decref(root);
    if (rc == 0 && out->body_len > NB_EV_MAX_RESPONSE)
        rc = nb_err_set(err, 502, NB_E_INTERNAL, "function result: body over %u bytes",
                        NB_EV_MAX_RESPONSE);
    if (rc == 0 && !rb.has_ct)
        rc = add_header(&rb, "content-type", 12, "application/json", 16, err);
    if (rc < 0) {
        free(out->body);
        free(rb.h);
        nb_buf_free(&rb.strs);
        memset(out, 0, sizeof *out);
        return -1;
    }
    /* One block: the header array, then the strings it points into. */
    size_t arr = rb.n * sizeof(nb_ev_header);
    char *block = malloc(arr + rb.strs.len + 1);
    if (!block) abort();
    memcpy(block + arr, rb.strs.data ? rb.strs.data : "", rb.strs.len);
    nb_ev_header *h = (nb_ev_header *)(void *)block;
    for (size_t i = 0; i < rb.n; i++) {
        h[i].name = (nb_ev_str){block + arr + rb.h[i].name, rb.h[i].name_len};
        h[i].value = (nb_ev_str){block + arr + rb.h[i].value, rb.h[i].value_len};
    }
    out->headers = h;
    out->nheaders = rb.n;
    out->has_content_type = 1;
    out->storage = block;
    free(rb.h);
    nb_buf_free(&rb.strs);
    return 0;
}

void nb_ev_response_free(nb_ev_response *r)
{
    if (!r) return;
    free(r->body);
    free(r->storage);
    memset(r, 0, sizeof *r);
}
