/* SDK internals shared with the fuzz targets (fuzz/fuzz_sdk_*.c); not installed.
 *
 * Both parsers here are pure: bytes in, a verdict out, no I/O and no allocation except into a
 * caller's nimbus__buf. Spans they return point into the caller's input and live as long as it.
 *
 * Error convention of the whole SDK: a fallible call returns a negative errno value.
 *   -EPROTO    the peer broke the protocol (malformed frame or HTTP message)
 *   -EMSGSIZE  something passed a cap (frame, head, body, string)
 *   -ENOMEM    allocation failed
 *   other      a system call's errno, passed through
 * Parsers return 0 for "need more bytes" and a positive count when they finished. */
#ifndef NIMBUS_FUNCTION_INTERNAL_H
#define NIMBUS_FUNCTION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Caps. The body cap matches the channel's frame cap (docs/internals/channel.md) and leaves
 * room above Lambda's 6 MB payload limit for the request's own overhead. */
#define NIMBUS__MAX_BODY    ((size_t)6 * 1024 * 1024 + 64 * 1024)
#define NIMBUS__MAX_HEAD    ((size_t)64 * 1024)
#define NIMBUS__MAX_HEADERS 100

typedef struct nimbus__span {
    const uint8_t *ptr;
    size_t len;
} nimbus__span;

/* A growable byte buffer with a hard cap. An append that would pass max fails with -EMSGSIZE
 * and leaves the buffer unchanged. Owns data; zero-initialise, then set max. */
typedef struct nimbus__buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;
} nimbus__buf;

int nimbus__buf_reserve(nimbus__buf *b, size_t extra);
int nimbus__buf_append(nimbus__buf *b, const void *data, size_t len);
void nimbus__buf_free(nimbus__buf *b);

/* ---- the native channel ---- */

enum {
    NIMBUS__FRAME_READY = 1,
    NIMBUS__FRAME_INVOKE = 2,
    NIMBUS__FRAME_RESPONSE = 3,
    NIMBUS__FRAME_ERROR = 4,
    NIMBUS__FRAME_INIT_ERROR = 5,
    NIMBUS__FRAME_CALL = 7,        /* a call to the platform (docs/internals/calls.md) */
    NIMBUS__FRAME_CALL_RESULT = 8, /* its answer */
};
#define NIMBUS__FRAME_MAX NIMBUS__MAX_BODY /* cap on the u32 length field */

/* One decoded frame. Which fields are set depends on type (channel.md's table); the others
 * are zero. payload is the "rest" field: INVOKE event, RESPONSE result, ERROR/INIT_ERROR JSON. */
typedef struct nimbus__frame {
    uint8_t type;
    uint64_t deadline_ms;
    nimbus__span request_id;
    nimbus__span function_arn;
    nimbus__span trace_id;
    nimbus__span client_context;
    nimbus__span error_type;
    uint32_t call_id;               /* CALL, CALL_RESULT */
    uint16_t status;                /* CALL_RESULT */
    nimbus__span op, target, attrs; /* CALL */
    nimbus__span error_code;        /* CALL_RESULT */
    nimbus__span payload;           /* also the CALL's body and the CALL_RESULT's result */
} nimbus__frame;

/* Decodes the frame at the start of buf. Returns its size in bytes (> 0) when complete, 0 when
 * more bytes are needed, -EMSGSIZE when the length field is over the cap, -EPROTO when it is 0,
 * the type is unknown or a field runs past the end. Length and type are checked as soon as
 * they are present, so a reader learns of a bad frame before reading its body. */
ssize_t nimbus__frame_decode(const uint8_t *buf, size_t len, nimbus__frame *out);

/* Appends the encoding of f to out. -EMSGSIZE if a string passes 65535 bytes or the frame
 * passes the cap; -ENOMEM. out is unchanged on failure. */
int nimbus__frame_encode(nimbus__buf *out, const nimbus__frame *f);

/* ---- HTTP/1.1 responses (the Runtime API client) ---- */

typedef struct nimbus__http_header {
    nimbus__span name;
    nimbus__span value; /* without surrounding whitespace */
} nimbus__http_header;

enum nimbus__http_body {
    NIMBUS__BODY_NONE,        /* 1xx, 204, 304 */
    NIMBUS__BODY_LENGTH,      /* Content-Length bytes */
    NIMBUS__BODY_CHUNKED,     /* feed to nimbus__chunked_feed */
    NIMBUS__BODY_UNTIL_CLOSE, /* neither header: the body ends at EOF */
};

typedef struct nimbus__http_response {
    int minor_version; /* HTTP/1.x */
    int status;
    bool keep_alive; /* false if the server will close after this response */
    enum nimbus__http_body body;
    uint64_t content_length; /* NIMBUS__BODY_LENGTH only; <= NIMBUS__MAX_BODY */
    size_t nheaders;
    nimbus__http_header headers[NIMBUS__MAX_HEADERS];
} nimbus__http_response;

/* Parses a response's status line and headers at the start of buf. Returns the offset of the
 * body (> 0) when the head is complete, 0 when more bytes are needed, -EPROTO when the bytes
 * are not a valid HTTP/1.x response head (or combine Content-Length with chunked),
 * -EMSGSIZE when the head passes NIMBUS__MAX_HEAD, has more than NIMBUS__MAX_HEADERS headers
 * or announces a body over NIMBUS__MAX_BODY. Lines may end in CRLF or a bare LF. */
ssize_t nimbus__http_parse_response(const uint8_t *buf, size_t len, nimbus__http_response *out);

/* The value of the first header named name (case-insensitive), or NULL. */
const nimbus__span *nimbus__http_header_get(const nimbus__http_response *r, const char *name);

/* Incremental decoder of a chunked body. Zero-initialise, then feed bytes as they arrive. */
typedef struct nimbus__chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    size_t line;        /* bytes in the current size or trailer line (capped) */
    size_t trailer;     /* bytes of trailers so far (capped at NIMBUS__MAX_HEAD) */
    bool digits;        /* the size line had at least one hex digit */
} nimbus__chunked;

/* Consumes bytes of in, appending decoded data to out (whose max caps the body). Sets
 * *consumed to the bytes used; returns 1 when the body (and its trailers) ended, 0 when all of
 * in was used and more is needed, -EPROTO on malformed input, -EMSGSIZE past a cap, -ENOMEM. */
int nimbus__chunked_feed(nimbus__chunked *c, const uint8_t *in, size_t len, size_t *consumed,
                         nimbus__buf *out);

/* ---- JSON ---- */

/* Appends s as a JSON string literal (quotes included). Invalid UTF-8 becomes U+FFFD so the
 * result is always valid JSON. -EMSGSIZE / -ENOMEM. */
int nimbus__json_quote(nimbus__buf *out, const char *s, size_t len);

#endif
