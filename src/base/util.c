#include "base/util.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t nb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t nb_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void nb_time_iso8601(int64_t epoch_ms, char *buf, size_t size)
{
    /* Floor division: before the epoch, -1 ms is 23:59:59.999 of the day before, not ".-01". */
    int64_t ms = epoch_ms % 1000;
    if (ms < 0) ms += 1000;
    time_t secs = (time_t)((epoch_ms - ms) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)ms);
}

static void fill_random(unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            abort(); /* no entropy means no safe ids or tokens: never continue */
        }
        p += r;
        n -= (size_t)r;
    }
}

/* Kernel CSPRNG bytes, drawn 4 KiB at a time: an invocation needs three ids, and one
 * getrandom(2) per id was measurable on the invoke path. Per thread, so no locking. Used bytes
 * are wiped so a later memory disclosure cannot replay past ids. */
static void random_bytes(unsigned char *p, size_t n)
{
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t left;
    while (n > 0) {
        if (left == 0) {
            fill_random(pool, sizeof pool);
            left = sizeof pool;
        }
        size_t take = n < left ? n : left;
        unsigned char *src = pool + sizeof pool - left;
        memcpy(p, src, take);
        memset(src, 0, take);
        p += take;
        n -= take;
        left -= take;
    }
}

void nb_uuid4(char out[37])
{
    unsigned char b[16];
    random_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}

int nb_random_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b) return -1;
    random_bytes(b, nbytes);
    hex_encode(b, nbytes, out);
    return 0;
}

void nb_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    hex_encode(md, 32, out);
}

int nb_secure_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* Compare over the longer length so timing does not reveal the common prefix. */
    unsigned char diff = (unsigned char)(la != lb);
    size_t n = la > lb ? la : lb;
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        unsigned char cb = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(ca ^ cb);
    }
    return diff == 0;
}

int nb_mkdir_p(const char *path, unsigned mode)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0) {
        struct stat st;
        if (errno != EEXIST) return -1;
        if (stat(tmp, &st) < 0) return -1;
        if (!S_ISDIR(st.st_mode)) { /* an existing file is not the directory asked for */
            errno = EEXIST;
            return -1;
        }
    }
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int nb_rm_rf(const char *path)
{
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) return -1;
    return 0;
}

int nb_write_file(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) < 0) goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        fd = -1;
        goto fail;
    }
    return 0;
fail : {
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = e;
    return -1;
}
}

char *nb_read_file(const char *path, size_t max, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) goto fail;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        goto fail;
    }
    /* st_size is only a hint: pipes and /proc files report 0 and files may grow, so read to
     * EOF and enforce max on what was actually read. */
    if (S_ISREG(st.st_mode) && (size_t)st.st_size > max) {
        errno = EFBIG;
        goto fail;
    }
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size : 4096, len = 0;
    if (cap > max) cap = max;
    char *buf = malloc(cap + 1);
    if (!buf) goto fail;
    for (;;) {
        if (len == cap) {
            if (cap >= max) { /* full at the cap: one more byte means too big */
                char c;
                ssize_t r;
                do
                    r = read(fd, &c, 1);
                while (r < 0 && errno == EINTR);
                if (r < 0) goto fail_buf;
                if (r > 0) {
                    errno = EFBIG;
                    goto fail_buf;
                }
                break;
            }
            size_t ncap = cap > max / 2 ? max : cap * 2;
            char *p = realloc(buf, ncap + 1);
            if (!p) goto fail_buf;
            buf = p;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            goto fail_buf;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    if (len_out) *len_out = len;
    return buf;
fail_buf : {
    int e = errno;
    free(buf);
    errno = e;
}
fail : {
    int e = errno;
    close(fd);
    errno = e;
    return NULL;
}
}

size_t nb_utf8_seq(const void *ptr, size_t left)
{
    const unsigned char *p = ptr;
    unsigned char c = p[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xC2 && c <= 0xDF ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0;
    if (!n || n > left) return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (n > 1 && ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
                  (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F)))
        return 0;
    return n;
}

int nb_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x80) { /* the common case, without the call */
            i++;
            continue;
        }
        size_t n = nb_utf8_seq(p + i, len - i);
        if (!n) return 0;
        i += n;
    }
    return 1;
}

void nb_utf8_scrub(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        /* A NUL is never a continuation byte: the check stops there, never reading past it. */
        size_t n = nb_utf8_seq(p, 4);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
}

int nb_json_known_fields(const json_t *in, const char *const *fields, nb_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        int ok = 0;
        for (const char *const *f = fields; *f && !ok; f++)
            ok = strcmp(*f, k) == 0;
        if (!ok) return nb_err_set(err, 400, NB_E_UNKNOWN_FIELD, "unknown field '%.64s'", k);
    }
    return 0;
}

char *nb_error_body(const char *code, const char *msg)
{
    char clean[1024];
    snprintf(clean, sizeof clean, "%s", msg ? msg : "");
    nb_utf8_scrub(clean);
    json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", clean);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) s = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"error\"}}");
    if (!s) abort();
    return s;
}

const char *nb_json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}
