/* Fuzzes the daemon's channel codec (src/instance/channel.c) on a stream of frames.
 *
 * Properties checked besides "no crash":
 * - a decoded frame's size is within the input, at least 5 bytes, of a known type, and every
 *   decoded string lies inside the frame;
 * - the frame re-encodes to exactly the same bytes (the codec is a bijection on valid frames);
 * - the verdict depends only on the frame's own bytes: decoding exactly those bytes gives the
 *   same size, and every shorter prefix says "need more" (never a different frame or an error,
 *   since length and type are judged from complete bytes only);
 * - a "need more" verdict is never given for a buffer that already holds a whole frame. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "instance/channel.c"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static int inside(nb_chan_str s, const uint8_t *p, size_t n)
{
    return s.len == 0 || ((const uint8_t *)s.p >= p && (const uint8_t *)s.p + s.len <= p + n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nb_buf out;
    nb_buf_init(&out, NB_CHAN_MAX_FRAME + 4);
    size_t pos = 0;
    while (pos < size) {
        const uint8_t *p = data + pos;
        size_t left = size - pos;
        nb_chan_msg m;
        long n = nb_chan_decode(p, left, &m);
        CHECK(n >= -1);
        if (n == 0) {
            /* need more: the length field must promise more than is here */
            if (left >= 4) {
                uint32_t flen = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                (uint32_t)p[3] << 24;
                CHECK(left - 4 < flen);
            }
            break;
        }
        if (n < 0) break;
        CHECK((size_t)n <= left && n >= 5);
        CHECK(m.type >= NB_CHAN_READY && m.type <= NB_CHAN_CALL_RESULT);
        CHECK(inside(m.request_id, p, (size_t)n) && inside(m.function_arn, p, (size_t)n));
        CHECK(inside(m.trace_id, p, (size_t)n) && inside(m.client_context, p, (size_t)n));
        CHECK(inside(m.error_type, p, (size_t)n) && inside(m.body, p, (size_t)n));
        CHECK(inside(m.op, p, (size_t)n) && inside(m.target, p, (size_t)n));
        CHECK(inside(m.attrs, p, (size_t)n) && inside(m.error_code, p, (size_t)n));

        nb_buf_reset(&out);
        CHECK(nb_chan_encode(&out, &m) == 0);
        CHECK(out.len == (size_t)n && memcmp(out.data, p, (size_t)n) == 0);

        /* Exactly the frame's bytes, in an exact-size allocation (ASan sees overreads). */
        uint8_t *copy = malloc((size_t)n);
        memcpy(copy, p, (size_t)n);
        nb_chan_msg m2;
        CHECK(nb_chan_decode(copy, (size_t)n, &m2) == n);
        size_t probes[] = {0, 1, 3, 4, 5, 6, 13, (size_t)n / 2, (size_t)n - 1};
        for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
            if (probes[i] < (size_t)n) CHECK(nb_chan_decode(copy, probes[i], &m2) == 0);
        free(copy);
        pos += (size_t)n;
    }
    nb_buf_free(&out);
    return 0;
}
