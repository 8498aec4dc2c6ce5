/* nb_use_decode on arbitrary bytes (the raw window's blobs, read back from usage.db): never
 * reads past the blob, and every record it yields has terminated strings within their fields;
 * a blob it accepts encodes back to the same bytes. */
#include "metering/usage.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct seen {
    nb_use_rec *recs;
    size_t n;
} seen;

static int keep(const nb_use_rec *r, void *ud)
{
    seen *s = ud;
    if (strnlen(r->request_id, sizeof r->request_id) == sizeof r->request_id ||
        strnlen(r->ns, sizeof r->ns) == sizeof r->ns ||
        strnlen(r->fn, sizeof r->fn) == sizeof r->fn ||
        strnlen(r->caller, sizeof r->caller) == sizeof r->caller ||
        strnlen(r->error_type, sizeof r->error_type) == sizeof r->error_type)
        abort();
    nb_use_rec *g = realloc(s->recs, (s->n + 1) * sizeof *g);
    if (!g) abort();
    s->recs = g;
    s->recs[s->n++] = *r;
    return 0;
}

/* Encodes what was decoded; returns the blob (malloc'd) and its length. */
static uint8_t *reencode(const seen *s, size_t *len)
{
    uint8_t *b = malloc(NB_USE_BLOB_MAX(s->n));
    if (!b) abort();
    *len = nb_use_encode(s->recs, s->n, b);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *blob = malloc(size ? size : 1); /* exact size: a read past it is caught */
    if (!blob) return 0;
    if (size) memcpy(blob, data, size);
    seen a = {0}, b = {0};
    if (nb_use_decode(blob, size, keep, &a) == 0) {
        /* What decodes, encodes to a blob that decodes to the same records (a string's bytes
         * after an embedded NUL are the only loss, so compare re-encodings, not the input). */
        size_t l1, l2;
        uint8_t *e1 = reencode(&a, &l1);
        if (l1 > size || nb_use_decode(e1, l1, keep, &b) != 0 || b.n != a.n) abort();
        uint8_t *e2 = reencode(&b, &l2);
        if (l1 != l2 || memcmp(e1, e2, l1) != 0) abort();
        free(e1);
        free(e2);
    }
    free(a.recs);
    free(b.recs);
    free(blob);
    return 0;
}
