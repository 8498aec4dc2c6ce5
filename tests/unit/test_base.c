/* Unit tests of src/base/: nb_buf (caps, consume, steal), nb_err (codes, prefixing and
 * truncation) and nb_util (ids, hashing, constant-time compare, files, time formatting).
 * Files are made in a fresh mkdtemp directory that is removed at the end. */
#include "base/buf.h"
#include "base/err.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

static char tmpdir[] = "/tmp/nb-test-base-XXXXXX";

static void test_buf_caps(void)
{
    nb_buf b;
    nb_buf_init(&b, 10);
    CHECK(b.data == NULL && b.len == 0 && b.max == 10);
    CHECK(nb_buf_append(&b, "abcdef", 6) == 0);
    CHECK(b.len == 6);
    CHECK_STR(b.data, "abcdef");

    /* Over the cap: fails and the buffer is untouched (content, length, NUL). */
    CHECK(nb_buf_append(&b, "ghijk", 5) == -1);
    CHECK(b.len == 6);
    CHECK_STR(b.data, "abcdef");
    CHECK(nb_buf_appendf(&b, "%s", "12345") == -1);
    CHECK(b.len == 6);
    CHECK_STR(b.data, "abcdef");

    /* Exactly up to the cap is fine; one more byte is not. */
    CHECK(nb_buf_append(&b, "ghij", 4) == 0);
    CHECK(b.len == 10);
    CHECK_STR(b.data, "abcdefghij");
    CHECK(b.cap <= b.max + 1);
    CHECK(nb_buf_append(&b, "x", 1) == -1);
    CHECK(b.len == 10);
    CHECK(nb_buf_append(&b, "", 0) == 0); /* empty appends always fit */
    CHECK_STR(b.data, "abcdefghij");

    /* Sizes that would overflow size_t arithmetic are refused, not wrapped. */
    CHECK(nb_buf_reserve(&b, SIZE_MAX) == -1);
    CHECK(nb_buf_reserve(&b, SIZE_MAX - 5) == -1);
    CHECK(b.len == 10);

    nb_buf_reset(&b);
    CHECK(b.len == 0);
    CHECK_STR(b.data, "");
    nb_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0);
    nb_buf_free(&b); /* twice is harmless */

    /* A max of SIZE_MAX means "no cap" and must not wrap around to a zero-size allocation. */
    nb_buf_init(&b, SIZE_MAX);
    CHECK(nb_buf_append(&b, "abc", 3) == 0);
    CHECK(b.cap >= 4);
    CHECK_STR(b.data, "abc");
    CHECK(nb_buf_appendf(&b, "%0600d", 7) == 0);
    CHECK(b.len == 603 && b.data[602] == '7');
    CHECK(nb_buf_reserve(&b, SIZE_MAX - b.len) == -1); /* the NUL would not fit */
    CHECK(nb_buf_reserve(&b, SIZE_MAX) == -1);
    nb_buf_free(&b);

    /* Zero cap: nothing but empty appends. */
    nb_buf_init(&b, 0);
    CHECK(nb_buf_append(&b, "a", 1) == -1);
    CHECK(b.len == 0);
    nb_buf_free(&b);
}

static void test_buf_appendf(void)
{
    nb_buf b;
    nb_buf_init(&b, 4096);
    CHECK(nb_buf_appendf(&b, "%d-%s", 42, "x") == 0);
    CHECK_STR(b.data, "42-x");
    /* Longer than appendf's stack buffer: takes the reserve-and-format path. */
    char big[1500];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(nb_buf_appendf(&b, "[%s]", big) == 0);
    CHECK(b.len == 4 + 2 + 1499);
    CHECK(b.data[4] == '[' && b.data[b.len - 1] == ']' && b.data[b.len] == 0);
    /* And that path respects the cap too. */
    size_t before = b.len;
    CHECK(nb_buf_appendf(&b, "%s%s", big, big) == -1);
    CHECK(b.len == before && b.data[b.len] == 0);
    nb_buf_free(&b);
}

static void test_buf_consume_steal(void)
{
    nb_buf b;
    nb_buf_init(&b, 1 << 20);
    CHECK(nb_buf_append(&b, "hello world", 11) == 0);
    nb_buf_consume(&b, 6);
    CHECK(b.len == 5);
    CHECK_STR(b.data, "world");
    nb_buf_consume(&b, 0);
    CHECK_STR(b.data, "world");
    nb_buf_consume(&b, 100); /* more than held: empties */
    CHECK(b.len == 0);
    CHECK_STR(b.data, "");
    CHECK(nb_buf_append(&b, "again", 5) == 0);
    CHECK_STR(b.data, "again");

    /* Growth across many appends keeps the content. */
    for (int i = 0; i < 1000; i++)
        CHECK(nb_buf_appendf(&b, "%04d", i) == 0);
    CHECK(b.len == 5 + 4000);
    CHECK(memcmp(b.data + 5 + 4 * 999, "0999", 4) == 0);

    size_t len = 0;
    char *p = nb_buf_steal(&b, &len);
    CHECK(p != NULL && len == 4005);
    CHECK(memcmp(p, "again0000", 9) == 0 && p[len] == 0);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    CHECK(b.max == 1 << 20); /* the cap survives, so the buffer can be reused */
    free(p);

    /* Stealing an empty buffer gives an empty string, never NULL. */
    p = nb_buf_steal(&b, &len);
    CHECK(p != NULL && len == 0 && p[0] == 0);
    free(p);
    CHECK(nb_buf_append(&b, "x", 1) == 0);
    p = nb_buf_steal(&b, NULL);
    CHECK_STR(p, "x");
    free(p);
    nb_buf_consume(&b, 3); /* on a never-allocated buffer */
    CHECK(b.len == 0);
}

static void test_err(void)
{
    nb_err err = {0};
    CHECK(nb_err_set(&err, 404, NB_E_NOT_FOUND, "function '%s' not found", "f") == -1);
    CHECK(err.status == 404);
    CHECK_STR(err.code, "not_found");
    CHECK_STR(err.msg, "function 'f' not found");

    CHECK(nb_err_prefix(&err, "deploy %s", "hello") == -1);
    CHECK_STR(err.msg, "deploy hello: function 'f' not found");
    CHECK(err.status == 404); /* prefixing keeps status and code */
    CHECK_STR(err.code, "not_found");
    CHECK(nb_err_prefix(&err, "outer") == -1);
    CHECK_STR(err.msg, "outer: deploy hello: function 'f' not found");

    CHECK(nb_err_sys(&err, ENOENT, "open %s", "/x") == -1);
    CHECK(err.status == 500);
    CHECK_STR(err.code, "internal");
    char want[256];
    snprintf(want, sizeof want, "open /x: %s", strerror(ENOENT));
    CHECK_STR(err.msg, want);

    /* NULL error objects are allowed everywhere (callers that do not care). */
    CHECK(nb_err_set(NULL, 400, NB_E_BAD_REQUEST, "x") == -1);
    CHECK(nb_err_sys(NULL, EIO, "x") == -1);
    CHECK(nb_err_prefix(NULL, "x") == -1);

    nb_err_clear(&err);
    CHECK(err.status == 0 && err.code == NULL && err.msg[0] == 0);

    /* Truncation: a long inner message keeps the prefix and is cut, always NUL-terminated. */
    char longmsg[NB_ERR_MSG_MAX * 2];
    memset(longmsg, 'i', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    nb_err_set(&err, 400, NB_E_BAD_REQUEST, "%s", longmsg);
    CHECK(strlen(err.msg) == NB_ERR_MSG_MAX - 1);
    nb_err_prefix(&err, "ctx");
    CHECK(strlen(err.msg) == NB_ERR_MSG_MAX - 1);
    CHECK(strncmp(err.msg, "ctx: iii", 8) == 0);

    /* A prefix longer than the whole message fills it with the prefix alone. */
    char longprefix[NB_ERR_MSG_MAX * 2];
    memset(longprefix, 'p', sizeof longprefix - 1);
    longprefix[sizeof longprefix - 1] = 0;
    nb_err_set(&err, 400, NB_E_BAD_REQUEST, "inner");
    nb_err_prefix(&err, "%s", longprefix);
    CHECK(strlen(err.msg) == NB_ERR_MSG_MAX - 1);
    CHECK(strspn(err.msg, "p") == NB_ERR_MSG_MAX - 1);

    /* Every prefix length around the edge stays in bounds and terminated. */
    for (size_t n = NB_ERR_MSG_MAX - 6; n < NB_ERR_MSG_MAX + 2; n++) {
        char pre[NB_ERR_MSG_MAX + 4];
        memset(pre, 'q', n);
        pre[n] = 0;
        nb_err_set(&err, 400, NB_E_BAD_REQUEST, "inner");
        nb_err_prefix(&err, "%s", pre);
        CHECK(strlen(err.msg) <= NB_ERR_MSG_MAX - 1);
        CHECK(err.msg[0] == 'q');
    }

    /* nb_err_sys with a message already at the limit drops the strerror part, stays sane. */
    nb_err_sys(&err, EIO, "%s", longmsg);
    CHECK(strlen(err.msg) == NB_ERR_MSG_MAX - 1);
}

static int is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_ids(void)
{
    char u[37], v[37];
    nb_uuid4(u);
    nb_uuid4(v);
    CHECK(strlen(u) == 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            CHECK(u[i] == '-');
        else
            CHECK(is_lower_hex(u[i]));
    }
    CHECK(u[14] == '4');                  /* version 4 */
    CHECK(strchr("89ab", u[19]) != NULL); /* RFC 4122 variant */
    CHECK(strcmp(u, v) != 0);

    char hex[129];
    CHECK(nb_random_hex(hex, 16) == 0);
    CHECK(strlen(hex) == 32);
    for (int i = 0; i < 32; i++)
        CHECK(is_lower_hex(hex[i]));
    CHECK(nb_random_hex(hex, 64) == 0);
    CHECK(strlen(hex) == 128);
    CHECK(nb_random_hex(hex, 65) == -1);
}

static void test_sha256(void)
{
    char out[65];
    nb_sha256_hex("abc", 3, out);
    CHECK_STR(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    nb_sha256_hex("", 0, out);
    CHECK_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    nb_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, out);
    CHECK_STR(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_secure_streq(void)
{
    CHECK(nb_secure_streq("", ""));
    CHECK(nb_secure_streq("token-123", "token-123"));
    CHECK(!nb_secure_streq("token-123", "token-124"));
    CHECK(!nb_secure_streq("token", "token-123")); /* prefix */
    CHECK(!nb_secure_streq("token-123", "token"));
    CHECK(!nb_secure_streq("", "a"));
    CHECK(!nb_secure_streq("a", ""));
    CHECK(!nb_secure_streq("Abc", "abc"));
}

static void test_time(void)
{
    char buf[32];
    nb_time_iso8601(0, buf, sizeof buf);
    CHECK_STR(buf, "1970-01-01T00:00:00.000Z");
    nb_time_iso8601(1700000000123LL, buf, sizeof buf);
    CHECK_STR(buf, "2023-11-14T22:13:20.123Z");
    nb_time_iso8601(951782400999LL, buf, sizeof buf); /* leap day 2000 */
    CHECK_STR(buf, "2000-02-29T00:00:00.999Z");
    nb_time_iso8601(-1, buf, sizeof buf); /* before the epoch: floor, not truncation */
    CHECK_STR(buf, "1969-12-31T23:59:59.999Z");
    nb_time_iso8601(-1500, buf, sizeof buf);
    CHECK_STR(buf, "1969-12-31T23:59:58.500Z");
    nb_time_iso8601(1700000000123LL, buf, 25); /* exactly the documented size */
    CHECK(strlen(buf) == 24);
    nb_time_iso8601(1700000000123LL, buf, 11); /* small buffers are cut, not overrun */
    CHECK_STR(buf, "2023-11-14");

    int64_t a = nb_now_ms();
    CHECK(a > 1600000000000LL); /* after 2020 */
    int64_t m1 = nb_mono_us();
    int64_t m2 = nb_mono_us();
    CHECK(m2 >= m1);
}

static void test_files(void)
{
    char path[512], path2[512];

    /* mkdir_p: nested, idempotent, modes applied to what it creates. */
    snprintf(path, sizeof path, "%s/a/b/c", tmpdir);
    CHECK(nb_mkdir_p(path, 0750) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 0777) == 0750); /* umask is 022 */
    CHECK(nb_mkdir_p(path, 0750) == 0);
    snprintf(path2, sizeof path2, "%s/a/b/c/", tmpdir); /* trailing slash */
    CHECK(nb_mkdir_p(path2, 0755) == 0);
    CHECK(nb_mkdir_p("", 0755) == -1);

    /* write_file / read_file round trip, binary-safe. */
    snprintf(path, sizeof path, "%s/a/f.bin", tmpdir);
    const char data[] = "hello\0world\n";
    CHECK(nb_write_file(path, data, sizeof data, 0640) == 0);
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == (off_t)sizeof data);
    CHECK((st.st_mode & 0777) == 0640);
    size_t len = 0;
    char *got = nb_read_file(path, 4096, &len);
    CHECK(got != NULL && len == sizeof data && memcmp(got, data, len) == 0 && got[len] == 0);
    free(got);
    got = nb_read_file(path, sizeof data, &len); /* exactly the cap */
    CHECK(got != NULL && len == sizeof data);
    free(got);
    errno = 0;
    got = nb_read_file(path, sizeof data - 1, &len); /* one byte over */
    CHECK(got == NULL && errno == EFBIG);

    /* Overwrite is atomic and leaves no temp file behind. */
    CHECK(nb_write_file(path, "new", 3, 0640) == 0);
    got = nb_read_file(path, 100, NULL);
    CHECK_STR(got, "new");
    free(got);
    snprintf(path2, sizeof path2, "%s/a", tmpdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 2", path2); /* b/ and f.bin */
    CHECK(system(cmd) == 0);

    /* Empty files read as an empty string. */
    snprintf(path2, sizeof path2, "%s/empty", tmpdir);
    CHECK(nb_write_file(path2, "", 0, 0600) == 0);
    got = nb_read_file(path2, 0, &len);
    CHECK(got != NULL && len == 0 && got[0] == 0);
    free(got);

    /* Errors come back with errno. */
    snprintf(path2, sizeof path2, "%s/missing", tmpdir);
    errno = 0;
    CHECK(nb_read_file(path2, 100, &len) == NULL && errno == ENOENT);
    snprintf(path2, sizeof path2, "%s/nodir/x", tmpdir);
    errno = 0;
    CHECK(nb_write_file(path2, "x", 1, 0600) == -1 && errno == ENOENT);
    /* A directory is not a file: no silent empty result. */
    errno = 0;
    CHECK(nb_read_file(tmpdir, 1 << 20, &len) == NULL && errno == EISDIR);

    /* A pipe has no size up front: read_file still reads it whole, and caps it. */
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK(write(fds[1], "piped", 5) == 5);
    close(fds[1]);
    snprintf(path2, sizeof path2, "/proc/self/fd/%d", fds[0]);
    got = nb_read_file(path2, 100, &len);
    CHECK(got != NULL && len == 5);
    CHECK_STR(got, "piped");
    free(got);
    close(fds[0]);
    CHECK(pipe(fds) == 0);
    CHECK(write(fds[1], "0123456789", 10) == 10);
    close(fds[1]);
    snprintf(path2, sizeof path2, "/proc/self/fd/%d", fds[0]);
    errno = 0;
    CHECK(nb_read_file(path2, 9, &len) == NULL && errno == EFBIG);
    close(fds[0]);

    /* mkdir_p over an existing file fails (ENOTDIR below it, EEXIST on it). */
    snprintf(path2, sizeof path2, "%s/a/f.bin/sub", tmpdir);
    errno = 0;
    CHECK(nb_mkdir_p(path2, 0755) == -1 && errno == ENOTDIR);
    CHECK(nb_mkdir_p(path, 0755) == -1 && errno == EEXIST);

    /* rm_rf removes a tree without following symlinks out of it. */
    char outside[512], tree[512], link[512];
    snprintf(outside, sizeof outside, "%s/outside", tmpdir);
    CHECK(nb_write_file(outside, "keep", 4, 0600) == 0);
    snprintf(tree, sizeof tree, "%s/tree/x/y", tmpdir);
    CHECK(nb_mkdir_p(tree, 0755) == 0);
    snprintf(link, sizeof link, "%s/tree/x/link", tmpdir);
    CHECK(symlink(outside, link) == 0);
    snprintf(link, sizeof link, "%s/tree/dirlink", tmpdir);
    CHECK(symlink(tmpdir, link) == 0);
    snprintf(tree, sizeof tree, "%s/tree", tmpdir);
    CHECK(nb_rm_rf(tree) == 0);
    CHECK(access(tree, F_OK) == -1 && errno == ENOENT);
    CHECK(access(outside, F_OK) == 0);
    CHECK(nb_rm_rf(tree) == 0); /* absent is fine */
}

int main(void)
{
    umask(022);
    CHECK(mkdtemp(tmpdir) != NULL);
    test_buf_caps();
    test_buf_appendf();
    test_buf_consume_steal();
    test_err();
    test_ids();
    test_sha256();
    test_secure_streq();
    test_time();
    test_files();
    CHECK(nb_rm_rf(tmpdir) == 0);
    printf("test_base: ok\n");
    return 0;
}
