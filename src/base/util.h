/* nb_util: small helpers shared by every module: clocks, ids, hashing, files.
 * All functions are thread-safe and allocate nothing unless they say so. */
#ifndef NB_UTIL_H
#define NB_UTIL_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define NB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

int64_t nb_now_ms(void);  /* wall clock, Unix epoch milliseconds */
int64_t nb_mono_us(void); /* monotonic microseconds, for durations */
/* "2026-11-23T10:00:00.123Z"; buf needs 25 bytes. */
void nb_time_iso8601(int64_t epoch_ms, char *buf, size_t size);

/* Random UUID v4 text (36 chars + NUL) from the kernel's CSPRNG. */
void nb_uuid4(char out[37]);
/* Fills out with n random bytes encoded as 2n hex chars + NUL. Returns 0 or -1. */
int nb_random_hex(char *out, size_t nbytes);
/* sha256 of data as 64 hex chars + NUL. */
void nb_sha256_hex(const void *data, size_t len, char out[65]);
/* Replaces each byte of s that is not part of a valid UTF-8 sequence (a truncated character at
 * the end included) with '?', in place: text built from request bytes can then go into JSON. */
void nb_utf8_scrub(char *s);
/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates, nothing
 * past U+10FFFF), or 0 when it is not one; left: the bytes available from p (>= 1). */
size_t nb_utf8_seq(const void *p, size_t left);
/* Whether the len bytes at s are valid UTF-8 (NUL bytes included as characters). */
int nb_utf8_valid(const char *s, size_t len);
/* Constant-time comparison of two strings of possibly different length. */
int nb_secure_streq(const char *a, const char *b);

/* mkdir -p with mode for the created dirs; 0 or -1 with errno. */
int nb_mkdir_p(const char *path, unsigned mode);
/* Removes a tree (no symlink following). 0 or -1 with errno. */
int nb_rm_rf(const char *path);
/* Writes data to path atomically (tmp file + fsync + rename). 0 or -1 with errno. */
int nb_write_file(const char *path, const void *data, size_t len, unsigned mode);
/* Reads a whole file up to max bytes into a malloc'd NUL-terminated buffer. NULL + errno
 * (EFBIG when over max). */
char *nb_read_file(const char *path, size_t max, size_t *len_out);

/* Only the fields named in the NULL-terminated list may appear in the object in: 0, or -1 with
 * a 400 unknown_field err naming the first other one (a request's typo is an error, never
 * silently ignored). */
int nb_json_known_fields(const json_t *in, const char *const *fields, nb_err *err);

/* "an object", "an array", "a string", "a number", "a boolean" or "null": a JSON value's kind
 * for error messages ("needs a string, not an array"). */
const char *nb_json_kind(const json_t *v);

/* The platform's error body {"error":{"code":...,"message":...}} as compact JSON text
 * (malloc'd, NUL-terminated). msg may hold any bytes (a name quoted from a request, cut
 * mid-character): they are scrubbed to valid UTF-8 first, so this never fails. */
char *nb_error_body(const char *code, const char *msg);

#endif
