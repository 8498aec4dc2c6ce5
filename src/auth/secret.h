/* nb_secret: credentials that are shown once and stored only as hashes.
 *
 * Secrets nimbus makes carry 256 bits from the kernel's CSPRNG, so a single SHA-256 is the
 * right stored form (a slow password hash buys nothing against a 256-bit search and would cost
 * per request). Comparisons of hashes are constant-time.
 *
 * Pure functions, any thread. */
#ifndef NB_SECRET_H
#define NB_SECRET_H

#include <stddef.h>

#define NB_SECRET_HASH_HEX 65 /* 64 hex + NUL */

/* nbytes random bytes (nbytes <= 64) as base64url without padding, NUL-terminated into out
 * (size >= 4 * nbytes / 3 + 2). Aborts if the kernel cannot give randomness. */
void nb_secret_random(char *out, size_t size, size_t nbytes);
/* SHA-256 of s as lowercase hex. */
void nb_secret_hash(const void *s, size_t len, char out[NB_SECRET_HASH_HEX]);
/* Constant-time equality of two hex hashes (both NB_SECRET_HASH_HEX - 1 chars). */
int nb_secret_hash_equal(const char *a, const char *b);
/* Raw SHA-256 and HMAC-SHA256 (32 bytes out). */
void nb_sha256(const void *s, size_t len, unsigned char out[32]);
void nb_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                    unsigned char out[32]);
/* base64url without padding; returns the length written (out size >= 4 * len / 3 + 4), NUL
 * terminated. */
size_t nb_b64url_encode(const void *in, size_t len, char *out);
/* Decodes base64url (padding optional); -1 on bad input. out size >= 3 * len / 4 + 3. */
long nb_b64url_decode(const char *in, size_t len, unsigned char *out);

#endif
