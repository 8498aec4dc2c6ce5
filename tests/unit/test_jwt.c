/* Unit tests of src/auth/jwt.h: HS256 round trips, RS256 and ES256 tokens signed here with keys
 * generated here (loaded as PEM and as JWKS), every claim check, the algorithm guards (none,
 * not allowed, HS256 keyed with an RSA public key), key choice by kid, malformed input, and
 * scopes. */
#include "auth/jwt.h"
#include "auth/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "check.h"

#define NOW 1700000000LL

static const char hs_key[] = "0123456789abcdef0123456789abcdef"; /* 32 bytes */
static const char *const auds[] = {"api://one", "api://two"};

static nb_jwt_policy policy(unsigned algs)
{
    return (nb_jwt_policy){.algs = algs,
                           .issuer = "https://issuer.example",
                           .audiences = auds,
                           .naudiences = 2,
                           .leeway_s = 60};
}

static char *b64(const void *p, size_t n)
{
    char *out = malloc(4 * n / 3 + 4);
    nb_b64url_encode(p, n, out);
    return out;
}

/* A test-only signer: header and payload as given (JSON text), signed with pk or secret. */
static char *make_token(const char *hdr, const char *payload, unsigned alg, EVP_PKEY *pk,
                        const void *secret, size_t slen)
{
    char *h = b64(hdr, strlen(hdr)), *p = b64(payload, strlen(payload));
    size_t ilen = strlen(h) + 1 + strlen(p);
    char *input = malloc(ilen + 1);
    snprintf(input, ilen + 1, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t siglen = 0;
    if (alg == NB_JWT_HS256) {
        nb_hmac_sha256(secret, slen, input, ilen, sig);
        siglen = 32;
    } else if (alg) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char der[1024];
        size_t dlen = sizeof der;
        CHECK(EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, pk, NULL) == 1);
        CHECK(EVP_DigestSign(ctx, der, &dlen, (unsigned char *)input, ilen) == 1);
        EVP_MD_CTX_free(ctx);
        if (alg == NB_JWT_RS256) {
            memcpy(sig, der, dlen);
            siglen = dlen;
        } else {
            const unsigned char *q = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dlen);
            CHECK(es);
            const BIGNUM *r, *s;
            ECDSA_SIG_get0(es, &r, &s);
            CHECK(BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32);
            ECDSA_SIG_free(es);
            siglen = 64;
        }
    }
    char *sg = b64(sig, siglen);
    size_t tlen = ilen + 1 + strlen(sg);
    char *tok = malloc(tlen + 1);
    snprintf(tok, tlen + 1, "%s.%s", input, sg);
    free(h);
    free(p);
    free(input);
    free(sg);
    return tok;
}

static char payload_buf[1024];
/* Valid claims for policy() at NOW plus extra members (",\"k\":v..." or ""). */
static const char *claims(const char *extra)
{
    snprintf(payload_buf, sizeof payload_buf,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\",\"aud\":\"api://two\","
             "\"exp\":%lld%s}",
             NOW + 300, extra);
    return payload_buf;
}

static json_t *verify(const nb_jwt_keyset *ks, unsigned algs, const char *tok, nb_err *err)
{
    nb_jwt_policy p = policy(algs);
    return nb_jwt_verify(ks, &p, tok, strlen(tok), NOW, err);
}

static void expect_ok(const nb_jwt_keyset *ks, unsigned algs, const char *tok)
{
    nb_err err = {0};
    json_t *c = verify(ks, algs, tok, &err);
    if (!c) fprintf(stderr, "unexpected failure: %s\n", err.msg);
    CHECK(c);
    CHECK_STR(json_string_value(json_object_get(c, "sub")), "alice");
    json_decref(c);
}

static void expect_fail(const nb_jwt_keyset *ks, unsigned algs, const char *tok, size_t len,
                        const char *why)
{
    nb_err err = {0};
    nb_jwt_policy p = policy(algs);
    json_t *c = nb_jwt_verify(ks, &p, tok, len, NOW, &err);
    CHECK(!c);
    CHECK(err.status == 401);
    CHECK_STR(err.code, NB_E_INVALID_TOKEN);
    if (!strstr(err.msg, why)) fprintf(stderr, "message \"%s\", want \"%s\"\n", err.msg, why);
    CHECK(strstr(err.msg, why));
}

static void expect_fail_s(const nb_jwt_keyset *ks, unsigned algs, const char *tok, const char *why)
{
    expect_fail(ks, algs, tok, strlen(tok), why);
}

#define ALL    (NB_JWT_HS256 | NB_JWT_RS256 | NB_JWT_ES256)
#define HS_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static nb_jwt_keyset *hs_keyset(void)
{
    nb_jwt_keyset *ks = nb_jwt_keyset_new();
    nb_err err = {0};
    CHECK(nb_jwt_keyset_add_hmac(ks, "k1", hs_key, 32, &err) == 0);
    return ks;
}

static void test_hs256_round_trip(void)
{
    nb_jwt_keyset *ks = hs_keyset();
    json_t *c = json_pack("{s:s,s:s,s:s,s:I,s:s}", "sub", "alice", "iss", "https://issuer.example",
                          "aud", "api://one", "exp", (json_int_t)NOW + 300, "scope", "read");
    char *tok = nb_jwt_sign_hs256(c, "k1", hs_key, 32);
    CHECK(tok);
    expect_ok(ks, NB_JWT_HS256, tok);
    /* The header is exactly the documented one. */
    char hdr[256];
    unsigned char raw[256];
    size_t hl = (size_t)(strchr(tok, '.') - tok);
    long n = nb_b64url_decode(tok, hl, raw);
    CHECK(n > 0);
    memcpy(hdr, raw, (size_t)n);
    hdr[n] = 0;
    CHECK_STR(hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}");
    nb_err err = {0};
    json_t *got = verify(ks, NB_JWT_HS256, tok, &err);
    CHECK(got && json_equal(got, c));
    json_decref(got);
    free(tok);

    /* Without kid, against the same single-key set. */
    tok = nb_jwt_sign_hs256(c, NULL, hs_key, 32);
    CHECK(tok && strchr(tok, '.') - tok == 36); /* {"alg":"HS256","typ":"JWT"} */
    expect_ok(ks, NB_JWT_HS256, tok);
    free(tok);
    /* Signed with another secret. */
    tok = nb_jwt_sign_hs256(c, "k1", "another secret of 32 bytes......", 32);
    expect_fail_s(ks, NB_JWT_HS256, tok, "bad signature");
    free(tok);
    json_t *one = json_integer(1);
    CHECK(nb_jwt_sign_hs256(one, NULL, hs_key, 32) == NULL);
    json_decref(one);
    json_decref(c);

    /* Secrets too short to be worth an HMAC are refused. */
    CHECK(nb_jwt_keyset_add_hmac(ks, "short", "0123456789abcde", 15, &err) == -1);
    CHECK(err.status == 400 && strstr(err.msg, "at least 16"));
    CHECK(nb_jwt_keyset_size(ks) == 1);
    nb_jwt_keyset_free(ks);
}

static void test_claims(void)
{
    nb_jwt_keyset *ks = hs_keyset();
    char extra[256], *tok;
#define TOKEN(payload) (tok = make_token(HS_HDR, (payload), NB_JWT_HS256, NULL, hs_key, 32))

    TOKEN(claims(""));
    expect_ok(ks, NB_JWT_HS256, tok);
    free(tok);

    /* exp: required, numeric, with leeway. */
    snprintf(extra, sizeof extra,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\","
             "\"aud\":\"api://one\",\"exp\":%lld}",
             NOW - 100);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(extra), "token expired");
    free(tok);
    snprintf(extra, sizeof extra,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\","
             "\"aud\":\"api://one\",\"exp\":%lld}",
             NOW - 30);
    expect_ok(ks, NB_JWT_HS256, TOKEN(extra)); /* within the 60 s leeway */
    free(tok);
    snprintf(extra, sizeof extra,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\","
             "\"aud\":\"api://one\",\"exp\":%lld.5}",
             NOW);
    expect_ok(ks, NB_JWT_HS256, TOKEN(extra)); /* fractional NumericDate */
    free(tok);
    expect_fail_s(ks, NB_JWT_HS256,
                  TOKEN("{\"sub\":\"alice\",\"iss\":\"https://issuer.example\",\"aud\":\"api://"
                        "one\"}"),
                  "no exp");
    free(tok);
    expect_fail_s(ks, NB_JWT_HS256,
                  TOKEN("{\"sub\":\"alice\",\"iss\":\"https://issuer.example\",\"aud\":\"api://"
                        "one\",\"exp\":\"9999999999\"}"),
                  "exp claim is not a number");
    free(tok);

    /* nbf and iat: not in the future beyond the leeway. */
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", NOW + 120);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(claims(extra)), "not yet valid");
    free(tok);
    snprintf(extra, sizeof extra, ",\"nbf\":%lld,\"iat\":%lld", NOW + 30, NOW + 30);
    expect_ok(ks, NB_JWT_HS256, TOKEN(claims(extra)));
    free(tok);
    snprintf(extra, sizeof extra, ",\"iat\":%lld", NOW + 3600);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(claims(extra)), "issued in the future");
    free(tok);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(claims(",\"nbf\":null")), "nbf claim is not a number");
    free(tok);

    /* iss exact. */
    snprintf(extra, sizeof extra,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example/\",\"aud\":\"api://one\","
             "\"exp\":%lld}",
             NOW + 300);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(extra), "issuer not allowed");
    free(tok);
    snprintf(extra, sizeof extra, "{\"sub\":\"alice\",\"aud\":\"api://one\",\"exp\":%lld}",
             NOW + 300);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(extra), "issuer not allowed");
    free(tok);

    /* aud: string or array holding one of the policy's. */
    const char *auds_ok[] = {"\"api://one\"", "[\"x\",\"api://two\"]", "[\"api://one\"]"};
    const char *auds_bad[] = {"\"api://three\"", "[\"x\",\"y\"]", "[]", "1", "[1]",
                              "\"API://ONE\""};
    for (size_t i = 0; i < 3 + 6; i++) {
        snprintf(extra, sizeof extra,
                 "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\",\"aud\":%s,\"exp\":%lld}",
                 i < 3 ? auds_ok[i] : auds_bad[i - 3], NOW + 300);
        if (i < 3)
            expect_ok(ks, NB_JWT_HS256, TOKEN(extra));
        else
            expect_fail_s(ks, NB_JWT_HS256, TOKEN(extra), "audience not allowed");
        free(tok);
    }
    snprintf(extra, sizeof extra,
             "{\"sub\":\"alice\",\"iss\":\"https://issuer.example\",\"exp\":%lld}", NOW + 300);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN(extra), "audience not allowed");
    /* ...and a policy without issuer or audiences accepts it. */
    nb_jwt_policy loose = {.algs = NB_JWT_HS256};
    nb_err err = {0};
    json_t *c = nb_jwt_verify(ks, &loose, tok, strlen(tok), NOW, &err);
    CHECK(c);
    json_decref(c);
    free(tok);

    /* Properly signed, but the payload is not a JSON object. */
    expect_fail_s(ks, NB_JWT_HS256, TOKEN("[1,2]"), "malformed token");
    free(tok);
    expect_fail_s(ks, NB_JWT_HS256, TOKEN("{\"exp\":1,\"exp\":2}"), "malformed token");
    free(tok);
#undef TOKEN
    nb_jwt_keyset_free(ks);
}

static void test_alg_guards(EVP_PKEY *rsa, const char *rsa_pem)
{
    nb_jwt_keyset *ks = hs_keyset();
    char *tok = make_token(HS_HDR, claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, NB_JWT_RS256 | NB_JWT_ES256, tok, "algorithm not allowed");
    free(tok);

    /* alg none, with an empty and with a copied signature. */
    const char *none_hdrs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"none\",\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < 2; i++) {
        tok = make_token(none_hdrs[i], claims(""), 0, NULL, NULL, 0);
        CHECK(tok[strlen(tok) - 1] == '.');
        expect_fail_s(ks, ALL, tok, "alg none");
        free(tok);
    }
    tok = make_token("{\"alg\":\"None\"}", claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, ALL, tok, "algorithm not allowed");
    free(tok);
    tok = make_token("{\"alg\":\"HS512\"}", claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, ALL, tok, "algorithm not allowed");
    free(tok);
    tok = make_token("{\"typ\":\"JWT\"}", claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, ALL, tok, "no alg");
    free(tok);
    tok = make_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", claims(""), NB_JWT_HS256, NULL,
                     hs_key, 32);
    expect_fail_s(ks, ALL, tok, "crit");
    free(tok);
    tok = make_token("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", claims(""), NB_JWT_HS256, NULL,
                     hs_key, 32);
    expect_fail_s(ks, ALL, tok, "malformed token");
    free(tok);
    nb_jwt_keyset_free(ks);

    /* Alg confusion: the RSA public key's PEM text used as an HMAC secret. The keyset holds
     * only the RSA key, and HS256 is allowed, yet the key never serves as a secret. */
    ks = nb_jwt_keyset_new();
    nb_err err = {0};
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, rsa_pem, strlen(rsa_pem), &err) == 0);
    tok = make_token(HS_HDR, claims(""), NB_JWT_HS256, NULL, rsa_pem, strlen(rsa_pem));
    expect_fail_s(ks, ALL, tok, "no key");
    free(tok);
    tok = make_token("{\"alg\":\"RS256\"}", claims(""), NB_JWT_RS256, rsa, NULL, 0);
    expect_ok(ks, ALL, tok);
    /* An RS256 token relabelled ES256 or HS256 keeps its RSA signature: refused. */
    char *dot = strchr(tok, '.');
    const char *relabel[] = {"{\"alg\":\"ES256\"}", "{\"alg\":\"HS256\"}"};
    for (size_t i = 0; i < 2; i++) {
        char *h = b64(relabel[i], strlen(relabel[i]));
        char *t2 = malloc(strlen(h) + strlen(dot) + 1);
        sprintf(t2, "%s%s", h, dot);
        expect_fail_s(ks, ALL, t2, "no key");
        free(h);
        free(t2);
    }
    free(tok);
    nb_jwt_keyset_free(ks);
}

static void test_malformed(void)
{
    nb_jwt_keyset *ks = hs_keyset();
    char *tok = make_token(HS_HDR, claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    size_t len = strlen(tok);
    expect_ok(ks, NB_JWT_HS256, tok);
    /* Every strict prefix fails, read from an exact-size copy. */
    for (size_t k = 0; k < len; k++) {
        char *copy = malloc(k ? k : 1);
        memcpy(copy, tok, k);
        nb_err err = {0};
        nb_jwt_policy p = policy(ALL);
        CHECK(nb_jwt_verify(ks, &p, copy, k, NOW, &err) == NULL && err.status == 401);
        free(copy);
    }
    /* Each single character changed fails too. */
    for (size_t k = 0; k < len; k++) {
        char *copy = strdup(tok);
        copy[k] = copy[k] == 'A' ? 'B' : 'A';
        nb_err err = {0};
        nb_jwt_policy p = policy(ALL);
        json_t *c = nb_jwt_verify(ks, &p, copy, len, NOW, &err);
        CHECK(c == NULL);
        free(copy);
    }
    char *last = strrchr(tok, '.');
    expect_fail_s(ks, ALL, "", "malformed token");
    expect_fail_s(ks, ALL, ".", "malformed token");
    expect_fail_s(ks, ALL, "..", "malformed token");
    expect_fail_s(ks, ALL, "a.b.c", "malformed token");
    expect_fail_s(ks, ALL, "garbage", "malformed token");
    expect_fail_s(ks, ALL, "Bearer x.y.z", "malformed token");
    /* Five segments (JWE) or a fourth dot. */
    char buf[2048];
    snprintf(buf, sizeof buf, "%s.", tok);
    expect_fail_s(ks, ALL, buf, "malformed token");
    snprintf(buf, sizeof buf, "%.*s.%s", (int)(last - tok), tok, last);
    expect_fail_s(ks, ALL, buf, "malformed token");
    /* Padding or a non-canonical signature tail. */
    snprintf(buf, sizeof buf, "%s=", tok);
    expect_fail_s(ks, ALL, buf, "malformed token");
    snprintf(buf, sizeof buf, "%s", tok);
    buf[len - 1] = buf[len - 1] == 'A' ? 'B' : (char)(buf[len - 1] + 1);
    expect_fail_s(ks, ALL, buf, "");
    /* An empty signature, one that is not base64url, and one of the wrong size. */
    snprintf(buf, sizeof buf, "%.*s.", (int)(last - tok), tok);
    expect_fail_s(ks, ALL, buf, "malformed token");
    snprintf(buf, sizeof buf, "%.*s.+/+/", (int)(last - tok), tok);
    expect_fail_s(ks, ALL, buf, "malformed token");
    snprintf(buf, sizeof buf, "%sAAAA", tok);
    expect_fail_s(ks, ALL, buf, "bad signature");
    /* An embedded NUL is part of the token, not its end. */
    memcpy(buf, tok, len);
    buf[len] = 0;
    buf[len + 1] = 'A';
    expect_fail(ks, ALL, buf, len + 2, "malformed token");
    /* Over the size cap, even when it would otherwise parse. */
    char *big = malloc(NB_JWT_MAX_TOKEN + 2);
    memset(big, 'A', NB_JWT_MAX_TOKEN + 1);
    big[10] = '.';
    big[20] = '.';
    big[NB_JWT_MAX_TOKEN + 1] = 0;
    expect_fail_s(ks, ALL, big, "malformed token");
    free(big);
    /* Header that is not JSON, or JSON but not an object. */
    char *bad = b64("not json", 8);
    snprintf(buf, sizeof buf, "%s%s", bad, strchr(tok, '.'));
    expect_fail_s(ks, ALL, buf, "malformed token");
    free(bad);
    free(tok);
    tok = make_token("[\"alg\",\"HS256\"]", claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, ALL, tok, "malformed token");
    free(tok);
    tok = make_token("{\"alg\":\"HS256\",\"kid\":7}", claims(""), NB_JWT_HS256, NULL, hs_key, 32);
    expect_fail_s(ks, ALL, tok, "kid is not a string");
    free(tok);
    nb_jwt_keyset_free(ks);
}

static void test_kid(void)
{
    static const char k2[] = "second secret of thirty-two bytes";
    nb_jwt_keyset *ks = hs_keyset();
    nb_err err = {0};
    CHECK(nb_jwt_keyset_add_hmac(ks, "k2", k2, sizeof k2 - 1, &err) == 0);
    CHECK(nb_jwt_keyset_size(ks) == 2);
    char *tok;
#define T(hdr, key) (tok = make_token((hdr), claims(""), NB_JWT_HS256, NULL, (key), strlen(key)))
    expect_ok(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"k2\"}", k2));
    free(tok);
    expect_ok(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"k1\"}", hs_key));
    free(tok);
    /* The kid names the key: k2's signature under kid k1 is not tried against k2. */
    expect_fail_s(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"k1\"}", k2), "bad signature");
    free(tok);
    expect_fail_s(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"k3\"}", k2), "unknown key id");
    free(tok);
    /* No kid: every key of the type is tried. */
    expect_ok(ks, ALL, T(HS_HDR, k2));
    free(tok);
    expect_ok(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"\"}", hs_key));
    free(tok);
    expect_fail_s(ks, ALL, T(HS_HDR, "a third secret, known to nobody."), "bad signature");
    free(tok);
    nb_jwt_keyset_free(ks);

    /* A lone key without kid answers to any kid; a lone key with a kid only to its own. */
    ks = nb_jwt_keyset_new();
    CHECK(nb_jwt_keyset_add_hmac(ks, "", hs_key, 32, &err) == 0);
    expect_ok(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"whatever\"}", hs_key));
    free(tok);
    CHECK(nb_jwt_keyset_add_hmac(ks, "k2", k2, sizeof k2 - 1, &err) == 0);
    expect_fail_s(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"whatever\"}", hs_key), "unknown key id");
    free(tok);
    nb_jwt_keyset_free(ks);
    ks = nb_jwt_keyset_new();
    CHECK(nb_jwt_keyset_add_hmac(ks, "a", hs_key, 32, &err) == 0);
    expect_fail_s(ks, ALL, T("{\"alg\":\"HS256\",\"kid\":\"b\"}", hs_key), "unknown key id");
    free(tok);
    expect_ok(ks, ALL, T(HS_HDR, hs_key));
    free(tok);
#undef T
    nb_jwt_keyset_free(ks);
}

static char *pubkey_pem(EVP_PKEY *pk, const char *structure)
{
    char *out;
    if (!structure) {
        BIO *bio = BIO_new(BIO_s_mem());
        CHECK(PEM_write_bio_PUBKEY(bio, pk) == 1);
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        out = strndup(data, (size_t)n);
        BIO_free(bio);
        return out;
    }
    unsigned char *data = NULL;
    size_t n = 0;
    OSSL_ENCODER_CTX *ectx =
        OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_PUBLIC_KEY, "PEM", structure, NULL);
    CHECK(ectx && OSSL_ENCODER_to_data(ectx, &data, &n) == 1);
    OSSL_ENCODER_CTX_free(ectx);
    out = strndup((char *)data, n);
    OPENSSL_free(data);
    return out;
}

static char *bn_b64(EVP_PKEY *pk, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    CHECK(EVP_PKEY_get_bn_param(pk, param, &bn) == 1);
    unsigned char raw[1024];
    int n = pad ? BN_bn2binpad(bn, raw, pad) : BN_bn2bin(bn, raw);
    CHECK(n > 0);
    BN_free(bn);
    return b64(raw, (size_t)n);
}

static char *jwk_rsa(EVP_PKEY *pk, const char *kid)
{
    char *n = bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0);
    char *out = malloc(strlen(n) + 256);
    sprintf(out,
            "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\","
            "\"e\":\"%s\"}",
            kid, n, e);
    free(n);
    free(e);
    return out;
}

static char *jwk_ec(EVP_PKEY *pk, const char *kid)
{
    char *x = bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, 32),
         *y = bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *out = malloc(256);
    sprintf(out, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", kid,
            x, y);
    free(x);
    free(y);
    return out;
}

static void test_asymmetric(EVP_PKEY *rsa, EVP_PKEY *ec)
{
    nb_err err = {0};
    char *rsa_spki = pubkey_pem(rsa, NULL), *rsa_pkcs1 = pubkey_pem(rsa, "type-specific");
    char *ec_spki = pubkey_pem(ec, NULL);
    CHECK(strstr(rsa_spki, "BEGIN PUBLIC KEY") && strstr(rsa_pkcs1, "BEGIN RSA PUBLIC KEY"));

    char *rs_tok =
        make_token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), NB_JWT_RS256, rsa, NULL, 0);
    char *es_tok =
        make_token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims(""), NB_JWT_ES256, ec, NULL, 0);

    /* As PEM: SPKI and PKCS#1 for RSA. */
    const char *rsa_pems[] = {rsa_spki, rsa_pkcs1};
    for (size_t i = 0; i < 2; i++) {
        nb_jwt_keyset *ks = nb_jwt_keyset_new();
        CHECK(nb_jwt_keyset_add_pem(ks, "r1", rsa_pems[i], strlen(rsa_pems[i]), &err) == 0);
        CHECK(nb_jwt_keyset_add_pem(ks, "e1", ec_spki, strlen(ec_spki), &err) == 0);
        expect_ok(ks, ALL, rs_tok);
        expect_ok(ks, ALL, es_tok);
        expect_fail_s(ks, NB_JWT_ES256, rs_tok, "algorithm not allowed");
        expect_fail_s(ks, NB_JWT_RS256, es_tok, "algorithm not allowed");
        nb_jwt_keyset_free(ks);
    }

    /* As JWKS, next to an oct key, with keys for other uses and types skipped. */
    char *jr = jwk_rsa(rsa, "r1"), *je = jwk_ec(ec, "e1");
    char *jwks = malloc(strlen(jr) + strlen(je) + 512);
    sprintf(jwks,
            "{\"keys\":[%s,%s,{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0"
            "NTY3ODlhYmNkZWY\"},{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"},"
            "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
            "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},"
            "{\"kty\":\"RSA\",\"alg\":\"RS512\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            jr, je);
    nb_jwt_keyset *ks = nb_jwt_keyset_new();
    if (nb_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), &err) != 0) fprintf(stderr, "%s\n", err.msg);
    CHECK(nb_jwt_keyset_size(ks) == 3);
    expect_ok(ks, ALL, rs_tok);
    expect_ok(ks, ALL, es_tok);
    char *hs_tok = make_token("{\"alg\":\"HS256\",\"kid\":\"h1\"}", claims(""), NB_JWT_HS256, NULL,
                              hs_key, 32);
    expect_ok(ks, ALL, hs_tok);
    free(hs_tok);

    /* Tokens without kid find their key by type. */
    char *t = make_token("{\"alg\":\"ES256\"}", claims(""), NB_JWT_ES256, ec, NULL, 0);
    expect_ok(ks, ALL, t);
    /* ES256 signatures are exactly 64 bytes r||s: the DER form or a short one is refused. */
    char *last = strrchr(t, '.');
    unsigned char rs[80];
    CHECK(nb_b64url_decode(last + 1, strlen(last + 1), rs) == 64);
    for (size_t cut = 0; cut < 2; cut++) {
        char *sg = b64(rs, cut ? 63 : 65);
        char buf[2048];
        snprintf(buf, sizeof buf, "%.*s.%s", (int)(last - t), t, sg);
        expect_fail_s(ks, ALL, buf, "bad signature");
        free(sg);
    }
    rs[40] ^= 1;
    char *sg = b64(rs, 64), buf[2048];
    snprintf(buf, sizeof buf, "%.*s.%s", (int)(last - t), t, sg);
    expect_fail_s(ks, ALL, buf, "bad signature");
    free(sg);
    free(t);
    /* An RS256 signature cut short. */
    last = strrchr(rs_tok, '.');
    snprintf(buf, sizeof buf, "%.*s", (int)(strlen(rs_tok) - 4), rs_tok);
    expect_fail_s(ks, ALL, buf, "");
    /* A token from another key of the same type fails. */
    EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    t = make_token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims(""), NB_JWT_ES256, ec2, NULL, 0);
    expect_fail_s(ks, ALL, t, "bad signature");
    free(t);
    EVP_PKEY_free(ec2);

    /* A failing document leaves the keyset as it was. */
    sprintf(jwks, "{\"keys\":[%s,{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}",
            je);
    CHECK(nb_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), &err) == -1);
    CHECK(err.status == 400 && strstr(err.msg, "keys[1]"));
    CHECK(nb_jwt_keyset_size(ks) == 3);
    nb_jwt_keyset_free(ks);

    /* Documents with nothing usable, or not JWKS at all. */
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"keys\":{}}",
                         "{\"keys\":[]}",
                         "{\"keys\":[{\"kty\":\"OKP\"}]}",
                         "{\"keys\":[1]}",
                         "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}",
                         "{\"keys\":[{\"kty\":\"oct\",\"k\":\"not base64!\"}]}",
                         "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\"}]}",
                         "{\"keys\":[{\"kid\":\"x\"}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ks = nb_jwt_keyset_new();
        err.status = 0;
        CHECK(nb_jwt_keyset_add_jwks(ks, bad[i], strlen(bad[i]), &err) == -1);
        CHECK(err.status == 400 && nb_jwt_keyset_size(ks) == 0);
        nb_jwt_keyset_free(ks);
    }

    /* Weak or unsupported keys are refused at load time, as PEM and as JWKS. */
    EVP_PKEY *rsa1k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    ks = nb_jwt_keyset_new();
    char *pem = pubkey_pem(rsa1k, NULL);
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, pem, strlen(pem), &err) == -1);
    CHECK(err.status == 400 && strstr(err.msg, "1024 bits"));
    free(pem);
    free(jr);
    jr = jwk_rsa(rsa1k, "weak");
    sprintf(jwks, "{\"keys\":[%s]}", jr);
    CHECK(nb_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), &err) == -1);
    CHECK(strstr(err.msg, "1024 bits"));
    pem = pubkey_pem(p384, NULL);
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, pem, strlen(pem), &err) == -1);
    CHECK(strstr(err.msg, "P-256"));
    free(pem);
    pem = pubkey_pem(ed, NULL);
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, pem, strlen(pem), &err) == -1);
    CHECK(strstr(err.msg, "unsupported key type"));
    free(pem);
    const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, junk, strlen(junk), &err) == -1);
    junk = "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n";
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, junk, strlen(junk), &err) == -1);
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, "", 0, &err) == -1);
    /* The public half of a private key is not taken from a private key PEM. */
    BIO *bio = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PrivateKey(bio, rsa, NULL, NULL, 0, NULL, NULL) == 1);
    char *priv;
    long plen = BIO_get_mem_data(bio, &priv);
    CHECK(nb_jwt_keyset_add_pem(ks, NULL, priv, (size_t)plen, &err) == -1);
    BIO_free(bio);
    /* An EC point off the curve. */
    free(je);
    je = jwk_ec(ec, "e1");
    char *x = strstr(je, "\"x\":\"") + 5;
    x[0] = x[0] == 'A' ? 'B' : 'A';
    sprintf(jwks, "{\"keys\":[%s]}", je);
    CHECK(nb_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), &err) == -1);
    CHECK(nb_jwt_keyset_size(ks) == 0);
    nb_jwt_keyset_free(ks);
    EVP_PKEY_free(rsa1k);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);

    free(jr);
    free(je);
    free(jwks);
    free(rs_tok);
    free(es_tok);
    free(rsa_spki);
    free(rsa_pkcs1);
    free(ec_spki);
}

static void test_scopes(void)
{
    json_t *c = json_pack("{s:s}", "scope", "read write  read");
    CHECK(nb_jwt_has_scopes(c, NULL) && nb_jwt_has_scopes(c, "") && nb_jwt_has_scopes(c, " "));
    CHECK(nb_jwt_has_scopes(c, "read") && nb_jwt_has_scopes(c, "write read"));
    CHECK(!nb_jwt_has_scopes(c, "admin") && !nb_jwt_has_scopes(c, "read admin"));
    CHECK(!nb_jwt_has_scopes(c, "rea") && !nb_jwt_has_scopes(c, "read:all"));
    json_t *s = nb_jwt_scopes(c);
    json_t *want = json_pack("[s,s]", "read", "write");
    CHECK(json_equal(s, want));
    json_decref(s);
    json_decref(want);
    json_decref(c);

    c = json_pack("{s:[s,s,i]}", "scp", "orders:read", "orders:write", 7);
    CHECK(nb_jwt_has_scopes(c, "orders:read orders:write"));
    CHECK(!nb_jwt_has_scopes(c, "orders"));
    CHECK(!nb_jwt_has_scopes(c, "7"));
    s = nb_jwt_scopes(c);
    want = json_pack("[s,s]", "orders:read", "orders:write");
    CHECK(json_equal(s, want));
    json_decref(s);
    json_decref(want);
    json_decref(c);

    c = json_pack("{s:s,s:s}", "scp", "a b", "scope", "b c");
    CHECK(nb_jwt_has_scopes(c, "a b c"));
    s = nb_jwt_scopes(c);
    want = json_pack("[s,s,s]", "b", "c", "a");
    CHECK(json_equal(s, want));
    json_decref(s);
    json_decref(want);
    json_decref(c);

    c = json_pack("{s:i}", "scope", 1);
    CHECK(nb_jwt_has_scopes(c, "") && !nb_jwt_has_scopes(c, "x"));
    s = nb_jwt_scopes(c);
    CHECK(json_is_array(s) && json_array_size(s) == 0);
    json_decref(s);
    json_decref(c);
}

int main(void)
{
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CHECK(rsa && ec);
    char *rsa_pem = pubkey_pem(rsa, NULL);

    test_hs256_round_trip();
    test_claims();
    test_alg_guards(rsa, rsa_pem);
    test_malformed();
    test_kid();
    test_asymmetric(rsa, ec);
    test_scopes();

    free(rsa_pem);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    printf("test_jwt: ok\n");
    return 0;
}
