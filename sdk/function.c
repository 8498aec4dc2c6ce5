/* The C function SDK: the runtime loop behind nimbus_run() and its two transports.
 *
 * Layout, top to bottom: capped buffers; the channel frame codec; the HTTP response parser and
 * chunked decoder; JSON quoting; the response object; the two transports behind one ops table;
 * the public entry points. The parsers are pure functions (function_internal.h) so the fuzz
 * targets can drive them without sockets.
 *
 * libc only, on purpose: the same bootstrap must run on AWS Lambda, where nimbus is absent.
 * The whole SDK state is one static struct: the Lambda model is one runtime loop per process,
 * single-threaded (see include/nimbus/function.h). Errors follow function_internal.h: negative
 * errno values, with the innermost failure also described in words in sdk.why. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "function_internal.h"

#include <nimbus/function.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Capped buffers                                                                              */

/* Keeps one spare byte past cap so data[len] can always hold a NUL: the event handed to the
 * handler is NUL-terminated this way without a copy. */
int nimbus__buf_reserve(nimbus__buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) return -EMSGSIZE;
    size_t need = b->len + extra;
    if (need <= b->cap && b->data) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2; /* need <= max, a few MiB: no overflow */
    if (cap > b->max) cap = b->max;
    uint8_t *p = realloc(b->data, cap + 1);
    if (!p) return -ENOMEM;
    b->data = p;
    b->cap = cap;
    b->data[b->len] = 0;
    return 0;
}

int nimbus__buf_append(nimbus__buf *b, const void *data, size_t len)
{
    int rc = nimbus__buf_reserve(b, len);
    if (rc < 0) return rc;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

static int buf_puts(nimbus__buf *b, const char *s)
{
    return nimbus__buf_append(b, s, strlen(s));
}

static int buf_printf(nimbus__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(nimbus__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return -EINVAL;
    int rc = nimbus__buf_reserve(b, (size_t)n);
    if (rc < 0) return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void nimbus__buf_free(nimbus__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Empties b; gives the memory back if one big invocation grew it, so an idle instance stays
 * small between calls. */
static void buf_recycle(nimbus__buf *b)
{
    if (b->cap > 256 * 1024) nimbus__buf_free(b);
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Channel frames (docs/internals/channel.md)                                                  */

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64le(const uint8_t *p)
{
    return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

struct reader {
    const uint8_t *p;
    size_t left;
};

static int take_str(struct reader *r, nimbus__span *s)
{
    if (r->left < 2) return -EPROTO;
    size_t n = (size_t)r->p[0] | (size_t)r->p[1] << 8;
    if (r->left - 2 < n) return -EPROTO;
    s->ptr = r->p + 2;
    s->len = n;
    r->p += 2 + n;
    r->left -= 2 + n;
    return 0;
}

ssize_t nimbus__frame_decode(const uint8_t *buf, size_t len, nimbus__frame *out)
{
    memset(out, 0, sizeof *out);
    if (len < 4) return 0;
    uint32_t flen = get_u32le(buf);
    if (flen == 0) return -EPROTO;
    if (flen > NIMBUS__FRAME_MAX) return -EMSGSIZE;
    if (len < 5) return 0;
    uint8_t type = buf[4];
    if ((type < NIMBUS__FRAME_READY || type > NIMBUS__FRAME_INIT_ERROR) &&
        type != NIMBUS__FRAME_CALL && type != NIMBUS__FRAME_CALL_RESULT)
        return -EPROTO;
    if (len - 4 < flen) return 0;

    struct reader r = {buf + 5, flen - 1};
    int rc = 0;
    out->type = type;
    switch (type) {
    case NIMBUS__FRAME_READY:
        if (r.left) rc = -EPROTO; /* "body: empty" */
        break;
    case NIMBUS__FRAME_INVOKE:
        if (r.left < 8) {
            rc = -EPROTO;
            break;
        }
        out->deadline_ms = get_u64le(r.p);
        r.p += 8;
        r.left -= 8;
        rc = take_str(&r, &out->request_id);
        if (!rc) rc = take_str(&r, &out->function_arn);
        if (!rc) rc = take_str(&r, &out->trace_id);
        if (!rc) rc = take_str(&r, &out->client_context);
        break;
    case NIMBUS__FRAME_RESPONSE:
        rc = take_str(&r, &out->request_id);
        break;
    case NIMBUS__FRAME_ERROR:
        rc = take_str(&r, &out->request_id);
        if (!rc) rc = take_str(&r, &out->error_type);
        break;
    case NIMBUS__FRAME_INIT_ERROR:
        rc = take_str(&r, &out->error_type);
        break;
    case NIMBUS__FRAME_CALL:
        if (r.left < 4) {
            rc = -EPROTO;
            break;
        }
        out->call_id = get_u32le(r.p);
        r.p += 4;
        r.left -= 4;
        rc = take_str(&r, &out->op);
        if (!rc) rc = take_str(&r, &out->target);
        if (!rc) rc = take_str(&r, &out->attrs);
        break;
    case NIMBUS__FRAME_CALL_RESULT:
        if (r.left < 6) {
            rc = -EPROTO;
            break;
        }
        out->call_id = get_u32le(r.p);
        out->status = (uint16_t)(r.p[4] | r.p[5] << 8);
        r.p += 6;
        r.left -= 6;
        rc = take_str(&r, &out->error_code);
        break;
    }
    if (rc < 0) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->payload.ptr = r.p;
    out->payload.len = r.left;
    return (ssize_t)flen + 4;
}

static void put_str(uint8_t **p, nimbus__span s)
{
    (*p)[0] = (uint8_t)s.len;
    (*p)[1] = (uint8_t)(s.len >> 8);
    if (s.len) memcpy(*p + 2, s.ptr, s.len);
    *p += 2 + s.len;
}

int nimbus__frame_encode(nimbus__buf *out, const nimbus__frame *f)
{
    const nimbus__span *strs[4];
    size_t nstrs = 0, fixed = 0;
    uint8_t head[8]; /* the fixed fields: deadline, or call id (and status) */
    bool rest = true;
    switch (f->type) {
    case NIMBUS__FRAME_READY:
        rest = false;
        break;
    case NIMBUS__FRAME_INVOKE:
        fixed = 8;
        strs[nstrs++] = &f->request_id;
        strs[nstrs++] = &f->function_arn;
        strs[nstrs++] = &f->trace_id;
        strs[nstrs++] = &f->client_context;
        break;
    case NIMBUS__FRAME_RESPONSE:
        strs[nstrs++] = &f->request_id;
        break;
    case NIMBUS__FRAME_ERROR:
        strs[nstrs++] = &f->request_id;
        strs[nstrs++] = &f->error_type;
        break;
    case NIMBUS__FRAME_INIT_ERROR:
        strs[nstrs++] = &f->error_type;
        break;
    case NIMBUS__FRAME_CALL:
        fixed = 4;
        strs[nstrs++] = &f->op;
        strs[nstrs++] = &f->target;
        strs[nstrs++] = &f->attrs;
        break;
    case NIMBUS__FRAME_CALL_RESULT:
        fixed = 6;
        strs[nstrs++] = &f->error_code;
        break;
    default:
        return -EINVAL;
    }
    if (fixed == 8) {
        for (int i = 0; i < 8; i++)
            head[i] = (uint8_t)(f->deadline_ms >> (8 * i));
    } else if (fixed) {
        put_u32le(head, f->call_id);
        head[4] = (uint8_t)f->status;
        head[5] = (uint8_t)(f->status >> 8);
    }
    /* Sum in size_t with each term checked against the cap first: no overflow possible. */
    size_t body = 1 + fixed;
    for (size_t i = 0; i < nstrs; i++) {
        if (strs[i]->len > UINT16_MAX) return -EMSGSIZE;
        body += 2 + strs[i]->len;
    }
    if (rest) {
        if (f->payload.len > NIMBUS__FRAME_MAX) return -EMSGSIZE;
        body += f->payload.len;
    }
    if (body > NIMBUS__FRAME_MAX) return -EMSGSIZE;
    int rc = nimbus__buf_reserve(out, 4 + body);
    if (rc < 0) return rc;

    uint8_t *p = out->data + out->len;
    put_u32le(p, (uint32_t)body);
    p[4] = f->type;
    p += 5;
    if (fixed) {
        memcpy(p, head, fixed);
        p += fixed;
    }
    for (size_t i = 0; i < nstrs; i++)
        put_str(&p, *strs[i]);
    if (rest && f->payload.len) memcpy(p, f->payload.ptr, f->payload.len);
    out->len += 4 + body;
    out->data[out->len] = 0;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP/1.1 response head                                                                      */

static bool is_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP, HTAB and obs-text: everything but the other control bytes. */
static bool is_field_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool span_ieq(nimbus__span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp((const char *)s.ptr, lit, n) == 0;
}

static nimbus__span span_trim(const uint8_t *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (nimbus__span){p, n};
}

/* Next line of buf[*pos, end), without its LF or CRLF. A CR anywhere else stays in the line
 * and is rejected by the character checks of the caller. */
static nimbus__span next_line(const uint8_t *buf, size_t end, size_t *pos)
{
    const uint8_t *start = buf + *pos;
    const uint8_t *nl = memchr(start, '\n', end - *pos);
    size_t n = nl ? (size_t)(nl - start) : end - *pos; /* the head scan guarantees an LF */
    *pos += n + (nl ? 1 : 0);
    if (n && start[n - 1] == '\r') n--;
    return (nimbus__span){start, n};
}

/* Connection header: a comma-separated token list. */
static void parse_connection(nimbus__span v, bool *close, bool *keep_alive)
{
    size_t i = 0;
    while (i < v.len) {
        size_t j = i;
        while (j < v.len && v.ptr[j] != ',')
            j++;
        nimbus__span tok = span_trim(v.ptr + i, j - i);
        if (span_ieq(tok, "close")) *close = true;
        if (span_ieq(tok, "keep-alive")) *keep_alive = true;
        i = j + 1;
    }
}

ssize_t nimbus__http_parse_response(const uint8_t *buf, size_t len, nimbus__http_response *out)
{
    static const char proto[] = "HTTP/1.";
    memset(out, 0, offsetof(nimbus__http_response, headers));
    if (len == 0) return 0;

    /* Fail fast on a peer that is not speaking HTTP instead of waiting for 64 KiB of it. */
    if (memcmp(buf, proto, len < 7 ? len : 7) != 0) return -EPROTO;

    /* Find the blank line ending the head; only then parse, so a head is parsed once. */
    size_t limit = len < NIMBUS__MAX_HEAD ? len : NIMBUS__MAX_HEAD;
    size_t end = 0;
    for (size_t i = 0; i < limit;) {
        const uint8_t *nl = memchr(buf + i, '\n', limit - i);
        if (!nl) break;
        i = (size_t)(nl - buf) + 1;
        if (i < limit && buf[i] == '\n') {
            end = i + 1;
            break;
        }
        if (i + 1 < limit && buf[i] == '\r' && buf[i + 1] == '\n') {
            end = i + 2;
            break;
        }
    }
    if (!end) return len >= NIMBUS__MAX_HEAD ? -EMSGSIZE : 0;

    /* Status line: HTTP/1.x SP 3DIGIT [SP reason] */
    size_t pos = 0;
    nimbus__span l = next_line(buf, end, &pos);
    if (l.len < 12 || l.ptr[7] < '0' || l.ptr[7] > '9' || l.ptr[8] != ' ') return -EPROTO;
    out->minor_version = l.ptr[7] - '0';
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (l.ptr[i] < '0' || l.ptr[i] > '9') return -EPROTO;
        status = status * 10 + (l.ptr[i] - '0');
    }
    if (status < 100 || status > 599) return -EPROTO;
    if (l.len > 12 && l.ptr[12] != ' ') return -EPROTO;
    for (size_t i = 12; i < l.len; i++)
        if (!is_field_char(l.ptr[i])) return -EPROTO;
    out->status = status;

    bool have_length = false, chunked = false, te_seen = false, close = false, ka = false;
    uint64_t length = 0;
    for (;;) {
        l = next_line(buf, end, &pos);
        if (l.len == 0) break;
        /* name ":" OWS value OWS; no space before the colon, no obsolete line folding. */
        size_t n = 0;
        while (n < l.len && is_tchar(l.ptr[n]))
            n++;
        if (n == 0 || n == l.len || l.ptr[n] != ':') return -EPROTO;
        for (size_t i = n + 1; i < l.len; i++)
            if (!is_field_char(l.ptr[i])) return -EPROTO;
        if (out->nheaders == NIMBUS__MAX_HEADERS) return -EMSGSIZE;
        nimbus__http_header *h = &out->headers[out->nheaders++];
        h->name = (nimbus__span){l.ptr, n};
        h->value = span_trim(l.ptr + n + 1, l.len - n - 1);

        if (span_ieq(h->name, "content-length")) {
            /* 1*DIGIT; a repeat must agree (RFC 9112 6.3), anything else is a smuggling risk. */
            uint64_t v = 0;
            if (h->value.len == 0) return -EPROTO;
            for (size_t i = 0; i < h->value.len; i++) {
                uint8_t c = h->value.ptr[i];
                if (c < '0' || c > '9') return -EPROTO;
                if (v > NIMBUS__MAX_BODY) continue; /* already too big; keep validating */
                v = v * 10 + (uint64_t)(c - '0');
            }
            if (have_length && v != length) return -EPROTO;
            have_length = true;
            length = v;
        } else if (span_ieq(h->name, "transfer-encoding")) {
            /* We ask for nothing else, so "chunked" alone is the only coding we accept. */
            if (te_seen || !span_ieq(h->value, "chunked")) return -EPROTO;
            te_seen = chunked = true;
        } else if (span_ieq(h->name, "connection")) {
            parse_connection(h->value, &close, &ka);
        }
    }

    out->keep_alive = out->minor_version >= 1 ? !close : ka && !close;
    if (status < 200 || status == 204 || status == 304) {
        out->body = NIMBUS__BODY_NONE;
    } else if (chunked && have_length) {
        return -EPROTO;
    } else if (chunked) {
        out->body = NIMBUS__BODY_CHUNKED;
    } else if (have_length) {
        if (length > NIMBUS__MAX_BODY) return -EMSGSIZE;
        out->body = NIMBUS__BODY_LENGTH;
        out->content_length = length;
    } else {
        out->body = NIMBUS__BODY_UNTIL_CLOSE;
        out->keep_alive = false;
    }
    return (ssize_t)end;
}

const nimbus__span *nimbus__http_header_get(const nimbus__http_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (span_ieq(r->headers[i].name, name)) return &r->headers[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Chunked transfer coding                                                                     */

enum {
    CH_SIZE,       /* hex digits of a chunk size */
    CH_EXT,        /* after the digits: whitespace and extensions up to the line end */
    CH_SIZE_LF,    /* CR seen at the end of the size line */
    CH_DATA,       /* chunk bytes */
    CH_DATA_END,   /* CRLF after the chunk bytes */
    CH_DATA_LF,    /* CR seen after the chunk bytes */
    CH_TRAILER,    /* inside the trailer section, line in c->line */
    CH_TRAILER_LF, /* CR seen in the trailer section */
    CH_DONE,
};

#define CHUNK_LINE_MAX 4096 /* a size line with extensions; ours never have any */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int nimbus__chunked_feed(nimbus__chunked *c, const uint8_t *in, size_t len, size_t *consumed,
                         nimbus__buf *out)
{
    size_t i = 0;
    int rc = 0;
    while (i < len && c->state != CH_DONE) {
        uint8_t ch = in[i];
        switch (c->state) {
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->remaining) n = (size_t)c->remaining;
            rc = nimbus__buf_append(out, in + i, n);
            if (rc < 0) goto out;
            i += n;
            c->remaining -= n;
            if (c->remaining == 0) c->state = CH_DATA_END;
            continue;
        }
        case CH_SIZE: {
            int d = hexval(ch);
            if (d >= 0) {
                /* Any chunk bigger than the body cap fails anyway; checking here also keeps
                 * the accumulator from overflowing. */
                if (c->remaining > (NIMBUS__MAX_BODY - (uint64_t)d) / 16) {
                    rc = -EMSGSIZE;
                    goto out;
                }
                c->remaining = c->remaining * 16 + (uint64_t)d;
                c->digits = true;
            } else if (!c->digits) {
                rc = -EPROTO;
                goto out;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CH_EXT;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') {
                goto size_line_done;
            } else {
                rc = -EPROTO;
                goto out;
            }
            break;
        }
        case CH_EXT:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == '\n')
                goto size_line_done;
            else if (!is_field_char(ch)) {
                rc = -EPROTO;
                goto out;
            }
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                rc = -EPROTO;
                goto out;
            }
            goto size_line_done;
        case CH_DATA_END:
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE;
            else {
                rc = -EPROTO;
                goto out;
            }
            c->line = 0;
            c->digits = false;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                rc = -EPROTO;
                goto out;
            }
            c->state = CH_SIZE;
            break;
        case CH_TRAILER:
            /* Trailers are read and dropped: the Runtime API sends none on /next. */
            if (ch == '\r') {
                c->state = CH_TRAILER_LF;
            } else if (ch == '\n') {
                if (c->line == 0) c->state = CH_DONE;
                c->line = 0;
            } else if (!is_field_char(ch)) {
                rc = -EPROTO;
                goto out;
            } else {
                c->line++;
            }
            if (++c->trailer > NIMBUS__MAX_HEAD) {
                rc = -EMSGSIZE;
                goto out;
            }
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') {
                rc = -EPROTO;
                goto out;
            }
            c->state = c->line == 0 ? CH_DONE : CH_TRAILER;
            c->line = 0;
            break;
        }
        if (c->state == CH_SIZE || c->state == CH_EXT || c->state == CH_SIZE_LF) {
            if (++c->line > CHUNK_LINE_MAX) {
                rc = -EMSGSIZE;
                goto out;
            }
        }
        i++;
        continue;

    size_line_done:
        i++;
        c->line = 0;
        c->state = c->remaining ? CH_DATA : CH_TRAILER;
    }
out:
    *consumed = i;
    if (rc < 0) return rc;
    return c->state == CH_DONE ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON strings                                                                                */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one. */
static size_t utf8_seq(const uint8_t *s, size_t len)
{
    uint8_t c = s[0];
    size_t n;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0) lo = 0xa0; /* overlong */
    if (c == 0xed) hi = 0x9f; /* surrogates */
    if (c == 0xf0) lo = 0x90; /* overlong */
    if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
    if (len < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

/* Escapes s into dst (when dst is not NULL) and returns the escaped length: run once to size,
 * once to write, so the output buffer grows a single time. */
static size_t json_escape(uint8_t *dst, const uint8_t *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* The characters with a two-byte escape, and their escape letters, pairwise. */
    static const char specials[] = "\"\\\b\f\n\r\t", letters[] = "\"\\bfnrt";
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        const char *sp = c ? strchr(specials, c) : NULL;
        char esc = sp ? letters[sp - specials] : 0;
        if (esc) {
            if (dst) {
                dst[o] = '\\';
                dst[o + 1] = (uint8_t)esc;
            }
            o += 2;
            i++;
        } else if (c < 0x20) {
            if (dst) {
                memcpy(dst + o, "\\u00", 4);
                dst[o + 4] = (uint8_t)hex[c >> 4];
                dst[o + 5] = (uint8_t)hex[c & 15];
            }
            o += 6;
            i++;
        } else {
            size_t n = utf8_seq(s + i, len - i);
            if (n == 0) { /* not UTF-8: U+FFFD, one per bad byte */
                if (dst) memcpy(dst + o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            } else {
                if (dst) memcpy(dst + o, s + i, n);
                o += n;
                i += n;
            }
        }
    }
    return o;
}

int nimbus__json_quote(nimbus__buf *out, const char *s, size_t len)
{
    size_t n = json_escape(NULL, (const uint8_t *)s, len);
    if (n > SIZE_MAX - 2) return -EMSGSIZE;
    int rc = nimbus__buf_reserve(out, n + 2);
    if (rc < 0) return rc;
    uint8_t *p = out->data + out->len;
    p[0] = '"';
    json_escape(p + 1, (const uint8_t *)s, len);
    p[n + 1] = '"';
    out->len += n + 2;
    out->data[out->len] = 0;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The response a handler fills                                                                */

#define ERROR_TYPE_MAX    255
#define ERROR_MESSAGE_MAX (256 * 1024) /* longer messages are cut; errors are not payloads */

enum resp_kind { RESP_UNSET, RESP_OK, RESP_ERROR };

struct nimbus_response {
    enum resp_kind kind;
    nimbus__buf body;                    /* result bytes, or the error JSON */
    char error_type[ERROR_TYPE_MAX + 1]; /* RESP_ERROR */
    const char *fallback;                /* static error JSON used when building one failed */
};

static const char oom_json[] = "{\"errorMessage\":\"out of memory while building the response\","
                               "\"errorType\":\"Runtime.OutOfMemory\",\"stackTrace\":[]}";

static void response_reset(nimbus_response *r)
{
    r->kind = RESP_UNSET;
    buf_recycle(&r->body);
    r->error_type[0] = 0;
    r->fallback = NULL;
}

static void response_oom(nimbus_response *r)
{
    r->kind = RESP_ERROR;
    r->body.len = 0;
    snprintf(r->error_type, sizeof r->error_type, "%s", "Runtime.OutOfMemory");
    r->fallback = oom_json;
}

void nimbus_response_error(nimbus_response *r, const char *error_type, const char *message)
{
    if (!r) return;
    if (!error_type || !*error_type) error_type = "Error";
    if (!message) message = "";
    /* The type also travels as an HTTP header and a u16 string: keep it one short ASCII line. */
    size_t n = 0;
    for (; error_type[n] && n < ERROR_TYPE_MAX; n++) {
        unsigned char c = (unsigned char)error_type[n];
        r->error_type[n] = c >= 0x20 && c < 0x7f ? (char)c : '_';
    }
    r->error_type[n] = 0;
    size_t mlen = strnlen(message, ERROR_MESSAGE_MAX);

    r->kind = RESP_ERROR;
    r->fallback = NULL;
    r->body.len = 0;
    int rc = buf_puts(&r->body, "{\"errorMessage\":");
    if (!rc) rc = nimbus__json_quote(&r->body, message, mlen);
    if (!rc) rc = buf_puts(&r->body, ",\"errorType\":");
    if (!rc) rc = nimbus__json_quote(&r->body, r->error_type, n);
    if (!rc) rc = buf_puts(&r->body, ",\"stackTrace\":[]}");
    if (rc < 0) response_oom(r);
}

void nimbus_response_set(nimbus_response *r, const void *body, size_t len)
{
    if (!r) return;
    if (!body) len = 0;
    if (len > NIMBUS__MAX_BODY) {
        /* Refuse here rather than let the platform kill the instance for an oversized frame. */
        char msg[160];
        snprintf(msg, sizeof msg,
                 "Response payload size (%zu bytes) exceeded maximum allowed payload size (%zu "
                 "bytes).",
                 len, NIMBUS__MAX_BODY);
        nimbus_response_error(r, "Function.ResponseSizeTooLarge", msg);
        return;
    }
    r->kind = RESP_OK;
    r->fallback = NULL;
    r->body.len = 0;
    if (nimbus__buf_append(&r->body, body, len) < 0) response_oom(r);
}

static nimbus__span response_bytes(const nimbus_response *r)
{
    if (r->fallback) return (nimbus__span){(const uint8_t *)r->fallback, strlen(r->fallback)};
    if (r->kind == RESP_UNSET) return (nimbus__span){(const uint8_t *)"null", 4};
    return (nimbus__span){r->body.data, r->body.len};
}

/* ------------------------------------------------------------------------------------------ */
/* Runtime state and transports                                                                */

struct invocation {
    nimbus_context ctx;
    const uint8_t *event; /* NUL-terminated */
    size_t event_len;
    nimbus__span id; /* exact request id bytes to echo (ctx.request_id stops at a NUL) */
};

struct sdk;

/* What differs between the channel and the Runtime API. Every op returns 0 or -errno;
 * next() also returns 1 when the platform ended the conversation cleanly. */
struct transport {
    const char *name;
    int (*ready)(struct sdk *s);
    int (*next)(struct sdk *s, struct invocation *inv);
    int (*answer)(struct sdk *s, const struct invocation *inv, const nimbus_response *r);
    int (*init_error)(struct sdk *s, const char *type, nimbus__span json);
    /* A call to the platform while inv runs: 0 answered (out filled), or -errno. */
    int (*call)(struct sdk *s, const struct invocation *inv, const char *op, const char *target,
                const char *attrs, nimbus__span body, nimbus_result *out);
};

struct sdk {
    const struct transport *t;
    int fd;         /* channel fd or TCP socket; -1 when closed */
    nimbus__buf in; /* bytes read from fd; [in_pos, len) not consumed yet */
    size_t in_pos;
    nimbus__buf out;     /* frame or request head being written */
    nimbus__buf body;    /* HTTP: the decoded /next body */
    nimbus__buf strings; /* NUL-terminated copies of the invocation's strings */
    /* Calls: their own buffers, since the event lives in `in` (channel) or `body` (HTTP) */
    nimbus__buf call_in, call_out;
    uint32_t call_seq;
    nimbus_response resp;
    /* HTTP only */
    char *host, *port, *authority;
    bool reused; /* the connection already carried a full exchange */
    /* From the environment, read once */
    char *function_name, *function_version, *log_group, *log_stream;
    int memory_mb;
    char why[256]; /* the innermost failure, in words */
};

static struct sdk g_sdk = {.fd = -1};

/* Records why (first failure wins: it is the most specific) and returns rc. */
static int fail(struct sdk *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct sdk *s, int rc, const char *fmt, ...)
{
    if (!s->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof s->why, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t nimbus_remaining_ms(const nimbus_context *ctx)
{
    if (!ctx || ctx->deadline_ms <= 0) return INT64_MAX;
    return ctx->deadline_ms - now_ms();
}

/* Fills inv->ctx from the per-process values and the given per-invocation strings, copied
 * NUL-terminated into s->strings. One reserve up front keeps the copies from moving. */
static int fill_context(struct sdk *s, struct invocation *inv, int64_t deadline_ms, nimbus__span id,
                        nimbus__span arn, nimbus__span trace, nimbus__span cc)
{
    nimbus__span parts[4] = {id, arn, trace, cc};
    const char *copies[4];
    size_t total = 0;
    s->strings.len = 0;
    for (int i = 0; i < 4; i++)
        total += parts[i].len + 1;
    int rc = nimbus__buf_reserve(&s->strings, total);
    if (rc < 0) return fail(s, rc, "no memory for the invocation's strings");
    for (int i = 0; i < 4; i++) {
        copies[i] = (const char *)s->strings.data + s->strings.len;
        nimbus__buf_append(&s->strings, parts[i].ptr, parts[i].len);
        s->strings.len++; /* keep the NUL written by append */
    }
    inv->ctx = (nimbus_context){
        .request_id = copies[0],
        .function_name = s->function_name,
        .function_version = s->function_version,
        .invoked_function_arn = copies[1],
        .memory_limit_mb = s->memory_mb,
        .deadline_ms = deadline_ms,
        .trace_id = copies[2],
        .client_context = copies[3],
        .log_group_name = s->log_group,
        .log_stream_name = s->log_stream,
    };
    inv->id = (nimbus__span){(const uint8_t *)copies[0], id.len};
    return 0;
}

/* Reads until b holds n more bytes. Returns 0, 1 on EOF before the first byte, -EPROTO on EOF
 * after it (a message cut short), or -errno. */
static int read_exact(int fd, nimbus__buf *b, size_t n)
{
    int rc = nimbus__buf_reserve(b, n);
    if (rc < 0) return rc;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b->data + b->len, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return got ? -EPROTO : 1;
        got += (size_t)r;
        b->len += (size_t)r;
    }
    b->data[b->len] = 0;
    return 0;
}

/* Writes a then b. MSG_NOSIGNAL: a peer that went away must give us EPIPE to report, not a
 * SIGPIPE that kills the function without a word. */
static int write_all(int fd, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    struct iovec *v = iov;
    int cnt = 2;
    while (cnt) {
        if (v->iov_len == 0) {
            v++, cnt--;
            continue;
        }
        struct msghdr mh = {.msg_iov = v, .msg_iovlen = (size_t)cnt};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK) w = writev(fd, v, cnt); /* a pipe in some test rig */
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        size_t done = (size_t)w;
        while (cnt && done >= v->iov_len)
            done -= v->iov_len, v++, cnt--;
        if (cnt) v->iov_base = (uint8_t *)v->iov_base + done, v->iov_len -= done;
    }
    return 0;
}

/* ---- channel transport ---- */

static int channel_send(struct sdk *s, const nimbus__frame *f)
{
    s->out.len = 0;
    int rc = nimbus__frame_encode(&s->out, f);
    if (rc < 0) return rc;
    rc = write_all(s->fd, s->out.data, s->out.len, NULL, 0);
    if (rc < 0) return fail(s, rc, "write to channel: %s", strerror(-rc));
    return 0;
}

static int channel_ready(struct sdk *s)
{
    nimbus__frame f = {.type = NIMBUS__FRAME_READY};
    return channel_send(s, &f);
}

static int channel_next(struct sdk *s, struct invocation *inv)
{
    nimbus__buf *in = &s->in;
    nimbus__frame f;
    in->len = 0;
    /* Length and type first, so a bad frame is refused before its body is read. */
    int rc = read_exact(s->fd, in, 5);
    if (rc == 1) return 1; /* EOF between frames: the daemon is done with us */
    if (rc == -EPROTO) return fail(s, rc, "channel closed inside a frame header");
    if (rc < 0) return fail(s, rc, "read from channel: %s", strerror(-rc));
    ssize_t n = nimbus__frame_decode(in->data, in->len, &f);
    if (n < 0)
        return fail(s, (int)n, "bad frame header from daemon: length %u, type %u",
                    get_u32le(in->data), in->data[4]);
    if (in->data[4] != NIMBUS__FRAME_INVOKE)
        return fail(s, -EPROTO, "unexpected frame type %u from daemon", in->data[4]);
    if (n == 0) {
        rc = read_exact(s->fd, in, 4 + (size_t)get_u32le(in->data) - 5);
        if (rc != 0) return fail(s, rc > 0 ? -EPROTO : rc, "channel closed inside a frame");
        n = nimbus__frame_decode(in->data, in->len, &f);
        if (n <= 0) return fail(s, n ? (int)n : -EPROTO, "malformed INVOKE frame");
    }
    int64_t deadline = f.deadline_ms > INT64_MAX ? 0 : (int64_t)f.deadline_ms;
    rc = fill_context(s, inv, deadline, f.request_id, f.function_arn, f.trace_id, f.client_context);
    if (rc < 0) return rc;
    /* The event is the frame's tail; in->data[in->len] is the buffer's NUL. */
    inv->event = f.payload.ptr;
    inv->event_len = f.payload.len;
    inv->id = f.request_id; /* raw bytes, NULs included, for the echo */
    return 0;
}

static const char too_large_type[] = "Function.ResponseSizeTooLarge";

static int channel_answer(struct sdk *s, const struct invocation *inv, const nimbus_response *r)
{
    nimbus__frame f = {.request_id = inv->id, .payload = response_bytes(r)};
    if (r->kind == RESP_ERROR) {
        f.type = NIMBUS__FRAME_ERROR;
        f.error_type = (nimbus__span){(const uint8_t *)r->error_type, strlen(r->error_type)};
    } else {
        f.type = NIMBUS__FRAME_RESPONSE;
    }
    int rc = channel_send(s, &f);
    if (rc != -EMSGSIZE) return rc;
    /* The request id's bytes pushed a result near the cap over it; an oversized frame would be
     * a protocol error, so say what happened instead. */
    static const char json[] = "{\"errorMessage\":\"Response payload exceeded the maximum "
                               "allowed payload size.\",\"errorType\":"
                               "\"Function.ResponseSizeTooLarge\",\"stackTrace\":[]}";
    f.type = NIMBUS__FRAME_ERROR;
    f.error_type = (nimbus__span){(const uint8_t *)too_large_type, sizeof too_large_type - 1};
    f.payload = (nimbus__span){(const uint8_t *)json, sizeof json - 1};
    rc = channel_send(s, &f);
    return rc == -EMSGSIZE ? fail(s, rc, "request id too long to answer") : rc;
}

static int channel_init_error(struct sdk *s, const char *type, nimbus__span json)
{
    nimbus__frame f = {.type = NIMBUS__FRAME_INIT_ERROR,
                       .error_type = {(const uint8_t *)type, strlen(type)},
                       .payload = json};
    return channel_send(s, &f);
}

/* Fills out with a copy of the answer. */
static int result_set(struct sdk *s, nimbus_result *out, int status, nimbus__span code,
                      const uint8_t *body, size_t len)
{
    out->status = status;
    size_t n = code.len < sizeof out->error_code - 1 ? code.len : sizeof out->error_code - 1;
    if (n) memcpy(out->error_code, code.ptr, n);
    out->error_code[n] = 0;
    out->body = malloc(len + 1);
    if (!out->body) return fail(s, -ENOMEM, "no memory for a call's result");
    if (len) memcpy(out->body, body, len);
    out->body[len] = 0;
    out->len = len;
    return 0;
}

static int channel_call(struct sdk *s, const struct invocation *inv, const char *op,
                        const char *target, const char *attrs, nimbus__span body,
                        nimbus_result *out)
{
    (void)inv;
    uint32_t id = ++s->call_seq;
    nimbus__frame f = {.type = NIMBUS__FRAME_CALL,
                       .call_id = id,
                       .op = {(const uint8_t *)op, strlen(op)},
                       .target = {(const uint8_t *)target, strlen(target)},
                       .attrs = {(const uint8_t *)attrs, strlen(attrs)},
                       .payload = body};
    s->call_out.len = 0;
    int rc = nimbus__frame_encode(&s->call_out, &f);
    if (rc < 0) return rc; /* too big to ask: this call's problem, not the channel's */
    rc = write_all(s->fd, s->call_out.data, s->call_out.len, NULL, 0);
    if (rc < 0) return fail(s, rc, "write to channel: %s", strerror(-rc));
    /* One call at a time (the SDK is single-threaded): the next frame is its answer. */
    nimbus__buf *in = &s->call_in;
    in->len = 0;
    rc = read_exact(s->fd, in, 5);
    if (rc != 0) return fail(s, rc > 0 ? -EPROTO : rc, "channel closed during a call");
    ssize_t n = nimbus__frame_decode(in->data, in->len, &f);
    if (n < 0 || in->data[4] != NIMBUS__FRAME_CALL_RESULT)
        return fail(s, n < 0 ? (int)n : -EPROTO, "unexpected frame type %u during a call",
                    in->data[4]);
    if (n == 0) {
        rc = read_exact(s->fd, in, 4 + (size_t)get_u32le(in->data) - 5);
        if (rc != 0) return fail(s, rc > 0 ? -EPROTO : rc, "channel closed inside a frame");
        n = nimbus__frame_decode(in->data, in->len, &f);
        if (n <= 0) return fail(s, n ? (int)n : -EPROTO, "malformed CALL_RESULT frame");
    }
    if (f.call_id != id) return fail(s, -EPROTO, "CALL_RESULT for call %u, not %u", f.call_id, id);
    rc = result_set(s, out, f.status, f.error_code, f.payload.ptr, f.payload.len);
    buf_recycle(&s->call_in);
    return rc;
}

static const struct transport channel_transport = {
    .name = "channel",
    .ready = channel_ready,
    .next = channel_next,
    .answer = channel_answer,
    .init_error = channel_init_error,
    .call = channel_call,
};

/* ---- HTTP Runtime API transport ---- */

#define API_PREFIX "/2018-06-01/runtime"

static void http_close(struct sdk *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->reused = false;
    s->in.len = s->in_pos = 0;
}

static int connect_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        int err = errno;
        if (err == EINTR) { /* the attempt goes on in the background: wait for its outcome */
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            socklen_t sl = sizeof err;
            while (poll(&p, 1, -1) < 0 && errno == EINTR) {
            }
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) err = errno;
        }
        if (err) {
            close(fd);
            return -err;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* small requests, no delay */
    return fd;
}

static int http_connect(struct sdk *s)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    int gai = getaddrinfo(s->host, s->port, &hints, &res);
    if (gai != 0) return fail(s, -EHOSTUNREACH, "resolve %s: %s", s->authority, gai_strerror(gai));
    int fd = -ENOENT;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = connect_one(ai);
        if (fd >= 0) break;
    }
    freeaddrinfo(res);
    if (fd < 0) return fail(s, fd, "connect to %s: %s", s->authority, strerror(-fd));
    s->fd = fd;
    s->reused = false;
    s->in.len = s->in_pos = 0;
    return 0;
}

/* Reads more bytes into s->in after dropping the consumed ones. Returns bytes read, 0 on EOF,
 * or -errno. */
static ssize_t http_fill(struct sdk *s)
{
    nimbus__buf *in = &s->in;
    if (s->in_pos) {
        memmove(in->data, in->data + s->in_pos, in->len - s->in_pos);
        in->len -= s->in_pos;
        s->in_pos = 0;
    }
    size_t want = 64 * 1024;
    if (want > in->max - in->len) want = in->max - in->len;
    if (want == 0) return -EMSGSIZE;
    int rc = nimbus__buf_reserve(in, want);
    if (rc < 0) return rc;
    for (;;) {
        ssize_t r = recv(s->fd, in->data + in->len, want, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        in->len += (size_t)r;
        in->data[in->len] = 0;
        return r;
    }
}

/* Returned by http_read_response when the server closed without sending a single byte: on a
 * reused keep-alive connection that is the normal idle-close race, so the request is retried
 * once on a fresh connection. */
#define CLOSED_UNANSWERED (-ENOTCONN)

static int64_t parse_deadline(const nimbus__span *v)
{
    int64_t ms = 0;
    if (!v || v->len == 0 || v->len > 18) return 0; /* 18 digits cannot overflow */
    for (size_t i = 0; i < v->len; i++) {
        if (v->ptr[i] < '0' || v->ptr[i] > '9') return 0;
        ms = ms * 10 + (v->ptr[i] - '0');
    }
    return ms;
}

/* What a call's answer says in its headers (docs/internals/calls.md). */
struct call_meta {
    bool nimbus;   /* X-Nimbus-Call: the platform answered, not a Lambda-style 404 */
    char code[64]; /* X-Nimbus-Error-Code */
};

/* Reads one response into *r and its body into body (NULL: s->body). With inv set, copies the
 * invocation headers into the context first, with meta the call's: the head's spans die when
 * s->in grows. */
static int http_read_response(struct sdk *s, nimbus__http_response *r, struct invocation *inv,
                              nimbus__buf *body_out, struct call_meta *meta)
{
    nimbus__buf *in = &s->in;
    ssize_t head;
    bool skipped_interim = false;
    for (;;) {
        size_t have = in->len - s->in_pos;
        head = have ? nimbus__http_parse_response(in->data + s->in_pos, have, r) : 0;
        if (head == -EMSGSIZE)
            return fail(s, (int)head, "HTTP response from %s passes a cap (head %zu, body %zu)",
                        s->authority, NIMBUS__MAX_HEAD, NIMBUS__MAX_BODY);
        if (head < 0) return fail(s, (int)head, "malformed HTTP response from %s", s->authority);
        if (head > 0 && r->status >= 200) break;
        if (head > 0) { /* an interim 1xx: skip it */
            s->in_pos += (size_t)head;
            skipped_interim = true;
            continue;
        }
        bool nothing_yet = have == 0 && !skipped_interim;
        ssize_t n = http_fill(s);
        if (n < 0 && nothing_yet && (n == -ECONNRESET || n == -EPIPE)) return CLOSED_UNANSWERED;
        if (n < 0) return fail(s, (int)n, "read from %s: %s", s->authority, strerror((int)-n));
        if (n == 0 && nothing_yet) return CLOSED_UNANSWERED;
        if (n == 0) return fail(s, -EPROTO, "%s closed the connection mid-response", s->authority);
    }

    if (inv) {
        const nimbus__span empty = {(const uint8_t *)"", 0};
        const nimbus__span *id = nimbus__http_header_get(r, "lambda-runtime-aws-request-id");
        const nimbus__span *arn = nimbus__http_header_get(r, "lambda-runtime-invoked-function-arn");
        const nimbus__span *tr = nimbus__http_header_get(r, "lambda-runtime-trace-id");
        const nimbus__span *cc = nimbus__http_header_get(r, "lambda-runtime-client-context");
        int64_t deadline = parse_deadline(nimbus__http_header_get(r, "lambda-runtime-deadline-ms"));
        if (r->status / 100 == 2 && (!id || id->len == 0))
            return fail(s, -EPROTO, "/next answered without Lambda-Runtime-Aws-Request-Id");
        int rc = fill_context(s, inv, deadline, id ? *id : empty, arn ? *arn : empty,
                              tr ? *tr : empty, cc ? *cc : empty);
        if (rc < 0) return rc;
    }
    if (meta) {
        const nimbus__span *mark = nimbus__http_header_get(r, "x-nimbus-call");
        const nimbus__span *code = nimbus__http_header_get(r, "x-nimbus-error-code");
        meta->nimbus = mark != NULL;
        size_t n =
            code ? (code->len < sizeof meta->code - 1 ? code->len : sizeof meta->code - 1) : 0;
        if (n) memcpy(meta->code, code->ptr, n);
        meta->code[n] = 0;
    }
    r->nheaders = 0; /* the spans point into s->in, which is about to move */
    s->in_pos += (size_t)head;

    nimbus__buf *body = body_out ? body_out : &s->body;
    nimbus__chunked ch = {0};
    uint64_t need = r->content_length;
    body->len = 0;
    for (;;) {
        const uint8_t *avail = in->data + s->in_pos;
        size_t alen = in->len - s->in_pos;
        int rc = 0;
        if (r->body == NIMBUS__BODY_NONE || (r->body == NIMBUS__BODY_LENGTH && need == 0)) break;
        if (r->body == NIMBUS__BODY_LENGTH) {
            size_t take = alen < need ? alen : (size_t)need;
            rc = nimbus__buf_append(body, avail, take);
            s->in_pos += take;
            need -= take;
            if (need == 0 && rc == 0) break;
        } else if (r->body == NIMBUS__BODY_CHUNKED) {
            size_t used = 0;
            rc = nimbus__chunked_feed(&ch, avail, alen, &used, body);
            s->in_pos += used;
            if (rc == 1) break;
        } else {
            rc = nimbus__buf_append(body, avail, alen);
            s->in_pos += alen;
        }
        if (rc == -EMSGSIZE) return fail(s, rc, "response body over %zu bytes", NIMBUS__MAX_BODY);
        if (rc < 0) return fail(s, rc, "malformed HTTP body from %s", s->authority);
        ssize_t n = http_fill(s);
        if (n < 0) return fail(s, (int)n, "read from %s: %s", s->authority, strerror((int)-n));
        if (n == 0 && r->body == NIMBUS__BODY_UNTIL_CLOSE) break;
        if (n == 0) return fail(s, -EPROTO, "%s closed the connection mid-body", s->authority);
    }
    return 0;
}

/* Sends one request and reads its response. The request is retried once, on a new
 * connection, if a reused keep-alive connection turns out to be closed. */
static int http_exchange(struct sdk *s, const char *method, const char *path,
                         const char *error_type, const char *extra, nimbus__span body,
                         nimbus__http_response *r, struct invocation *inv, nimbus__buf *body_out,
                         struct call_meta *meta)
{
    s->out.len = 0;
    int rc = buf_printf(&s->out, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: nimbus-sdk-c/1\r\n",
                        method, path, s->authority);
    if (!rc && error_type)
        rc = buf_printf(&s->out, "Lambda-Runtime-Function-Error-Type: %s\r\n", error_type);
    if (!rc && extra) rc = buf_puts(&s->out, extra);
    if (!rc && strcmp(method, "POST") == 0)
        rc = buf_printf(&s->out, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                        body.len);
    if (!rc) rc = buf_puts(&s->out, "\r\n");
    if (rc < 0) return fail(s, rc, "building the %s %s request", method, path);

    for (int attempt = 0;; attempt++) {
        if (s->fd < 0 && (rc = http_connect(s)) < 0) return rc;
        bool retryable = s->reused && attempt == 0;
        rc = write_all(s->fd, s->out.data, s->out.len, body.ptr, body.len);
        if (rc == -EPIPE || rc == -ECONNRESET) rc = CLOSED_UNANSWERED;
        if (rc == 0) rc = http_read_response(s, r, inv, body_out, meta);
        if (rc == 0) break;
        if (retryable && rc == CLOSED_UNANSWERED) {
            http_close(s);
            continue;
        }
        http_close(s);
        if (rc == CLOSED_UNANSWERED)
            return fail(s, -ECONNRESET, "%s closed the connection without answering %s %s",
                        s->authority, method, path);
        return fail(s, rc, "%s %s: %s", method, path, strerror(-rc));
    }
    if (r->keep_alive)
        s->reused = true;
    else
        http_close(s);
    return 0;
}

/* The last response body, as "%.*s" arguments for a diagnostic. */
#define BODY_TEXT(s) (int)((s)->body.len < 200 ? (s)->body.len : 200), (const char *)(s)->body.data

static int http_next(struct sdk *s, struct invocation *inv)
{
    nimbus__http_response r;
    int rc = http_exchange(s, "GET", API_PREFIX "/invocation/next", NULL, NULL,
                           (nimbus__span){NULL, 0}, &r, inv, NULL, NULL);
    if (rc < 0) return rc;
    /* Lambda documents a failing /next as unrecoverable: exit and let a new instance start. */
    if (r.status / 100 != 2)
        return fail(s, -EPROTO, "GET /next answered %d: %.*s", r.status, BODY_TEXT(s));
    inv->event = s->body.data ? s->body.data : (const uint8_t *)""; /* never NULL */
    inv->event_len = s->body.len;
    return 0;
}

/* A POST's verdict: 2xx is fine; 4xx (unknown id, payload too large) concerns only this
 * invocation, which the platform has already failed, so we log it and carry on; 5xx is the
 * documented "container error, exit". */
static int http_post_verdict(struct sdk *s, const char *what, const nimbus__http_response *r)
{
    if (r->status / 100 == 2) return 0;
    fprintf(stderr, "nimbus: POST %s answered %d: %.*s\n", what, r->status, BODY_TEXT(s));
    if (r->status / 100 == 4) return 0;
    return fail(s, -EPROTO, "POST %s answered %d", what, r->status);
}

static int http_answer(struct sdk *s, const struct invocation *inv, const nimbus_response *r)
{
    /* The id goes into the path: percent-encode all but unreserved characters, as the Node
     * client does, so an odd id cannot change the path's meaning. */
    nimbus__buf path = {.max = NIMBUS__MAX_HEAD * 4};
    int rc = buf_puts(&path, API_PREFIX "/invocation/");
    for (size_t i = 0; !rc && i < inv->id.len; i++) {
        uint8_t c = inv->id.ptr[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            rc = nimbus__buf_append(&path, &c, 1);
        else
            rc = buf_printf(&path, "%%%02X", c);
    }
    bool error = r->kind == RESP_ERROR;
    if (!rc) rc = buf_puts(&path, error ? "/error" : "/response");
    if (rc < 0) {
        nimbus__buf_free(&path);
        return fail(s, rc, "building the answer's path");
    }
    nimbus__http_response hr;
    rc = http_exchange(s, "POST", (const char *)path.data, error ? r->error_type : NULL, NULL,
                       response_bytes(r), &hr, NULL, NULL, NULL);
    if (rc == 0) rc = http_post_verdict(s, (const char *)path.data, &hr);
    nimbus__buf_free(&path);
    return rc;
}

static int http_init_error(struct sdk *s, const char *type, nimbus__span json)
{
    nimbus__http_response r;
    int rc =
        http_exchange(s, "POST", API_PREFIX "/init/error", type, NULL, json, &r, NULL, NULL, NULL);
    return rc < 0 ? rc : http_post_verdict(s, API_PREFIX "/init/error", &r);
}

static int http_ready(struct sdk *s)
{
    (void)s; /* the first GET /next is what tells Lambda that init is done */
    return 0;
}

/* POST .../invocation/{id}/nimbus/{op}[/{target}] on nimbus's Runtime API. */
static int http_call(struct sdk *s, const struct invocation *inv, const char *op,
                     const char *target, const char *attrs, nimbus__span body, nimbus_result *out)
{
    nimbus__buf path = {.max = NIMBUS__MAX_HEAD * 4};
    int rc = buf_puts(&path, API_PREFIX "/invocation/");
    for (size_t i = 0; !rc && i < inv->id.len; i++) {
        uint8_t c = inv->id.ptr[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            rc = nimbus__buf_append(&path, &c, 1);
        else
            rc = buf_printf(&path, "%%%02X", c);
    }
    if (!rc) rc = buf_printf(&path, "/nimbus/%s%s%s", op, *target ? "/" : "", target);
    nimbus__buf extra = {.max = NIMBUS__MAX_HEAD};
    if (!rc && *attrs) rc = buf_printf(&extra, "X-Nimbus-Attributes: %s\r\n", attrs);
    struct call_meta meta = {0};
    nimbus__http_response hr;
    nimbus__buf *resp = &s->call_in;
    if (!rc)
        rc = http_exchange(s, "POST", (const char *)path.data, NULL,
                           extra.len ? (const char *)extra.data : NULL, body, &hr, NULL, resp,
                           &meta);
    nimbus__buf_free(&path);
    nimbus__buf_free(&extra);
    if (rc < 0) return rc;
    if (!meta.nimbus) {
        /* AWS Lambda (or another emulator): the path means nothing there. */
        resp->len = 0;
        return -ENOTSUP;
    }
    nimbus__span code = {(const uint8_t *)meta.code, strlen(meta.code)};
    rc = result_set(s, out, hr.status, code, resp->data ? resp->data : (const uint8_t *)"",
                    resp->len);
    buf_recycle(resp);
    return rc;
}

static const struct transport http_transport = {
    .name = "runtime API",
    .ready = http_ready,
    .next = http_next,
    .answer = http_answer,
    .init_error = http_init_error,
    .call = http_call,
};

/* ------------------------------------------------------------------------------------------ */
/* Setup and the loop                                                                          */

static char *env_dup(const char *name)
{
    const char *v = getenv(name);
    return strdup(v ? v : "");
}

/* "host:port", "[v6]:port" or "host" (port 80). */
static int parse_authority(struct sdk *s, const char *api)
{
    for (const char *p = api; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '/')
            return fail(s, -EINVAL, "AWS_LAMBDA_RUNTIME_API is not host:port: %.100s", api);
    const char *host = api, *host_end, *port = "80";
    if (*api == '[') {
        host = api + 1;
        host_end = strchr(host, ']');
        if (!host_end || (host_end[1] && host_end[1] != ':'))
            return fail(s, -EINVAL, "AWS_LAMBDA_RUNTIME_API is not host:port: %.100s", api);
        if (host_end[1]) port = host_end + 2;
    } else {
        host_end = strrchr(api, ':');
        if (host_end)
            port = host_end + 1;
        else
            host_end = api + strlen(api);
    }
    if (host_end == host || !*port)
        return fail(s, -EINVAL, "AWS_LAMBDA_RUNTIME_API is not host:port: %.100s", api);
    s->host = strndup(host, (size_t)(host_end - host));
    s->port = strdup(port);
    s->authority = strdup(api);
    if (!s->host || !s->port || !s->authority) return fail(s, -ENOMEM, "out of memory");
    return 0;
}

static int sdk_open(struct sdk *s)
{
    if (s->t) return 0;
    s->in.max = NIMBUS__FRAME_MAX + 4; /* a whole frame, or a head plus one read */
    s->out.max = NIMBUS__FRAME_MAX + 4;
    s->body.max = NIMBUS__MAX_BODY;
    s->strings.max = 4 * (UINT16_MAX + 1) + NIMBUS__MAX_HEAD;
    s->resp.body.max = NIMBUS__MAX_BODY;
    s->call_in.max = NIMBUS__FRAME_MAX + 4;
    s->call_out.max = NIMBUS__FRAME_MAX + 4;

    s->function_name = env_dup("AWS_LAMBDA_FUNCTION_NAME");
    s->function_version = env_dup("AWS_LAMBDA_FUNCTION_VERSION");
    s->log_group = env_dup("AWS_LAMBDA_LOG_GROUP_NAME");
    s->log_stream = env_dup("AWS_LAMBDA_LOG_STREAM_NAME");
    if (!s->function_name || !s->function_version || !s->log_group || !s->log_stream)
        return fail(s, -ENOMEM, "out of memory");
    const char *mem = getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
    char *endp;
    long mb = mem ? strtol(mem, &endp, 10) : 0;
    s->memory_mb = mem && *mem && !*endp && mb > 0 && mb <= INT_MAX ? (int)mb : 0;

    const char *chan = getenv("NIMBUS_CHANNEL_FD");
    if (chan) {
        errno = 0;
        long fd = strtol(chan, &endp, 10);
        if (!*chan || *endp || errno || fd < 0 || fd > INT_MAX)
            return fail(s, -EBADF, "NIMBUS_CHANNEL_FD is not a descriptor number: %.32s", chan);
        int flags = fcntl((int)fd, F_GETFD);
        if (flags < 0) return fail(s, -EBADF, "NIMBUS_CHANNEL_FD %ld is not open", fd);
        /* Programs the handler starts must neither inherit the channel nor be told of it. */
        fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
        unsetenv("NIMBUS_CHANNEL_FD");
        s->fd = (int)fd;
        s->t = &channel_transport;
        return 0;
    }
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    if (api) {
        int rc = parse_authority(s, api);
        if (rc < 0) return rc;
        s->t = &http_transport; /* connects on the first request */
        return 0;
    }
    return fail(s, -EINVAL,
                "neither NIMBUS_CHANNEL_FD nor AWS_LAMBDA_RUNTIME_API is set; "
                "run this program as a nimbus or AWS Lambda function");
}

static void sdk_close(struct sdk *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    nimbus__buf_free(&s->in);
    nimbus__buf_free(&s->out);
    nimbus__buf_free(&s->body);
    nimbus__buf_free(&s->strings);
    nimbus__buf_free(&s->resp.body);
    nimbus__buf_free(&s->call_in);
    nimbus__buf_free(&s->call_out);
    free(s->host), free(s->port), free(s->authority);
    free(s->function_name), free(s->function_version), free(s->log_group), free(s->log_stream);
    *s = (struct sdk){.fd = -1};
}

static int report(struct sdk *s, int rc)
{
    if (rc < 0)
        fprintf(stderr, "nimbus: %s%s%s\n", s->t ? s->t->name : "", s->t ? ": " : "",
                s->why[0] ? s->why : strerror(-rc));
    return rc;
}

static bool running; /* nimbus_run is on the stack */
/* The invocation whose handler runs: calls are allowed only then, and carry its id. */
static const struct invocation *g_current;

void nimbus_result_free(nimbus_result *r)
{
    if (!r) return;
    free(r->body);
    *r = (nimbus_result){0};
}

static int sdk_call(const char *op, const char *target, const char *attrs, const void *body,
                    size_t len, nimbus_result *out)
{
    struct sdk *s = &g_sdk;
    if (!out) return -EINVAL;
    *out = (nimbus_result){0};
    if (!target || (!body && len)) return -EINVAL;
    if (!g_current || !s->t) return -EINVAL; /* only inside a handler */
    if (!attrs) attrs = "";
    /* Attributes travel as one header line on the Runtime API. */
    if (strpbrk(attrs, "\r\n")) return -EINVAL;
    int rc = s->t->call(s, g_current, op, target, attrs,
                        (nimbus__span){(const uint8_t *)(body ? body : ""), len}, out);
    if (rc < 0) return rc;
    return out->status / 100 == 2 && !out->error_code[0] ? 0 : 1;
}

int nimbus_invoke(const char *function, const void *payload, size_t len, nimbus_result *out)
{
    return sdk_call("invoke", function, NULL, payload, len, out);
}

int nimbus_invoke_async(const char *function, const void *payload, size_t len, nimbus_result *out)
{
    return sdk_call("invoke_async", function, NULL, payload, len, out);
}

int nimbus_send(const char *queue, const void *body, size_t len, const char *attributes_json,
                nimbus_result *out)
{
    return sdk_call("send", queue, attributes_json, body, len, out);
}

int nimbus_publish(const char *topic, const void *message, size_t len, const char *options_json,
                   nimbus_result *out)
{
    return sdk_call("publish", topic, options_json, message, len, out);
}

int nimbus_emit(const char *event_json, nimbus_result *out)
{
    return sdk_call("emit", "", NULL, event_json, event_json ? strlen(event_json) : 0, out);
}

int nimbus_run(nimbus_handler handler, void *user)
{
    struct sdk *s = &g_sdk;
    if (!handler) return -EINVAL;
    if (running) return -EBUSY; /* a handler calling nimbus_run again */
    running = true;

    int rc = sdk_open(s);
    if (rc == 0) rc = s->t->ready(s);
    while (rc == 0) {
        struct invocation inv;
        rc = s->t->next(s, &inv);
        if (rc != 0) break;
        /* Lambda's convention: the X-Ray header of the current call lives in the env. */
        if (*inv.ctx.trace_id)
            setenv("_X_AMZN_TRACE_ID", inv.ctx.trace_id, 1);
        else
            unsetenv("_X_AMZN_TRACE_ID");

        response_reset(&s->resp);
        g_current = &inv;
        handler(inv.event, inv.event_len, &inv.ctx, &s->resp, user);
        g_current = NULL;
        /* The handler's output belongs to this invocation's log: flush before answering. */
        fflush(stdout);
        fflush(stderr);
        rc = s->t->answer(s, &inv, &s->resp);

        buf_recycle(&s->body);
        buf_recycle(&s->out);
        if (s->t == &channel_transport) buf_recycle(&s->in);
    }
    if (rc == 1) rc = 0; /* the platform ended the conversation */
    report(s, rc);
    sdk_close(s);
    running = false;
    return rc;
}

int nimbus_init_error(const char *error_type, const char *message)
{
    struct sdk *s = &g_sdk;
    if (running) return -EBUSY; /* init is over once nimbus_run has started */
    int rc = sdk_open(s);
    if (rc == 0) {
        nimbus_response *r = &s->resp;
        nimbus_response_error(r, error_type, message);
        rc = s->t->init_error(s, r->error_type, response_bytes(r));
    }
    report(s, rc);
    sdk_close(s);
    return rc;
}
