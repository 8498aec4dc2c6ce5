/* Fuzzes JWT verification and key loading (src/auth/jwt.c, src/auth/secret.c).
 *
 * The first input byte picks what the rest is:
 * 0: a whole token, verified against a fixed HS256 keyset whose secrets the input cannot know:
 *    it must be refused, with 401 invalid_token;
 * 1: a JWKS document loaded into an empty keyset: it loads at least one key or fails with 400
 *    and leaves the keyset empty;
 * 2: a payload, signed here with the fixed key under a fixed header, so the claim checks and
 *    the scope helpers see arbitrary JSON: acceptance only with an object holding a numeric
 *    exp that is not passed;
 * 3: a header, with a fixed payload, signed here with the fixed key: acceptance only when the
 *    header is an object naming alg HS256.
 * Everything else: no crash, no read outside the bytes given. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "auth/secret.c"
#include "auth/jwt.c"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

#define NOW 1700000000LL

static const char key1[] = "fuzzing key number one, 32 bytes";
static const char key2[] = "and a second one without any kid";
static const char *const auds[] = {"api"};
static const nb_jwt_policy policy = {.algs = NB_JWT_HS256 | NB_JWT_RS256 | NB_JWT_ES256,
                                     .issuer = NULL,
                                     .audiences = auds,
                                     .naudiences = 1,
                                     .leeway_s = 60};

static const nb_jwt_keyset *fixed_keyset(void)
{
    static nb_jwt_keyset *ks; /* lives as long as the process */
    if (!ks) {
        nb_err err;
        ks = nb_jwt_keyset_new();
        CHECK(ks && nb_jwt_keyset_add_hmac(ks, "k1", key1, sizeof key1 - 1, &err) == 0);
        CHECK(nb_jwt_keyset_add_hmac(ks, NULL, key2, sizeof key2 - 1, &err) == 0);
    }
    return ks;
}

/* b64url(hdr) "." b64url(payload) "." HMAC with key1, in an exact-size heap buffer. */
static char *sign(const void *hdr, size_t hl, const void *payload, size_t pl, size_t *len)
{
    size_t cap = (4 * hl + 2) / 3 + (4 * pl + 2) / 3 + 46;
    char *tmp = malloc(cap);
    CHECK(tmp);
    size_t n = nb_b64url_encode(hdr, hl, tmp);
    tmp[n++] = '.';
    n += nb_b64url_encode(payload, pl, tmp + n);
    unsigned char mac[32];
    nb_hmac_sha256(key1, sizeof key1 - 1, tmp, n, mac);
    tmp[n++] = '.';
    n += nb_b64url_encode(mac, sizeof mac, tmp + n);
    char *tok = malloc(n);
    CHECK(tok);
    memcpy(tok, tmp, n);
    free(tmp);
    *len = n;
    return tok;
}

static json_t *verify(const char *tok, size_t len)
{
    nb_err err = {0};
    json_t *c = nb_jwt_verify(fixed_keyset(), &policy, tok, len, NOW, &err);
    if (!c) CHECK(err.status == 401 && strcmp(err.code, NB_E_INVALID_TOKEN) == 0 && err.msg[0]);
    return c;
}

static void scopes(const json_t *claims)
{
    json_t *s = nb_jwt_scopes(claims);
    CHECK(json_is_array(s));
    size_t i;
    const json_t *v;
    json_array_foreach(s, i, v)
    {
        CHECK(json_is_string(v) && json_string_length(v) > 0);
        /* Every scope listed is granted, and so are all of them at once. */
        char *one = strndup(json_string_value(v), json_string_length(v));
        if (!strchr(one, ' ') && strlen(one) == json_string_length(v))
            CHECK(nb_jwt_has_scopes(claims, one));
        free(one);
    }
    json_decref(s);
    CHECK(nb_jwt_has_scopes(claims, "") && nb_jwt_has_scopes(claims, NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0: {
        json_t *c = verify((const char *)in, len);
        CHECK(c == NULL);
        break;
    }
    case 1: {
        nb_jwt_keyset *ks = nb_jwt_keyset_new();
        nb_err err = {0};
        int rc = nb_jwt_keyset_add_jwks(ks, (const char *)in, len, &err);
        if (rc == 0)
            CHECK(nb_jwt_keyset_size(ks) > 0);
        else
            CHECK(rc == -1 && err.status == 400 && nb_jwt_keyset_size(ks) == 0);
        nb_jwt_keyset_free(ks);
        break;
    }
    case 2: {
        static const char hdr[] = "{\"alg\":\"HS256\",\"kid\":\"k1\"}";
        size_t tl;
        char *tok = sign(hdr, sizeof hdr - 1, in, len, &tl);
        json_t *c = verify(tok, tl);
        if (c) {
            const json_t *exp = json_object_get(c, "exp");
            CHECK(json_is_object(c) && json_is_number(exp) &&
                  json_number_value(exp) + 60 >= (double)NOW);
            scopes(c);
            json_decref(c);
        }
        free(tok);
        break;
    }
    case 3: {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"aud\":\"api\",\"exp\":%lld}", NOW + 10);
        size_t tl;
        char *tok = sign(in, len, payload, strlen(payload), &tl);
        json_t *c = verify(tok, tl);
        if (c) {
            json_t *h = json_loadb((const char *)in, len, 0, NULL);
            CHECK(h && str_is(json_object_get(h, "alg"), "HS256"));
            json_decref(h);
            json_decref(c);
        }
        free(tok);
        break;
    }
    }
    return 0;
}
