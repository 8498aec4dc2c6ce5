/* Unit tests of the channel codec (src/instance/channel.h, docs/internals/channel.md): every
 * frame type round-trips, the wire bytes match the documented layout, prefixes ask for more,
 * and each framing rule violation is a hard error. */
#include "instance/channel.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define S(lit) ((nb_chan_str){(lit), sizeof(lit) - 1})

static int str_eq(nb_chan_str a, nb_chan_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static int msg_eq(const nb_chan_msg *a, const nb_chan_msg *b)
{
    return a->type == b->type && a->deadline_ms == b->deadline_ms &&
           str_eq(a->request_id, b->request_id) && str_eq(a->function_arn, b->function_arn) &&
           str_eq(a->trace_id, b->trace_id) && str_eq(a->client_context, b->client_context) &&
           str_eq(a->error_type, b->error_type) && str_eq(a->body, b->body) &&
           a->call_id == b->call_id && a->status == b->status && str_eq(a->op, b->op) &&
           str_eq(a->target, b->target) && str_eq(a->attrs, b->attrs) &&
           str_eq(a->error_code, b->error_code);
}

static int in_range(nb_chan_str s, const char *base, size_t len)
{
    return s.len == 0 || (s.p >= base && s.p + s.len <= base + len);
}

/* Encodes m, decodes it back, and checks equality, size, and prefix behaviour. */
static void round_trip(const nb_chan_msg *m)
{
    nb_buf b;
    nb_buf_init(&b, NB_CHAN_MAX_FRAME + 64);
    CHECK(nb_buf_append(&b, "junk", 4) == 0); /* encode appends after existing bytes */
    CHECK(nb_chan_encode(&b, m) == 0);
    const char *frame = b.data + 4;
    size_t flen = b.len - 4;
    uint32_t wire = (uint32_t)(unsigned char)frame[0] | (uint32_t)(unsigned char)frame[1] << 8 |
                    (uint32_t)(unsigned char)frame[2] << 16 |
                    (uint32_t)(unsigned char)frame[3] << 24;
    CHECK(wire == flen - 4);
    CHECK((unsigned char)frame[4] == m->type);

    nb_chan_msg d;
    memset(&d, 0xaa, sizeof d);
    CHECK(nb_chan_decode(frame, flen, &d) == (long)flen);
    CHECK(msg_eq(m, &d));
    CHECK(in_range(d.request_id, frame, flen) && in_range(d.function_arn, frame, flen) &&
          in_range(d.trace_id, frame, flen) && in_range(d.client_context, frame, flen) &&
          in_range(d.error_type, frame, flen) && in_range(d.body, frame, flen));

    /* Every strict prefix needs more bytes; it is never a (different) frame or an error. */
    for (size_t k = 0; k < flen; k = flen < 4096 || k < 64 || k + 64 >= flen ? k + 1 : k + 65521) {
        char *copy = malloc(k ? k : 1); /* exact size so ASan sees any overread */
        memcpy(copy, frame, k);
        CHECK(nb_chan_decode(copy, k, &d) == 0);
        free(copy);
    }
    /* Trailing bytes (the next frame) are left alone. */
    CHECK(nb_buf_append(&b, "\x05\x00\x00\x00", 4) == 0);
    CHECK(nb_chan_decode(b.data + 4, b.len - 4, &d) == (long)flen);
    CHECK(msg_eq(m, &d));
    nb_buf_free(&b);
}

static void test_round_trips(void)
{
    nb_chan_msg m = {.type = NB_CHAN_READY};
    round_trip(&m);

    m = (nb_chan_msg){.type = NB_CHAN_INVOKE,
                      .deadline_ms = 1700000000123ULL,
                      .request_id = S("8f3c-req"),
                      .function_arn = S("arn:aws:lambda:local:000000000000:function:hello"),
                      .trace_id = S("Root=1-abc;Parent=def;Sampled=0"),
                      .client_context = S("{\"custom\":{}}"),
                      .body = S("{\"event\":\"\\u0000\"}")};
    round_trip(&m);
    m.deadline_ms = UINT64_MAX; /* all eight bytes */
    m.client_context = (nb_chan_str){NULL, 0};
    m.body = S("\0\1\2\xff binary");
    round_trip(&m);
    m.body = (nb_chan_str){NULL, 0}; /* empty event */
    m.request_id = (nb_chan_str){NULL, 0};
    round_trip(&m);

    m = (nb_chan_msg){.type = NB_CHAN_RESPONSE, .request_id = S("r1"), .body = S("\"ok\"")};
    round_trip(&m);
    m.body = (nb_chan_str){NULL, 0};
    round_trip(&m);

    m = (nb_chan_msg){
        .type = NB_CHAN_ERROR,
        .request_id = S("r1"),
        .error_type = S("Function.Unhandled"),
        .body = S("{\"errorMessage\":\"boom\",\"errorType\":\"Error\",\"stackTrace\":[]}")};
    round_trip(&m);

    m = (nb_chan_msg){.type = NB_CHAN_INIT_ERROR,
                      .error_type = S("Runtime.ImportModuleError"),
                      .body = S("{\"errorMessage\":\"no module\"}")};
    round_trip(&m);

    /* CALL and CALL_RESULT (docs/internals/calls.md). */
    m = (nb_chan_msg){.type = NB_CHAN_CALL,
                      .call_id = 0xdeadbeef,
                      .op = S("publish"),
                      .target = S("orders"),
                      .attrs = S("{\"subject\":\"s\"}"),
                      .body = S("hello")};
    round_trip(&m);
    m = (nb_chan_msg){.type = NB_CHAN_CALL, .call_id = 1, .op = S("emit")}; /* empty fields */
    round_trip(&m);
    m = (nb_chan_msg){.type = NB_CHAN_CALL_RESULT,
                      .call_id = 7,
                      .status = 403,
                      .error_code = S("forbidden"),
                      .body = S("{\"error\":{}}")};
    round_trip(&m);
    m = (nb_chan_msg){.type = NB_CHAN_CALL_RESULT, .call_id = 0xffffffffu, .status = 200};
    round_trip(&m);

    /* Strings at their 64 KiB - 1 limit, and a body near the frame cap. */
    size_t big = NB_CHAN_MAX_FRAME - 1 - 2 - 0xffff;
    char *blob = malloc(big);
    memset(blob, 'x', big);
    char *id = malloc(0xffff);
    memset(id, 'i', 0xffff);
    m = (nb_chan_msg){.type = NB_CHAN_RESPONSE, .request_id = {id, 0xffff}, .body = {blob, big}};
    round_trip(&m); /* the frame is exactly NB_CHAN_MAX_FRAME long */
    free(blob);
    free(id);
}

static void test_wire_layout(void)
{
    /* The documented bytes of a small INVOKE, written out by hand. */
    static const unsigned char want[] = {
        27,   0,    0,   0,   2,            /* length 27, INVOKE */
        0x01, 0x02, 0,   0,   0,   0, 0, 0, /* deadline 0x0201 little-endian */
        2,    0,    'i', 'd',               /* request_id */
        1,    0,    'a',                    /* function_arn */
        0,    0,                            /* trace_id */
        2,    0,    '{', '}',               /* client_context */
        'e',  'v',  'e', 'n', 't',          /* rest: event */
    };
    nb_chan_msg m = {.type = NB_CHAN_INVOKE,
                     .deadline_ms = 0x0201,
                     .request_id = S("id"),
                     .function_arn = S("a"),
                     .client_context = S("{}"),
                     .body = S("event")};
    nb_buf b;
    nb_buf_init(&b, 1 << 16);
    CHECK(nb_chan_encode(&b, &m) == 0);
    CHECK(b.len == sizeof want && memcmp(b.data, want, sizeof want) == 0);
    CHECK(b.data[b.len] == 0);

    /* A CALL and a CALL_RESULT, byte by byte. */
    static const unsigned char call[] = {
        17,  0,   0,   0,   7,        /* length 17, CALL */
        5,   0,   0,   0,             /* call_id 5 */
        4,   0,   'e', 'm', 'i', 't', /* op */
        0,   0,                       /* target */
        0,   0,                       /* attrs */
        '{', '}',                     /* rest: body */
    };
    m = (nb_chan_msg){.type = NB_CHAN_CALL, .call_id = 5, .op = S("emit"), .body = S("{}")};
    nb_buf_reset(&b);
    CHECK(nb_chan_encode(&b, &m) == 0);
    CHECK(b.len == sizeof call && memcmp(b.data, call, sizeof call) == 0);
    static const unsigned char result[] = {
        11,   0,   0, 0, 8, /* length 11, CALL_RESULT */
        9,    0,   0, 0,    /* call_id 9 */
        0xca, 0,            /* status 202 */
        0,    0,            /* error_code */
        '{',  '}',          /* rest: body */
    };
    nb_chan_msg r;
    CHECK(nb_chan_decode(result, sizeof result, &r) == (long)sizeof result);
    CHECK(r.type == NB_CHAN_CALL_RESULT && r.call_id == 9 && r.status == 202);
    CHECK(r.error_code.len == 0 && r.body.len == 2);
    nb_buf_free(&b);

    static const unsigned char ready[] = {1, 0, 0, 0, 1};
    nb_chan_msg d;
    CHECK(nb_chan_decode(ready, sizeof ready, &d) == 5 && d.type == NB_CHAN_READY);
}

static void expect_decode(const unsigned char *p, size_t n, long want)
{
    char *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    nb_chan_msg d;
    long got = nb_chan_decode(copy, n, &d);
    free(copy);
    if (got != want) {
        fprintf(stderr, "decode of %zu bytes: %ld, want %ld\n", n, got, want);
        exit(1);
    }
}

static void test_errors(void)
{
    /* Partial input: fewer than 4 bytes, and a header promising more than is there. */
    expect_decode((const unsigned char *)"", 0, 0);
    expect_decode((const unsigned char[]){5, 0, 0}, 3, 0);
    expect_decode((const unsigned char[]){5, 0, 0, 0, 3, 1, 0}, 7, 0);

    /* Length zero, and over the cap (judged from the 4 length bytes alone). */
    expect_decode((const unsigned char[]){0, 0, 0, 0}, 4, -1);
    expect_decode((const unsigned char[]){0, 0, 0, 0, 1}, 5, -1);
    uint32_t over = NB_CHAN_MAX_FRAME + 1;
    unsigned char h[4] = {(unsigned char)over, (unsigned char)(over >> 8),
                          (unsigned char)(over >> 16), (unsigned char)(over >> 24)};
    expect_decode(h, 4, -1);
    expect_decode((const unsigned char[]){0xff, 0xff, 0xff, 0xff}, 4, -1);
    /* Exactly the cap is only "need more". */
    uint32_t cap = NB_CHAN_MAX_FRAME;
    unsigned char hc[5] = {(unsigned char)cap, (unsigned char)(cap >> 8),
                           (unsigned char)(cap >> 16), (unsigned char)(cap >> 24), 3};
    expect_decode(hc, 5, 0);

    /* Unknown types, including 0 and the ones just past the table. */
    expect_decode((const unsigned char[]){1, 0, 0, 0, 0}, 5, -1);
    expect_decode((const unsigned char[]){1, 0, 0, 0, 9}, 5, -1);
    /* CALL: a call id cut short, then its op string cut; CALL_RESULT without a full status. */
    expect_decode((const unsigned char[]){4, 0, 0, 0, 7, 1, 0, 0}, 8, -1);
    expect_decode((const unsigned char[]){7, 0, 0, 0, 7, 1, 0, 0, 0, 4, 0}, 11, -1);
    expect_decode((const unsigned char[]){6, 0, 0, 0, 8, 1, 0, 0, 0, 200}, 10, -1);
    expect_decode((const unsigned char[]){9, 0, 0, 0, 8, 1, 0, 0, 0, 200, 0, 0, 0}, 13, 13);
    expect_decode((const unsigned char[]){3, 0, 0, 0, 0xff, 0, 0}, 7, -1);

    /* READY carries no body. */
    expect_decode((const unsigned char[]){2, 0, 0, 0, 1, 'x'}, 6, -1);

    /* Strings running past the end of the frame (even though more bytes follow it). */
    expect_decode((const unsigned char[]){4, 0, 0, 0, 3, 5, 0, 'a', 'b', 'c', 'd'}, 11, -1);
    expect_decode((const unsigned char[]){2, 0, 0, 0, 3, 1}, 6, -1); /* half a length */
    expect_decode((const unsigned char[]){1, 0, 0, 0, 3}, 5, -1);    /* no length at all */
    expect_decode((const unsigned char[]){1, 0, 0, 0, 5}, 5, -1);
    expect_decode((const unsigned char[]){5, 0, 0, 0, 4, 0, 0, 9, 0}, 9, -1);       /* 2nd string */
    expect_decode((const unsigned char[]){6, 0, 0, 0, 4, 1, 0, 'r', 0, 0}, 10, 10); /* ok */
    /* INVOKE: short deadline, then each of the four strings cut. */
    expect_decode((const unsigned char[]){8, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7}, 12, -1);
    expect_decode((const unsigned char[]){9, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8}, 13, -1);
    expect_decode((const unsigned char[]){17, 0, 0, 0, 2, 0, 0, 0, 0,    0, 0,
                                          0,  0, 0, 0, 0, 0, 0, 0, 0xff, 0, 'x'},
                  22, -1); /* client_context claims 255 bytes */
    expect_decode(
        (const unsigned char[]){17, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 21,
        21); /* four empty strings, empty event */

    /* Encoding refuses what cannot be framed, and leaves the buffer as it was. */
    nb_buf b;
    nb_buf_init(&b, NB_CHAN_MAX_FRAME + 64);
    CHECK(nb_buf_append(&b, "keep", 4) == 0);
    char *big = malloc(0x10000);
    memset(big, 'x', 0x10000);
    nb_chan_msg m = {.type = NB_CHAN_RESPONSE, .request_id = {big, 0x10000}};
    CHECK(nb_chan_encode(&b, &m) == -1);
    CHECK(b.len == 4 && memcmp(b.data, "keep", 5) == 0);
    m = (nb_chan_msg){.type = NB_CHAN_INVOKE, .trace_id = {big, 0x10000}};
    CHECK(nb_chan_encode(&b, &m) == -1);
    CHECK(b.len == 4 && memcmp(b.data, "keep", 5) == 0);
    m = (nb_chan_msg){.type = (enum nb_chan_type)9};
    CHECK(nb_chan_encode(&b, &m) == -1);
    m = (nb_chan_msg){.type = NB_CHAN_CALL, .attrs = {big, 0x10000}};
    CHECK(nb_chan_encode(&b, &m) == -1);
    CHECK(b.len == 4 && memcmp(b.data, "keep", 5) == 0);
    free(big);
    /* A body one byte over the frame cap. */
    size_t over_body = NB_CHAN_MAX_FRAME - 1 - 2 + 1;
    char *body = calloc(1, over_body);
    m = (nb_chan_msg){.type = NB_CHAN_RESPONSE, .body = {body, over_body}};
    CHECK(nb_chan_encode(&b, &m) == -1);
    CHECK(b.len == 4 && memcmp(b.data, "keep", 5) == 0);
    free(body);
    nb_buf_free(&b);
    /* An output buffer whose own cap is too small. */
    nb_buf_init(&b, 8);
    m = (nb_chan_msg){.type = NB_CHAN_RESPONSE, .request_id = S("request"), .body = S("body")};
    CHECK(nb_chan_encode(&b, &m) == -1);
    CHECK(b.len == 0);
    nb_buf_free(&b);
}

int main(void)
{
    test_round_trips();
    test_wire_layout();
    test_errors();
    printf("test_channel: ok\n");
    return 0;
}
