/* Fuzzes the schedule expression parser and evaluator (src/events/cron.c) and the TZif parser
 * (src/events/tz.c).
 *
 * Input starting with "TZif" is a zone file image; anything else is an expression, whose first
 * byte picks the zone (UTC, a built-in UTC zone, or a real DST zone when the tz database is
 * there) and the starting instant. Properties:
 * - no crash, no read outside the bytes given;
 * - a parsed zone answers offsets within its own offset range, and local-to-UTC conversion of
 *   any wall-clock time lands within that range of the local reading;
 * - a parsed expression's fire times are strictly increasing, and a failed parse leaves an
 *   error message. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same objects. */
#include "events/tz.c"
#include "events/cron.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static void fuzz_tzif(const uint8_t *data, size_t size)
{
    nb_err err = {0};
    nb_tz *tz = nb_tz_parse(data, size, "fuzz", &err);
    if (!tz) {
        CHECK(err.status != 0 && err.msg[0]);
        return;
    }
    int lo, hi;
    nb_tz_offset_range(tz, &lo, &hi);
    static const int64_t at[] = {INT64_MIN,    -4000000000LL,  -1,       0, 1700000000LL,
                                 4102444800LL, 253402300799LL, INT64_MAX};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int off = nb_tz_offset(tz, at[i]);
        CHECK(off >= lo && off <= hi);
    }
    for (int y = 1900; y <= 2200; y += 37)
        for (int mo = 1; mo <= 12; mo += 5) {
            int64_t L = nb_tz_days_from_civil(y, mo, 9) * 86400 + 2 * 3600 + 30 * 60;
            int64_t u = nb_tz_local_to_utc(tz, y, mo, 9, 2, 30, 0);
            CHECK(u >= L - hi && u <= L - lo);
        }
    nb_tz_free(tz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp(data, "TZif", 4) == 0) {
        fuzz_tzif(data, size);
        return 0;
    }
    if (size < 1) return 0;
    static nb_tz *zones[3];
    static int loaded;
    if (!loaded) {
        nb_err err = {0};
        loaded = 1;
        zones[1] = nb_tz_load("UTC", &err);
        zones[2] = nb_tz_load("Australia/Lord_Howe", &err); /* NULL without tzdata: UTC */
    }
    uint8_t sel = data[0];
    char expr[NB_CRON_EXPR_MAX + 2];
    size_t n = size - 1 < sizeof expr - 1 ? size - 1 : sizeof expr - 1;
    memcpy(expr, data + 1, n);
    expr[n] = 0;

    nb_err err = {0};
    nb_cron c;
    if (nb_cron_parse(&c, expr, &err) < 0) {
        CHECK(err.status == 400 && err.msg[0] && c.kind == 0);
        return 0;
    }
    char desc[80];
    nb_cron_describe(&c, desc, sizeof desc);
    const nb_tz *tz = zones[sel % 3];
    static const int64_t starts[] = {0, 1700000000LL, 1774800000LL, 4102444800LL};
    int64_t t = starts[(sel >> 2) % 4], start = (sel & 0x10) ? t + 12345 : t;
    for (int i = 0; i < 5; i++) {
        int64_t next = nb_cron_next(&c, tz, t, start, NB_CRON_NO_END);
        if (next < 0) {
            CHECK(next == -1);
            break;
        }
        CHECK(next > t);
        t = next;
    }
    return 0;
}
