/* Unit tests of CloudEvents over HTTP (src/events/cloudevent.h): valid events in the three
 * modes, then tables of invalid requests with the expected status and message. */
#include "events/cloudevent.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define H(n, v)                                                                                    \
    {                                                                                              \
        (n), sizeof(n) - 1, (v), sizeof(v) - 1                                                     \
    }
#define CE_JSON  "application/cloudevents+json"
#define CE_BATCH "application/cloudevents-batch+json"
#define REQ      "\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\""

static const nb_ce_header required_headers[] = {H("ce-specversion", "1.0"), H("ce-id", "1"),
                                                H("ce-source", "/s"), H("ce-type", "t")};

static json_t *ok(const char *ct, const nb_ce_header *h, size_t nh, const char *body, size_t len)
{
    nb_err err = {0};
    json_t *arr = nb_ce_from_http(ct, h, nh, body, len, &err);
    if (!arr) {
        fprintf(stderr, "refused (%d): %s\n  body: %.*s\n", err.status, err.msg, (int)len, body);
        exit(1);
    }
    CHECK(json_is_array(arr));
    for (size_t i = 0; i < json_array_size(arr); i++)
        CHECK(nb_ce_validate(json_array_get(arr, i), &err) == 0);
    return arr;
}

static const char *str(const json_t *ev, const char *k)
{
    return json_string_value(json_object_get(ev, k));
}

static void test_structured(void)
{
    const char *body = "{" REQ ",\"time\":\"2018-04-05T17:31:00Z\",\"subject\":\"dir/file.txt\","
                       "\"comexampleextension1\":\"value\",\"comexampleothervalue\":5,"
                       "\"flag\":true,\"dataschema\":\"https://x.example/s.json\","
                       "\"datacontenttype\":\"application/json\",\"data\":{\"size\":1024},"
                       "\"gone\":null}";
    json_t *arr = ok("Application/CloudEvents+JSON; charset=UTF-8", NULL, 0, body, strlen(body));
    CHECK(json_array_size(arr) == 1);
    json_t *ev = json_array_get(arr, 0);
    CHECK_STR(str(ev, "id"), "1");
    CHECK_STR(str(ev, "time"), "2018-04-05T17:31:00Z");
    CHECK(json_integer_value(json_object_get(ev, "comexampleothervalue")) == 5);
    CHECK(json_is_true(json_object_get(ev, "flag")));
    CHECK(json_integer_value(json_object_get(json_object_get(ev, "data"), "size")) == 1024);
    CHECK(!json_object_get(ev, "gone")); /* null = absent */
    json_decref(arr);

    /* an explicit null payload stays; data_base64; no data at all */
    body = "{" REQ ",\"data\":null}";
    arr = ok(CE_JSON, NULL, 0, body, strlen(body));
    CHECK(json_is_null(json_object_get(json_array_get(arr, 0), "data")));
    json_decref(arr);
    body = "{" REQ ",\"data_base64\":\"AAEC/w==\",\"datacontenttype\":\"image/png\"}";
    arr = ok(CE_JSON, NULL, 0, body, strlen(body));
    CHECK_STR(str(json_array_get(arr, 0), "data_base64"), "AAEC/w==");
    json_decref(arr);
    body = "{" REQ ",\"n\":-2147483648,\"m\":2147483647,\"source\":\"urn:uuid:1234\"}";
    CHECK(!nb_ce_from_http(CE_JSON, NULL, 0, body, strlen(body), &(nb_err){0})); /* dup */
    body = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"urn:uuid:1234\",\"type\":\"t\","
           "\"n\":-2147483648,\"m\":2147483647,\"time\":\"2020-02-29T23:59:60.123456+05:30\"}";
    json_decref(ok(CE_JSON, NULL, 0, body, strlen(body)));
}

static void test_batch(void)
{
    const char *body = "[{" REQ "},{" REQ ",\"id\":\"2\"}]";
    nb_err err = {0};
    CHECK(!nb_ce_from_http(CE_BATCH, NULL, 0, body, strlen(body), &err));
    CHECK(strstr(err.msg, "duplicate")); /* the second event says id twice */
    body = "[{" REQ "},{\"specversion\":\"1.0\",\"id\":\"2\",\"source\":\"/s\",\"type\":\"u\"}]";
    json_t *arr = ok(CE_BATCH "; charset=utf-8", NULL, 0, body, strlen(body));
    CHECK(json_array_size(arr) == 2);
    CHECK_STR(str(json_array_get(arr, 1), "type"), "u");
    json_decref(arr);
    arr = ok(CE_BATCH, NULL, 0, "[]", 2);
    CHECK(json_array_size(arr) == 0);
    json_decref(arr);

    /* 100 events fit, 101 do not */
    for (int n = 100; n <= 101; n++) {
        size_t cap = (size_t)n * 80 + 8, w = 0;
        char *b = malloc(cap);
        b[w++] = '[';
        for (int i = 0; i < n; i++)
            w += (size_t)sprintf(b + w, "%s{" REQ "}", i ? "," : "");
        b[w++] = ']';
        json_t *r = nb_ce_from_http(CE_BATCH, NULL, 0, b, w, &err);
        if (n == 100) {
            CHECK(r && json_array_size(r) == 100);
        } else {
            CHECK(!r && err.status == 400 && strstr(err.msg, "101 events; the limit is 100"));
        }
        json_decref(r);
        free(b);
    }
}

static void test_binary(void)
{
    const nb_ce_header h[] = {
        H("CE-SpecVersion", "1.0"),
        H("ce-id", "\"1234-1234\""), /* quoted-string from older senders */
        H("ce-source", "/mycontext/subcontext"),
        H("ce-type", "com.example.someevent"),
        H("ce-time", "2018-04-05T03:56:24Z"),
        H("ce-comexampleextension1", "Euro%20%e2%82%AC%20%F0%9F%98%80%41"),
        H("Content-Length", "18"),
        H("host", "faas.example"),
    };
    const char *body = "{\"hello\": \"world\"}";
    json_t *arr = ok("application/json; charset=utf-8", h, 8, body, strlen(body));
    json_t *ev = json_array_get(arr, 0);
    CHECK_STR(str(ev, "specversion"), "1.0");
    CHECK_STR(str(ev, "id"), "1234-1234");
    CHECK_STR(str(ev, "comexampleextension1"), "Euro \xe2\x82\xac \xf0\x9f\x98\x80"
                                               "A");
    CHECK_STR(str(ev, "datacontenttype"), "application/json; charset=utf-8");
    CHECK_STR(str(json_object_get(ev, "data"), "hello"), "world");
    CHECK(!json_object_get(ev, "host") && !json_object_get(ev, "content-length"));
    json_decref(arr);

    /* +json types are JSON; text is a string; anything else base64; no body = no data */
    arr = ok("application/vnd.x+json", required_headers, 4, "[1,2]", 5);
    CHECK(json_array_size(json_object_get(json_array_get(arr, 0), "data")) == 2);
    json_decref(arr);
    arr = ok("text/plain", required_headers, 4, "h\xc3\xa9llo", 6);
    CHECK_STR(str(json_array_get(arr, 0), "data"), "h\xc3\xa9llo");
    json_decref(arr);
    arr = ok("text/plain", required_headers, 4, "\xff\x00", 2); /* not UTF-8: kept as bytes */
    CHECK_STR(str(json_array_get(arr, 0), "data_base64"), "/wA=");
    json_decref(arr);
    arr = ok("application/octet-stream", required_headers, 4, "\x00\x01\x02\x03", 4);
    CHECK_STR(str(json_array_get(arr, 0), "data_base64"), "AAECAw==");
    json_decref(arr);
    arr = ok(NULL, required_headers, 4, "abc", 3);
    CHECK_STR(str(json_array_get(arr, 0), "data_base64"), "YWJj");
    CHECK(!json_object_get(json_array_get(arr, 0), "datacontenttype"));
    json_decref(arr);
    arr = ok(NULL, required_headers, 4, NULL, 0);
    ev = json_array_get(arr, 0);
    CHECK(!json_object_get(ev, "data") && !json_object_get(ev, "data_base64"));
    CHECK(json_object_size(ev) == 4);
    json_decref(arr);
}

typedef struct bad_case {
    const char *ct;
    const char *body; /* structured / batch */
    int status;
    const char *want;
} bad_case;

static const bad_case bad[] = {
    /* required attributes */
    {CE_JSON, "{\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"specversion\" is missing"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"id\" is missing"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\"}", 400,
     "attribute \"source\" is missing"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\"}", 400,
     "attribute \"type\" is missing"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":null,\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"id\" is missing"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"id\" is empty"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"\",\"type\":\"t\"}", 400,
     "attribute \"source\" is empty"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"\"}", 400,
     "attribute \"type\" is empty"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":7,\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"id\" must be a string, not a number"},
    /* specversion */
    {CE_JSON, "{\"specversion\":\"0.3\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "specversion must be \"1.0\", not \"0.3\""},
    {CE_JSON, "{\"specversion\":\"1.0 \",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "specversion must be \"1.0\""},
    {CE_JSON, "{\"specversion\":1.0,\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}", 400,
     "attribute \"specversion\" must be a string"},
    /* extension names and values */
    {CE_JSON, "{" REQ ",\"myExt\":\"x\"}", 400, "attribute name \"myExt\" is invalid"},
    {CE_JSON, "{" REQ ",\"my-ext\":\"x\"}", 400, "attribute name \"my-ext\" is invalid"},
    {CE_JSON, "{" REQ ",\"my_ext\":\"x\"}", 400, "attribute name \"my_ext\" is invalid"},
    {CE_JSON, "{" REQ ",\"abcdefghijklmnopqrstu\":\"x\"}", 400,
     "\"abcdefghijklmnopqrstu\" is invalid: only a-z and 0-9, 1 to 20 characters"},
    {CE_JSON, "{" REQ ",\"\":\"x\"}", 400, "attribute name \"\" is invalid"},
    {CE_JSON, "{" REQ ",\"ext\":{\"a\":1}}", 400,
     "attribute \"ext\" must be a string, integer or boolean, not an object"},
    {CE_JSON, "{" REQ ",\"ext\":[1]}", 400, "not an array"},
    {CE_JSON, "{" REQ ",\"ext\":1.5}", 400, "attribute \"ext\" must be an integer"},
    {CE_JSON, "{" REQ ",\"ext\":2147483648}", 400, "\"ext\" is outside the 32-bit integer range"},
    {CE_JSON, "{" REQ ",\"ext\":-2147483649}", 400, "outside the 32-bit"},
    {CE_JSON, "{" REQ ",\"ext\":\"a\\nb\"}", 400, "attribute \"ext\" holds a control character"},
    {CE_JSON, "{" REQ ",\"ext\":\"a\\u0085b\"}", 400, "control character"},
    /* time */
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05 17:31:00Z\"}", 400, "\"time\" is not an RFC 3339"},
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05T17:31:00\"}", 400, "\"time\" is not an RFC 3339"},
    {CE_JSON, "{" REQ ",\"time\":\"2018-02-30T17:31:00Z\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"2019-02-29T17:31:00Z\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05T24:00:00Z\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05T17:31:00.Z\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05T17:31:00+0200\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"2018-04-05T17:31:00Z \"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":\"yesterday\"}", 400, "\"time\""},
    {CE_JSON, "{" REQ ",\"time\":1522949460}", 400, "\"time\" must be a string"},
    /* URIs */
    {CE_JSON, "{" REQ ",\"dataschema\":\"/schemas/x.json\"}", 400,
     "\"dataschema\" is not an absolute URI"},
    {CE_JSON, "{" REQ ",\"dataschema\":\"https://x.example/s#v1\"}", 400, "\"dataschema\""},
    {CE_JSON, "{" REQ ",\"dataschema\":\"\"}", 400, "\"dataschema\""},
    {CE_JSON, "{" REQ ",\"dataschema\":\"1http://x\"}", 400, "\"dataschema\""},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"has space\",\"type\":\"t\"}", 400,
     "attribute \"source\" is not a URI-reference"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"a:b:%zz\",\"type\":\"t\"}", 400,
     "\"source\" is not a URI-reference"},
    {CE_JSON, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"1a:b\",\"type\":\"t\"}", 400,
     "\"source\" is not a URI-reference"},
    {CE_JSON, "{" REQ ",\"subject\":\"\"}", 400, "attribute \"subject\" is empty"},
    {CE_JSON, "{" REQ ",\"datacontenttype\":5}", 400, "\"datacontenttype\" must be a string"},
    /* data */
    {CE_JSON, "{" REQ ",\"data\":1,\"data_base64\":\"AA==\"}", 400,
     "data and data_base64 are exclusive"},
    {CE_JSON, "{" REQ ",\"data_base64\":\"abc\"}", 400, "data_base64 must be a base64 string"},
    {CE_JSON, "{" REQ ",\"data_base64\":\"a=bc\"}", 400, "data_base64"},
    {CE_JSON, "{" REQ ",\"data_base64\":7}", 400, "data_base64"},
    /* bodies and content types */
    {CE_JSON, "{" REQ, 400, "structured event: not valid JSON"},
    {CE_JSON, "[{" REQ "}]", 400, "an event must be a JSON object, not an array"},
    {CE_JSON, "", 400, "not valid JSON"},
    {"application/cloudevents+xml", "<e/>", 415,
     "event format \"application/cloudevents+xml\" is not supported"},
    {"application/cloudevents", "{" REQ "}", 415, "is not supported"},
    {"application/cloudevents-batch+avro", "[]", 415, "batch format"},
    {CE_BATCH, "{" REQ "}", 400, "batch: must be a JSON array of events, not an object"},
    {CE_BATCH, "[{" REQ "},{" REQ "},{\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"t\"}]",
     400, "batch[2]: attribute \"id\" is missing"},
    {CE_BATCH, "[{" REQ "},5]", 400, "batch[1]: an event must be a JSON object, not a number"},
    {CE_BATCH, "[{" REQ "},{" REQ ",\"specversion\":\"0.3\"}]", 400, "duplicate"},
};

static void check_refused(const char *what, json_t *r, const nb_err *err, int status,
                          const char *want)
{
    if (r || err->status != status || !strstr(err->msg, want)) {
        fprintf(stderr, "%s: got %s (%d), want %d \"%s\"\n", what, r ? "accepted" : err->msg,
                err->status, status, want);
        exit(1);
    }
}

static void test_bad_bodies(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nb_err err = {0};
        json_t *r = nb_ce_from_http(bad[i].ct, NULL, 0, bad[i].body, strlen(bad[i].body), &err);
        check_refused(bad[i].body, r, &err, bad[i].status, bad[i].want);
    }
}

typedef struct bad_binary {
    nb_ce_header extra; /* added to the required headers */
    const char *ct;
    const char *body;
    const char *want;
} bad_binary;

static const bad_binary bad_bin[] = {
    {H("ce-my-ext", "x"), NULL, "", "header ce-my-ext: attribute names are a-z and 0-9 only"},
    {H("ce-abcdefghijklmnopqrstu", "x"), NULL, "", "1 to 20 characters"},
    {H("ce-", "x"), NULL, "", "header ce-: attribute names"},
    {H("ce-ext\xff", "x"), NULL, "", "header ce-ext?: attribute names"},
    {H("ce-data", "x"), NULL, "", "\"data\" is reserved"},
    {H("ce-datacontenttype", "text/plain"), NULL, "", "binary mode carries it as Content-Type"},
    {H("CE-ID", "2"), NULL, "", "header ce-id appears twice"},
    {H("ce-ext", "%zz"), NULL, "", "header ce-ext: bad percent-encoding or not UTF-8"},
    {H("ce-ext", "ab%4"), NULL, "", "bad percent-encoding"},
    {H("ce-ext", "%C0%A0"), NULL, "", "not UTF-8"},
    {H("ce-ext", "a%0Ab"), NULL, "",
     "binary mode (ce- headers): attribute \"ext\" holds a control"},
    {H("ce-time", "2018-04-05T03:56:24"), NULL, "",
     "binary mode (ce- headers): attribute \"time\""},
    {H("ce-dataschema", "relative/x"), NULL, "", "\"dataschema\" is not an absolute URI"},
    {H("x-other", "1"), "application/json", "{bad", "the body is not valid JSON"},
};

static void test_bad_binary(void)
{
    nb_err err = {0};
    for (size_t i = 0; i < sizeof bad_bin / sizeof bad_bin[0]; i++) {
        nb_ce_header h[5];
        memcpy(h, required_headers, sizeof required_headers);
        h[4] = bad_bin[i].extra;
        json_t *r =
            nb_ce_from_http(bad_bin[i].ct, h, 5, bad_bin[i].body, strlen(bad_bin[i].body), &err);
        check_refused(bad_bin[i].extra.name, r, &err, 400, bad_bin[i].want);
    }
    /* each required header missing in turn */
    static const char *const names[] = {"specversion", "id", "source", "type"};
    for (size_t skip = 0; skip < 4; skip++) {
        nb_ce_header h[3];
        for (size_t i = 0, w = 0; i < 4; i++)
            if (i != skip) h[w++] = required_headers[i];
        char want[64];
        snprintf(want, sizeof want, "attribute \"%s\" is missing", names[skip]);
        check_refused(names[skip], nb_ce_from_http("text/plain", h, 3, "x", 1, &err), &err, 400,
                      want);
    }
    /* a wrong specversion header */
    nb_ce_header h[4];
    memcpy(h, required_headers, sizeof h);
    h[0] = (nb_ce_header)H("ce-specversion", "0.3");
    check_refused("0.3", nb_ce_from_http(NULL, h, 4, NULL, 0, &err), &err, 400,
                  "specversion must be \"1.0\"");
    /* no ce- headers at all: plain HTTP is not a CloudEvent */
    check_refused("plain", nb_ce_from_http("application/json", NULL, 0, "{}", 2, &err), &err, 400,
                  "attribute \"specversion\" is missing");
}

static void test_size(void)
{
    size_t n = NB_CE_MAX_BODY + 1;
    char *b = malloc(n);
    memset(b, ' ', n);
    const char *ev = "{" REQ "}";
    memcpy(b, ev, strlen(ev));
    nb_err err = {0};
    json_t *r = nb_ce_from_http(CE_JSON, NULL, 0, b, n - 1, &err); /* 1 MiB exactly: fine */
    CHECK(r && json_array_size(r) == 1);
    json_decref(r);
    for (int mode = 0; mode < 3; mode++) {
        const char *ct = mode == 0 ? CE_JSON : mode == 1 ? CE_BATCH : "application/octet-stream";
        r = nb_ce_from_http(ct, required_headers, 4, b, n, &err);
        check_refused(ct, r, &err, 413, "the body is 1048577 bytes; the limit is 1048576");
        CHECK(strcmp(err.code, NB_E_TOO_LARGE) == 0);
    }
    free(b);
}

static void test_make(void)
{
    json_t *data = json_pack("{s:i}", "n", 1);
    json_t *ev =
        nb_ce_make(NULL, "nimbus:/functions/hello", "dev.nimbus.function.deployed", "hello", data);
    CHECK(ev);
    json_object_set_new(data, "n", json_integer(2)); /* the event holds a copy */
    nb_err err = {0};
    CHECK(nb_ce_validate(ev, &err) == 0);
    CHECK_STR(str(ev, "specversion"), "1.0");
    CHECK(strlen(str(ev, "id")) == 36 && str(ev, "id")[14] == '4');
    CHECK_STR(str(ev, "source"), "nimbus:/functions/hello");
    CHECK_STR(str(ev, "type"), "dev.nimbus.function.deployed");
    CHECK_STR(str(ev, "subject"), "hello");
    CHECK_STR(str(ev, "datacontenttype"), "application/json");
    const char *t = str(ev, "time");
    CHECK(t && strlen(t) == 24 && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
    CHECK(json_integer_value(json_object_get(json_object_get(ev, "data"), "n")) == 1);
    json_decref(ev);
    json_decref(data);

    ev = nb_ce_make("abc", "/s", "t", NULL, NULL);
    CHECK(ev && !json_object_get(ev, "subject") && !json_object_get(ev, "data"));
    CHECK_STR(str(ev, "id"), "abc");
    CHECK(nb_ce_validate(ev, &err) == 0);
    json_decref(ev);
    CHECK(!nb_ce_make("a", "", "t", NULL, NULL));
    CHECK(!nb_ce_make("a", "/s", NULL, NULL, NULL));
    CHECK(!nb_ce_make("a\xff", "/s", "t", NULL, NULL));
}

int main(void)
{
    test_structured();
    test_batch();
    test_binary();
    test_bad_bodies();
    test_bad_binary();
    test_size();
    test_make();
    printf("test_cloudevent: ok (%zu bad bodies, %zu bad binary requests)\n",
           sizeof bad / sizeof bad[0], sizeof bad_bin / sizeof bad_bin[0]);
    return 0;
}
