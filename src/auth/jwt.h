/* nb_jwt: JSON Web Tokens (RFC 7519, JWS compact form) for the API gateway: verifying bearer
 * tokens against an API's JWT authorizer, and signing the access tokens of nimbus's own OAuth2
 * client-credentials endpoint.
 *
 * Algorithms: HS256 (shared secret), RS256 (RSA PKCS#1 v1.5 SHA-256, keys >= 2048 bits), ES256
 * (ECDSA P-256 SHA-256, JOSE r||s signatures). "none" and every other alg are refused. A key is
 * used only with the algorithm family of its type (an RSA public key can never be taken as an
 * HMAC secret: the classic alg-confusion attack).
 *
 * Keysets are built once and then read-only: any number of threads may verify against one at
 * once. Verification is OpenSSL (libcrypto). */
#ifndef NB_JWT_H
#define NB_JWT_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum { NB_JWT_HS256 = 1, NB_JWT_RS256 = 2, NB_JWT_ES256 = 4 };

/* The error code of every verification failure (HTTP 401). */
#define NB_E_INVALID_TOKEN "invalid_token"
/* Longer tokens are refused as malformed before any decoding. */
#define NB_JWT_MAX_TOKEN 16384

typedef struct nb_jwt_keyset nb_jwt_keyset;

nb_jwt_keyset *nb_jwt_keyset_new(void);
void nb_jwt_keyset_free(nb_jwt_keyset *ks);
/* kid may be NULL or "" (the key then matches tokens without a kid, and any kid when it is the
 * only key of its type). Errors: 400 invalid_value with a message saying what is wrong. */
int nb_jwt_keyset_add_hmac(nb_jwt_keyset *ks, const char *kid, const void *secret, size_t len,
                           nb_err *err);
/* A PEM public key (RSA or EC P-256, "BEGIN PUBLIC KEY" or "BEGIN RSA PUBLIC KEY"). */
int nb_jwt_keyset_add_pem(nb_jwt_keyset *ks, const char *kid, const char *pem, size_t len,
                          nb_err *err);
/* A JWKS document {"keys":[...]}: kty RSA (n, e), EC (crv P-256, x, y) and oct (k); keys with
 * "use" other than "sig" are skipped. At least one usable key, else 400. */
int nb_jwt_keyset_add_jwks(nb_jwt_keyset *ks, const char *json, size_t len, nb_err *err);
size_t nb_jwt_keyset_size(const nb_jwt_keyset *ks);

typedef struct nb_jwt_policy {
    unsigned algs;                /* NB_JWT_* mask allowed */
    const char *issuer;           /* required "iss" (exact), NULL: not checked */
    const char *const *audiences; /* "aud" (string or array) must hold one of them; NULL/0: not
                                     checked */
    size_t naudiences;
    int64_t leeway_s; /* clock skew allowed on exp/nbf/iat (default callers pass 60) */
} nb_jwt_policy;

/* Verifies tok (header alg allowed and matching the key's type, signature, exp required and
 * not passed, nbf/iat not in the future, iss, aud) at now_s. Returns the claims (new
 * reference) or NULL with err: 401 "invalid_token" and a message that says which check
 * failed ("token expired", "audience not allowed", "bad signature", "malformed token"...). */
json_t *nb_jwt_verify(const nb_jwt_keyset *ks, const nb_jwt_policy *p, const char *tok, size_t len,
                      int64_t now_s, nb_err *err);
/* Whether the claims grant every scope in required (space-separated; NULL or "" = none
 * needed): from "scope" (space-separated string) or "scp" (array or string). */
int nb_jwt_has_scopes(const json_t *claims, const char *required);
/* The scopes granted, as a new JSON array of strings (possibly empty). */
json_t *nb_jwt_scopes(const json_t *claims);
/* A compact HS256 token of claims (with header {"alg":"HS256","typ":"JWT","kid":kid}), malloc'd. */
char *nb_jwt_sign_hs256(const json_t *claims, const char *kid, const void *key, size_t keylen);

#endif
