/* Unit tests of src/auth/secret.h: known digest and HMAC vectors, the constant-time hash
 * comparison, random secrets, and base64url both ways including every kind of bad input. */
#include "auth/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_hash(void)
{
    char h[NB_SECRET_HASH_HEX];
    nb_secret_hash("abc", 3, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    nb_secret_hash("", 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    unsigned char raw[32];
    char rh[65];
    nb_sha256("abc", 3, raw);
    hex(raw, 32, rh);
    CHECK_STR(rh, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    char a[NB_SECRET_HASH_HEX], b[NB_SECRET_HASH_HEX];
    nb_secret_hash("secret-1", 8, a);
    nb_secret_hash("secret-1", 8, b);
    CHECK(nb_secret_hash_equal(a, b));
    nb_secret_hash("secret-2", 8, b);
    CHECK(!nb_secret_hash_equal(a, b));
    memcpy(b, a, sizeof b);
    b[63] = b[63] == '0' ? '1' : '0'; /* last char only */
    CHECK(!nb_secret_hash_equal(a, b));
}

static void test_hmac(void)
{
    /* RFC 4231 test case 2 */
    unsigned char mac[32];
    char mh[65];
    const char *msg = "what do ya want for nothing?";
    nb_hmac_sha256("Jefe", 4, msg, strlen(msg), mac);
    hex(mac, 32, mh);
    CHECK_STR(mh, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    /* RFC 4231 test case 6: a key longer than the block is hashed first. */
    unsigned char key[131];
    memset(key, 0xaa, sizeof key);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    nb_hmac_sha256(key, sizeof key, m6, strlen(m6), mac);
    hex(mac, 32, mh);
    CHECK_STR(mh, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_random(void)
{
    char a[64], b[64];
    nb_secret_random(a, sizeof a, 32);
    nb_secret_random(b, sizeof b, 32);
    CHECK(strlen(a) == 43 && strlen(b) == 43);
    CHECK(strcmp(a, b) != 0);
    CHECK(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == 43);
    unsigned char raw[40];
    CHECK(nb_b64url_decode(a, strlen(a), raw) == 32);

    /* The smallest buffer the contract allows, for every length. */
    for (size_t n = 1; n <= 64; n++) {
        size_t size = 4 * n / 3 + 2;
        char *out = malloc(size);
        nb_secret_random(out, size, n);
        CHECK(strlen(out) == (4 * n + 2) / 3);
        free(out);
    }

    /* 200 secrets of 16 bytes: no repeats. */
    char seen[200][24];
    for (int i = 0; i < 200; i++) {
        nb_secret_random(seen[i], sizeof seen[i], 16);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(seen[i], seen[j]) != 0);
    }
}

static void test_b64url(void)
{
    /* RFC 4648 section 10 vectors, unpadded url alphabet. */
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[32];
    unsigned char dec[32];
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        CHECK(nb_b64url_encode(plain[i], n, out) == strlen(enc[i]));
        CHECK_STR(out, enc[i]);
        CHECK(nb_b64url_decode(enc[i], strlen(enc[i]), dec) == (long)n);
        CHECK(memcmp(dec, plain[i], n) == 0);
    }
    /* The url alphabet's two special characters. */
    const unsigned char special[] = {0xfb, 0xff, 0xbf};
    CHECK(nb_b64url_encode(special, 3, out) == 4);
    CHECK_STR(out, "-_-_");
    CHECK(nb_b64url_decode("-_-_", 4, dec) == 3 && memcmp(dec, special, 3) == 0);
    /* Padding is optional but must be right when present. */
    CHECK(nb_b64url_decode("Zg==", 4, dec) == 1 && dec[0] == 'f');
    CHECK(nb_b64url_decode("Zm8=", 4, dec) == 2);
    CHECK(nb_b64url_decode("Zg=", 3, dec) == -1);
    CHECK(nb_b64url_decode("Zm8==", 5, dec) == -1);
    CHECK(nb_b64url_decode("Z===", 4, dec) == -1);
    CHECK(nb_b64url_decode("====", 4, dec) == -1);
    CHECK(nb_b64url_decode("=", 1, dec) == -1);
    CHECK(nb_b64url_decode("Zg=a", 4, dec) == -1);
    /* Bad input: standard alphabet, whitespace, impossible lengths, non-canonical tails. */
    CHECK(nb_b64url_decode("+/+/", 4, dec) == -1);
    CHECK(nb_b64url_decode("Zm9 v", 5, dec) == -1);
    CHECK(nb_b64url_decode("Zm9vY", 5, dec) == -1);
    CHECK(nb_b64url_decode("Zh", 2, dec) == -1);    /* "Zg" with a stray low bit */
    CHECK(nb_b64url_decode("Zm8", 3, dec) == 2);    /* canonical */
    CHECK(nb_b64url_decode("Zm9", 3, dec) == -1);   /* "Zm8" with a stray low bit */
    CHECK(nb_b64url_decode("Zm\0v", 4, dec) == -1); /* NUL inside */
    CHECK(nb_b64url_decode("\xc3\xa9xx", 4, dec) == -1);

    /* Every byte value round-trips, at every tail length. */
    unsigned char all[256], back[260];
    char txt[400];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    for (size_t n = 250; n <= 256; n++) {
        size_t el = nb_b64url_encode(all, n, txt);
        CHECK(el == (4 * n + 2) / 3 && txt[el] == 0);
        CHECK(nb_b64url_decode(txt, el, back) == (long)n && memcmp(all, back, n) == 0);
    }
}

int main(void)
{
    test_hash();
    test_hmac();
    test_random();
    test_b64url();
    printf("test_secret: ok\n");
    return 0;
}
