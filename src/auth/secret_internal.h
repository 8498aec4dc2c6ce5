/* Internal to the auth module (secret.c, jwt.c): not part of its contract. */
#ifndef NB_SECRET_INTERNAL_H
#define NB_SECRET_INTERNAL_H

#include <openssl/evp.h>

/* SHA-256 fetched once per process (never freed); any thread. */
const EVP_MD *nb__sha256_md(void);

#endif
