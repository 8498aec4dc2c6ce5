/* nb_bundle: function code archives, validated and unpacked once, content-addressed.
 *
 * An upload is hashed (sha256 of the bytes as sent), kept as DATA/blobs/<sha> and unpacked to
 * DATA/code/<sha>/ through a temporary directory and a rename, so a half-unpacked bundle is
 * never visible and the same bytes are never unpacked twice. Every entry is checked before it
 * touches the disk: relative paths only, no "..", symlinks must stay inside the bundle, no
 * hardlinks or devices, at most NB_BUNDLE_MAX_FILES entries and NB_BUNDLE_MAX_UNPACKED bytes
 * (counted on the bytes actually written, not on the archive's claims).
 *
 * Thread: any; functions are synchronous and touch only the given directories. */
#ifndef NB_BUNDLE_H
#define NB_BUNDLE_H

#include "base/err.h"
#include "store/store.h"

#include <stddef.h>

#define NB_BUNDLE_MAX_UPLOAD   (64u << 20)
#define NB_BUNDLE_MAX_UNPACKED (256ull << 20)
#define NB_BUNDLE_MAX_FILES    20000

typedef struct nb_bundle_limits {
    unsigned long long max_unpacked;
    long max_files;
} nb_bundle_limits;

/* Validates and unpacks data into code_root/<sha>/ (blob kept in blob_root/<sha>).
 * *existed is set when that code was already unpacked. limits NULL = the defaults. */
int nb_bundle_ingest(const char *blob_root, const char *code_root, const void *data, size_t len,
                     const nb_bundle_limits *limits, nb_code_blob *out, int *existed, nb_err *err);

/* Unpacks data into an existing empty directory; the checking core of ingest. */
int nb_bundle_unpack(const void *data, size_t len, const char *dir, const nb_bundle_limits *limits,
                     nb_code_blob *out, nb_err *err);

/* 1 when rel names a regular file inside dir (following only in-bundle symlinks). */
int nb_bundle_has_file(const char *dir, const char *rel);

/* Lexical check of an archive path; writes the cleaned path ("./a//b" -> "a/b"). 0 or -1. */
int nb_bundle_clean_path(const char *path, char *out, size_t size);
/* Whether a symlink at entry path `at` with target `target` stays inside the bundle. */
int nb_bundle_link_inside(const char *at, const char *target);

#endif
