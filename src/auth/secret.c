#include "auth/secret.h"
#include "auth/secret_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* OpenSSL 3 looks an algorithm up in its provider store (under a lock) every time a call names
 * it implicitly (EVP_sha256()); fetching once keeps that off the per-request path. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!sha256_md) abort(); /* libcrypto without SHA-256 cannot authenticate anything */
}

const EVP_MD *nb__sha256_md(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md;
}

void nb_secret_random(char *out, size_t size, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b || size < (4 * nbytes + 2) / 3 + 1) abort(); /* caller bug */
    unsigned char *p = b;
    size_t n = nbytes;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            abort(); /* a guessable credential is worse than no daemon */
        }
        p += r;
        n -= (size_t)r;
    }
    nb_b64url_encode(b, nbytes, out);
    OPENSSL_cleanse(b, sizeof b);
}

void nb_sha256(const void *s, size_t len, unsigned char out[32])
{
    if (EVP_Digest(s, len, out, NULL, nb__sha256_md(), NULL) != 1) abort();
}

void nb_secret_hash(const void *s, size_t len, char out[NB_SECRET_HASH_HEX])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    nb_sha256(s, len, md);
    for (size_t i = 0; i < sizeof md; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = 0;
}

int nb_secret_hash_equal(const char *a, const char *b)
{
    return CRYPTO_memcmp(a, b, NB_SECRET_HASH_HEX - 1) == 0;
}

/* HMAC (RFC 2104) spelled out over a pre-fetched digest: OpenSSL 3's HMAC() fetches the MAC and
 * its digest by name on every call, which costs more than hashing a token. */
void nb_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                    unsigned char out[32])
{
    unsigned char block[64] = {0}, pad[64], inner[32];
    if (keylen > sizeof block)
        nb_sha256(key, keylen, block);
    else if (keylen)
        memcpy(block, key, keylen);
    const EVP_MD *md = nb__sha256_md();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) abort();
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = block[i] ^ 0x36;
    int ok = EVP_DigestInit_ex2(ctx, md, NULL) == 1 &&
             EVP_DigestUpdate(ctx, pad, sizeof pad) == 1 && EVP_DigestUpdate(ctx, msg, len) == 1 &&
             EVP_DigestFinal_ex(ctx, inner, NULL) == 1;
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = block[i] ^ 0x5c;
    ok = ok && EVP_DigestInit_ex2(ctx, md, NULL) == 1 &&
         EVP_DigestUpdate(ctx, pad, sizeof pad) == 1 &&
         EVP_DigestUpdate(ctx, inner, sizeof inner) == 1 && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    if (!ok) abort(); /* only allocation failure inside libcrypto gets here */
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t nb_b64url_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = 0;
    return o;
}

/* 0..63 for the alphabet, 64 for anything else (including '+', '/' and '='). */
static const unsigned char b64url_val[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

/* The table stores value + 1 so that every unlisted byte is 0; this maps it back. */
static inline unsigned b64_val(unsigned char c)
{
    return (unsigned)b64url_val[c] - 1u; /* > 63 (wraps) for a byte outside the alphabet */
}

long nb_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len >= 1 && in[len - 1] == '=') {
        /* Padding is all or nothing: it must bring the text to a multiple of 4. */
        if (len % 4) return -1;
        len--;
        if (in[len - 1] == '=') len--;
    }
    if (len % 4 == 1) return -1;
    size_t o = 0, i = 0;
    for (; i + 4 <= len; i += 4) {
        unsigned a = b64_val((unsigned char)in[i]), b = b64_val((unsigned char)in[i + 1]),
                 c = b64_val((unsigned char)in[i + 2]), d = b64_val((unsigned char)in[i + 3]);
        if ((a | b | c | d) > 63) return -1;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    size_t rest = len - i;
    if (rest) {
        unsigned a = b64_val((unsigned char)in[i]), b = b64_val((unsigned char)in[i + 1]),
                 c = rest == 3 ? b64_val((unsigned char)in[i + 2]) : 0;
        if ((a | b | c) > 63) return -1;
        uint32_t v = a << 18 | b << 12 | c << 6;
        /* Bits below the last whole byte must be zero, so each byte string has exactly one
         * encoding (a token cannot be altered without changing its signed text). */
        if (rest == 2 ? (v & 0xffff) : (v & 0xff)) return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (rest == 3) out[o++] = (unsigned char)(v >> 8);
    }
    return (long)o;
}
