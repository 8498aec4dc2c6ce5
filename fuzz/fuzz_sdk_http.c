/* Fuzzes the SDK's HTTP response parsing (sdk/function.c): the head parser, then the chunked
 * decoder on whatever follows the head.
 *
 * Beyond "no crash", it checks properties a client relies on:
 * - a parsed head lies inside the input, and its headers inside the head;
 * - parsing only the head's bytes gives the same verdict (the verdict does not depend on what
 *   comes after, i.e. on how reads split the stream);
 * - the chunked decoder gives the same bytes and verdict whether fed at once or in pieces. */
#include "../sdk/function_internal.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static int dechunk(const uint8_t *in, size_t len, size_t step, nimbus__buf *out, size_t *used)
{
    nimbus__chunked c = {0};
    size_t pos = 0;
    int rc = 0;
    do {
        size_t n = len - pos < step ? len - pos : step, got = 0;
        rc = nimbus__chunked_feed(&c, in + pos, n, &got, out);
        CHECK(got <= n);
        CHECK(rc != 0 || got == n); /* "need more" means every byte was taken */
        pos += got;
    } while (rc == 0 && pos < len);
    *used = pos;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static nimbus__http_response r, again;
    ssize_t head = nimbus__http_parse_response(data, size, &r);
    if (head <= 0) return 0;

    CHECK((size_t)head <= size && (size_t)head <= NIMBUS__MAX_HEAD);
    CHECK(r.status >= 100 && r.status <= 599);
    CHECK(r.nheaders <= NIMBUS__MAX_HEADERS);
    for (size_t i = 0; i < r.nheaders; i++) {
        const nimbus__http_header *h = &r.headers[i];
        CHECK(h->name.len > 0 && h->name.ptr >= data);
        CHECK(h->name.ptr + h->name.len <= data + head);
        CHECK(h->value.ptr >= data && h->value.ptr + h->value.len <= data + head);
        CHECK(nimbus__http_header_get(&r, "x") == NULL || r.nheaders > 0);
    }
    if (r.body == NIMBUS__BODY_LENGTH) CHECK(r.content_length <= NIMBUS__MAX_BODY);
    if (r.body == NIMBUS__BODY_UNTIL_CLOSE) CHECK(!r.keep_alive);

    CHECK(nimbus__http_parse_response(data, (size_t)head, &again) == head);
    CHECK(again.status == r.status && again.body == r.body && again.nheaders == r.nheaders);
    CHECK(again.keep_alive == r.keep_alive && again.content_length == r.content_length);
    CHECK(head < 2 || nimbus__http_parse_response(data, (size_t)head - 1, &again) <= 0);

    if (r.body != NIMBUS__BODY_CHUNKED) return 0;
    const uint8_t *body = data + head;
    size_t blen = size - (size_t)head;
    nimbus__buf whole = {.max = NIMBUS__MAX_BODY}, pieces = {.max = NIMBUS__MAX_BODY};
    size_t used_whole, used_pieces;
    int a = dechunk(body, blen, blen ? blen : 1, &whole, &used_whole);
    int b = dechunk(body, blen, 1 + (size % 7), &pieces, &used_pieces);
    CHECK(a == b);
    if (a >= 0) {
        CHECK(used_whole == used_pieces);
        CHECK(whole.len == pieces.len);
        CHECK(whole.len == 0 || memcmp(whole.data, pieces.data, whole.len) == 0);
        CHECK(whole.len <= used_whole);
    }
    nimbus__buf_free(&whole);
    nimbus__buf_free(&pieces);
    return 0;
}
