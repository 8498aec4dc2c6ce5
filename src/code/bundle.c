#include "code/bundle.h"

#include "base/log.h"
#include "base/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Next segment of a path at *p, skipping empty and "." ones; NULL at the end. */
static const char *next_segment(const char **p, size_t *n)
{
    for (;;) {
        while (**p == '/')
            (*p)++;
        if (!**p) return NULL;
        const char *seg = *p;
        while (**p && **p != '/')
            (*p)++;
        *n = (size_t)(*p - seg);
        if (!(*n == 1 && seg[0] == '.')) return seg;
    }
}

static int is_dotdot(const char *seg, size_t n)
{
    return n == 2 && seg[0] == '.' && seg[1] == '.';
}

int nb_bundle_clean_path(const char *path, char *out, size_t size)
{
    if (!path || path[0] == '/' || size == 0) return -1;
    size_t o = 0, n;
    const char *p = path, *seg;
    while ((seg = next_segment(&p, &n))) {
        if (is_dotdot(seg, n)) return -1;
        if (o + (o ? 1 : 0) + n + 1 > size) return -1; /* separator, segment, NUL */
        if (o) out[o++] = '/';
        memcpy(out + o, seg, n);
        o += n;
    }
    out[o] = 0;
    return o ? 0 : 1; /* 1: the root itself ("./") */
}

int nb_bundle_link_inside(const char *at, const char *target)
{
    if (!target[0] || target[0] == '/') return 0;
    /* Depth of the directory holding the link, then walk the target's segments. ".." may only
     * lead the target: after a name, that name may itself be a symlink (to "." say), and then
     * "r/r/r/../../.." climbs out of the bundle while lexically it stays inside. Leading ".."s
     * walk up real directories (entries are never created through symlinks), and every later
     * name resolves inside by the same rule. */
    int depth = 0, named = 0;
    for (const char *p = at; *p; p++)
        if (*p == '/') depth++;
    const char *p = target, *seg;
    size_t n;
    while ((seg = next_segment(&p, &n))) {
        if (is_dotdot(seg, n)) {
            if (named || --depth < 0) return 0;
        } else {
            named = 1;
        }
    }
    return 1;
}

/* Opens (creating when asked) each directory of rel below root without following symlinks.
 * Returns the fd of the parent of rel's last segment and points *last at that segment.
 * Directories created here were never listed in the archive, so they are not entries; they
 * come out of their own budget (*dirs_left), or one deep path per entry would make millions
 * of inodes from a small upload. */
static int open_parent(int root, char *rel, const char **last, long *dirs_left, long max_dirs,
                       nb_err *err)
{
    int fd = dup(root);
    if (fd < 0) return nb_err_sys(err, errno, "dup");
    char *p = rel;
    for (;;) {
        char *slash = strchr(p, '/');
        if (!slash) break;
        *slash = 0;
        if (mkdirat(fd, p, 0755) == 0) {
            if (--*dirs_left < 0) {
                *slash = '/';
                close(fd);
                return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                  "archive makes more than %ld directories", max_dirs);
            }
        } else if (errno != EEXIST) {
            nb_err_sys(err, errno, "mkdir %s", rel);
            close(fd);
            return -1;
        }
        int next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        *slash = '/';
        close(fd);
        if (next < 0) {
            if (e == ELOOP || e == ENOTDIR)
                return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                  "archive entry '%s' passes through a symlink or file", rel);
            return nb_err_sys(err, e, "open %s", rel);
        }
        fd = next;
        p = slash + 1;
    }
    *last = p;
    return fd;
}

static int write_entry_data(struct archive *a, struct archive_entry *e, int fd, const char *name,
                            unsigned long long *total, unsigned long long max, nb_err *err)
{
    const void *block;
    size_t size;
    la_int64_t offset;
    unsigned long long end = 0; /* extent of the file so far */
    for (;;) {
        int r = archive_read_data_block(a, &block, &size, &offset);
        if (r == ARCHIVE_EOF) {
            /* A sparse file's trailing hole has no block: the entry's size says where it ends.
             * It counts against the limit like data would. */
            la_int64_t want = archive_entry_sparse_count(e) > 0 && archive_entry_size_is_set(e)
                                  ? archive_entry_size(e)
                                  : 0;
            if (want > 0 && (unsigned long long)want > end) {
                unsigned long long hole = (unsigned long long)want - end;
                if ((unsigned long long)want > max || *total + hole > max)
                    return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                      "archive unpacks to more than %llu bytes", max);
                *total += hole;
                if (ftruncate(fd, (off_t)want) < 0)
                    return nb_err_sys(err, errno, "truncate %s", name);
            }
            return 0;
        }
        /* A warning here is a bad CRC or a size that does not match the header: the bytes are
         * not what was packed, so the archive is refused rather than half-trusted. */
        if (r != ARCHIVE_OK)
            return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE, "corrupt archive at '%s': %s", name,
                              archive_error_string(a));
        /* Count the file's extent, not only the bytes in blocks: a sparse entry's block at a
         * huge offset makes a huge file (holes read back as zeros) from a few bytes. */
        if (offset < 0 || (unsigned long long)offset > max || size > max)
            return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                              "archive unpacks to more than %llu bytes", max);
        unsigned long long block_end = (unsigned long long)offset + size;
        if (block_end > end) {
            *total += block_end - end;
            end = block_end;
        }
        if (*total > max)
            return nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                              "archive unpacks to more than %llu bytes", max);
        const char *p = block;
        if (lseek(fd, offset, SEEK_SET) < 0) return nb_err_sys(err, errno, "seek %s", name);
        while (size > 0) {
            ssize_t w = write(fd, p, size);
            if (w < 0) {
                if (errno == EINTR) continue;
                return nb_err_sys(err, errno, "write %s", name);
            }
            p += w;
            size -= (size_t)w;
        }
    }
}

int nb_bundle_unpack(const void *data, size_t len, const char *dir, const nb_bundle_limits *limits,
                     nb_code_blob *out, nb_err *err)
{
    nb_bundle_limits def = {NB_BUNDLE_MAX_UNPACKED, NB_BUNDLE_MAX_FILES};
    if (!limits) limits = &def;
    int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return nb_err_sys(err, errno, "open %s", dir);
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_format_zip(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_format_tar(a);
    int rc = 0;
    unsigned long long total = 0;
    long files = 0, dirs_left = limits->max_files; /* implicit directories: see open_parent */
    if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
        rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE, "not a zip or tar archive: %s",
                        archive_error_string(a));
        goto done;
    }
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        const char *raw = archive_entry_pathname(e);
        char rel[PATH_MAX];
        int c = nb_bundle_clean_path(raw, rel, sizeof rel);
        if (c < 0) {
            rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                            "archive entry '%.200s' escapes the bundle (absolute path or '..')",
                            raw ? raw : "(null)");
            goto done;
        }
        if (++files > limits->max_files) {
            rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE, "archive has more than %ld entries",
                            limits->max_files);
            goto done;
        }
        if (c == 1) continue; /* "./" itself */
        if (archive_entry_hardlink(e)) {
            rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE, "archive entry '%s' is a hard link",
                            rel);
            goto done;
        }
        const char *last = NULL;
        int pfd = open_parent(root, rel, &last, &dirs_left, limits->max_files, err);
        if (pfd < 0) {
            rc = -1;
            goto done;
        }
        mode_t type = archive_entry_filetype(e);
        mode_t perm = (archive_entry_perm(e) & 0100) ? 0755 : 0644;
        if (type == AE_IFDIR) {
            if (mkdirat(pfd, last, 0755) < 0 && errno != EEXIST)
                rc = nb_err_sys(err, errno, "mkdir %s", rel);
        } else if (type == AE_IFLNK) {
            const char *target = archive_entry_symlink(e);
            if (!target || !nb_bundle_link_inside(rel, target))
                rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                "archive symlink '%s' points outside the bundle", rel);
            else if (symlinkat(target, pfd, last) < 0)
                rc = errno == EEXIST ? nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                                  "duplicate archive entry '%s'", rel)
                                     : nb_err_sys(err, errno, "symlink %s", rel);
        } else if (type == AE_IFREG) {
            int fd = openat(pfd, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm);
            if (fd < 0) {
                rc = errno == EEXIST ? nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                                                  "duplicate archive entry '%s'", rel)
                                     : nb_err_sys(err, errno, "create %s", rel);
            } else {
                rc = write_entry_data(a, e, fd, rel, &total, limits->max_unpacked, err);
                if (close(fd) < 0 && rc == 0) rc = nb_err_sys(err, errno, "close %s", rel);
            }
        } else {
            rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE,
                            "archive entry '%s' is not a file, directory or symlink", rel);
        }
        close(pfd);
        if (rc < 0) goto done;
    }
    if (r != ARCHIVE_EOF) {
        rc = nb_err_set(err, 400, NB_E_INVALID_ARCHIVE, "corrupt archive: %s",
                        archive_error_string(a));
        goto done;
    }
    if (out) {
        out->size = (int64_t)len;
        out->unpacked_size = (int64_t)total;
        out->files = files;
    }
done:
    archive_read_free(a);
    close(root);
    return rc;
}

int nb_bundle_ingest(const char *blob_root, const char *code_root, const void *data, size_t len,
                     const nb_bundle_limits *limits, nb_code_blob *out, int *existed, nb_err *err)
{
    char sha[65], final[PATH_MAX], tmp[PATH_MAX], blob[PATH_MAX];
    nb_sha256_hex(data, len, sha);
    memset(out, 0, sizeof *out);
    memcpy(out->sha256, sha, sizeof sha);
    out->size = (int64_t)len;
    *existed = 0;
    snprintf(final, sizeof final, "%s/%s", code_root, sha);
    struct stat st;
    if (stat(final, &st) == 0) {
        *existed = 1;
        return 0;
    }
    char rnd[17];
    nb_random_hex(rnd, 8);
    snprintf(tmp, sizeof tmp, "%s/.tmp-%s-%s", code_root, sha, rnd);
    if (nb_mkdir_p(code_root, 0755) < 0 || nb_mkdir_p(blob_root, 0700) < 0)
        return nb_err_sys(err, errno, "create code dirs");
    if (mkdir(tmp, 0755) < 0) return nb_err_sys(err, errno, "mkdir %s", tmp);
    if (nb_bundle_unpack(data, len, tmp, limits, out, err) < 0) {
        nb_rm_rf(tmp);
        return -1;
    }
    snprintf(blob, sizeof blob, "%s/%s", blob_root, sha);
    if (nb_write_file(blob, data, len, 0600) < 0) {
        int e = errno;
        nb_rm_rf(tmp);
        return nb_err_sys(err, e, "store blob");
    }
    if (rename(tmp, final) < 0) {
        int e = errno;
        nb_rm_rf(tmp);
        if (e == ENOTEMPTY || e == EEXIST) { /* a concurrent upload of the same bytes won */
            *existed = 1;
            return 0;
        }
        return nb_err_sys(err, e, "rename %s", final);
    }
    nb_info("bundle", "unpacked code %.12s files=%lld bytes=%lld", sha, (long long)out->files,
            (long long)out->unpacked_size);
    return 0;
}

int nb_bundle_has_file(const char *dir, const char *rel)
{
    char path[PATH_MAX], real[PATH_MAX], realdir[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (!realpath(path, real) || !realpath(dir, realdir)) return 0;
    size_t n = strlen(realdir);
    if (strncmp(real, realdir, n) != 0 || real[n] != '/') return 0;
    struct stat st;
    return stat(real, &st) == 0 && S_ISREG(st.st_mode);
}
