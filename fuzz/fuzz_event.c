/* Fuzzes the payload 2.0 event builder and the response mapper (src/gateway/event.c).
 *
 * The whole input is mapped as a function result; then it is cut at 0xff bytes into method,
 * path, query, protocol, body and header name/value pairs for an event. Properties:
 * - no crash, no read outside the bytes given;
 * - a mapped response has a status in 100..599, a content-type, lowercase token names, values
 *   without CR, LF or NUL, no hop-by-hop header, and a NUL-terminated body within the cap; a
 *   refusal leaves nothing to free;
 * - the event is always valid JSON (jansson reads it back), with version "2.0", rawPath and
 *   body carrying the bytes given (exactly, or as base64 when isBase64Encoded, or with only
 *   invalid UTF-8 replaced), and one header entry per distinct lowercased name. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "gateway/event.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

#define MAX_FIELDS 80

static void check_response(const uint8_t *data, size_t size)
{
    nb_ev_response r;
    nb_err err = {0};
    if (nb_ev_response_map((const char *)data, size, &r, &err) < 0) {
        CHECK(err.status == 502 && err.code && err.msg[0]);
        CHECK(!r.body && !r.storage && !r.headers && r.nheaders == 0);
        nb_ev_response_free(&r);
        return;
    }
    CHECK(r.status >= 100 && r.status <= 599);
    CHECK(r.has_content_type);
    CHECK(r.body && r.body[r.body_len] == 0 && r.body_len <= NB_EV_MAX_RESPONSE);
    int ct = 0;
    for (size_t i = 0; i < r.nheaders; i++) {
        const nb_ev_header *h = &r.headers[i];
        CHECK(h->name.len > 0 && h->name.p[h->name.len] == 0 && h->value.p[h->value.len] == 0);
        for (size_t k = 0; k < h->name.len; k++)
            CHECK(tchar((unsigned char)h->name.p[k]) &&
                  !(h->name.p[k] >= 'A' && h->name.p[k] <= 'Z'));
        for (size_t k = 0; k < h->value.len; k++)
            CHECK(h->value.p[k] != '\r' && h->value.p[k] != '\n' && h->value.p[k] != 0);
        CHECK(!dropped(h->name.p, h->name.len));
        ct += strcmp(h->name.p, "content-type") == 0;
    }
    CHECK(ct >= 1);
    nb_ev_response_free(&r);
}

/* Whether got is want with each invalid UTF-8 byte replaced by U+FFFD. */
static int same_text(const char *got, size_t glen, const char *want, size_t wlen)
{
    size_t g = 0;
    for (size_t w = 0; w < wlen;) {
        size_t n = nb_utf8_seq(want + w, wlen - w);
        if (n) {
            if (glen - g < n || memcmp(got + g, want + w, n) != 0) return 0;
            g += n;
            w += n;
        } else {
            if (glen - g < 3 || memcmp(got + g, "\xef\xbf\xbd", 3) != 0) return 0;
            g += 3;
            w++;
        }
    }
    return g == glen;
}

static void check_event(const uint8_t *data, size_t size)
{
    nb_ev_str f[MAX_FIELDS];
    size_t nf = 0;
    const char *p = (const char *)data, *end = p + size;
    while (nf < MAX_FIELDS) {
        const char *cut = memchr(p, 0xff, (size_t)(end - p));
        f[nf].p = p;
        f[nf].len = cut ? (size_t)(cut - p) : (size_t)(end - p);
        nf++;
        if (!cut) break;
        p = cut + 1;
    }
    static const nb_ev_str none = {"", 0};
    nb_ev_request r = {0};
    r.method = nf > 0 ? f[0] : none;
    r.path = nf > 1 ? f[1] : none;
    r.query = nf > 2 ? f[2] : none;
    r.protocol = nf > 3 ? f[3] : none;
    r.body = nf > 4 ? f[4] : none;
    nb_ev_header h[MAX_FIELDS / 2];
    size_t nh = 0;
    for (size_t i = 5; i + 1 < nf; i += 2)
        h[nh++] = (nb_ev_header){f[i], f[i + 1]};
    r.headers = h;
    r.nheaders = nh;
    r.source_ip = "127.0.0.1";
    r.request_id = "id";
    r.time_ms = size * 1000003ll - 500000000ll; /* negative times too */
    static const char *const names[] = {"proxy"};
    const char *values[] = {"x\xff"};
    r.param_names = names;
    r.param_values = values;
    r.nparams = size & 1;
    r.authorizer_json = size & 2 ? "{\"lambda\":{\"k\":1}}" : NULL;

    size_t len;
    char *ev = nb_ev_build(&r, &len);
    CHECK(ev && ev[len] == 0);
    json_error_t je;
    json_t *j = json_loadb(ev, len, JSON_ALLOW_NUL, &je);
    CHECK(j && json_is_object(j));
    CHECK(strcmp(json_string_value(json_object_get(j, "version")), "2.0") == 0);
    json_t *rp = json_object_get(j, "rawPath");
    CHECK(same_text(json_string_value(rp), json_string_length(rp), r.path.p, r.path.len));
    json_t *b = json_object_get(j, "body");
    json_t *isb = json_object_get(j, "isBase64Encoded");
    CHECK(json_is_boolean(isb));
    if (r.body.len == 0) {
        CHECK(!b && json_is_false(isb));
    } else if (json_is_true(isb)) {
        unsigned char *dec = malloc(json_string_length(b) / 4 * 3 + 4);
        long n = b64_decode(json_string_value(b), json_string_length(b), dec);
        CHECK(n == (long)r.body.len && memcmp(dec, r.body.p, r.body.len) == 0);
        free(dec);
    } else {
        /* sent as text only when it was valid UTF-8: byte for byte */
        CHECK(json_string_length(b) == r.body.len &&
              memcmp(json_string_value(b), r.body.p, r.body.len) == 0);
    }
    /* one entry per distinct lowercased name, cookie aside */
    json_t *hd = json_object_get(j, "headers");
    CHECK(json_is_object(hd));
    size_t distinct = 0;
    for (size_t i = 0; i < nh; i++) {
        if (name_is(&h[i], "cookie")) continue;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = h[k].name.len == h[i].name.len &&
                   strncasecmp(h[k].name.p, h[i].name.p, h[i].name.len) == 0;
        distinct += !seen;
    }
    /* names that differ only in invalid bytes may collapse once replaced, never grow */
    CHECK(json_object_size(hd) <= distinct);
    json_t *rc = json_object_get(j, "requestContext");
    CHECK(json_is_integer(json_object_get(rc, "timeEpoch")) &&
          json_integer_value(json_object_get(rc, "timeEpoch")) == r.time_ms);
    CHECK(json_is_string(json_object_get(rc, "time")));
    CHECK(!(size & 2) || json_is_object(json_object_get(rc, "authorizer")));
    json_decref(j);
    free(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_response(data, size);
    check_event(data, size);
    return 0;
}
