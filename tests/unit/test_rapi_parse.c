/* Unit tests of the Runtime API request parser (src/instance/rapi_parse.h).
 *
 * The parser is driven the way a connection drives it: bytes arrive in pieces, unconsumed bytes
 * stay in the connection's buffer, a finished request is taken and the parser reset for the
 * next one. Every input is run with several piece sizes, and each split must give the same
 * requests and the same verdict as feeding everything at once. */
#include "instance/rapi_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define NEXT "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\r\n"

/* What a run produced: each finished request summarised as one line, then the verdict. */
typedef struct run {
    nb_buf log;  /* one line per request */
    int error;   /* the parser returned -1 */
    size_t left; /* bytes never consumed (an incomplete request at the end); without an
                  * error, the same for every split */
    int requests;
} run;

static void summarise(run *out, const nb_rapi_req *r)
{
    /* The body is summarised by length and a cheap checksum, so huge bodies compare fast. */
    unsigned long sum = 0;
    for (size_t i = 0; i < r->body.len; i++)
        sum = sum * 31 + (unsigned char)r->body.data[i];
    CHECK(nb_buf_appendf(
              &out->log,
              "%s %s ka=%d big=%d type=[%s] mode=[%s] ct=[%s] eb=%d[%.*s] body=%zu:%lx\n",
              r->method, r->path, r->keep_alive, r->too_large, r->error_type, r->response_mode,
              r->content_type, r->has_error_body_trailer, (int)r->error_body.len,
              r->error_body.data ? r->error_body.data : "", r->body.len, sum) == 0);
    out->requests++;
}

/* Feeds in pieces of `step` bytes (0 = all at once) like a connection would. */
static void drive(const char *in, size_t len, size_t step, run *out)
{
    memset(out, 0, sizeof *out);
    nb_buf_init(&out->log, 64u << 20);
    nb_rapi_req r;
    nb_rapi_req_init(&r);
    nb_buf pending;
    nb_buf_init(&pending, 64u << 20);
    size_t pos = 0;
    while (pos < len || pending.len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;
        CHECK(nb_buf_append(&pending, in + pos, n) == 0);
        pos += n;
        for (;;) {
            /* an exact-size copy of what is buffered, so ASan catches reads past it */
            char *copy = malloc(pending.len ? pending.len : 1);
            memcpy(copy, pending.data, pending.len);
            long used = nb_rapi_parse(&r, copy, pending.len);
            free(copy);
            if (used < 0) {
                out->error = 1;
                goto done;
            }
            CHECK((size_t)used <= pending.len);
            nb_buf_consume(&pending, (size_t)used);
            if (r.state != NB_RAPI_DONE) break; /* needs more bytes */
            summarise(out, &r);
            nb_rapi_req_reset(&r);
            if (pending.len == 0) break;
        }
        if (pos == len) break;
    }
done:
    out->left = pending.len;
    nb_buf_free(&pending);
    nb_rapi_req_free(&r);
}

static void run_free(run *r)
{
    nb_buf_free(&r->log);
}

/* Runs in at once, then byte by byte and in a few other piece sizes; all must agree. Returns
 * the at-once run for further checks (caller frees). */
static run parse_all(const char *in, size_t len)
{
    run whole;
    drive(in, len, 0, &whole);
    /* A head is re-parsed from its start on every read (as a connection does), so tiny pieces
     * are quadratic in the head size: big inputs use bigger pieces. */
    size_t small[] = {1, 2, 3, 7, 64, 1000}, big[] = {65521, 1000003};
    size_t *steps = len > 200000 ? big : small;
    size_t nsteps = len > 200000 ? sizeof big / sizeof *big : sizeof small / sizeof *small;
    for (size_t i = 0; i < nsteps; i++) {
        run part;
        drive(in, len, steps[i], &part);
        if (part.error != whole.error || part.requests != whole.requests ||
            (!whole.error && part.left != whole.left) ||
            strcmp(part.log.data ? part.log.data : "", whole.log.data ? whole.log.data : "") != 0) {
            fprintf(stderr,
                    "split %zu differs from one-shot:\n--- one-shot err=%d left=%zu\n%s--- split "
                    "err=%d left=%zu\n%s",
                    steps[i], whole.error, whole.left, whole.log.data ? whole.log.data : "",
                    part.error, part.left, part.log.data ? part.log.data : "");
            exit(1);
        }
        run_free(&part);
    }
    return whole;
}

static void expect(const char *in, int error, int requests, const char *log)
{
    run r = parse_all(in, strlen(in));
    if (r.error != error || r.requests != requests ||
        (log && strcmp(r.log.data ? r.log.data : "", log) != 0)) {
        fprintf(stderr,
                "input:\n%s\ngot err=%d requests=%d log:\n%swant err=%d requests=%d log:\n%s", in,
                r.error, r.requests, r.log.data ? r.log.data : "", error, requests,
                log ? log : "(any)\n");
        exit(1);
    }
    run_free(&r);
}

static void test_basic(void)
{
    nb_rapi_req r;
    nb_rapi_req_init(&r);
    const char *in = NEXT;
    CHECK(nb_rapi_parse(&r, in, strlen(in)) == (long)strlen(in));
    CHECK(r.state == NB_RAPI_DONE);
    CHECK_STR(r.method, "GET");
    CHECK_STR(r.path, "/2018-06-01/runtime/invocation/next");
    CHECK(r.keep_alive == 1 && r.body.len == 0 && !r.too_large);
    nb_rapi_req_reset(&r);
    CHECK(r.state == NB_RAPI_HEAD && r.method[0] == 0);

    /* Incomplete head: nothing consumed, still in HEAD. */
    CHECK(nb_rapi_parse(&r, in, 20) == 0);
    CHECK(r.state == NB_RAPI_HEAD);

    /* POST with Content-Length; bytes after the body are left for the next request. */
    const char *post = "POST /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET";
    long n = nb_rapi_parse(&r, post, strlen(post));
    CHECK(n == (long)strlen(post) - 3);
    CHECK(r.state == NB_RAPI_DONE);
    CHECK_STR(r.method, "POST");
    CHECK_STR(r.path, "/2018-06-01/runtime/invocation/abc/response");
    CHECK_STR(r.content_type, "application/json");
    CHECK(r.body.len == 7 && memcmp(r.body.data, "{\"a\":1}", 7) == 0);
    /* Once DONE, more input is not consumed until reset. */
    CHECK(nb_rapi_parse(&r, "GET", 3) == 0);
    nb_rapi_req_reset(&r);
    CHECK(r.body.len == 0 && r.content_type[0] == 0);
    nb_rapi_req_free(&r);

    expect(NEXT, 0, 1,
           "GET /2018-06-01/runtime/invocation/next ka=1 big=0 type=[] mode=[] ct=[] eb=0[] "
           "body=0:0\n");
    expect("POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\nContent-Length: "
           "5\r\n\r\nhello",
           0, 1,
           "POST /2018-06-01/runtime/invocation/r1/response ka=1 big=0 type=[] mode=[] ct=[] "
           "eb=0[] body=5:5e918d2\n");
    /* Content-Length: 0 is a complete request without a body. */
    expect("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nContent-Length: 0\r\n"
           "Lambda-Runtime-Function-Error-Type: Runtime.Init\r\n\r\n",
           0, 1,
           "POST /2018-06-01/runtime/init/error ka=1 big=0 type=[Runtime.Init] mode=[] ct=[] "
           "eb=0[] body=0:0\n");
    /* Header names are case-insensitive. */
    expect("POST /x HTTP/1.1\r\ncontent-length: 2\r\nLAMBDA-RUNTIME-FUNCTION-RESPONSE-MODE: "
           "streaming\r\n\r\nok",
           0, 1, "POST /x ka=1 big=0 type=[] mode=[streaming] ct=[] eb=0[] body=2:ddc\n");
}

static void test_chunked(void)
{
    const char *in =
        "POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
        "Lambda-Runtime-Function-Response-Mode: streaming\r\n\r\n"
        "5;name=value\r\nhello\r\n"
        "6;a;b=\"q\"\r\n world\r\n"
        "A\r\n0123456789\r\n"
        "0;last\r\n"
        "Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\n"
        "Lambda-Runtime-Function-Error-Body: eyJlcnJvck1lc3NhZ2UiOiJ4In0=\r\n"
        "\r\n";
    run r = parse_all(in, strlen(in));
    CHECK(!r.error && r.requests == 1 && r.left == 0);
    CHECK(strstr(r.log.data, "type=[Runtime.StreamError]") != NULL);
    CHECK(strstr(r.log.data, "eb=1[eyJlcnJvck1lc3NhZ2UiOiJ4In0=]") != NULL);
    CHECK(strstr(r.log.data, "mode=[streaming]") != NULL);
    CHECK(strstr(r.log.data, "body=21:") != NULL);
    run_free(&r);

    /* And the decoded bytes themselves. */
    nb_rapi_req q;
    nb_rapi_req_init(&q);
    CHECK(nb_rapi_parse(&q, in, strlen(in)) == (long)strlen(in));
    CHECK(q.state == NB_RAPI_DONE);
    CHECK(q.body.len == 21 && memcmp(q.body.data, "hello world0123456789", 21) == 0);
    CHECK(q.has_error_body_trailer == 1);
    nb_rapi_req_free(&q);

    /* No trailers; uppercase and lowercase hex; LF-only line ends are tolerated. */
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n", 0,
           1, NULL);
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: "
           "Chunked\r\n\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
           0, 1, NULL);
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 0, 1,
           "POST /x ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=3:17862\n");
    /* Chunked with no data at all. */
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 1,
           "POST /x ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    /* Error type in a header, body in a trailer. */
    expect("POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\nLambda-Runtime-Function-Error-Type: "
           "A.B\r\n\r\n"
           "0\r\nLambda-Runtime-Function-Error-Body: Zm9v\r\n\r\n",
           0, 1, "POST /e ka=1 big=0 type=[A.B] mode=[] ct=[] eb=1[Zm9v] body=0:0\n");
    /* Incomplete chunked body: no request, no error, bytes left over. */
    run inc = parse_all("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 55);
    CHECK(!inc.error && inc.requests == 0);
    run_free(&inc);
}

static void test_pipelined_and_reset(void)
{
    const char *in = NEXT "POST /2018-06-01/runtime/invocation/r1/error HTTP/1.1\r\n"
                          "Lambda-Runtime-Function-Error-Type: Function.Boom\r\nContent-Length: "
                          "5\r\n\r\n{\"x\"" /* the body goes on in the next literal */
                          "}" NEXT "POST /2018-06-01/runtime/invocation/r2/response "
                          "HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "2\r\nok\r\n0\r\nLambda-Runtime-Function-Error-Body: YQ==\r\n\r\n"
                          "POST /2018-06-01/runtime/invocation/r3/response "
                          "HTTP/1.1\r\nContent-Length: 3\r\n\r\nend";
    run r = parse_all(in, strlen(in));
    CHECK(!r.error && r.left == 0);
    CHECK(r.requests == 5);
    /* Fields of one request never leak into the next (reset clears them). */
    const char *want =
        "GET /2018-06-01/runtime/invocation/next ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n"
        "POST /2018-06-01/runtime/invocation/r1/error ka=1 big=0 type=[Function.Boom] mode=[] "
        "ct=[] eb=0[] body=5:";
    CHECK(strncmp(r.log.data, want, strlen(want)) == 0);
    char *third = strchr(strchr(r.log.data, '\n') + 1, '\n') + 1;
    CHECK(strncmp(third,
                  "GET /2018-06-01/runtime/invocation/next ka=1 big=0 type=[] mode=[] ct=[] eb=0[] "
                  "body=0:0\n",
                  89) == 0);
    CHECK(strstr(r.log.data, "r2/response ka=1 big=0 type=[] mode=[] ct=[] eb=1[YQ==] body=2:") !=
          NULL);
    CHECK(strstr(r.log.data, "r3/response ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=3:") !=
          NULL);
    run_free(&r);

    /* A request that ends exactly where a second's head starts partially. */
    expect(NEXT "GET /2018-06-01/runtime/invo", 0, 1, NULL);
}

static void test_errors(void)
{
    /* Both Content-Length and Transfer-Encoding: refused (either order). */
    expect("POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: "
           "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 1, 0,
           NULL);
    /* Content-Length must be one plain decimal number. */
    expect("POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length: 5,5\r\n\r\nhello", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length:\r\n\r\n", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nContent-Length: 1234567890123\r\n\r\n", 1, 0, NULL);
    /* Only chunked transfer coding. */
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 1, 0, NULL);
    expect("POST /x HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 1, 0, NULL);
    /* Obsolete line folding. */
    expect("POST /x HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n", 1, 0, NULL);
    /* Not HTTP / bad request line / overlong method or path. */
    expect("hello there\r\n\r\n", 1, 0, NULL);
    expect("GET /x HTTP/2.0\r\n\r\n", 1, 0, NULL);
    expect("PROPPATCH /x HTTP/1.1\r\n\r\n", 1, 0, NULL);
    static char longpath[2048];
    snprintf(longpath, sizeof longpath, "GET /%0600d HTTP/1.1\r\n\r\n", 0);
    expect(longpath, 1, 0, NULL);
    /* Bad chunk sizes. */
    const char *te = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *bad_chunks[] = {
        "zz\r\nhello\r\n0\r\n\r\n",  /* not hex */
        "\r\nhello\r\n0\r\n\r\n",    /* empty */
        " 5\r\nhello\r\n0\r\n\r\n",  /* leading space */
        "5 \r\nhello\r\n0\r\n\r\n",  /* trailing space */
        "-5\r\nhello\r\n0\r\n\r\n",  /* sign */
        "0x5\r\nhello\r\n0\r\n\r\n", /* prefix */
        "100000000\r\n",             /* 9 hex digits: over 4 GiB */
        "ffffffffffffffff1\r\n",     /* would overflow */
        "5\rX\nhello\r\n0\r\n\r\n",  /* bare CR inside the size line */
        "5\r\nhelloXY0\r\n\r\n",     /* data not followed by CRLF */
        "5\r\nhello\rX0\r\n\r\n",    /* CR not followed by LF */
    };
    for (size_t i = 0; i < sizeof bad_chunks / sizeof *bad_chunks; i++) {
        char in[256];
        snprintf(in, sizeof in, "%s%s", te, bad_chunks[i]);
        expect(in, 1, 0, NULL);
    }
    /* A chunk-size line (with extensions) longer than 1 KiB is refused however it arrives. */
    static char longext[4096];
    int off = snprintf(longext, sizeof longext, "%s5;", te);
    memset(longext + off, 'e', 2000);
    snprintf(longext + off + 2000, sizeof longext - (size_t)off - 2000, "\r\nhello\r\n0\r\n\r\n");
    expect(longext, 1, 0, NULL);
    /* Bad trailers. */
    char in[512];
    snprintf(in, sizeof in, "%s0\r\nno colon here\r\n\r\n", te);
    expect(in, 1, 0, NULL);
    snprintf(in, sizeof in, "%s0\r\nX-A: 1\r\n folded\r\n\r\n", te);
    expect(in, 1, 0, NULL);
    /* An error stops everything: a good request after a bad one is never parsed. */
    expect("GET /x HTTP/1.1\r\nContent-Length: x\r\n\r\n" NEXT, 1, 0, NULL);
    expect(NEXT "BAD\r\n\r\n" NEXT, 1, 1, NULL);
}

/* Appends n copies of c. */
static void fill(nb_buf *b, char c, size_t n)
{
    CHECK(nb_buf_reserve(b, n) == 0);
    memset(b->data + b->len, c, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void test_limits(void)
{
    /* A body over NB_RAPI_MAX_BODY: flagged too_large, dropped, but still consumed exactly, so
     * the next request on the connection parses (and the runtime can get its 413). */
    size_t over = NB_RAPI_MAX_BODY + 1;
    nb_buf in;
    nb_buf_init(&in, 64u << 20);
    CHECK(nb_buf_appendf(&in,
                         "POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         over) == 0);
    fill(&in, 'x', over);
    CHECK(nb_buf_append(&in, NEXT, strlen(NEXT)) == 0);
    run r = parse_all(in.data, in.len);
    CHECK(!r.error && r.requests == 2 && r.left == 0);
    CHECK(strstr(r.log.data, "r1/response ka=1 big=1 type=[] mode=[] ct=[] eb=0[] body=0:0\n") !=
          NULL);
    CHECK(strstr(r.log.data, "invocation/next ka=1 big=0") != NULL);
    run_free(&r);

    /* Exactly the limit is fine. */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(&in, "POST /r HTTP/1.1\r\nContent-Length: %u\r\n\r\n", NB_RAPI_MAX_BODY) ==
          0);
    fill(&in, 'y', NB_RAPI_MAX_BODY);
    r = parse_all(in.data, in.len);
    CHECK(!r.error && r.requests == 1);
    char want[64];
    snprintf(want, sizeof want, "big=0 type=[] mode=[] ct=[] eb=0[] body=%u:", NB_RAPI_MAX_BODY);
    CHECK(strstr(r.log.data, want) != NULL);
    run_free(&r);

    /* The same through chunks: 7 chunks of 1 MiB. */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(&in, "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    static char mib[1 << 20];
    memset(mib, 'z', sizeof mib);
    for (int i = 0; i < 7; i++) {
        CHECK(nb_buf_appendf(&in, "%x\r\n", (unsigned)sizeof mib) == 0);
        CHECK(nb_buf_append(&in, mib, sizeof mib) == 0);
        CHECK(nb_buf_append(&in, "\r\n", 2) == 0);
    }
    CHECK(nb_buf_appendf(&in, "0\r\nLambda-Runtime-Function-Error-Type: T.U\r\n\r\n" NEXT) == 0);
    r = parse_all(in.data, in.len);
    CHECK(!r.error && r.requests == 2);
    CHECK(strstr(r.log.data, "POST /r ka=1 big=1 type=[T.U] mode=[] ct=[] eb=0[] body=0:0\n") !=
          NULL);
    run_free(&r);

    /* A head over NB_RAPI_MAX_HEAD is an error, whether it is still incomplete... */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(&in, "GET / HTTP/1.1\r\nX-Big: ") == 0);
    fill(&in, 'h', NB_RAPI_MAX_HEAD);
    r = parse_all(in.data, in.len);
    CHECK(r.error && r.requests == 0);
    run_free(&r);
    /* ... or complete in one read. */
    CHECK(nb_buf_append(&in, "\r\n\r\n", 4) == 0);
    r = parse_all(in.data, in.len);
    CHECK(r.error && r.requests == 0);
    run_free(&r);
    /* Just under the cap is accepted (X-Ray cause headers are big). */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(&in, "GET / HTTP/1.1\r\nX-Big: ") == 0);
    size_t room = NB_RAPI_MAX_HEAD - in.len - 4;
    fill(&in, 'h', room);
    CHECK(nb_buf_append(&in, "\r\n\r\n", 4) == 0);
    CHECK(in.len == NB_RAPI_MAX_HEAD);
    r = parse_all(in.data, in.len);
    CHECK(!r.error && r.requests == 1);
    run_free(&r);
    /* Trailers have the same cap. */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(
              &in, "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Big: ") == 0);
    fill(&in, 't', NB_RAPI_MAX_HEAD);
    CHECK(nb_buf_append(&in, "\r\n\r\n", 4) == 0);
    r = parse_all(in.data, in.len);
    CHECK(r.error && r.requests == 0);
    run_free(&r);

    /* An error body trailer over its own cap is dropped, not an error. */
    nb_buf_reset(&in);
    CHECK(nb_buf_appendf(&in, "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                              "Lambda-Runtime-Function-Error-Body: ") == 0);
    fill(&in, 'b', (100u << 10));
    CHECK(nb_buf_append(&in, "\r\n\r\n", 4) == 0);
    r = parse_all(in.data, in.len);
    CHECK(!r.error && r.requests == 1);
    CHECK(strstr(r.log.data, "eb=1[] body=0:0") != NULL);
    run_free(&r);

    /* Long header values are cut to their fields, never overrun them. */
    nb_buf_reset(&in);
    CHECK(
        nb_buf_appendf(
            &in, "POST /r HTTP/1.1\r\nContent-Length: 0\r\nLambda-Runtime-Function-Error-Type: ") ==
        0);
    fill(&in, 'E', 500);
    CHECK(nb_buf_appendf(&in, "\r\nContent-Type: ") == 0);
    fill(&in, 'C', 500);
    CHECK(nb_buf_appendf(&in, "\r\n\r\n") == 0);
    nb_rapi_req q;
    nb_rapi_req_init(&q);
    CHECK(nb_rapi_parse(&q, in.data, in.len) == (long)in.len);
    CHECK(q.state == NB_RAPI_DONE);
    CHECK(strlen(q.error_type) == sizeof q.error_type - 1);
    CHECK(strlen(q.content_type) == sizeof q.content_type - 1);
    nb_rapi_req_free(&q);
    nb_buf_free(&in);
}

static void test_keep_alive(void)
{
    expect("GET /n HTTP/1.1\r\n\r\n", 0, 1,
           "GET /n ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    expect("GET /n HTTP/1.0\r\n\r\n", 0, 1,
           "GET /n ka=0 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    expect("GET /n HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 1,
           "GET /n ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    expect("GET /n HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, 1,
           "GET /n ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    expect("GET /n HTTP/1.1\r\nConnection: close\r\n\r\n", 0, 1,
           "GET /n ka=0 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    expect("GET /n HTTP/1.1\r\nConnection: CLOSE\r\n\r\n", 0, 1,
           "GET /n ka=0 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
    /* keep-alive state is per request: close on the first does not stick to the second. */
    expect("GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0, 2,
           "GET /a ka=0 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n"
           "GET /b ka=1 big=0 type=[] mode=[] ct=[] eb=0[] body=0:0\n");
}

int main(void)
{
    test_basic();
    test_chunked();
    test_pipelined_and_reset();
    test_errors();
    test_limits();
    test_keep_alive();
    printf("test_rapi_parse: ok\n");
    return 0;
}
