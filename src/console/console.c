#include "console/console.h"

#include "base/err.h"
#include "gateway/http.h"

#include <string.h>

/* Generated at build time (cmake/embed_console.cmake). */
extern const nb_con_file nb_con_files[];
extern const size_t nb_con_nfiles;

#define PREFIX "/console"

/* What the page needs and nothing more: its own scripts and styles, uPlot's inline style
 * attributes, and data: images (uPlot's legend markers). No framing anywhere. */
static const char csp[] = "default-src 'self'; img-src 'self' data:; style-src 'self' "
                          "'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
                          "form-action 'self'";

int nb_con_enabled(void)
{
    return nb_con_nfiles > 0;
}

nb_con_kind nb_con_lookup(const char *path, size_t len, const nb_con_file **file)
{
    *file = NULL;
    for (size_t i = 0; i < len; i++)
        if (path[i] == '?' || path[i] == '#') {
            len = i;
            break;
        }
    size_t plen = sizeof PREFIX - 1;
    if (len < plen || memcmp(path, PREFIX, plen) != 0) return NB_CON_NONE;
    if (len == plen) return NB_CON_REDIRECT;
    if (path[plen] != '/') return NB_CON_NONE; /* "/consoles" is not ours */
    const char *name = path + plen + 1;
    size_t nlen = len - plen - 1;
    if (nlen == 0) {
        name = "index.html";
        nlen = strlen(name);
    }
    for (size_t i = 0; i < nb_con_nfiles; i++) {
        const nb_con_file *f = &nb_con_files[i];
        if (strlen(f->path) == nlen && memcmp(f->path, name, nlen) == 0) {
            *file = f;
            return NB_CON_FILE;
        }
    }
    return NB_CON_MISSING;
}

/* If-None-Match names f's ETag: "*", or a comma-separated list with the tag, weak ("W/") or not
 * (RFC 9110 compares If-None-Match weakly). */
static int not_modified(h2o_req_t *req, const nb_con_file *f)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i < 0) return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t elen = strlen(f->etag);
    for (size_t p = 0; p < v.len;) {
        while (p < v.len && (v.base[p] == ' ' || v.base[p] == '\t' || v.base[p] == ','))
            p++;
        size_t end = p;
        while (end < v.len && v.base[end] != ',')
            end++;
        size_t n = end;
        while (n > p && (v.base[n - 1] == ' ' || v.base[n - 1] == '\t'))
            n--;
        const char *tag = v.base + p;
        size_t tlen = n - p;
        if (tlen >= 2 && tag[0] == 'W' && tag[1] == '/') tag += 2, tlen -= 2;
        if ((tlen == 1 && tag[0] == '*') || (tlen == elen && memcmp(tag, f->etag, elen) == 0))
            return 1;
        p = end;
    }
    return 0;
}

int nb_con_handle(h2o_req_t *req)
{
    const nb_con_file *f;
    nb_con_kind k = nb_con_lookup(req->path_normalized.base, req->path_normalized.len, &f);
    if (k == NB_CON_NONE) return 0;
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (!head && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        nb_http_header(req, "allow", "GET, HEAD");
        nb_http_error(req, 405, NB_E_METHOD, "the console's files are read with GET");
        return 1;
    }
    if (!nb_con_enabled()) {
        nb_http_error(req, 404, "console_disabled",
                      "this nimbus was built without the web console (-DNIMBUS_CONSOLE=OFF)");
        return 1;
    }
    if (k == NB_CON_REDIRECT) {
        nb_http_header(req, "location", PREFIX "/");
        nb_http_send(req, 301, "text/plain; charset=utf-8", "", 0);
        return 1;
    }
    if (k == NB_CON_MISSING) {
        nb_http_error(req, 404, NB_E_NOT_FOUND, "no console file %.*s",
                      (int)req->path_normalized.len, req->path_normalized.base);
        return 1;
    }
    nb_http_header(req, "etag", f->etag);
    /* Names are not hashed, so every file is revalidated; the ETag makes that a 304. */
    nb_http_header(req, "cache-control", "no-cache");
    nb_http_header(req, "content-security-policy", csp);
    nb_http_header(req, "x-content-type-options", "nosniff");
    nb_http_header(req, "x-frame-options", "DENY");
    nb_http_header(req, "referrer-policy", "no-referrer");
    if (not_modified(req, f)) {
        nb_http_send(req, 304, NULL, "", 0);
        return 1;
    }
    /* h2o leaves the body out of an answer to HEAD. */
    nb_http_send(req, 200, f->ctype, (const char *)f->data, f->len);
    return 1;
}
