/* Fuzzes the Runtime API request parser (src/instance/rapi_parse.c) the way a connection
 * drives it: bytes arrive in pieces, unconsumed bytes stay buffered, each finished request is
 * taken and the parser reset for the next one (pipelining).
 *
 * The first input byte picks two cut points; the rest is the byte stream. Properties:
 * - no crash, no read outside the bytes given (each call sees an exact-size copy);
 * - a call never consumes more than it was given, and "need more" consumes nothing it cannot
 *   keep (the state machine resumes from where it stopped);
 * - the requests parsed and the final verdict are the same for the 3-piece feed as for the
 *   whole stream at once: the parser's result does not depend on how reads split the stream;
 * - a finished request respects the caps (body within NB_RAPI_MAX_BODY, and empty when it was
 *   flagged too large; strings NUL-terminated inside their fields). */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "instance/rapi_parse.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

#define MAX_LOG (1u << 20)

static void summarise(nb_buf *log, const nb_rapi_req *r)
{
    CHECK(r->state == NB_RAPI_DONE);
    CHECK(memchr(r->method, 0, sizeof r->method) && memchr(r->path, 0, sizeof r->path));
    CHECK(memchr(r->error_type, 0, sizeof r->error_type));
    CHECK(memchr(r->response_mode, 0, sizeof r->response_mode));
    CHECK(memchr(r->content_type, 0, sizeof r->content_type));
    CHECK(r->body.len <= NB_RAPI_MAX_BODY);
    CHECK(!r->too_large || r->body.len == 0);
    CHECK(r->error_body.len <= r->error_body.max);
    CHECK(r->attrs.len <= NB_RAPI_MAX_ATTRS && (!r->attrs_too_large || r->attrs.len == 0));
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the body */
    for (size_t i = 0; i < r->body.len; i++)
        h = (h ^ (uint8_t)r->body.data[i]) * 1099511628211ull;
    uint64_t e = 1469598103934665603ull;
    for (size_t i = 0; i < r->error_body.len; i++)
        e = (e ^ (uint8_t)r->error_body.data[i]) * 1099511628211ull;
    uint64_t a = 1469598103934665603ull;
    for (size_t i = 0; i < r->attrs.len; i++)
        a = (a ^ (uint8_t)r->attrs.data[i]) * 1099511628211ull;
    nb_buf_appendf(log, "%s|%s|%d|%d|%s|%s|%s|%d|%zu:%llx|%zu:%llx|%d:%zu:%llx\n", r->method,
                   r->path, r->keep_alive, r->too_large, r->error_type, r->response_mode,
                   r->content_type, r->has_error_body_trailer, r->error_body.len,
                   (unsigned long long)e, r->body.len, (unsigned long long)h, r->attrs_too_large,
                   r->attrs.len, (unsigned long long)a);
}

/* Feeds in[0..len) cut at cuts[0] and cuts[1]; returns 1 on a protocol error. */
static int drive(const uint8_t *in, size_t len, const size_t cuts[2], nb_buf *log, size_t *left_out)
{
    nb_rapi_req r;
    nb_rapi_req_init(&r);
    nb_buf pending;
    nb_buf_init(&pending, len + 1);
    size_t bounds[4] = {0, cuts[0], cuts[1], len};
    int error = 0;
    for (int piece = 0; piece < 3 && !error; piece++) {
        CHECK(nb_buf_append(&pending, in + bounds[piece], bounds[piece + 1] - bounds[piece]) == 0);
        for (;;) {
            char *copy = malloc(pending.len ? pending.len : 1);
            memcpy(copy, pending.data, pending.len);
            long used = nb_rapi_parse(&r, copy, pending.len);
            free(copy);
            if (used < 0) {
                CHECK(used == -1);
                error = 1;
                break;
            }
            CHECK((size_t)used <= pending.len);
            nb_buf_consume(&pending, (size_t)used);
            if (r.state != NB_RAPI_DONE) break; /* the rest needs more bytes */
            summarise(log, &r);
            nb_rapi_req_reset(&r);
            CHECK(r.state == NB_RAPI_HEAD && r.body.len == 0 && r.error_type[0] == 0);
            if (pending.len == 0) break;
        }
    }
    *left_out = error ? 0 : pending.len;
    nb_buf_free(&pending);
    nb_rapi_req_free(&r);
    return error;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t seed = data[0];
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    /* Two cut points derived from the first byte, spread over the input. */
    size_t c1 = len ? (size_t)(seed & 0x0f) * len / 16 : 0;
    size_t c2 = len ? c1 + (size_t)((seed >> 4) + 1) * (len - c1) / 17 : 0;
    if (seed == 0xff && len) c1 = c2 = len - 1; /* the last byte alone */
    size_t whole_cuts[2] = {len, len}, split_cuts[2] = {c1, c2};

    nb_buf a, b;
    nb_buf_init(&a, MAX_LOG);
    nb_buf_init(&b, MAX_LOG);
    size_t left_a = 0, left_b = 0;
    int err_a = drive(in, len, whole_cuts, &a, &left_a);
    int err_b = drive(in, len, split_cuts, &b, &left_b);
    if (err_a != err_b || left_a != left_b || a.len != b.len ||
        (a.len && memcmp(a.data, b.data, a.len) != 0)) {
        fprintf(
            stderr,
            "split at %zu,%zu of %zu differs: err %d/%d left %zu/%zu\n--- whole\n%s--- split\n%s",
            c1, c2, len, err_a, err_b, left_a, left_b, a.data ? a.data : "", b.data ? b.data : "");
        abort();
    }
    nb_buf_free(&a);
    nb_buf_free(&b);
    return 0;
}
