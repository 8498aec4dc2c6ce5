/* nb_http: the daemon's HTTP front door, libh2o on the daemon's libuv loop.
 *
 * Owns the listener and the h2o context; every request goes to one handler function (the
 * admin API router today; the API gateway's router later). Also the response helpers that
 * keep every answer in one shape: JSON bodies, {"error":{"code","message"}} errors and an
 * X-Nimbus-Request-Id header on everything.
 *
 * Thread: one nb_http per loop, used only on its loop's thread (the daemon runs one per loop,
 * each with its own listener on the same address). */
#ifndef NB_HTTP_H
#define NB_HTTP_H

#include "base/err.h"

#include <h2o.h>
#include <jansson.h>

#define NB_HTTP_MAX_BODY ((64u << 20) + (1u << 20))
#define NB_HTTP_MAX_HEAD (64u << 10) /* request line and headers: beyond, 400 and close */

typedef struct nb_http nb_http;
/* Returns 0 when it answered (now or later). */
typedef int (*nb_http_handler)(void *ud, h2o_req_t *req, const char *request_id);

nb_http *nb_http_new(uv_loop_t *loop, nb_http_handler handler, void *ud);
/* Binds host:port (port 0 = any); *bound_port receives the port in use. reuseport: with
 * SO_REUSEPORT, so that every loop's listener binds the same address (the first one binds
 * port 0, the others the port it got). */
int nb_http_listen(nb_http *h, const char *host, int port, int reuseport, int *bound_port,
                   nb_err *err);
/* Bodies above this are refused by h2o (413) before any handler runs. */
void nb_http_set_max_body(nb_http *h, size_t max);
/* Adds "X-Nimbus-Loop: tag" to every answer (tag must outlive h); NULL for none. */
void nb_http_set_loop_tag(nb_http *h, const char *tag);
/* Stops accepting new connections; existing ones finish. The server is not freed: the daemon
 * exits with connections possibly open and the kernel closes them. */
void nb_http_stop_accepting(nb_http *h);

void nb_http_header(h2o_req_t *req, const char *name, const char *value);
void nb_http_send(h2o_req_t *req, int status, const char *ctype, const char *body, size_t len);
/* Sends j (steals the reference). */
void nb_http_send_json(h2o_req_t *req, int status, json_t *j);
void nb_http_send_error(h2o_req_t *req, const nb_err *err);
void nb_http_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* picohttpparser's phr_parse_request as libh2o has it, without the checks this module adds
 * for its HTTP servers (http.c wraps the symbol h2o calls: see there). For parsers of our own
 * with other limits (the Runtime API's). */
struct phr_header;
int nb_phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                         const char **path, size_t *path_len, int *minor_version,
                         struct phr_header *headers, size_t *num_headers, size_t last_len);

/* Value of a request header or NULL (copied into buf, NUL-terminated). */
const char *nb_http_req_header(h2o_req_t *req, const char *name, char *buf, size_t size);

#endif
