/* Unit tests of code bundles (src/code/bundle.h): the lexical path and symlink checks, unpacking
 * real zip and tar.gz archives built here with libarchive's write API, every refusal the
 * contract promises (and that nothing lands outside the bundle when refusing), limits,
 * content-addressed ingest, and has_file. Everything happens in a fresh mkdtemp directory. */
#include "code/bundle.h"

#include "base/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "check.h"

static char tmpdir[] = "/tmp/nb-test-bundle-XXXXXX";

/* ---- building archives in memory ---- */

enum fmt { TARGZ, ZIP, TAR };

typedef struct ent {
    char type; /* f file, d dir, l symlink, h hardlink, p fifo, c char device, s/S sparse files */
    const char *path;
    const char *data; /* file content, link target */
    unsigned mode;    /* permission bits; 0 = 0644 / 0755 */
} ent;

typedef struct blob {
    unsigned char *p;
    size_t len;
} blob;

static blob build(enum fmt f, const ent *es, size_t n)
{
    size_t cap = 8u << 20, used = 0;
    unsigned char *buf = malloc(cap);
    struct archive *a = archive_write_new();
    if (f == ZIP) {
        CHECK(archive_write_set_format_zip(a) == ARCHIVE_OK);
    } else {
        CHECK(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK);
        if (f == TARGZ) CHECK(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
    }
    CHECK(archive_write_open_memory(a, buf, cap, &used) == ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, es[i].path);
        archive_entry_set_mtime(e, 1700000000, 0);
        size_t dlen = es[i].data ? strlen(es[i].data) : 0, hole = 0, tail = 0;
        switch (es[i].type) {
        case 'f':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, es[i].mode ? es[i].mode : 0644);
            archive_entry_set_size(e, (la_int64_t)dlen);
            break;
        case 's': /* data at offset 16 MiB: a big file from a few bytes of archive */
        case 'S': /* data at offset 4 KiB, then a 4 KiB hole at the end */
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            hole = es[i].type == 's' ? 16u << 20 : 4096;
            tail = es[i].type == 's' ? 0 : 4096;
            archive_entry_set_size(e, (la_int64_t)(hole + dlen + tail));
            archive_entry_sparse_add_entry(e, (la_int64_t)hole, (la_int64_t)dlen);
            break;
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, es[i].mode ? es[i].mode : 0755);
            break;
        case 'l':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_perm(e, 0777);
            archive_entry_set_symlink(e, es[i].data);
            dlen = 0;
            break;
        case 'h':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_hardlink(e, es[i].data);
            archive_entry_set_size(e, 0);
            dlen = 0;
            break;
        case 'p':
            archive_entry_set_filetype(e, AE_IFIFO);
            archive_entry_set_perm(e, 0644);
            break;
        case 'c':
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_perm(e, 0666);
            archive_entry_set_rdev(e, makedev(1, 3));
            break;
        default:
            CHECK(0);
        }
        int r = archive_write_header(a, e);
        if (r != ARCHIVE_OK) {
            fprintf(stderr, "build: header %s: %s\n", es[i].path, archive_error_string(a));
            exit(1);
        }
        /* A sparse entry takes the whole logical content; the writer drops the holes. */
        static const char zeros[65536];
        for (size_t z = 0; z < hole; z += sizeof zeros)
            CHECK(archive_write_data(a, zeros, hole - z < sizeof zeros ? hole - z : sizeof zeros) >
                  0);
        if (dlen) CHECK(archive_write_data(a, es[i].data, dlen) == (la_ssize_t)dlen);
        if (tail) CHECK(archive_write_data(a, zeros, tail) == (la_ssize_t)tail);
        archive_entry_free(e);
    }
    CHECK(archive_write_close(a) == ARCHIVE_OK);
    archive_write_free(a);
    return (blob){buf, used};
}

/* ---- helpers ---- */

static int counter;

/* A fresh empty bundle directory tmpdir/work/N/bundle (N/ above it catches escapes). */
static void fresh_dir(char *dir, size_t size)
{
    snprintf(dir, size, "%s/work/%d/bundle", tmpdir, ++counter);
    CHECK(nb_mkdir_p(dir, 0755) == 0);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static char *read_rel(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return nb_read_file(path, 1 << 20, NULL);
}

static void check_content(const char *dir, const char *rel, const char *want)
{
    char *got = read_rel(dir, rel);
    if (!got || strcmp(got, want) != 0) {
        fprintf(stderr, "%s/%s: got '%s', want '%s'\n", dir, rel, got ? got : "(unreadable)", want);
        exit(1);
    }
    free(got);
}

static mode_t lmode(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_mode : 0;
}

/* Unpacks and expects a refusal mentioning `what` (NULL: any message); checks nothing was
 * written next to the bundle (the parent holds only "bundle"). */
static void expect_reject_blob(blob b, const nb_bundle_limits *lim, const char *what,
                               const char *label)
{
    char dir[PATH_MAX], parent[PATH_MAX];
    fresh_dir(dir, sizeof dir);
    nb_err err = {0};
    nb_code_blob out = {0};
    int rc = nb_bundle_unpack(b.p, b.len, dir, lim, &out, &err);
    if (rc != -1 || err.status != 400 || strcmp(err.code, NB_E_INVALID_ARCHIVE) != 0 ||
        (what && !strstr(err.msg, what))) {
        fprintf(stderr, "%s: rc %d status %d code %s msg '%s' (wanted a 400 mentioning '%s')\n",
                label, rc, err.status, err.code ? err.code : "-", err.msg, what ? what : "");
        exit(1);
    }
    snprintf(parent, sizeof parent, "%s/..", dir);
    if (count_entries(parent) != 1) {
        fprintf(stderr, "%s: something was written next to the bundle\n", label);
        exit(1);
    }
}

static void expect_reject(enum fmt f, const ent *es, size_t n, const nb_bundle_limits *lim,
                          const char *what, const char *label)
{
    blob b = build(f, es, n);
    expect_reject_blob(b, lim, what, label);
    free(b.p);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- tests ---- */

static void test_clean_path(void)
{
    struct {
        const char *in, *out;
        int rc;
    } cases[] = {
        {"a", "a", 0},
        {"a/b/c.py", "a/b/c.py", 0},
        {"./a//b/", "a/b", 0},
        {"./././x", "x", 0},
        {"a/./b", "a/b", 0},
        {"...", "...", 0},
        {"..a/b..", "..a/b..", 0},
        {".hidden", ".hidden", 0},
        {".", "", 1},
        {"./", "", 1},
        {"", "", 1},
        {"/abs", NULL, -1},
        {"/", NULL, -1},
        {"..", NULL, -1},
        {"../x", NULL, -1},
        {"a/../b", NULL, -1},
        {"a/../../x", NULL, -1},
        {"a/..", NULL, -1},
        {"./../x", NULL, -1},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char out[64];
        int rc = nb_bundle_clean_path(cases[i].in, out, sizeof out);
        if (rc != cases[i].rc || (cases[i].out && strcmp(out, cases[i].out) != 0)) {
            fprintf(stderr, "clean_path('%s') = %d '%s', want %d '%s'\n", cases[i].in, rc,
                    rc >= 0 ? out : "", cases[i].rc, cases[i].out ? cases[i].out : "");
            exit(1);
        }
    }
    char small[4];
    CHECK(nb_bundle_clean_path("abc", small, sizeof small) == 0); /* fits with its NUL */
    CHECK(nb_bundle_clean_path("abcd", small, sizeof small) == -1);
    CHECK(nb_bundle_clean_path("a/bc", small, sizeof small) == -1);
    CHECK(nb_bundle_clean_path(NULL, small, sizeof small) == -1);
    CHECK(nb_bundle_clean_path("a", small, 0) == -1);
}

static void test_link_inside(void)
{
    struct {
        const char *at, *target;
        int inside;
    } cases[] = {
        {"link", "app.py", 1},
        {"link", "./app.py", 1},
        {"link", "sub/dir/file", 1},
        {"link", ".", 1},
        {"a/link", "../app.py", 1},
        {"a/b/link", "../../app.py", 1},
        {"a/b/link", "../c/../../x", 0}, /* ".." after a name: may pass through a symlink */
        {"node_modules/.bin/tool", "../tool/bin/cli.js", 1},
        {"link", "../x", 0},
        {"link", "..", 0},
        {"a/link", "../../x", 0},
        {"a/b/link", "../../../x", 0},
        {"link", "x/../../y", 0},
        {"link", "x/..", 0},
        {"link", "/etc/passwd", 0},
        {"link", "/", 0},
        {"link", "", 0},
        {"a/link", "b//..//..//../x", 0},
        {"link", "r/r/r/r/r/../../../../etc/passwd", 0},
    };
    for (size_t i = 0; i < N(cases); i++) {
        if (nb_bundle_link_inside(cases[i].at, cases[i].target) != cases[i].inside) {
            fprintf(stderr, "link_inside('%s' -> '%s') != %d\n", cases[i].at, cases[i].target,
                    cases[i].inside);
            exit(1);
        }
    }
}

static const ent good[] = {
    {'d', "lib/", NULL, 0},
    {'f', "app.py", "def handler(e, c):\n    return 1\n", 0},
    {'f', "bin/run", "#!/bin/sh\necho hi\n", 0755},
    {'f', "lib/util.py", "X = 1\n", 0600},
    {'f', "deep/a/b/c.txt", "deep", 0},
    {'l', "link.py", "app.py", 0},
    {'l', "lib/up.py", "../app.py", 0},
    {'l', "libdir", "lib", 0},
    {'f', "empty", "", 0},
};

static void check_good(const char *dir, const nb_code_blob *out, size_t len)
{
    check_content(dir, "app.py", "def handler(e, c):\n    return 1\n");
    check_content(dir, "bin/run", "#!/bin/sh\necho hi\n");
    check_content(dir, "lib/util.py", "X = 1\n");
    check_content(dir, "deep/a/b/c.txt", "deep");
    check_content(dir, "empty", "");
    check_content(dir, "link.py", "def handler(e, c):\n    return 1\n");
    check_content(dir, "lib/up.py", "def handler(e, c):\n    return 1\n");
    check_content(dir, "libdir/util.py", "X = 1\n");
    /* modes are normalised: exec bit kept as 0755, everything else 0644; dirs 0755 */
    CHECK((lmode(dir, "bin/run") & 07777) == 0755);
    CHECK((lmode(dir, "app.py") & 07777) == 0644);
    CHECK((lmode(dir, "lib/util.py") & 07777) == 0644);
    CHECK(S_ISDIR(lmode(dir, "lib")) && (lmode(dir, "lib") & 0777) == 0755);
    CHECK(S_ISDIR(lmode(dir, "deep/a/b")));
    CHECK(S_ISLNK(lmode(dir, "link.py")) && S_ISLNK(lmode(dir, "lib/up.py")));
    char path[PATH_MAX], target[64];
    snprintf(path, sizeof path, "%s/lib/up.py", dir);
    ssize_t n = readlink(path, target, sizeof target - 1);
    CHECK(n == 9 && memcmp(target, "../app.py", 9) == 0);
    CHECK(count_entries(dir) == 7); /* lib app.py bin deep link.py libdir empty */
    CHECK(out->size == (int64_t)len);
    CHECK(out->files == (int64_t)N(good));
    CHECK(out->unpacked_size == (int64_t)(strlen(good[1].data) + strlen(good[2].data) +
                                          strlen(good[3].data) + strlen(good[4].data)));
}

static void test_unpack_good(void)
{
    enum fmt fmts[] = {TARGZ, ZIP, TAR};
    for (size_t f = 0; f < N(fmts); f++) {
        blob b = build(fmts[f], good, N(good));
        char dir[PATH_MAX];
        fresh_dir(dir, sizeof dir);
        nb_err err = {0};
        nb_code_blob out = {0};
        if (nb_bundle_unpack(b.p, b.len, dir, NULL, &out, &err) != 0) {
            fprintf(stderr, "unpack format %zu: %s\n", f, err.msg);
            exit(1);
        }
        check_good(dir, &out, b.len);
        free(b.p);
    }

    /* Archives made with `tar -C dir .` name everything "./x" and include "./" itself. */
    const ent dotted[] = {{'d', "./", NULL, 0},
                          {'f', "./app.py", "x", 0},
                          {'d', "./sub/", NULL, 0},
                          {'f', "./sub/m.py", "y", 0}};
    blob b = build(TARGZ, dotted, N(dotted));
    char dir[PATH_MAX];
    fresh_dir(dir, sizeof dir);
    nb_err err = {0};
    CHECK(nb_bundle_unpack(b.p, b.len, dir, NULL, NULL, &err) == 0);
    check_content(dir, "app.py", "x");
    check_content(dir, "sub/m.py", "y");
    free(b.p);

    /* A sparse file within the limits comes out whole, holes as zeros (trailing one too). */
    const ent sparse[] = {{'S', "sparse", "data", 0}};
    b = build(TAR, sparse, N(sparse));
    fresh_dir(dir, sizeof dir);
    nb_bundle_limits lim16k = {.max_unpacked = 16384, .max_files = 10};
    nb_code_blob sout = {0};
    CHECK(nb_bundle_unpack(b.p, b.len, dir, &lim16k, &sout, &err) == 0);
    char spath[PATH_MAX];
    snprintf(spath, sizeof spath, "%s/sparse", dir);
    size_t slen = 0;
    char *sdata = nb_read_file(spath, 1 << 20, &slen);
    CHECK(sdata && slen == 8192 + 4);
    for (size_t i = 0; i < 4096; i++)
        CHECK(sdata[i] == 0);
    CHECK(memcmp(sdata + 4096, "data", 4) == 0);
    for (size_t i = 4100; i < slen; i++)
        CHECK(sdata[i] == 0);
    CHECK(sout.unpacked_size == 8192 + 4);
    free(sdata);
    free(b.p);

    /* Repeated directory entries are harmless. */
    const ent dirs[] = {{'d', "a/", NULL, 0}, {'d', "a/", NULL, 0}, {'f', "a/x", "1", 0}};
    b = build(TARGZ, dirs, N(dirs));
    fresh_dir(dir, sizeof dir);
    CHECK(nb_bundle_unpack(b.p, b.len, dir, NULL, NULL, &err) == 0);
    free(b.p);

    /* Implicit directories do not count as entries: 2 entries under 3 made directories. */
    const ent implicit[] = {{'f', "a/b/c/x", "1", 0}, {'f', "a/b/c/y", "2", 0}};
    nb_bundle_limits lim3 = {.max_unpacked = 10, .max_files = 3};
    b = build(ZIP, implicit, N(implicit));
    fresh_dir(dir, sizeof dir);
    nb_code_blob iout = {0};
    CHECK(nb_bundle_unpack(b.p, b.len, dir, &lim3, &iout, &err) == 0);
    CHECK(iout.files == 2);
    check_content(dir, "a/b/c/y", "2");
    free(b.p);

    /* Limits are inclusive: exactly max_files entries and max_unpacked bytes pass. */
    const ent three[] = {{'f', "a", "12345", 0}, {'f', "b", "12345", 0}, {'d', "c/", NULL, 0}};
    nb_bundle_limits lim = {.max_unpacked = 10, .max_files = 3};
    b = build(TARGZ, three, N(three));
    fresh_dir(dir, sizeof dir);
    nb_code_blob out = {0};
    CHECK(nb_bundle_unpack(b.p, b.len, dir, &lim, &out, &err) == 0);
    CHECK(out.files == 3 && out.unpacked_size == 10);
    free(b.p);
}

static void test_unpack_rejects(void)
{
    nb_bundle_limits small = {.max_unpacked = 1000, .max_files = 10};
    enum fmt fmts[] = {TARGZ, ZIP};
    for (size_t f = 0; f < N(fmts); f++) {
        enum fmt F = fmts[f];
        const ent dotdot[] = {{'f', "ok", "1", 0}, {'f', "../x", "evil", 0}};
        expect_reject(F, dotdot, N(dotdot), NULL, "escapes", "../x");
        const ent abs[] = {{'f', "/tmp/nb-abs-test", "evil", 0}};
        expect_reject(F, abs, N(abs), NULL, "escapes", "/abs");
        CHECK(access("/tmp/nb-abs-test", F_OK) == -1);
        const ent deep[] = {{'d', "a/", NULL, 0}, {'f', "a/../../x", "evil", 0}};
        expect_reject(F, deep, N(deep), NULL, "escapes", "a/../../x");
        const ent inner[] = {{'f', "a/../b", "x", 0}};
        expect_reject(F, inner, N(inner), NULL, "escapes", "a/../b");

        const ent passwd[] = {{'l', "app.py", "/etc/passwd", 0}};
        expect_reject(F, passwd, N(passwd), NULL, "outside", "symlink /etc/passwd");
        const ent up2[] = {{'d', "a/", NULL, 0}, {'l', "a/l", "../../x", 0}};
        expect_reject(F, up2, N(up2), NULL, "outside", "symlink ../../x");
        const ent up1[] = {{'l', "l", "../x", 0}};
        expect_reject(F, up1, N(up1), NULL, "outside", "symlink ../x");
        /* A chain: "r" is the bundle root, so r/r/r/r/r/.. climbs out while looking 1 deep. */
        const ent chain[] = {{'l', "r", ".", 0}, {'l', "x", "r/r/r/r/r/../../../../etc/passwd", 0}};
        expect_reject(F, chain, N(chain), NULL, "outside", "symlink chain");

        /* Writing through a symlink, even one pointing inside: refused, nothing written. */
        const ent through[] = {
            {'d', "sub/", NULL, 0}, {'l', "link", "sub", 0}, {'f', "link/x", "evil", 0}};
        expect_reject(F, through, N(through), NULL, "symlink", "link/x through link -> sub");
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/work/%d/bundle/sub/x", tmpdir, counter);
        CHECK(access(dir, F_OK) == -1);
        const ent outdir[] = {{'l', "tmp", "/tmp", 0}, {'f', "tmp/nb-evil", "evil", 0}};
        expect_reject(F, outdir, N(outdir), NULL, NULL, "tmp/x through tmp -> /tmp");
        CHECK(access("/tmp/nb-evil", F_OK) == -1);
        /* Through a regular file: not a directory. */
        const ent file_as_dir[] = {{'f', "f", "x", 0}, {'f', "f/x", "y", 0}};
        expect_reject(F, file_as_dir, N(file_as_dir), NULL, NULL, "f/x under a file");

        /* Duplicates: a second file, a file over a symlink, a symlink over a file. */
        const ent dup[] = {{'f', "app.py", "one", 0}, {'f', "app.py", "two", 0}};
        expect_reject(F, dup, N(dup), NULL, "duplicate", "duplicate file");
        const ent dup2[] = {{'f', "a", "one", 0}, {'f', "./a", "two", 0}};
        expect_reject(F, dup2, N(dup2), NULL, "duplicate", "duplicate ./a");
        const ent over_link[] = {{'l', "l", "target", 0}, {'f', "l", "two", 0}};
        expect_reject(F, over_link, N(over_link), NULL, "duplicate", "file over symlink");
        const ent link_over[] = {{'f', "a", "one", 0}, {'l', "a", "b", 0}};
        expect_reject(F, link_over, N(link_over), NULL, "duplicate", "symlink over file");

        /* Limits. */
        const ent many[] = {
            {'f', "1", "x", 0}, {'f', "2", "x", 0}, {'f', "3", "x", 0}, {'f', "4", "x", 0}};
        nb_bundle_limits three = {.max_unpacked = 1000, .max_files = 3};
        expect_reject(F, many, N(many), &three, "entries", "too many entries");
        static char big[1002];
        memset(big, 'B', 1001);
        const ent huge[] = {{'f', "big", big, 0}};
        expect_reject(F, huge, N(huge), &small, "more than", "unpacked size");
        /* Directories made for deep paths have their own budget (max_files of them). */
        const ent deep_paths[] = {{'f', "a/b/c/d/f", "x", 0}};
        expect_reject(F, deep_paths, N(deep_paths), &three, "directories", "implicit directories");
        const ent sum[] = {{'f', "a", big + 500, 0}, {'f', "b", big + 500, 0}}; /* 501 + 501 */
        expect_reject(F, sum, N(sum), &small, "more than", "unpacked size summed");
    }

    /* Entry types only tar can carry. */
    const ent hard[] = {{'f', "a", "x", 0}, {'h', "b", "a", 0}};
    expect_reject(TARGZ, hard, N(hard), NULL, "hard link", "hardlink");
    const ent hard_out[] = {{'h', "b", "/etc/passwd", 0}};
    expect_reject(TAR, hard_out, N(hard_out), NULL, "hard link", "hardlink outside");
    const ent fifo[] = {{'p', "fifo", NULL, 0}};
    expect_reject(TARGZ, fifo, N(fifo), NULL, "not a file", "fifo");
    const ent dev[] = {{'c', "null", NULL, 0}};
    expect_reject(TARGZ, dev, N(dev), NULL, "not a file", "char device");
    /* A sparse file whose data sits at 16 MiB: the size limit is about the file it makes. */
    const ent sparse[] = {{'s', "sparse", "data", 0}};
    nb_bundle_limits mib = {.max_unpacked = 1 << 20, .max_files = 10};
    expect_reject(TAR, sparse, N(sparse), &mib, "more than", "sparse file");

    /* Not an archive / damaged archives / nothing at all. */
    blob b = {(unsigned char *)"this is certainly not an archive, just some text.............", 60};
    expect_reject_blob(b, NULL, NULL, "garbage");
    unsigned char zeros[1024] = {0};
    expect_reject_blob((blob){zeros, 1}, NULL, NULL, "one zero byte");
    expect_reject_blob((blob){zeros, 0}, NULL, NULL, "empty input");
    expect_reject_blob((blob){(unsigned char *)"", 0}, NULL, NULL, "empty input (non-NULL)");
    static const ent bigfile[] = {{'f', "a.py",
                                   "0123456789abcdef0123456789abcdef0123456789abcdef"
                                   "0123456789abcdef0123456789abcdef0123456789abcdef",
                                   0},
                                  {'f', "b.py", "second file", 0}};
    enum fmt all[] = {TARGZ, ZIP, TAR};
    for (size_t f = 0; f < N(all); f++) {
        b = build(all[f], bigfile, N(bigfile));
        blob cut = {b.p, b.len / 2};
        expect_reject_blob(cut, NULL, NULL, "truncated");
        /* Flip bytes in the middle: either refused or (tar without checksum over data) the same
         * layout; never a crash, never an escape. */
        for (size_t i = b.len / 3; i < b.len / 3 + 8 && i < b.len; i++)
            b.p[i] ^= 0x5a;
        char dir[PATH_MAX];
        fresh_dir(dir, sizeof dir);
        nb_err err = {0};
        (void)nb_bundle_unpack(b.p, b.len, dir, NULL, NULL, &err);
        free(b.p);
    }
    /* A zip whose stored data no longer matches its CRC (libarchive only warns). */
    struct archive *za = archive_write_new();
    CHECK(archive_write_set_format_zip(za) == ARCHIVE_OK);
    CHECK(archive_write_set_format_option(za, "zip", "compression", "store") == ARCHIVE_OK);
    size_t zcap = 1 << 16, zused = 0;
    unsigned char *zbuf = malloc(zcap);
    CHECK(archive_write_open_memory(za, zbuf, zcap, &zused) == ARCHIVE_OK);
    struct archive_entry *ze = archive_entry_new();
    archive_entry_set_pathname(ze, "app.py");
    archive_entry_set_filetype(ze, AE_IFREG);
    archive_entry_set_perm(ze, 0644);
    archive_entry_set_size(ze, 26);
    CHECK(archive_write_header(za, ze) == ARCHIVE_OK);
    CHECK(archive_write_data(za, "abcdefghijklmnopqrstuvwxyz", 26) == 26);
    archive_entry_free(ze);
    CHECK(archive_write_close(za) == ARCHIVE_OK);
    archive_write_free(za);
    unsigned char *at = memmem(zbuf, zused, "abcdefghijklmnopqrstuvwxyz", 26);
    CHECK(at != NULL);
    char zdir[PATH_MAX];
    fresh_dir(zdir, sizeof zdir);
    nb_err zerr = {0};
    CHECK(nb_bundle_unpack(zbuf, zused, zdir, NULL, NULL, &zerr) == 0); /* intact: fine */
    at[10] ^= 0x20;
    expect_reject_blob((blob){zbuf, zused}, NULL, "corrupt", "zip bad CRC");
    free(zbuf);

    /* A tar.gz whose gzip stream is cut mid-file. */
    b = build(TARGZ, bigfile, N(bigfile));
    expect_reject_blob((blob){b.p, b.len - 10}, NULL, NULL, "gzip cut");
    free(b.p);

    /* The directory must exist. */
    nb_err err = {0};
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/no-such-dir", tmpdir);
    b = build(TARGZ, good, N(good));
    CHECK(nb_bundle_unpack(b.p, b.len, missing, NULL, NULL, &err) == -1 && err.status == 500);
    free(b.p);
}

static void test_ingest(void)
{
    char blobs[PATH_MAX], code[PATH_MAX];
    snprintf(blobs, sizeof blobs, "%s/data/blobs", tmpdir);
    snprintf(code, sizeof code, "%s/data/code", tmpdir);
    blob b = build(ZIP, good, N(good));
    char sha[65];
    nb_sha256_hex(b.p, b.len, sha);

    nb_code_blob out;
    int existed = -1;
    nb_err err = {0};
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, NULL, &out, &existed, &err) == 0);
    CHECK(existed == 0);
    CHECK_STR(out.sha256, sha);
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", code, sha);
    check_good(dir, &out, b.len);
    snprintf(path, sizeof path, "%s/%s", blobs, sha);
    size_t len = 0;
    char *kept = nb_read_file(path, 1 << 20, &len);
    CHECK(kept && len == b.len && memcmp(kept, b.p, len) == 0);
    free(kept);
    CHECK(count_entries(code) == 1); /* no temporary directory left */

    /* The same bytes again: nothing is unpacked, existed says so. */
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, NULL, &out, &existed, &err) == 0);
    CHECK(existed == 1);
    CHECK_STR(out.sha256, sha);
    CHECK(out.size == (int64_t)b.len);
    CHECK(count_entries(code) == 1);
    free(b.p);

    /* Different bytes (same files as tar.gz) are a different bundle. */
    b = build(TARGZ, good, N(good));
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, NULL, &out, &existed, &err) == 0);
    CHECK(existed == 0 && strcmp(out.sha256, sha) != 0);
    CHECK(count_entries(code) == 2);
    free(b.p);

    /* Failures leave nothing behind: no temp dir, no final dir, no blob. */
    int blobs_before = count_entries(blobs);
    const ent bad[] = {{'f', "ok.py", "fine", 0}, {'f', "../escape", "evil", 0}};
    b = build(TARGZ, bad, N(bad));
    nb_err_clear(&err);
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, NULL, &out, &existed, &err) == -1);
    CHECK(err.status == 400 && strcmp(err.code, NB_E_INVALID_ARCHIVE) == 0);
    CHECK(count_entries(code) == 2);
    CHECK(count_entries(blobs) == blobs_before);
    snprintf(path, sizeof path, "%s/escape", code);
    CHECK(access(path, F_OK) == -1);
    free(b.p);
    const ent many[] = {{'f', "1", "x", 0}, {'f', "2", "x", 0}, {'f', "3", "x", 0}};
    nb_bundle_limits two = {.max_unpacked = 100, .max_files = 2};
    b = build(ZIP, many, N(many));
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, &two, &out, &existed, &err) == -1);
    CHECK(count_entries(code) == 2 && count_entries(blobs) == blobs_before);
    /* ... and the same bytes succeed later with roomier limits (no stale state). */
    CHECK(nb_bundle_ingest(blobs, code, b.p, b.len, NULL, &out, &existed, &err) == 0);
    CHECK(existed == 0 && out.files == 3);
    CHECK(count_entries(code) == 3);
    free(b.p);
    CHECK(nb_bundle_ingest(blobs, code, "junk", 4, NULL, &out, &existed, &err) == -1);
    CHECK(count_entries(code) == 3);
}

static void test_has_file(void)
{
    char dir[PATH_MAX], path[PATH_MAX];
    fresh_dir(dir, sizeof dir);
    blob b = build(TARGZ, good, N(good));
    nb_err err = {0};
    CHECK(nb_bundle_unpack(b.p, b.len, dir, NULL, NULL, &err) == 0);
    free(b.p);
    CHECK(nb_bundle_has_file(dir, "app.py") == 1);
    CHECK(nb_bundle_has_file(dir, "bin/run") == 1);
    CHECK(nb_bundle_has_file(dir, "link.py") == 1); /* in-bundle symlink to a file */
    CHECK(nb_bundle_has_file(dir, "lib/up.py") == 1);
    CHECK(nb_bundle_has_file(dir, "libdir/util.py") == 1);
    CHECK(nb_bundle_has_file(dir, "lib") == 0); /* a directory */
    CHECK(nb_bundle_has_file(dir, "libdir") == 0);
    CHECK(nb_bundle_has_file(dir, "missing.py") == 0);
    CHECK(nb_bundle_has_file(dir, "") == 0);
    /* Symlinks planted after unpacking (the bundle dir is the only trust boundary). */
    snprintf(path, sizeof path, "%s/evil.py", dir);
    CHECK(symlink("/etc/passwd", path) == 0);
    CHECK(nb_bundle_has_file(dir, "evil.py") == 0);
    snprintf(path, sizeof path, "%s/rel-evil.py", dir);
    CHECK(symlink("../../../../../../../../../../etc/passwd", path) == 0);
    CHECK(nb_bundle_has_file(dir, "rel-evil.py") == 0);
    snprintf(path, sizeof path, "%s/sibling", dir);
    CHECK(symlink("../", path) == 0);
    CHECK(nb_bundle_has_file(dir, "sibling/bundle/app.py") == 1); /* back inside: fine */
    /* A sibling directory whose name starts with the bundle's name is still outside. */
    char twin[PATH_MAX];
    snprintf(twin, sizeof twin, "%s2", dir);
    CHECK(nb_mkdir_p(twin, 0755) == 0);
    snprintf(path, sizeof path, "%s/f.py", twin);
    CHECK(nb_write_file(path, "x", 1, 0644) == 0);
    snprintf(path, sizeof path, "%s/twin.py", dir);
    CHECK(symlink("../bundle2/f.py", path) == 0);
    CHECK(nb_bundle_has_file(dir, "twin.py") == 0);
    CHECK(nb_bundle_has_file(dir, "../bundle2/f.py") == 0);
    CHECK(nb_bundle_has_file(dir, "../../../../../../etc/passwd") == 0);
}

int main(void)
{
    CHECK(mkdtemp(tmpdir) != NULL);
    test_clean_path();
    test_link_inside();
    test_unpack_good();
    test_unpack_rejects();
    test_ingest();
    test_has_file();
    CHECK(nb_rm_rf(tmpdir) == 0);
    printf("test_bundle: ok\n");
    return 0;
}
