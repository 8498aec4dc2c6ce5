/* Packing a directory into an in-memory tar.gz for POST /v1/code.
 *
 * The walk is done with *at() calls on directory fds and O_NOFOLLOW, so a symlink anywhere in
 * the tree is stored as a link and never followed, and a rename during the walk cannot send us
 * outside the tree. Output must be reproducible (see cli.h), hence the sorted names and the
 * zeroed owners and times. */
#include "cli/cli.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096

typedef struct pack {
    struct archive *ar;
    nb_buf *out;
    int full; /* the output hit its cap */
    nb_err *err;
    char path[PATH_CAP]; /* relative path of the entry being written */
} pack;

static la_ssize_t on_write(struct archive *ar, void *ud, const void *buf, size_t len)
{
    pack *p = ud;
    if (nb_buf_append(p->out, buf, len) < 0) {
        p->full = 1;
        archive_set_error(ar, EFBIG, "bundle over %zu bytes", p->out->max);
        return -1;
    }
    return (la_ssize_t)len;
}

static int archive_fail(pack *p, const char *what)
{
    if (p->full)
        return nb_err_set(p->err, 413, NB_E_TOO_LARGE,
                          "the packed bundle is over %zu bytes (the upload limit)", p->out->max);
    return nb_err_set(p->err, 500, NB_E_INTERNAL, "%s %s: %s", what, p->path,
                      archive_error_string(p->ar));
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names in the directory open at fd (which stays open). */
static char **list_dir(int fd, size_t *count)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) return NULL;
    DIR *d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) goto fail;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) goto fail;
        n++;
        errno = 0;
    }
    if (errno) goto fail;
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names);
    *count = n;
    if (!names) names = calloc(1, sizeof *names); /* empty dir: still a valid answer */
    return names;
fail : {
    int e2 = errno ? errno : ENOMEM;
    closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    errno = e2;
    return NULL;
}
}

static struct archive_entry *new_entry(const char *path, mode_t type, mode_t perm)
{
    struct archive_entry *e = archive_entry_new();
    if (!e) return NULL;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, 0, 0);
    return e;
}

static int write_file(pack *p, int dirfd, const char *name, const struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return nb_err_sys(p->err, errno, "open %s", p->path);
    struct archive_entry *e = new_entry(p->path, AE_IFREG, (st->st_mode & 0111) ? 0755 : 0644);
    if (!e) {
        close(fd);
        return nb_err_set(p->err, 500, NB_E_INTERNAL, "out of memory");
    }
    archive_entry_set_size(e, st->st_size);
    int rc = archive_write_header(p->ar, e) == ARCHIVE_OK ? 0 : archive_fail(p, "write");
    archive_entry_free(e);

    /* Exactly st_size bytes go in: the header promised that many. A file that shrinks under us
     * is zero-padded by libarchive; one that grows is cut. */
    char buf[65536];
    off_t left = st->st_size;
    while (rc == 0 && left > 0) {
        ssize_t r = read(fd, buf, left < (off_t)sizeof buf ? (size_t)left : sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = nb_err_sys(p->err, errno, "read %s", p->path);
            break;
        }
        if (r == 0) break;
        if (archive_write_data(p->ar, buf, (size_t)r) < 0) rc = archive_fail(p, "write");
        left -= r;
    }
    close(fd);
    return rc;
}

static int write_symlink(pack *p, int dirfd, const char *name)
{
    char target[PATH_CAP];
    ssize_t n = readlinkat(dirfd, name, target, sizeof target - 1);
    if (n < 0) return nb_err_sys(p->err, errno, "readlink %s", p->path);
    target[n] = 0;
    struct archive_entry *e = new_entry(p->path, AE_IFLNK, 0777);
    if (!e) return nb_err_set(p->err, 500, NB_E_INTERNAL, "out of memory");
    archive_entry_set_symlink(e, target);
    int rc = archive_write_header(p->ar, e) == ARCHIVE_OK ? 0 : archive_fail(p, "write");
    archive_entry_free(e);
    return rc;
}

/* Writes the contents of the directory open at dirfd; p->path holds its relative path
 * ("" for the root) and is restored before returning. */
static int pack_tree(pack *p, int dirfd)
{
    size_t n = 0;
    char **names = list_dir(dirfd, &n);
    if (!names) return nb_err_sys(p->err, errno, "read directory %s", p->path[0] ? p->path : ".");
    size_t base = strlen(p->path);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int w = snprintf(p->path + base, PATH_CAP - base, "%s%s", base ? "/" : "", names[i]);
        if (w < 0 || (size_t)w >= PATH_CAP - base) {
            p->path[base] = 0;
            rc = nb_err_set(p->err, 400, NB_E_BAD_REQUEST, "path too long under %s", p->path);
            break;
        }
        struct stat st;
        if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = nb_err_sys(p->err, errno, "stat %s", p->path);
        } else if (S_ISREG(st.st_mode)) {
            rc = write_file(p, dirfd, names[i], &st);
        } else if (S_ISLNK(st.st_mode)) {
            rc = write_symlink(p, dirfd, names[i]);
        } else if (S_ISDIR(st.st_mode)) {
            struct archive_entry *e = new_entry(p->path, AE_IFDIR, 0755);
            if (!e) {
                rc = nb_err_set(p->err, 500, NB_E_INTERNAL, "out of memory");
                break;
            }
            rc = archive_write_header(p->ar, e) == ARCHIVE_OK ? 0 : archive_fail(p, "write");
            archive_entry_free(e);
            int sub = -1;
            if (rc == 0) {
                sub = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) rc = nb_err_sys(p->err, errno, "open directory %s", p->path);
            }
            if (rc == 0) rc = pack_tree(p, sub);
            if (sub >= 0) close(sub);
        } else {
            rc = nb_err_set(p->err, 400, NB_E_INVALID_ARCHIVE,
                            "%s is not a regular file, directory or symlink", p->path);
        }
        p->path[base] = 0;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int nb_cli_pack_dir(const char *dir, nb_buf *out, nb_err *err)
{
    pack p = {.out = out, .err = err};
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return nb_err_sys(err, errno, "open directory %s", dir);
    p.ar = archive_write_new();
    if (!p.ar) {
        close(fd);
        return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
    }
    int rc = 0;
    /* No timestamp in the gzip header either: same tree, same bytes. */
    if (archive_write_add_filter_gzip(p.ar) != ARCHIVE_OK ||
        archive_write_set_filter_option(p.ar, "gzip", "timestamp", NULL) != ARCHIVE_OK ||
        archive_write_set_format_pax_restricted(p.ar) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(p.ar, 1) != ARCHIVE_OK ||
        archive_write_open(p.ar, &p, NULL, on_write, NULL) != ARCHIVE_OK)
        rc = archive_fail(&p, "start archive");
    if (rc == 0) rc = pack_tree(&p, fd);
    if (archive_write_close(p.ar) != ARCHIVE_OK && rc == 0) rc = archive_fail(&p, "finish archive");
    archive_write_free(p.ar);
    close(fd);
    if (rc < 0) nb_buf_reset(out);
    return rc;
}
