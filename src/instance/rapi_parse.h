/* nb_rapi_parse: incremental HTTP/1.1 request parser for the Lambda Runtime API server.
 *
 * Request lines and headers are parsed by picohttpparser (built into libh2o); bodies with
 * Content-Length or chunked transfer coding (with trailers, which streaming runtimes use to
 * report mid-stream failures) are decoded here. Only the headers the Runtime API needs are
 * kept. All input is untrusted (it comes from function code): every size is capped and any
 * malformed input is a hard error, after which the connection is closed.
 *
 * Pure: no I/O. One parser per connection, reset between requests. Not thread-safe. */
#ifndef NB_RAPI_PARSE_H
#define NB_RAPI_PARSE_H

#include "base/buf.h"

#include <stddef.h>

#define NB_RAPI_MAX_HEAD  (1536u << 10) /* X-Ray error-cause headers reach 1 MiB */
#define NB_RAPI_MAX_BODY  ((6u << 20) + 100u)
#define NB_RAPI_MAX_ATTRS (64u << 10)

enum nb_rapi_state {
    NB_RAPI_HEAD,
    NB_RAPI_BODY,
    NB_RAPI_CHUNK_SIZE,
    NB_RAPI_CHUNK_DATA,
    NB_RAPI_CHUNK_CRLF,
    NB_RAPI_TRAILERS,
    NB_RAPI_DONE
};

typedef struct nb_rapi_req {
    enum nb_rapi_state state;
    char method[8];
    char path[512];
    int keep_alive;
    int too_large;          /* body passed NB_RAPI_MAX_BODY: decoded but dropped */
    size_t remaining;       /* body bytes (or chunk bytes) still expected */
    char error_type[128];   /* Lambda-Runtime-Function-Error-Type (header or trailer) */
    char response_mode[32]; /* Lambda-Runtime-Function-Response-Mode */
    char content_type[128];
    int has_error_body_trailer; /* Lambda-Runtime-Function-Error-Body trailer present */
    nb_buf error_body;          /* that trailer's value (base64), capped */
    /* X-Nimbus-Attributes of a call on the private path (docs/internals/calls.md), capped at
     * NB_RAPI_MAX_ATTRS; attrs_too_large when it was longer. */
    nb_buf attrs;
    int attrs_too_large;
    nb_buf body;
} nb_rapi_req;

void nb_rapi_req_init(nb_rapi_req *r);
void nb_rapi_req_reset(nb_rapi_req *r);
void nb_rapi_req_free(nb_rapi_req *r);
/* Feeds bytes. Returns the number consumed (the caller drops them), or -1 on a protocol
 * error. The request is complete when r->state == NB_RAPI_DONE; bytes after it are left. */
long nb_rapi_parse(nb_rapi_req *r, const char *data, size_t len);

#endif
