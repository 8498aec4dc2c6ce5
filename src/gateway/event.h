/* nb_ev: the HTTP event a function receives and the HTTP answer made of its result, in AWS's
 * payload format 2.0 (../shared/specs/http-event.md; API Gateway HTTP APIs and Lambda function
 * URLs send this shape, so existing Lambda HTTP handlers work unchanged).
 *
 * Pure functions of their inputs: no I/O, any thread. Output buffers are malloc'd and owned by
 * the caller. */
#ifndef NB_EVENT_H
#define NB_EVENT_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/* Caps: an event is at most 6 MiB + headers (Lambda's sync payload), a mapped response body at
 * most 6 MiB. */
#define NB_EV_MAX_RESPONSE (6u << 20)

typedef struct nb_ev_str {
    const char *p;
    size_t len;
} nb_ev_str;

typedef struct nb_ev_header {
    nb_ev_str name; /* as received (any case): the event lowercases it */
    nb_ev_str value;
} nb_ev_header;

typedef struct nb_ev_request {
    nb_ev_str method;   /* "GET" */
    nb_ev_str path;     /* raw path, no query: "/shop/items/a%20b" */
    nb_ev_str query;    /* raw query without '?', len 0 if none */
    nb_ev_str protocol; /* "HTTP/1.1" or "HTTP/2.0" */
    const nb_ev_header *headers;
    size_t nheaders;
    nb_ev_str body;
    const char *source_ip;  /* "127.0.0.1" */
    const char *request_id; /* requestContext.requestId */
    int64_t time_ms;        /* epoch ms: timeEpoch and time */
    const char *route_key;  /* "GET /items/{id}" or "$default" */
    const char *api_id;     /* requestContext.apiId */
    const char *stage;      /* "$default" */
    /* pathParameters (decoded); omitted when nparams == 0 */
    const char *const *param_names;
    const char *const *param_values;
    int nparams;
    /* requestContext.authorizer: a complete JSON object text such as
     * {"jwt":{"claims":{...},"scopes":[...]}} or {"apiKey":{"id":"..."}}, inserted verbatim
     * (the caller made it); NULL: omitted. */
    const char *authorizer_json;
} nb_ev_request;

/* The event as compact JSON, NUL-terminated, *len set. Headers: names lowercased, repeats
 * joined with ","; the cookie header becomes "cookies" (split on ';', trimmed) and is not
 * repeated in headers. queryStringParameters decoded ('+' is a space), repeats joined with ",",
 * omitted with no query. The body is sent as text when the content type is textual
 * (text/, json, xml, javascript, form-urlencoded) or absent, and the bytes are valid UTF-8 (a
 * "text" body that is not would lose bytes in a JSON string); otherwise base64 with
 * isBase64Encoded true. Never fails (aborts on OOM). */
char *nb_ev_build(const nb_ev_request *r, size_t *len);

typedef struct nb_ev_response {
    int status;
    /* Headers to send, names lowercased; set-cookie once per cookie. Pointers into storage. */
    nb_ev_header *headers;
    size_t nheaders;
    char *body; /* decoded (base64 undone); owned */
    size_t body_len;
    int has_content_type; /* a content-type header is among headers (one is always added) */
    void *storage;        /* owned */
} nb_ev_response;

/* Maps a function's result to HTTP (spec §2): an object with "statusCode" is a structured
 * answer (headers, multiValueHeaders merged, cookies -> set-cookie, body, isBase64Encoded);
 * any other JSON value is a 200 application/json with the result as its body. Returns -1 with
 * err (502 bad_gateway-class) when the result is not JSON or the structured answer is malformed
 * (statusCode not an integer 100..599, body not a string, bad base64, header values not
 * strings/numbers/booleans); the caller answers 502 {"message":"Internal Server Error"}.
 * Hop-by-hop and framing headers the function sets (connection, transfer-encoding,
 * content-length, keep-alive, upgrade) are dropped. */
int nb_ev_response_map(const char *result, size_t len, nb_ev_response *out, nb_err *err);
void nb_ev_response_free(nb_ev_response *r);

#endif
