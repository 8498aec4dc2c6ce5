/* Fuzzes the SDK's channel frame codec (sdk/function.c) on a stream of frames.
 *
 * Properties checked besides "no crash":
 * - a decoded frame lies inside the input and re-encodes to exactly the same bytes;
 * - every shorter prefix of a good frame decodes to "need more" or to the same early error
 *   (length/type are judged from the first 5 bytes), never to a different frame;
 * - the error JSON the SDK would build from arbitrary bytes (here: each payload) is a valid
 *   JSON string: quoted, escaped, and valid UTF-8. */
#include "../sdk/function_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static bool in_input(nimbus__span s, const uint8_t *start, size_t len)
{
    return s.len == 0 || (s.ptr >= start && s.ptr + s.len <= start + len);
}

/* A strict check of one JSON string literal covering all of s. */
static void check_json_string(const uint8_t *s, size_t len)
{
    CHECK(len >= 2 && s[0] == '"' && s[len - 1] == '"');
    for (size_t i = 1; i < len - 1;) {
        uint8_t c = s[i];
        CHECK(c >= 0x20 && c != '"');
        if (c == '\\') {
            CHECK(i + 1 < len - 1);
            uint8_t e = s[i + 1];
            if (e == 'u') {
                CHECK(i + 5 < len - 1);
                for (int k = 2; k < 6; k++)
                    CHECK(strchr("0123456789abcdef", s[i + k]) && s[i + k]);
                i += 6;
            } else {
                CHECK(e && strchr("\"\\/bfnrt", e));
                i += 2;
            }
            continue;
        }
        size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        CHECK(c < 0x80 || (c >= 0xc2 && c <= 0xf4));
        CHECK(i + n <= len - 1);
        for (size_t k = 1; k < n; k++)
            CHECK((s[i + k] & 0xc0) == 0x80);
        if (n == 3) { /* no overlongs, no surrogates */
            uint32_t cp = (uint32_t)(c & 0x0f) << 12 | (uint32_t)(s[i + 1] & 0x3f) << 6;
            CHECK(cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff));
        }
        if (n == 4) {
            uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3f) << 12;
            CHECK(cp >= 0x10000 && cp <= 0x10ffff);
        }
        i += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nimbus__buf out = {.max = NIMBUS__FRAME_MAX + 4};
    size_t pos = 0;
    for (;;) {
        const uint8_t *p = data + pos;
        size_t left = size - pos;
        nimbus__frame f;
        ssize_t n = nimbus__frame_decode(p, left, &f);
        if (n < 0) {
            CHECK(n == -EPROTO || n == -EMSGSIZE);
            break;
        }
        if (n == 0) break;
        CHECK((size_t)n <= left && n >= 5);
        CHECK((f.type >= NIMBUS__FRAME_READY && f.type <= NIMBUS__FRAME_INIT_ERROR) ||
              f.type == NIMBUS__FRAME_CALL || f.type == NIMBUS__FRAME_CALL_RESULT);
        CHECK(in_input(f.op, p, (size_t)n) && in_input(f.target, p, (size_t)n));
        CHECK(in_input(f.attrs, p, (size_t)n) && in_input(f.error_code, p, (size_t)n));
        CHECK(in_input(f.request_id, p, (size_t)n) && in_input(f.function_arn, p, (size_t)n));
        CHECK(in_input(f.trace_id, p, (size_t)n) && in_input(f.client_context, p, (size_t)n));
        CHECK(in_input(f.error_type, p, (size_t)n) && in_input(f.payload, p, (size_t)n));

        out.len = 0;
        CHECK(nimbus__frame_encode(&out, &f) == 0);
        CHECK(out.len == (size_t)n && memcmp(out.data, p, (size_t)n) == 0);

        size_t probes[] = {0, 1, 3, 4, 5, 6, 13, (size_t)n / 2, (size_t)n - 1};
        for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
            nimbus__frame g;
            if (probes[i] >= (size_t)n) continue;
            CHECK(nimbus__frame_decode(p, probes[i], &g) == 0);
        }

        out.len = 0;
        if (nimbus__json_quote(&out, (const char *)f.payload.ptr, f.payload.len) == 0)
            check_json_string(out.data, out.len);
        pos += (size_t)n;
    }
    nimbus__buf_free(&out);
    return 0;
}
