/* Fuzzes event pattern and filter policy compilation and matching (src/events/pattern.c).
 *
 * The first byte picks the kind (bit 0: filter policy); the rest is cut at the first 0xff
 * byte (never part of UTF-8 JSON) into pattern text and event text; without one, the pattern
 * text is matched against itself. Properties:
 * - no crash, no read outside the bytes given (the pattern is compiled from an exact-size
 *   copy, without a NUL);
 * - a refusal is a 400 with a code and a message, and leaves nothing to free;
 * - matching answers 0 or 1, the same each time, for the event, for it as attributes, and for
 *   a missing event (also when the event text is not JSON). */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "events/pattern.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static void check_match(const nb_pat *p, const json_t *ev)
{
    int a = nb_pat_match(p, ev), b = nb_pat_match_attrs(p, ev);
    CHECK(a == 0 || a == 1);
    CHECK(b == 0 || b == 1);
    CHECK(nb_pat_match(p, ev) == a && nb_pat_match_attrs(p, ev) == b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int policy = data[0] & 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    const char *cut = memchr(in, 0xff, len);
    size_t plen = cut ? (size_t)(cut - in) : len;
    const char *etext = cut ? cut + 1 : in;
    size_t elen = cut ? len - plen - 1 : len;

    char *ptext = malloc(plen ? plen : 1);
    memcpy(ptext, in, plen);
    nb_err err = {0};
    nb_pat *p = policy ? nb_pat_compile_filter_policy(ptext, plen, &err)
                       : nb_pat_compile(ptext, plen, &err);
    free(ptext);
    if (!p) {
        CHECK(err.status == 400 && err.code && err.msg[0]);
        CHECK(strcmp(err.code, NB_E_INVALID_VALUE) == 0 ||
              strcmp(err.code, NB_E_INVALID_JSON) == 0);
        return 0;
    }
    CHECK(plen <= NB_PAT_MAX_BYTES);
    json_t *ev = json_loadb(etext, elen, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (ev) check_match(p, ev);
    check_match(p, NULL);
    json_decref(ev);
    nb_pat_free(p);
    return 0;
}
