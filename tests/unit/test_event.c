/* Unit tests of the payload 2.0 event and the response mapping (src/gateway/event.h). Every
 * event is parsed back with jansson and checked field by field. */
#include "gateway/event.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define S(lit) ((nb_ev_str){(lit), sizeof(lit) - 1})

static json_t *build(const nb_ev_request *r)
{
    size_t len = 0;
    char *ev = nb_ev_build(r, &len);
    CHECK(ev && strlen(ev) == len);
    json_error_t e;
    json_t *j = json_loadb(ev, len, JSON_ALLOW_NUL, &e);
    if (!j) {
        fprintf(stderr, "not JSON (%s): %s\n", e.text, ev);
        exit(1);
    }
    free(ev);
    return j;
}

static const char *str_at(json_t *j, const char *path)
{
    /* "a.b.c" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = j;
    for (char *save, *tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, tok);
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

static nb_ev_request base_request(void)
{
    static const nb_ev_header h[] = {
        {S("Host"), S("abc123.faas.example:8080")},
        {S("User-Agent"), S("curl/8.5.0")},
        {S("Accept"), S("*/*")},
        {S("X-Multi"), S("one")},
        {S("Cookie"), S("a=1; b=2;;  c=3 ")},
        {S("x-multi"), S("two")},
        {S("cookie"), S("d=4")},
        {S("Content-Type"), S("application/json; charset=utf-8")},
        {S("X-MULTI"), S("three")},
    };
    nb_ev_request r = {0};
    r.method = S("POST");
    r.path = S("/shop/items/a%20b");
    r.query = S("q=a+b%21&x=1&x=2&flag&=v&empty=&%E2%82%AC=%zz&&");
    r.protocol = S("HTTP/1.1");
    r.headers = h;
    r.nheaders = sizeof h / sizeof h[0];
    r.body = S("{\"example\":\"test\"}");
    r.source_ip = "192.0.2.1";
    r.request_id = "e1506fd5-9e7b-434f-bd42-4f8fa224b599";
    r.time_ms = 1583348638390; /* 04/Mar/2020:19:03:58 UTC */
    r.route_key = "POST /shop/items/{id}";
    r.api_id = "abc123";
    r.stage = "$default";
    static const char *const names[] = {"id"};
    static const char *const values[] = {"a b"};
    r.param_names = names;
    r.param_values = values;
    r.nparams = 1;
    return r;
}

static void test_full_event(void)
{
    nb_ev_request r = base_request();
    json_t *j = build(&r);
    CHECK_STR(str_at(j, "version"), "2.0");
    CHECK_STR(str_at(j, "routeKey"), "POST /shop/items/{id}");
    CHECK_STR(str_at(j, "rawPath"), "/shop/items/a%20b");
    CHECK_STR(str_at(j, "rawQueryString"), "q=a+b%21&x=1&x=2&flag&=v&empty=&%E2%82%AC=%zz&&");

    json_t *c = json_object_get(j, "cookies");
    CHECK(json_is_array(c) && json_array_size(c) == 4);
    CHECK_STR(json_string_value(json_array_get(c, 0)), "a=1");
    CHECK_STR(json_string_value(json_array_get(c, 1)), "b=2");
    CHECK_STR(json_string_value(json_array_get(c, 2)), "c=3");
    CHECK_STR(json_string_value(json_array_get(c, 3)), "d=4");

    json_t *h = json_object_get(j, "headers");
    CHECK(json_is_object(h));
    CHECK(json_object_size(h) == 5); /* host, user-agent, accept, x-multi, content-type */
    CHECK_STR(str_at(h, "host"), "abc123.faas.example:8080");
    CHECK_STR(str_at(h, "user-agent"), "curl/8.5.0");
    CHECK_STR(str_at(h, "accept"), "*/*");
    CHECK_STR(str_at(h, "x-multi"), "one,two,three"); /* joined in arrival order */
    CHECK_STR(str_at(h, "content-type"), "application/json; charset=utf-8");
    CHECK(!json_object_get(h, "cookie") && !json_object_get(h, "Cookie"));

    json_t *q = json_object_get(j, "queryStringParameters");
    CHECK(json_is_object(q));
    CHECK_STR(str_at(q, "q"), "a b!");
    CHECK_STR(str_at(q, "x"), "1,2");
    CHECK_STR(str_at(q, "flag"), "");
    CHECK_STR(json_string_value(json_object_get(q, "")), "v");
    CHECK_STR(str_at(q, "empty"), "");
    CHECK_STR(json_string_value(json_object_get(q, "\xe2\x82\xac")), "%zz");
    CHECK(json_object_size(q) == 6);

    json_t *pp = json_object_get(j, "pathParameters");
    CHECK(json_is_object(pp) && json_object_size(pp) == 1);
    CHECK_STR(str_at(pp, "id"), "a b");

    CHECK_STR(str_at(j, "requestContext.accountId"), "000000000000");
    CHECK_STR(str_at(j, "requestContext.apiId"), "abc123");
    CHECK_STR(str_at(j, "requestContext.domainName"), "abc123.faas.example");
    CHECK_STR(str_at(j, "requestContext.domainPrefix"), "abc123");
    CHECK_STR(str_at(j, "requestContext.http.method"), "POST");
    CHECK_STR(str_at(j, "requestContext.http.path"), "/shop/items/a%20b");
    CHECK_STR(str_at(j, "requestContext.http.protocol"), "HTTP/1.1");
    CHECK_STR(str_at(j, "requestContext.http.sourceIp"), "192.0.2.1");
    CHECK_STR(str_at(j, "requestContext.http.userAgent"), "curl/8.5.0");
    CHECK_STR(str_at(j, "requestContext.requestId"), "e1506fd5-9e7b-434f-bd42-4f8fa224b599");
    CHECK_STR(str_at(j, "requestContext.routeKey"), "POST /shop/items/{id}");
    CHECK_STR(str_at(j, "requestContext.stage"), "$default");
    CHECK_STR(str_at(j, "requestContext.time"), "04/Mar/2020:19:03:58 +0000");
    json_t *rc = json_object_get(j, "requestContext");
    json_t *te = json_object_get(rc, "timeEpoch");
    CHECK(json_is_integer(te) && json_integer_value(te) == 1583348638390);
    CHECK(!json_object_get(rc, "authorizer"));

    CHECK_STR(str_at(j, "body"), "{\"example\":\"test\"}");
    CHECK(json_is_false(json_object_get(j, "isBase64Encoded")));
    json_decref(j);
}

static void test_minimal_event(void)
{
    nb_ev_request r = {0};
    r.method = S("GET");
    r.path = S("/");
    r.protocol = S("HTTP/2.0");
    r.time_ms = 0;
    json_t *j = build(&r);
    CHECK_STR(str_at(j, "routeKey"), "$default");
    CHECK_STR(str_at(j, "rawQueryString"), "");
    CHECK(!json_object_get(j, "cookies"));
    json_t *h = json_object_get(j, "headers");
    CHECK(json_is_object(h) && json_object_size(h) == 0);
    CHECK(!json_object_get(j, "queryStringParameters"));
    CHECK(!json_object_get(j, "pathParameters"));
    CHECK(!json_object_get(j, "body"));
    CHECK(json_is_false(json_object_get(j, "isBase64Encoded")));
    CHECK_STR(str_at(j, "requestContext.stage"), "$default");
    CHECK_STR(str_at(j, "requestContext.routeKey"), "$default");
    CHECK_STR(str_at(j, "requestContext.domainName"), "");
    CHECK_STR(str_at(j, "requestContext.http.userAgent"), "");
    CHECK_STR(str_at(j, "requestContext.http.sourceIp"), "");
    CHECK_STR(str_at(j, "requestContext.http.protocol"), "HTTP/2.0");
    CHECK_STR(str_at(j, "requestContext.time"), "01/Jan/1970:00:00:00 +0000");
    json_decref(j);

    /* a query of only separators: no parameters, so the object is omitted */
    r.query = S("&&&");
    j = build(&r);
    CHECK_STR(str_at(j, "rawQueryString"), "&&&");
    CHECK(!json_object_get(j, "queryStringParameters"));
    json_decref(j);

    /* months are English whatever the locale; December, end of a leap year */
    r.time_ms = 1609459199999; /* 2020-12-31T23:59:59.999Z */
    j = build(&r);
    CHECK_STR(str_at(j, "requestContext.time"), "31/Dec/2020:23:59:59 +0000");
    json_decref(j);
}

static void test_authorizer(void)
{
    nb_ev_request r = base_request();
    r.authorizer_json = "{\"jwt\":{\"claims\":{\"sub\":\"u1\"},\"scopes\":[\"read\"]}}";
    json_t *j = build(&r);
    json_t *a = json_object_get(json_object_get(j, "requestContext"), "authorizer");
    CHECK(json_is_object(a));
    CHECK_STR(str_at(a, "jwt.claims.sub"), "u1");
    CHECK_STR(
        json_string_value(json_array_get(json_object_get(json_object_get(a, "jwt"), "scopes"), 0)),
        "read");
    json_decref(j);
    r.authorizer_json = "";
    j = build(&r);
    CHECK(!json_object_get(json_object_get(j, "requestContext"), "authorizer"));
    json_decref(j);
}

static void test_domain(void)
{
    nb_ev_request r = {0};
    nb_ev_header h[] = {{S("host"), S("[::1]:9000")}};
    r.headers = h;
    r.nheaders = 1;
    json_t *j = build(&r);
    CHECK_STR(str_at(j, "requestContext.domainName"), "[::1]");
    CHECK_STR(str_at(j, "requestContext.domainPrefix"), "[::1]");
    json_decref(j);
    /* an empty Host (NULL pointer, as a zeroed nb_ev_str) */
    h[0].value = (nb_ev_str){NULL, 0};
    j = build(&r);
    CHECK_STR(str_at(j, "requestContext.domainName"), "");
    CHECK_STR(str_at(j, "requestContext.domainPrefix"), "");
    CHECK_STR(str_at(j, "headers.host"), "");
    json_decref(j);
    h[0].value = S("localhost");
    j = build(&r);
    CHECK_STR(str_at(j, "requestContext.domainName"), "localhost");
    CHECK_STR(str_at(j, "requestContext.domainPrefix"), "localhost");
    json_decref(j);
}

/* Checks the body field against the bytes sent: as text or as base64 of them. */
static void expect_body(const char *ct, const char *body, size_t len, int want_b64)
{
    nb_ev_request r = {0};
    nb_ev_header h[1];
    h[0].name = S("Content-Type");
    h[0].value = (nb_ev_str){ct, ct ? strlen(ct) : 0};
    r.headers = ct ? h : NULL;
    r.nheaders = ct ? 1 : 0;
    r.body = (nb_ev_str){body, len};
    json_t *j = build(&r);
    json_t *b = json_object_get(j, "body");
    CHECK(json_is_string(b));
    int is_b64 = json_is_true(json_object_get(j, "isBase64Encoded"));
    if (is_b64 != want_b64) {
        fprintf(stderr, "content-type %s: base64 %d, want %d\n", ct ? ct : "(none)", is_b64,
                want_b64);
        exit(1);
    }
    if (!want_b64) {
        CHECK(json_string_length(b) == len && memcmp(json_string_value(b), body, len) == 0);
    } else {
        /* decode back through the response mapper: the same base64 rules both ways */
        json_t *res =
            json_pack("{s:i,s:O,s:b}", "statusCode", 200, "body", b, "isBase64Encoded", 1);
        char *txt = json_dumps(res, 0);
        nb_ev_response out;
        nb_err err;
        CHECK(nb_ev_response_map(txt, strlen(txt), &out, &err) == 0);
        CHECK(out.body_len == len && memcmp(out.body, body, len) == 0);
        nb_ev_response_free(&out);
        free(txt);
        json_decref(res);
    }
    json_decref(j);
}

static void test_body(void)
{
    static const char bin[] = {0, 1, 2, (char)0xff, (char)0xfe, 'a', 0};
    expect_body(NULL, "hello", 5, 0);
    expect_body(NULL, "caf\xc3\xa9 \"q\" \\ \n\t\x01", 16, 0);
    expect_body(NULL, bin, sizeof bin, 1); /* absent type, not UTF-8 */
    expect_body(NULL, "a\0b", 3, 0);       /* NUL is valid UTF-8: \u0000 */
    expect_body("text/plain", "hi", 2, 0);
    expect_body("TEXT/HTML; charset=utf-8", "<p>", 3, 0);
    expect_body("application/json", "{}", 2, 0);
    expect_body("application/vnd.api+json", "{}", 2, 0);
    expect_body("application/xml", "<a/>", 4, 0);
    expect_body("application/atom+xml", "<a/>", 4, 0);
    expect_body("application/javascript", "x=1", 3, 0);
    expect_body("application/x-www-form-urlencoded", "a=1&b=2", 7, 0);
    expect_body("application/octet-stream", "hello", 5, 1);
    expect_body("image/png", "\x89PNG", 4, 1);
    expect_body("multipart/form-data; boundary=x", "--x", 3, 1);
    expect_body("image/json", "{}", 2, 1); /* only application/ subtypes */
    expect_body("", "hello", 5, 1);
    expect_body("text/plain", bin, sizeof bin, 1); /* textual but not UTF-8: kept whole */
    /* every length modulo 3 for the padding */
    expect_body("application/octet-stream", "a", 1, 1);
    expect_body("application/octet-stream", "ab", 2, 1);
    expect_body("application/octet-stream", "abc", 3, 1);
    expect_body("application/octet-stream", "abcd", 4, 1);
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    expect_body("application/octet-stream", (const char *)all, sizeof all, 1);
}

/* Strings that are not UTF-8 or carry controls still make valid JSON. */
static void test_escaping(void)
{
    nb_ev_request r = {0};
    nb_ev_header h[] = {
        {S("X-Bad"), S("a\xff\xfe"
                       "b\xc3")},
        {S("X-Ctl"), S("\x01\x1f\"\\/\x7f")},
        {S("X-Overlong"), S("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80")},
        {S("X-Ok"), S("\xe2\x82\xac\xf0\x9f\x98\x80")},
        {S("X-\xc3\x89T\xc3\x89"), S("v")},
    };
    r.headers = h;
    r.nheaders = sizeof h / sizeof h[0];
    r.path = (nb_ev_str){"/\xff\x00x", 4};
    r.query = S("k\xff=v%FF&%00a=1");
    json_t *j = build(&r);
    json_t *hd = json_object_get(j, "headers");
    CHECK_STR(str_at(hd, "x-bad"), "a\xef\xbf\xbd\xef\xbf\xbd"
                                   "b\xef\xbf\xbd");
    CHECK_STR(str_at(hd, "x-ctl"), "\x01\x1f\"\\/\x7f");
    /* overlong '/', a surrogate and a code point past U+10FFFF: each byte replaced */
    const char *ov = str_at(hd, "x-overlong");
    CHECK(ov && strlen(ov) == 9 * 3);
    CHECK_STR(str_at(hd, "x-ok"), "\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK_STR(json_string_value(json_object_get(hd, "x-\xc3\x89t\xc3\x89")), "v");
    json_t *rp = json_object_get(j, "rawPath");
    CHECK(json_string_length(rp) == 6 && memcmp(json_string_value(rp), "/\xef\xbf\xbd\0x", 6) == 0);
    json_t *q = json_object_get(j, "queryStringParameters");
    CHECK_STR(json_string_value(json_object_get(q, "k\xef\xbf\xbd")), "v\xef\xbf\xbd");
    /* a NUL in a key is replaced (parsers refuse it there), in a value escaped */
    CHECK_STR(json_string_value(json_object_get(q, "\xef\xbf\xbd"
                                                   "a")),
              "1");
    json_decref(j);
}

static void test_many_headers_and_params(void)
{
    /* past the small on-stack arrays */
    enum { N = 200 };
    static nb_ev_header h[N];
    static char names[N][16], vals[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "X-H%d", i % 50);
        snprintf(vals[i], sizeof vals[i], "%d", i);
        h[i].name = (nb_ev_str){names[i], strlen(names[i])};
        h[i].value = (nb_ev_str){vals[i], strlen(vals[i])};
    }
    char query[8192] = "";
    for (int i = 0; i < N; i++)
        snprintf(query + strlen(query), sizeof query - strlen(query), "%sk%d=%d", i ? "&" : "",
                 i % 7, i);
    nb_ev_request r = {0};
    r.headers = h;
    r.nheaders = N;
    r.query = (nb_ev_str){query, strlen(query)};
    json_t *j = build(&r);
    json_t *hd = json_object_get(j, "headers");
    CHECK(json_object_size(hd) == 50);
    CHECK_STR(str_at(hd, "x-h3"), "3,53,103,153");
    json_t *q = json_object_get(j, "queryStringParameters");
    CHECK(json_object_size(q) == 7);
    const char *k0 = str_at(q, "k0");
    CHECK(k0 && strncmp(k0, "0,7,14,", 7) == 0);
    json_decref(j);
}

/* ---- response mapping ---- */

static const char *hval(const nb_ev_response *r, const char *name, int nth)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        CHECK(r->headers[i].name.p[r->headers[i].name.len] == 0);
        CHECK(r->headers[i].value.p[r->headers[i].value.len] == 0);
        if (strcmp(r->headers[i].name.p, name) == 0 && nth-- == 0) return r->headers[i].value.p;
    }
    return NULL;
}

static void map_ok(const char *result, nb_ev_response *out)
{
    nb_err err = {0};
    if (nb_ev_response_map(result, strlen(result), out, &err) != 0) {
        fprintf(stderr, "map %s: %s\n", result, err.msg);
        exit(1);
    }
    CHECK(out->has_content_type);
    CHECK(hval(out, "content-type", 0));
    CHECK(out->body && out->body[out->body_len] == 0);
}

static void map_bad(const char *result, size_t len)
{
    nb_ev_response out;
    nb_err err = {0};
    if (nb_ev_response_map(result, len, &out, &err) != -1) {
        fprintf(stderr, "map %.*s: accepted\n", (int)len, result);
        exit(1);
    }
    CHECK(err.status == 502 && err.msg[0]);
    CHECK(out.body == NULL && out.storage == NULL && out.nheaders == 0);
}

static void test_structured(void)
{
    nb_ev_response r;
    map_ok("{\"statusCode\":201,\"headers\":{\"Content-Type\":\"application/json\","
           "\"My-Custom-Header\":\"Custom Value\"},\"body\":\"{\\\"message\\\":\\\"Hello, "
           "world!\\\"}\",\"cookies\":[\"Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT\","
           "\"Cookie_2=Value2; Max-Age=78000\"],\"isBase64Encoded\":false}",
           &r);
    CHECK(r.status == 201);
    CHECK_STR(hval(&r, "content-type", 0), "application/json");
    CHECK(!hval(&r, "content-type", 1));
    CHECK_STR(hval(&r, "my-custom-header", 0), "Custom Value");
    CHECK_STR(hval(&r, "set-cookie", 0), "Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT");
    CHECK_STR(hval(&r, "set-cookie", 1), "Cookie_2=Value2; Max-Age=78000");
    CHECK(r.nheaders == 4);
    CHECK_STR(r.body, "{\"message\":\"Hello, world!\"}");
    nb_ev_response_free(&r);

    /* no content-type: application/json is added; no body: empty */
    map_ok("{\"statusCode\":204}", &r);
    CHECK(r.status == 204 && r.body_len == 0 && r.nheaders == 1);
    CHECK_STR(hval(&r, "content-type", 0), "application/json");
    nb_ev_response_free(&r);
    map_ok("{\"statusCode\":404,\"body\":null,\"headers\":null,\"cookies\":null,"
           "\"isBase64Encoded\":null}",
           &r);
    CHECK(r.status == 404 && r.body_len == 0);
    nb_ev_response_free(&r);

    /* header values: numbers and booleans stringified */
    map_ok("{\"statusCode\":200,\"headers\":{\"X-N\":42,\"X-F\":1.5,\"X-B\":true,\"X-C\":false,"
           "\"content-type\":\"text/plain\"},\"body\":\"ok\"}",
           &r);
    CHECK_STR(hval(&r, "x-n", 0), "42");
    CHECK_STR(hval(&r, "x-f", 0), "1.5");
    CHECK_STR(hval(&r, "x-b", 0), "true");
    CHECK_STR(hval(&r, "x-c", 0), "false");
    CHECK_STR(hval(&r, "content-type", 0), "text/plain");
    CHECK(r.nheaders == 5);
    nb_ev_response_free(&r);

    /* multiValueHeaders merge: a name in both takes the multi values */
    map_ok("{\"statusCode\":200,\"headers\":{\"X-A\":\"single\",\"X-Only\":\"o\"},"
           "\"multiValueHeaders\":{\"x-a\":[\"m1\",\"m2\"],\"X-M\":[\"v\",3]}}",
           &r);
    CHECK_STR(hval(&r, "x-only", 0), "o");
    CHECK_STR(hval(&r, "x-a", 0), "m1");
    CHECK_STR(hval(&r, "x-a", 1), "m2");
    CHECK(!hval(&r, "x-a", 2));
    CHECK_STR(hval(&r, "x-m", 0), "v");
    CHECK_STR(hval(&r, "x-m", 1), "3");
    nb_ev_response_free(&r);

    /* hop-by-hop and framing headers are dropped */
    map_ok("{\"statusCode\":200,\"headers\":{\"Connection\":\"close\",\"Transfer-Encoding\":"
           "\"chunked\",\"Content-Length\":\"999\",\"Keep-Alive\":\"timeout=5\",\"Upgrade\":"
           "\"h2c\",\"X-Kept\":\"y\"},\"multiValueHeaders\":{\"connection\":[\"x\"]},"
           "\"body\":\"b\"}",
           &r);
    CHECK(r.nheaders == 2);
    CHECK_STR(hval(&r, "x-kept", 0), "y");
    CHECK(!hval(&r, "connection", 0) && !hval(&r, "content-length", 0));
    nb_ev_response_free(&r);

    /* base64 body with binary bytes, NUL included */
    map_ok("{\"statusCode\":200,\"headers\":{\"content-type\":\"image/png\"},"
           "\"body\":\"AAEC/wBhYg==\",\"isBase64Encoded\":true}",
           &r);
    CHECK(r.body_len == 7 && memcmp(r.body, "\0\1\2\xff\0ab", 7) == 0);
    nb_ev_response_free(&r);
    /* without padding, URL-safe alphabet, wrapped lines */
    map_ok("{\"statusCode\":200,\"body\":\"_-8A\\nAA\",\"isBase64Encoded\":true}", &r);
    CHECK(r.body_len == 4 && memcmp(r.body, "\xff\xef\x00\x00", 4) == 0);
    nb_ev_response_free(&r);
    map_ok("{\"statusCode\":200,\"body\":\"\",\"isBase64Encoded\":true}", &r);
    CHECK(r.body_len == 0);
    nb_ev_response_free(&r);
    /* \u0000 in a text body */
    map_ok("{\"statusCode\":200,\"body\":\"a\\u0000b\"}", &r);
    CHECK(r.body_len == 3 && memcmp(r.body, "a\0b", 3) == 0);
    nb_ev_response_free(&r);
    /* unknown fields are ignored */
    map_ok("{\"statusCode\":500,\"extra\":[1,2],\"body\":\"x\"}", &r);
    CHECK(r.status == 500);
    nb_ev_response_free(&r);
}

static void test_inferred(void)
{
    nb_ev_response r;
    map_ok("{\"message\":\"Hello, world!\"}", &r);
    CHECK(r.status == 200 && r.nheaders == 1);
    CHECK_STR(hval(&r, "content-type", 0), "application/json");
    CHECK_STR(r.body, "{\"message\":\"Hello, world!\"}");
    nb_ev_response_free(&r);
    /* a JSON string keeps its quotes */
    map_ok("\"Hello, world!\"", &r);
    CHECK_STR(r.body, "\"Hello, world!\"");
    CHECK(r.body_len == 15);
    nb_ev_response_free(&r);
    map_ok("  [1, 2, {\"a\":null}]\n", &r);
    CHECK_STR(r.body, "[1, 2, {\"a\":null}]");
    nb_ev_response_free(&r);
    map_ok("42", &r);
    CHECK_STR(r.body, "42");
    nb_ev_response_free(&r);
    map_ok("1.50", &r);
    CHECK_STR(r.body, "1.50"); /* the function's own text, not a re-serialization */
    nb_ev_response_free(&r);
    map_ok("null", &r);
    CHECK_STR(r.body, "null");
    nb_ev_response_free(&r);
    map_ok("true", &r);
    CHECK_STR(r.body, "true");
    nb_ev_response_free(&r);
    /* an object without statusCode is inferred even when it looks like a response */
    map_ok("{\"body\":\"x\",\"headers\":{\"a\":\"b\"}}", &r);
    CHECK(r.status == 200 && r.nheaders == 1);
    CHECK_STR(r.body, "{\"body\":\"x\",\"headers\":{\"a\":\"b\"}}");
    nb_ev_response_free(&r);
}

static void test_malformed(void)
{
#define BAD(lit) map_bad(lit, sizeof(lit) - 1)
    BAD("");
    BAD("   ");
    BAD("not json");
    BAD("{\"statusCode\":200");
    BAD("{} trailing");
    BAD("\"unterminated");
    BAD("{\"statusCode\":\"200\"}");
    BAD("{\"statusCode\":200.0}");
    BAD("{\"statusCode\":99}");
    BAD("{\"statusCode\":600}");
    BAD("{\"statusCode\":-1}");
    BAD("{\"statusCode\":null}");
    BAD("{\"statusCode\":200,\"body\":5}");
    BAD("{\"statusCode\":200,\"body\":{}}");
    BAD("{\"statusCode\":200,\"headers\":[]}");
    BAD("{\"statusCode\":200,\"headers\":\"x\"}");
    BAD("{\"statusCode\":200,\"headers\":{\"a\":null}}");
    BAD("{\"statusCode\":200,\"headers\":{\"a\":{}}}");
    BAD("{\"statusCode\":200,\"headers\":{\"a\":[\"x\"]}}");
    BAD("{\"statusCode\":200,\"multiValueHeaders\":{\"a\":\"x\"}}");
    BAD("{\"statusCode\":200,\"multiValueHeaders\":{\"a\":[{}]}}");
    BAD("{\"statusCode\":200,\"multiValueHeaders\":[]}");
    BAD("{\"statusCode\":200,\"cookies\":\"a=b\"}");
    BAD("{\"statusCode\":200,\"cookies\":[1]}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":\"true\"}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":true,\"body\":\"!!!!\"}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":true,\"body\":\"A\"}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":true,\"body\":\"AA=A\"}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":true,\"body\":\"AAA==\"}");
    BAD("{\"statusCode\":200,\"isBase64Encoded\":true,\"body\":\"AAAA=\"}");
    /* header injection */
    BAD("{\"statusCode\":200,\"headers\":{\"a\":\"x\\r\\nSet-Cookie: evil\"}}");
    BAD("{\"statusCode\":200,\"headers\":{\"a b\":\"x\"}}");
    BAD("{\"statusCode\":200,\"headers\":{\"\":\"x\"}}");
    BAD("{\"statusCode\":200,\"headers\":{\"a:b\":\"x\"}}");
    BAD("{\"statusCode\":200,\"headers\":{\"a\":\"x\\u0000y\"}}");
    BAD("{\"statusCode\":200,\"cookies\":[\"a=b\\nx: y\"]}");
    BAD("{\"statusCode\":200,\"multiValueHeaders\":{\"a\":[\"ok\",\"x\\ry\"]}}");
#undef BAD
}

int main(void)
{
    test_full_event();
    test_minimal_event();
    test_authorizer();
    test_domain();
    test_body();
    test_escaping();
    test_many_headers_and_params();
    test_structured();
    test_inferred();
    test_malformed();
    printf("event: ok\n");
    return 0;
}
