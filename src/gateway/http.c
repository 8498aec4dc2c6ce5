#include "gateway/http.h"

#include "base/log.h"
#include "base/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct route_handler {
    h2o_handler_t super;
    nb_http *http;
} route_handler;

struct nb_http {
    uv_loop_t *loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    int listening;
    nb_http_handler handler;
    void *ud;
    const char *loop_tag; /* X-Nimbus-Loop value, or NULL */
    int64_t request_timeout_ms;
};

/* ---------- request smuggling ---------- */

/* picohttpparser's header record, as libh2o was built with it (its header is not installed). */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

typedef int (*phr_parse_request_fn)(const char *, size_t, const char **, size_t *, const char **,
                                    size_t *, int *, struct phr_header *, size_t *, size_t);
static phr_parse_request_fn real_parse;
static pthread_once_t real_parse_once = PTHREAD_ONCE_INIT;

static void find_real_parse(void)
{
    real_parse = (phr_parse_request_fn)dlsym(RTLD_NEXT, "phr_parse_request");
}

static int named(const struct phr_header *h, const char *name, size_t len)
{
    return h->name && h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

/* libh2o parses each HTTP/1 request head with picohttpparser's phr_parse_request, called
 * through its PLT, so this definition in the binary wraps it. A request that carries both
 * Content-Length and Transfer-Encoding, or two different Content-Lengths, is reported as
 * malformed: h2o then answers 400 and closes the connection. (h2o alone would let
 * Transfer-Encoding win, as RFC 9112 permits; but a proxy in front that trusts Content-Length
 * would see a different request boundary: request smuggling.) */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                      const char **path, size_t *path_len, int *minor_version,
                      struct phr_header *headers, size_t *num_headers, size_t last_len);
int nb_phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                         const char **path, size_t *path_len, int *minor_version,
                         struct phr_header *headers, size_t *num_headers, size_t last_len)
{
    pthread_once(&real_parse_once, find_real_parse);
    if (!real_parse) return -1;
    return real_parse(buf, len, method, method_len, path, path_len, minor_version, headers,
                      num_headers, last_len);
}

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                      const char **path, size_t *path_len, int *minor_version,
                      struct phr_header *headers, size_t *num_headers, size_t last_len)
{
    int rc = nb_phr_parse_request(buf, len, method, method_len, path, path_len, minor_version,
                                  headers, num_headers, last_len);
    /* A request head over 64 KiB is refused (h2o alone would take about 400 KiB). */
    if ((rc == -2 && len > NB_HTTP_MAX_HEAD) || rc > (int)NB_HTTP_MAX_HEAD) return -1;
    if (rc <= 0) return rc;
    const struct phr_header *cl = NULL;
    int te = 0;
    for (size_t i = 0; i < *num_headers; i++) {
        const struct phr_header *h = &headers[i];
        if (named(h, "transfer-encoding", 17)) te = 1;
        if (named(h, "content-length", 14)) {
            if (cl &&
                (cl->value_len != h->value_len || memcmp(cl->value, h->value, h->value_len) != 0))
                return -1;
            cl = h;
        }
    }
    return te && cl ? -1 : rc;
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    default:
        return status < 500 ? "Error" : "Internal Server Error";
    }
}

/* ---------- slow requests ---------- */

/* h2o closes a connection whose request does not arrive within its req_timeout without a word.
 * A guard per connection answers 408 first: once bytes have come that are not yet a request
 * (a head or a body still arriving), and no request of the connection is being served, the
 * request must make progress every request_timeout_ms and complete within six times that. The 408
 * is written straight to the socket and the socket shut down; h2o then sees the end of the stream
 * and closes the connection its own way. */
typedef struct conn_guard {
    nb_http *http;
    h2o_socket_t *sock;
    uv_stream_t *http_stream; /* the libuv handle under sock (its fd) */
    uv_timer_t timer;
    size_t seen;      /* bytes_read when the last request was handed over or answered */
    size_t last;      /* bytes_read at the last tick */
    int64_t first_us; /* when unserved bytes were first noticed; 0: none */
    int64_t since_us; /* when they last grew */
    int inflight;     /* requests handed over and not yet done */
    int h2, fired, closed, timer_closed;
} conn_guard;

static void guard_maybe_free(conn_guard *g)
{
    if (g->closed && g->timer_closed && g->inflight == 0) free(g);
}

static void guard_timer_closed(uv_handle_t *t)
{
    conn_guard *g = t->data;
    g->timer_closed = 1;
    guard_maybe_free(g);
}

static void guard_on_close(void *data)
{
    conn_guard *g = data;
    g->closed = 1;
    uv_close((uv_handle_t *)&g->timer, guard_timer_closed);
}

static void guard_tick(uv_timer_t *t)
{
    conn_guard *g = t->data;
    if (g->h2 || g->fired || g->closed) return;
    if (g->inflight > 0 || g->sock->bytes_read == g->seen) {
        g->first_us = g->since_us = 0;
        return;
    }
    int64_t now = nb_mono_us(), limit = (int64_t)g->http->request_timeout_ms * 1000;
    if (!g->first_us) g->first_us = now;
    if (!g->since_us || g->sock->bytes_read != g->last) {
        g->since_us = now;
        g->last = g->sock->bytes_read;
        return;
    }
    /* No progress for the timeout, or a request trickling in for six times as long. */
    if (now - g->since_us < limit && now - g->first_us < 6 * limit) return;
    g->fired = 1;
    char body[160], msg[400];
    int bl = snprintf(body, sizeof body,
                      "{\"error\":{\"code\":\"request_timeout\",\"message\":\"the request did "
                      "not arrive within %lld ms\"}}\n",
                      (long long)g->http->request_timeout_ms);
    int ml = snprintf(msg, sizeof msg,
                      "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      bl, body);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)g->http_stream, &fd) == 0) {
        ssize_t w = write(fd, msg, (size_t)ml);
        (void)w; /* best effort: the peer may be gone */
        shutdown(fd, SHUT_RDWR);
    }
}

static void guard_req_done(void *p)
{
    conn_guard *g = *(conn_guard **)p;
    g->inflight--;
    g->seen = g->sock->bytes_read;
    g->first_us = g->since_us = 0;
    guard_maybe_free(g);
}

static void guard_req(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (!sock || sock->on_close.cb != guard_on_close) return;
    conn_guard *g = sock->on_close.data;
    if (req->version >= 0x200) g->h2 = 1;
    g->inflight++;
    g->seen = sock->bytes_read;
    g->first_us = g->since_us = 0;
    conn_guard **ref = h2o_mem_alloc_shared(&req->pool, sizeof *ref, guard_req_done);
    *ref = g;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    nb_http *h = ((route_handler *)self)->http;
    guard_req(req);
    char *rid = h2o_mem_alloc_pool(&req->pool, 37);
    nb_uuid4(rid);
    nb_http_header(req, "x-nimbus-request-id", rid);
    if (h->loop_tag) nb_http_header(req, "x-nimbus-loop", h->loop_tag);
    if (h->handler(h->ud, req, rid) != 0)
        nb_http_error(req, 500, NB_E_INTERNAL, "request not handled");
    return 0;
}

static void on_accept(uv_stream_t *listener, int status)
{
    nb_http *h = listener->data;
    if (status != 0) return;
    uv_tcp_t *conn = h2o_mem_alloc(sizeof *conn);
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    conn_guard *g = calloc(1, sizeof *g);
    if (!g) abort();
    g->http = h;
    g->http_stream = (uv_stream_t *)conn;
    g->sock = sock;
    uv_timer_init(listener->loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, guard_tick, 1000, 1000);
    /* h2o's HTTP/1 and HTTP/2 server connections leave on_close to the socket's owner. */
    sock->on_close.cb = guard_on_close;
    sock->on_close.data = g;
    h2o_accept(&h->accept_ctx, sock);
}

nb_http *nb_http_new(uv_loop_t *loop, nb_http_handler handler, void *ud)
{
    nb_http *h = calloc(1, sizeof *h);
    if (!h) abort();
    h->loop = loop;
    h->handler = handler;
    h->ud = ud;
    h2o_config_init(&h->config);
    h->config.max_request_entity_size = NB_HTTP_MAX_BODY;
    /* Slow requests get a 408 from the connection guard after request_timeout_ms; h2o's own
     * timeout, which closes without an answer, only comes later (it also ends idle
     * keep-alive connections). */
    h->request_timeout_ms = 10000;
    const char *rt = getenv("NIMBUS_REQUEST_TIMEOUT_MS");
    if (rt && atoll(rt) >= 100 && atoll(rt) <= 3600000) h->request_timeout_ms = atoll(rt);
    h->config.http1.req_timeout = (uint64_t)h->request_timeout_ms + 5000;
    h->config.server_name = h2o_iovec_init(H2O_STRLIT("nimbus"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    route_handler *rh = (route_handler *)h2o_create_handler(path, sizeof *rh);
    rh->super.on_req = on_req;
    rh->http = h;
    h2o_context_init(&h->ctx, loop, &h->config);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;
    return h;
}

int nb_http_listen(nb_http *h, const char *host, int port, int reuseport, int *bound_port,
                   nb_err *err)
{
    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "invalid listen address '%s'", host);
    uv_tcp_init(h->loop, &h->listener);
    h->listener.data = h;
    h->listening = 1;
    int rc = 0;
    if (reuseport) {
        /* One listener per loop on the same address: the kernel spreads connections over them.
         * libuv binds without SO_REUSEPORT, so the socket is made here and handed over. */
        int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        socklen_t alen =
            addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&addr, alen) < 0) {
            rc = uv_translate_sys_error(errno);
            if (fd >= 0) close(fd);
        } else {
            rc = uv_tcp_open(&h->listener, fd);
        }
    } else {
        rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&addr, 0);
    }
    if (rc == 0) rc = uv_listen((uv_stream_t *)&h->listener, 1024, on_accept);
    if (rc != 0)
        return nb_err_set(err, 500, NB_E_INTERNAL, "listen on %s:%d: %s", host, port,
                          uv_strerror(rc));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &len);
    *bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

void nb_http_set_max_body(nb_http *h, size_t max)
{
    h->config.max_request_entity_size = max;
}

void nb_http_set_loop_tag(nb_http *h, const char *tag)
{
    h->loop_tag = tag;
}

void nb_http_stop_accepting(nb_http *h)
{
    if (!h->listening) return;
    h->listening = 0;
    uv_close((uv_handle_t *)&h->listener, NULL);
}

void nb_http_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL,
                          h2o_strdup(&req->pool, value, SIZE_MAX).base, strlen(value));
}

void nb_http_send(h2o_req_t *req, int status, const char *ctype, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    if (ctype) nb_http_header(req, "content-type", ctype);
    /* h2o_send_inline leaves the length unset; h2o then closes the connection after any answer
     * it would not chunk (every status but 200 here): known, it keeps the connection alive. */
    if (status != 204 && status != 304) req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void nb_http_send_json(h2o_req_t *req, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) {
        /* json_pack refused a value (not UTF-8): a bug of the caller, never a crash. */
        nb_error("http", "answer could not be encoded as JSON");
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"answer could not be encoded\"}}\n";
        nb_http_send(req, 500, "application/json", fallback, sizeof fallback - 1);
        return;
    }
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    s[n++] = '\n';
    nb_http_send(req, status, "application/json", s, n);
    free(s);
}

void nb_http_send_error(h2o_req_t *req, const nb_err *err)
{
    nb_err e = *err;
    nb_utf8_scrub(e.msg); /* messages quote request bytes; JSON needs valid UTF-8 */
    err = &e;
    int status = err->status ? err->status : 500;
    if (status >= 500) nb_error("http", "%d %s: %s", status, err->code, err->msg);
    if (status == 401) nb_http_header(req, "www-authenticate", "Bearer realm=\"nimbus\"");
    nb_http_send_json(req, status,
                      json_pack("{s:{s:s, s:s}}", "error", "code",
                                err->code ? err->code : NB_E_INTERNAL, "message", err->msg));
}

void nb_http_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...)
{
    nb_err e = {status, code, ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    nb_http_send_error(req, &e);
}

const char *nb_http_req_header(h2o_req_t *req, const char *name, char *buf, size_t size)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0) return NULL;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = v.len < size - 1 ? v.len : size - 1;
    memcpy(buf, v.base, n);
    buf[n] = 0;
    return buf;
}
