#include "auth/jwt.h"
#include "auth/secret.h"
#include "auth/secret_internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

/* A token without kid is tried against every key of its type, so the number of keys bounds the
 * work an unauthenticated request can cause. */
#define MAX_KEYS   64
#define MAX_PEM    (64 * 1024)
#define MAX_JWKS   (256 * 1024)
#define HMAC_MIN   16
#define RSA_MIN    2048
#define SIG_MAX    2048 /* bytes: an RSA-16384 signature, OpenSSL's largest modulus */
#define DECODE_MAX (NB_JWT_MAX_TOKEN / 4 * 3 + 4)

typedef struct jwt_key {
    unsigned alg;          /* the one NB_JWT_* this key may verify */
    char *kid;             /* NULL when the key has none */
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256, ES256; shared read-only by verifying threads */
} jwt_key;

struct nb_jwt_keyset {
    jwt_key *keys;
    size_t n, cap;
};

nb_jwt_keyset *nb_jwt_keyset_new(void)
{
    return calloc(1, sizeof(nb_jwt_keyset));
}

static void key_release(jwt_key *k)
{
    free(k->kid);
    if (k->secret) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pkey);
}

static void keyset_truncate(nb_jwt_keyset *ks, size_t n)
{
    while (ks->n > n)
        key_release(&ks->keys[--ks->n]);
}

void nb_jwt_keyset_free(nb_jwt_keyset *ks)
{
    if (!ks) return;
    keyset_truncate(ks, 0);
    free(ks->keys);
    free(ks);
}

size_t nb_jwt_keyset_size(const nb_jwt_keyset *ks)
{
    return ks ? ks->n : 0;
}

/* Takes ownership of pkey (freed on failure too); copies kid and secret. */
static int key_add(nb_jwt_keyset *ks, unsigned alg, const char *kid, const void *secret, size_t len,
                   EVP_PKEY *pkey, nb_err *err)
{
    if (ks->n == MAX_KEYS) {
        EVP_PKEY_free(pkey);
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "too many keys (at most %d)", MAX_KEYS);
    }
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? 2 * ks->cap : 4;
        jwt_key *keys = realloc(ks->keys, cap * sizeof *keys);
        if (!keys) {
            EVP_PKEY_free(pkey);
            return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
        }
        ks->keys = keys;
        ks->cap = cap;
    }
    jwt_key k = {.alg = alg, .pkey = pkey};
    if (kid && *kid && !(k.kid = strdup(kid))) goto oom;
    if (secret) {
        if (!(k.secret = malloc(len))) goto oom;
        memcpy(k.secret, secret, len);
        k.secret_len = len;
    }
    ks->keys[ks->n++] = k;
    return 0;
oom:
    key_release(&k);
    return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
}

int nb_jwt_keyset_add_hmac(nb_jwt_keyset *ks, const char *kid, const void *secret, size_t len,
                           nb_err *err)
{
    if (len < HMAC_MIN)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "HMAC secret of %zu bytes: at least %d needed (32 recommended)", len,
                          HMAC_MIN);
    return key_add(ks, NB_JWT_HS256, kid, secret, len, NULL, err);
}

/* Classifies a public key and refuses the ones no supported alg may use: RSA under 2048 bits
 * (factorable within reach), EC off P-256, points that fail the library's checks. */
static int pkey_alg(EVP_PKEY *pk, unsigned *alg, nb_err *err)
{
    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < RSA_MIN)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "RSA key of %d bits: at least %d needed", bits, RSA_MIN);
        *alg = NB_JWT_RS256;
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        char name[64];
        if (EVP_PKEY_get_group_name(pk, name, sizeof name, NULL) != 1 ||
            (strcmp(name, "prime256v1") != 0 && strcmp(name, "P-256") != 0))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "EC key not on curve P-256");
        *alg = NB_JWT_ES256;
    } else {
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "unsupported key type (RSA or EC P-256 expected)");
    }
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    int ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "public key fails validation");
    return 0;
}

static int add_pkey(nb_jwt_keyset *ks, const char *kid, EVP_PKEY *pk, nb_err *err)
{
    unsigned alg = 0;
    if (pkey_alg(pk, &alg, err) < 0) {
        EVP_PKEY_free(pk);
        return -1;
    }
    return key_add(ks, alg, kid, NULL, 0, pk, err);
}

int nb_jwt_keyset_add_pem(nb_jwt_keyset *ks, const char *kid, const char *pem, size_t len,
                          nb_err *err)
{
    if (len > MAX_PEM)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "PEM larger than %d bytes", MAX_PEM);
    EVP_PKEY *pk = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio) pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    static const char pkcs1[] = "-----BEGIN RSA PUBLIC KEY-----";
    /* PKCS#1 only when it says so: a general decoder would also take the public half of a
     * private key, or stop to ask for a passphrase. */
    if (!pk && memmem(pem, len, pkcs1, sizeof pkcs1 - 1)) {
        OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", "type-specific", "RSA",
                                                               EVP_PKEY_PUBLIC_KEY, NULL, NULL);
        const unsigned char *p = (const unsigned char *)pem;
        size_t left = len;
        if (dctx && OSSL_DECODER_from_data(dctx, &p, &left) != 1) pk = NULL;
        OSSL_DECODER_CTX_free(dctx);
    }
    ERR_clear_error();
    if (!pk)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "not a PEM public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)");
    return add_pkey(ks, kid, pk, err);
}

/* A base64url JWK member into a malloc'd buffer. */
static unsigned char *jwk_bytes(const json_t *jwk, const char *name, size_t *len)
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v)) return NULL;
    size_t slen = json_string_length(v);
    unsigned char *out = malloc(3 * slen / 4 + 3);
    if (!out) return NULL;
    long n = nb_b64url_decode(json_string_value(v), slen, out);
    if (n <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pk = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *jwk_rsa(const json_t *jwk)
{
    size_t nlen = 0, elen = 0;
    unsigned char *nb = jwk_bytes(jwk, "n", &nlen), *eb = jwk_bytes(jwk, "e", &elen);
    BIGNUM *n = nb ? BN_bin2bn(nb, (int)nlen, NULL) : NULL;
    BIGNUM *e = eb ? BN_bin2bn(eb, (int)elen, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        pk = pkey_fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    return pk;
}

static EVP_PKEY *jwk_ec(const json_t *jwk)
{
    size_t xlen = 0, ylen = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xlen), *y = jwk_bytes(jwk, "y", &ylen);
    EVP_PKEY *pk = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    if (x && y && xlen == 32 && ylen == 32 && (bld = OSSL_PARAM_BLD_new())) {
        unsigned char point[65] = {0x04}; /* SEC1 uncompressed */
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point))
            pk = pkey_fromdata("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pk;
}

static int str_is(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

/* 1 added, 0 skipped (meant for something else), -1 error. */
static int jwk_add(nb_jwt_keyset *ks, const json_t *jwk, nb_err *err)
{
    if (!json_is_object(jwk)) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "not an object");
    const json_t *use = json_object_get(jwk, "use");
    if (use && !str_is(use, "sig")) return 0;
    const json_t *kty = json_object_get(jwk, "kty"), *kidv = json_object_get(jwk, "kid");
    const json_t *alg = json_object_get(jwk, "alg");
    if (!json_is_string(kty)) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "kty missing");
    if (kidv && !json_is_string(kidv))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "kid is not a string");
    if (alg && !json_is_string(alg))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "alg is not a string");
    const char *kid = kidv ? json_string_value(kidv) : NULL;
    if (str_is(kty, "RSA")) {
        if (alg && !str_is(alg, "RS256")) return 0;
        EVP_PKEY *pk = jwk_rsa(jwk);
        ERR_clear_error();
        if (!pk) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "bad RSA key (n, e)");
        return add_pkey(ks, kid, pk, err) < 0 ? -1 : 1;
    }
    if (str_is(kty, "EC")) {
        if ((alg && !str_is(alg, "ES256")) || !str_is(json_object_get(jwk, "crv"), "P-256"))
            return 0;
        EVP_PKEY *pk = jwk_ec(jwk);
        ERR_clear_error();
        if (!pk) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "bad EC P-256 key (x, y)");
        return add_pkey(ks, kid, pk, err) < 0 ? -1 : 1;
    }
    if (str_is(kty, "oct")) {
        if (alg && !str_is(alg, "HS256")) return 0;
        size_t len = 0;
        unsigned char *k = jwk_bytes(jwk, "k", &len);
        if (!k) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "bad oct key (k)");
        int rc = nb_jwt_keyset_add_hmac(ks, kid, k, len, err);
        OPENSSL_cleanse(k, len);
        free(k);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

int nb_jwt_keyset_add_jwks(nb_jwt_keyset *ks, const char *json, size_t len, nb_err *err)
{
    if (len > MAX_JWKS)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "JWKS larger than %d bytes", MAX_JWKS);
    json_error_t je;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "JWKS is not JSON: %s", je.text);
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        json_decref(doc);
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "JWKS has no \"keys\" array");
    }
    /* All or nothing: a document that fails halfway leaves the keyset as it was. */
    size_t before = ks->n, i;
    int added = 0;
    const json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        int rc = jwk_add(ks, jwk, err);
        if (rc < 0) {
            nb_err_prefix(err, "JWKS keys[%zu]", i);
            keyset_truncate(ks, before);
            json_decref(doc);
            return -1;
        }
        added += rc;
    }
    json_decref(doc);
    if (!added)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "JWKS has no usable signing key (RSA, EC P-256 or oct)");
    return 0;
}

/* ---- verification ---- */

static void *fail(nb_err *err, const char *msg)
{
    nb_err_set(err, 401, NB_E_INVALID_TOKEN, "%s", msg);
    return NULL;
}

static int evp_verify(EVP_PKEY *pk, const unsigned char *sig, size_t slen, const char *msg,
                      size_t mlen)
{
    /* A context per call: contexts are not shareable, the key is. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, pk, NULL) == 1 &&
             EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)msg, mlen) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* JOSE carries ECDSA as fixed-width r||s (RFC 7518 3.4); libcrypto verifies DER. */
static int es256_verify(EVP_PKEY *pk, const unsigned char *sig, size_t slen, const char *msg,
                        size_t mlen)
{
    if (slen != 64) return 0;
    unsigned char der[80], *p = der;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return 0;
    }
    int dlen = i2d_ECDSA_SIG(es, NULL), ok = 0;
    if (dlen > 0 && (size_t)dlen <= sizeof der && i2d_ECDSA_SIG(es, &p) == dlen)
        ok = evp_verify(pk, der, (size_t)dlen, msg, mlen);
    ECDSA_SIG_free(es);
    return ok;
}

static int key_verifies(const jwt_key *k, const unsigned char *sig, size_t slen, const char *msg,
                        size_t mlen)
{
    switch (k->alg) {
    case NB_JWT_HS256: {
        if (slen != 32) return 0;
        unsigned char mac[32];
        nb_hmac_sha256(k->secret, k->secret_len, msg, mlen, mac);
        return CRYPTO_memcmp(mac, sig, 32) == 0;
    }
    case NB_JWT_RS256:
        return evp_verify(k->pkey, sig, slen, msg, mlen);
    case NB_JWT_ES256:
        return es256_verify(k->pkey, sig, slen, msg, mlen);
    }
    return 0;
}

static unsigned alg_of(const char *name)
{
    if (strcmp(name, "HS256") == 0) return NB_JWT_HS256;
    if (strcmp(name, "RS256") == 0) return NB_JWT_RS256;
    if (strcmp(name, "ES256") == 0) return NB_JWT_ES256;
    return 0;
}

/* The signature check: NULL or an error message. */
static const char *check_signature(const nb_jwt_keyset *ks, unsigned alg, const char *kid,
                                   const char *msg, size_t mlen, const unsigned char *sig,
                                   size_t slen)
{
    size_t of_type = 0, by_kid = 0;
    const jwt_key *lone = NULL;
    for (size_t i = 0; i < ks->n; i++) {
        const jwt_key *k = &ks->keys[i];
        if (k->alg != alg) continue;
        of_type++;
        lone = k;
        if (kid && k->kid && strcmp(k->kid, kid) == 0) by_kid++;
    }
    if (!of_type) return "no key for the token's algorithm";
    if (kid && !by_kid) {
        /* A key without kid stands for any kid only when there is no other key to pick. */
        if (of_type == 1 && !lone->kid)
            return key_verifies(lone, sig, slen, msg, mlen) ? NULL : "bad signature";
        return "unknown key id";
    }
    for (size_t i = 0; i < ks->n; i++) {
        const jwt_key *k = &ks->keys[i];
        if (k->alg != alg) continue;
        if (kid && !(k->kid && strcmp(k->kid, kid) == 0)) continue;
        if (key_verifies(k, sig, slen, msg, mlen)) return NULL;
    }
    return "bad signature";
}

static int json_num(const json_t *v, double *out)
{
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

static int aud_allowed(const nb_jwt_policy *p, const json_t *aud)
{
    for (size_t i = 0; i < p->naudiences; i++) {
        if (str_is(aud, p->audiences[i])) return 1;
        size_t j;
        const json_t *a;
        json_array_foreach(aud, j, a)
        {
            if (str_is(a, p->audiences[i])) return 1;
        }
    }
    return 0;
}

/* The registered claims: NULL or an error message. Numbers are compared as doubles so that
 * neither a fractional exp (allowed by RFC 7519) nor an extreme one can overflow. */
static const char *check_claims(const nb_jwt_policy *p, const json_t *c, int64_t now_s)
{
    double leeway = p->leeway_s > 0 ? (double)p->leeway_s : 0, now = (double)now_s, t;
    const json_t *v = json_object_get(c, "exp");
    if (!v) return "token has no exp claim";
    if (json_num(v, &t) < 0) return "exp claim is not a number";
    if (now > t + leeway) return "token expired";
    if ((v = json_object_get(c, "nbf"))) {
        if (json_num(v, &t) < 0) return "nbf claim is not a number";
        if (t > now + leeway) return "token not yet valid (nbf)";
    }
    if ((v = json_object_get(c, "iat"))) {
        if (json_num(v, &t) < 0) return "iat claim is not a number";
        if (t > now + leeway) return "token issued in the future (iat)";
    }
    if (p->issuer && !str_is(json_object_get(c, "iss"), p->issuer)) return "issuer not allowed";
    if (p->audiences && p->naudiences && !aud_allowed(p, json_object_get(c, "aud")))
        return "audience not allowed";
    return NULL;
}

/* One base64url segment of the token as JSON. Padding is refused by the caller. */
static json_t *segment_json(const char *s, size_t len, unsigned char *buf)
{
    long n = nb_b64url_decode(s, len, buf);
    if (n <= 0) return NULL;
    json_t *v = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

json_t *nb_jwt_verify(const nb_jwt_keyset *ks, const nb_jwt_policy *p, const char *tok, size_t len,
                      int64_t now_s, nb_err *err)
{
    if (!tok || len == 0 || len > NB_JWT_MAX_TOKEN) return fail(err, "malformed token");
    const char *end = tok + len;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)) || d1 == tok || d2 == d1 + 1 ||
        memchr(tok, '=', len))
        return fail(err, "malformed token");
    size_t hlen = (size_t)(d1 - tok), plen = (size_t)(d2 - d1 - 1), slen = (size_t)(end - d2 - 1);

    /* Decoded bytes never outgrow the token, and the token is capped: no heap for them. */
    unsigned char buf[DECODE_MAX];
    json_t *hdr = segment_json(tok, hlen, buf);
    if (!hdr) return fail(err, "malformed token: header is not a base64url JSON object");
    const json_t *algv = json_object_get(hdr, "alg"), *kidv = json_object_get(hdr, "kid");
    const char *why = NULL;
    unsigned alg = 0;
    if (!json_is_string(algv))
        why = "malformed token: no alg in header";
    else if (strcmp(json_string_value(algv), "none") == 0)
        why = "unsigned tokens (alg none) are not accepted";
    else if (!(alg = alg_of(json_string_value(algv))) || !(alg & p->algs))
        why = "algorithm not allowed";
    else if (kidv && !json_is_string(kidv))
        why = "malformed token: kid is not a string";
    else if (json_object_get(hdr, "crit"))
        why = "unsupported critical header (crit)"; /* RFC 7515 4.1.11: we know no extension */
    if (why) {
        json_decref(hdr);
        return fail(err, why);
    }
    const char *kid = kidv && json_string_length(kidv) ? json_string_value(kidv) : NULL;

    unsigned char sig[SIG_MAX + 3];
    long sn = slen <= SIG_MAX / 3 * 4 + 3 ? nb_b64url_decode(d2 + 1, slen, sig) : -1;
    why = sn <= 0 ? "malformed token: signature missing or not base64url"
                  : check_signature(ks, alg, kid, tok, (size_t)(d2 - tok), sig, (size_t)sn);
    json_decref(hdr);
    ERR_clear_error(); /* a failed verify leaves entries on this thread's queue */
    if (why) return fail(err, why);

    /* The payload is parsed only once it is known to come from a key holder. */
    json_t *claims = segment_json(d1 + 1, plen, buf);
    if (!claims) return fail(err, "malformed token: payload is not a base64url JSON object");
    if ((why = check_claims(p, claims, now_s))) {
        json_decref(claims);
        return fail(err, why);
    }
    return claims;
}

/* ---- scopes ---- */

/* Whether the space-separated list holds the word w[0..wl). */
static int word_in(const char *list, size_t llen, const char *w, size_t wl)
{
    const char *s = list, *end = list + llen;
    while (s < end) {
        while (s < end && *s == ' ')
            s++;
        const char *e = s;
        while (e < end && *e != ' ')
            e++;
        if ((size_t)(e - s) == wl && wl && memcmp(s, w, wl) == 0) return 1;
        s = e;
    }
    return 0;
}

static int str_word_in(const json_t *v, const char *w, size_t wl)
{
    return json_is_string(v) && word_in(json_string_value(v), json_string_length(v), w, wl);
}

static int granted(const json_t *claims, const char *w, size_t wl)
{
    if (str_word_in(json_object_get(claims, "scope"), w, wl)) return 1;
    const json_t *scp = json_object_get(claims, "scp"), *v;
    if (str_word_in(scp, w, wl)) return 1;
    size_t i;
    json_array_foreach(scp, i, v)
    {
        if (json_is_string(v) && json_string_length(v) == wl &&
            memcmp(json_string_value(v), w, wl) == 0)
            return 1;
    }
    return 0;
}

int nb_jwt_has_scopes(const json_t *claims, const char *required)
{
    if (!required) return 1;
    const char *s = required;
    while (*s) {
        while (*s == ' ')
            s++;
        size_t wl = strcspn(s, " ");
        if (wl && !granted(claims, s, wl)) return 0;
        s += wl;
    }
    return 1;
}

static void scopes_add(json_t *out, const char *w, size_t wl)
{
    size_t i;
    const json_t *v;
    json_array_foreach(out, i, v)
    {
        if (json_string_length(v) == wl && memcmp(json_string_value(v), w, wl) == 0) return;
    }
    json_array_append_new(out, json_stringn(w, wl));
}

static void scopes_add_list(json_t *out, const json_t *v)
{
    if (!json_is_string(v)) return;
    const char *s = json_string_value(v), *end = s + json_string_length(v);
    while (s < end) {
        while (s < end && *s == ' ')
            s++;
        const char *e = s;
        while (e < end && *e != ' ')
            e++;
        if (e > s) scopes_add(out, s, (size_t)(e - s));
        s = e;
    }
}

json_t *nb_jwt_scopes(const json_t *claims)
{
    json_t *out = json_array();
    if (!out) return NULL;
    scopes_add_list(out, json_object_get(claims, "scope"));
    const json_t *scp = json_object_get(claims, "scp"), *v;
    scopes_add_list(out, scp);
    size_t i;
    json_array_foreach(scp, i, v)
    {
        if (json_is_string(v) && json_string_length(v))
            scopes_add(out, json_string_value(v), json_string_length(v));
    }
    return out;
}

/* ---- signing ---- */

char *nb_jwt_sign_hs256(const json_t *claims, const char *kid, const void *key, size_t keylen)
{
    if (!json_is_object(claims)) return NULL;
    char *out = NULL, *hs = NULL, *ps = NULL;
    json_t *hdr = json_pack("{s:s,s:s}", "alg", "HS256", "typ", "JWT");
    if (!hdr) return NULL;
    if (kid && *kid && json_object_set_new(hdr, "kid", json_string(kid)) < 0) goto done;
    hs = json_dumps(hdr, JSON_COMPACT);
    ps = json_dumps(claims, JSON_COMPACT);
    if (!hs || !ps) goto done;
    size_t hl = strlen(hs), pl = strlen(ps);
    size_t cap = (4 * hl + 2) / 3 + 1 + (4 * pl + 2) / 3 + 1 + 43 + 1;
    if (!(out = malloc(cap))) goto done;
    size_t n = nb_b64url_encode(hs, hl, out);
    out[n++] = '.';
    n += nb_b64url_encode(ps, pl, out + n);
    unsigned char mac[32];
    nb_hmac_sha256(key, keylen, out, n, mac);
    out[n++] = '.';
    nb_b64url_encode(mac, sizeof mac, out + n);
done:
    free(hs);
    free(ps);
    json_decref(hdr);
    return out;
}
