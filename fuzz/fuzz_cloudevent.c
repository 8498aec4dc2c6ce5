/* Fuzzes CloudEvents decoding over HTTP (src/events/cloudevent.c).
 *
 * The input is cut at 0xff bytes: the first piece is the Content-Type (none when empty), the
 * last the body, and the pieces between are header name/value pairs. Properties:
 * - no crash, no read outside the bytes given (each piece is an exact-size copy);
 * - a refusal is a 400, 413 or 415 with a code and a message;
 * - an accepted request gives an array of at most NB_CE_MAX_BATCH events, each an object with
 *   specversion "1.0", non-empty string id, source and type, not both data and data_base64,
 *   no null attribute, that nb_ce_validate accepts again and that serializes to JSON. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "events/cloudevent.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

#define MAX_PIECES 34

static int nonempty_string(const json_t *ev, const char *k)
{
    const json_t *v = json_object_get(ev, k);
    return json_is_string(v) && json_string_length(v) > 0;
}

static void check_event(const json_t *ev)
{
    CHECK(json_is_object(ev));
    CHECK(nonempty_string(ev, "id") && nonempty_string(ev, "source") &&
          nonempty_string(ev, "type"));
    CHECK(strcmp(json_string_value(json_object_get(ev, "specversion")), "1.0") == 0);
    CHECK(!(json_object_get(ev, "data") && json_object_get(ev, "data_base64")));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ev, k, v) CHECK(!json_is_null(v) || strcmp(k, "data") == 0);
    nb_err err = {0};
    CHECK(nb_ce_validate(ev, &err) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *piece[MAX_PIECES];
    size_t plen[MAX_PIECES], n = 0, start = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == 0xff && n + 1 < MAX_PIECES) { /* the last piece keeps any later 0xff */
            piece[n] = data + start;
            plen[n++] = i - start;
            start = i + 1;
        }
    }
    piece[n] = data + start;
    plen[n++] = size - start;

    char *ct = NULL;
    if (plen[0]) {
        ct = malloc(plen[0] + 1);
        memcpy(ct, piece[0], plen[0]);
        ct[plen[0]] = 0;
    }
    size_t nh = n >= 3 ? (n - 2) / 2 : 0;
    nb_ce_header h[MAX_PIECES / 2];
    char *copies[MAX_PIECES];
    size_t ncopies = 0;
    for (size_t i = 0; i < nh; i++) {
        for (int side = 0; side < 2; side++) {
            size_t k = 1 + i * 2 + (size_t)side, l = plen[k];
            char *c = malloc(l ? l : 1);
            memcpy(c, piece[k], l);
            copies[ncopies++] = c;
            if (side == 0) {
                h[i].name = c;
                h[i].name_len = l;
            } else {
                h[i].value = c;
                h[i].value_len = l;
            }
        }
    }
    size_t blen = n >= 2 ? plen[n - 1] : 0;
    char *body = malloc(blen ? blen : 1);
    if (blen) memcpy(body, piece[n - 1], blen);

    nb_err err = {0};
    json_t *arr = nb_ce_from_http(ct, h, nh, blen ? body : NULL, blen, &err);
    if (!arr) {
        CHECK(err.status == 400 || err.status == 413 || err.status == 415);
        CHECK(err.code && err.msg[0]);
    } else {
        CHECK(json_is_array(arr) && json_array_size(arr) <= NB_CE_MAX_BATCH);
        for (size_t i = 0; i < json_array_size(arr); i++)
            check_event(json_array_get(arr, i));
        char *text = json_dumps(arr, JSON_COMPACT);
        CHECK(text);
        free(text);
        json_decref(arr);
    }
    for (size_t i = 0; i < ncopies; i++)
        free(copies[i]);
    free(body);
    free(ct);
    return 0;
}
