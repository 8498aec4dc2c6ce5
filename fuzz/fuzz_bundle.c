/* Fuzzes bundle unpacking (src/code/bundle.c): arbitrary bytes as an upload, unpacked with small
 * limits into a fresh directory under /tmp, which is checked and removed afterwards.
 *
 * Properties checked besides "no crash":
 * - success or a clean refusal: 0, or -1 with a 4xx/5xx status, a code and a message;
 * - nothing is ever created next to the bundle directory (its parent holds only it);
 * - what was unpacked is only regular files (0644/0755), directories and symlinks whose targets
 *   stay inside the bundle (nb_bundle_link_inside, and resolved with realpath);
 * - on success the reported files/unpacked_size are within the limits, the bytes on disk
 *   (apparent sizes) add up to unpacked_size, and the tree holds at most max_files entries plus
 *   max_files directories made for paths.
 *
 * The seed corpus (fuzz/corpus/fuzz_bundle/) was written once by a Python script with zipfile and
 * tarfile: small valid zip, tar and tar.gz bundles (files, dirs, exec bits, in-bundle symlinks),
 * plus the shapes that must be refused ("../x", absolute paths, symlinks out, writing through a
 * symlink, a symlink chain, hard links, fifos, duplicates). */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "code/bundle.c"

#include "base/util.h"

#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static char g_root[PATH_MAX], g_real_root[PATH_MAX];
static size_t g_root_len;
static unsigned long long g_bytes;
static long g_entries;

static int check_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 0) return 0; /* the bundle directory itself */
    CHECK(strncmp(path, g_root, g_root_len) == 0 && path[g_root_len] == '/');
    const char *rel = path + g_root_len + 1;
    g_entries++;
    if (S_ISREG(st->st_mode)) {
        mode_t perm = st->st_mode & 07777;
        CHECK(perm == 0644 || perm == 0755);
        g_bytes += (unsigned long long)st->st_size;
    } else if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof target - 1);
        CHECK(n > 0);
        target[n] = 0;
        CHECK(nb_bundle_link_inside(rel, target));
        char real[PATH_MAX];
        if (realpath(path, real)) { /* dangling links are allowed; resolved ones stay inside */
            size_t rl = strlen(g_real_root);
            CHECK(strncmp(real, g_real_root, rl) == 0 && (real[rl] == '/' || real[rl] == 0));
        }
    } else {
        CHECK(S_ISDIR(st->st_mode));
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char parent[] = "/tmp/nb-fuzz-bundle-XXXXXX";
    CHECK(mkdtemp(parent) != NULL);
    snprintf(g_root, sizeof g_root, "%s/bundle", parent);
    CHECK(mkdir(g_root, 0755) == 0);
    g_root_len = strlen(g_root);
    CHECK(realpath(g_root, g_real_root) != NULL);

    nb_bundle_limits lim = {.max_unpacked = 1u << 20, .max_files = 64};
    nb_code_blob out = {0};
    nb_err err = {0};
    int rc = nb_bundle_unpack(data, size, g_root, &lim, &out, &err);
    if (rc == 0) {
        CHECK(out.size == (int64_t)size);
        CHECK(out.files >= 0 && out.files <= lim.max_files);
        CHECK(out.unpacked_size >= 0 && (unsigned long long)out.unpacked_size <= lim.max_unpacked);
    } else {
        CHECK(rc == -1 && err.status >= 400 && err.status < 600 && err.code && err.msg[0]);
        CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL);
    }
    /* Whatever happened, the tree holds only safe things (a refusal may leave a partial tree;
     * ingest removes it, but it must be as safe as a complete one). */
    g_bytes = 0;
    g_entries = 0;
    CHECK(nftw(g_root, check_one, 16, FTW_PHYS) == 0);
    if (rc == 0) {
        CHECK(g_bytes == (unsigned long long)out.unpacked_size);
        CHECK(g_entries <= out.files + lim.max_files); /* entries + implicit directories */
    }
    CHECK(nb_rm_rf(g_root) == 0);
    CHECK(rmdir(parent) == 0); /* fails (ENOTEMPTY) if anything escaped into the parent */
    return 0;
}
