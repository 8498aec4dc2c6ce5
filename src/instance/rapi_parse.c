#include "instance/rapi_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

/* picohttpparser's interface as exported by libh2o (Debian ships no header for it). */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
/* The plain parser: the binary's phr_parse_request adds the HTTP servers' limits (http.c). */
int nb_phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                         const char **path, size_t *path_len, int *minor_version,
                         struct phr_header *headers, size_t *num_headers, size_t last_len);
int phr_parse_headers(const char *buf, size_t len, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

#define MAX_HEADERS 64

void nb_rapi_req_init(nb_rapi_req *r)
{
    memset(r, 0, sizeof *r);
    nb_buf_init(&r->body, NB_RAPI_MAX_BODY);
    nb_buf_init(&r->error_body, 64u << 10);
    nb_buf_init(&r->attrs, NB_RAPI_MAX_ATTRS);
}

void nb_rapi_req_reset(nb_rapi_req *r)
{
    nb_buf body = r->body, eb = r->error_body, at = r->attrs;
    nb_buf_reset(&body);
    nb_buf_reset(&eb);
    nb_buf_reset(&at);
    memset(r, 0, sizeof *r);
    r->body = body;
    r->error_body = eb;
    r->attrs = at;
}

void nb_rapi_req_free(nb_rapi_req *r)
{
    nb_buf_free(&r->body);
    nb_buf_free(&r->error_body);
    nb_buf_free(&r->attrs);
}

static int name_is(const struct phr_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static void copy_value(char *dst, size_t size, const struct phr_header *h)
{
    size_t n = h->value_len < size - 1 ? h->value_len : size - 1;
    memcpy(dst, h->value, n);
    dst[n] = 0;
}

/* Headers and trailers may both carry the error fields. */
static void take_error_fields(nb_rapi_req *r, const struct phr_header *h)
{
    if (name_is(h, "lambda-runtime-function-error-type")) {
        copy_value(r->error_type, sizeof r->error_type, h);
    } else if (name_is(h, "lambda-runtime-function-error-body")) {
        r->has_error_body_trailer = 1;
        nb_buf_reset(&r->error_body);
        if (nb_buf_append(&r->error_body, h->value, h->value_len) < 0) nb_buf_reset(&r->error_body);
    }
}

static long parse_head(nb_rapi_req *r, const char *data, size_t len)
{
    const char *method, *path;
    size_t mlen, plen, nh = MAX_HEADERS;
    int minor;
    struct phr_header h[MAX_HEADERS];
    int n = nb_phr_parse_request(data, len, &method, &mlen, &path, &plen, &minor, h, &nh, 0);
    if (n == -2) return len > NB_RAPI_MAX_HEAD ? -1 : 0;
    /* The cap holds however the head arrives, not only while it is incomplete. */
    if (n < 0 || (size_t)n > NB_RAPI_MAX_HEAD || mlen >= sizeof r->method || plen >= sizeof r->path)
        return -1;
    memcpy(r->method, method, mlen);
    r->method[mlen] = 0;
    memcpy(r->path, path, plen);
    r->path[plen] = 0;
    r->keep_alive = minor >= 1;
    int chunked = 0, have_cl = 0;
    size_t cl = 0;
    for (size_t i = 0; i < nh; i++) {
        if (!h[i].name) return -1; /* obsolete line folding */
        if (name_is(&h[i], "content-length")) {
            if (have_cl || h[i].value_len == 0 || h[i].value_len > 12) return -1;
            for (size_t k = 0; k < h[i].value_len; k++) {
                if (h[i].value[k] < '0' || h[i].value[k] > '9') return -1;
                cl = cl * 10 + (size_t)(h[i].value[k] - '0');
            }
            have_cl = 1;
        } else if (name_is(&h[i], "transfer-encoding")) {
            if (h[i].value_len != 7 || strncasecmp(h[i].value, "chunked", 7) != 0) return -1;
            chunked = 1;
        } else if (name_is(&h[i], "connection")) {
            if (h[i].value_len == 5 && strncasecmp(h[i].value, "close", 5) == 0) r->keep_alive = 0;
            if (h[i].value_len == 10 && strncasecmp(h[i].value, "keep-alive", 10) == 0)
                r->keep_alive = 1;
        } else if (name_is(&h[i], "lambda-runtime-function-response-mode")) {
            copy_value(r->response_mode, sizeof r->response_mode, &h[i]);
        } else if (name_is(&h[i], "content-type")) {
            copy_value(r->content_type, sizeof r->content_type, &h[i]);
        } else if (name_is(&h[i], "x-nimbus-attributes")) {
            nb_buf_reset(&r->attrs);
            if (nb_buf_append(&r->attrs, h[i].value, h[i].value_len) < 0) {
                nb_buf_reset(&r->attrs);
                r->attrs_too_large = 1;
            }
        } else {
            take_error_fields(r, &h[i]);
        }
    }
    if (chunked && have_cl) return -1; /* request smuggling shape: refuse */
    if (chunked) {
        r->state = NB_RAPI_CHUNK_SIZE;
    } else if (cl > 0) {
        r->state = NB_RAPI_BODY;
        r->remaining = cl;
    } else {
        r->state = NB_RAPI_DONE;
    }
    return n;
}

static void take_body(nb_rapi_req *r, const char *p, size_t n)
{
    if (r->too_large) return;
    if (nb_buf_append(&r->body, p, n) < 0) {
        r->too_large = 1;
        nb_buf_reset(&r->body);
    }
}

long nb_rapi_parse(nb_rapi_req *r, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len || r->state == NB_RAPI_DONE) {
        const char *p = data + off;
        size_t left = len - off;
        switch (r->state) {
        case NB_RAPI_HEAD: {
            long n = parse_head(r, p, left);
            if (n <= 0) return n < 0 ? -1 : (long)off;
            off += (size_t)n;
            break;
        }
        case NB_RAPI_BODY:
        case NB_RAPI_CHUNK_DATA: {
            size_t n = left < r->remaining ? left : r->remaining;
            take_body(r, p, n);
            off += n;
            r->remaining -= n;
            if (r->remaining == 0)
                r->state = r->state == NB_RAPI_BODY ? NB_RAPI_DONE : NB_RAPI_CHUNK_CRLF;
            break;
        }
        case NB_RAPI_CHUNK_SIZE: {
            /* hex size, optional ";ext", CRLF */
            const char *eol = memchr(p, '\n', left);
            if (!eol) return left > 1024 ? -1 : (long)off;
            if (eol - p > 1024) return -1; /* same verdict as when it arrives in pieces */
            size_t size = 0, i = 0, digits = 0;
            for (; p + i < eol; i++) {
                char c = p[i];
                int v = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
                if (v < 0) break;
                if (++digits > 8) return -1;
                size = size * 16 + (size_t)v;
            }
            if (digits == 0) return -1;
            if (p + i < eol && p[i] != ';' && p[i] != '\r') return -1;
            /* A CR only right before the LF: a bare CR is read as a line end by some peers. */
            const char *cr = memchr(p + i, '\r', (size_t)(eol - p) - i);
            if (cr && cr + 1 != eol) return -1;
            off += (size_t)(eol - p) + 1;
            if (size == 0) {
                r->state = NB_RAPI_TRAILERS;
            } else {
                r->remaining = size;
                r->state = NB_RAPI_CHUNK_DATA;
            }
            break;
        }
        case NB_RAPI_CHUNK_CRLF:
            if (left < 2 && p[0] == '\r') return (long)off;
            if (p[0] == '\r' && p[1] == '\n') {
                off += 2;
            } else if (p[0] == '\n') {
                off += 1;
            } else {
                return -1;
            }
            r->state = NB_RAPI_CHUNK_SIZE;
            break;
        case NB_RAPI_TRAILERS: {
            struct phr_header h[MAX_HEADERS];
            size_t nh = MAX_HEADERS;
            int n = phr_parse_headers(p, left, h, &nh, 0);
            if (n == -2) return left > NB_RAPI_MAX_HEAD ? -1 : (long)off;
            if (n < 0 || (size_t)n > NB_RAPI_MAX_HEAD) return -1;
            for (size_t i = 0; i < nh; i++) {
                if (!h[i].name) return -1;
                take_error_fields(r, &h[i]);
            }
            off += (size_t)n;
            r->state = NB_RAPI_DONE;
            break;
        }
        case NB_RAPI_DONE:
            return (long)off;
        }
    }
    return (long)off;
}
