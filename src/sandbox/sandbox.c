#include "sandbox/sandbox.h"

#include "base/log.h"
#include "base/util.h"
#include "sandbox/seccomp.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static nb_sbx_status st;
static int initialized;
static char root_dir[PATH_MAX];
static char tmp_base[PATH_MAX]; /* doctor's throwaway skeleton */
static char rootfs_why[160], seccomp_why[160];

static pthread_mutex_t uid_lock = PTHREAD_MUTEX_INITIALIZER;
static uid_t uid_first = NB_SBX_UID_BASE;
static int uid_block_fd = -1;
static uint64_t uid_used[NB_SBX_UID_COUNT / 64];
static unsigned uid_cursor;

/* A child in the given namespaces that exits at once: the kernel says yes or no. */
static int probe_clone(unsigned long flags)
{
    pid_t p = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (p == 0) _exit(0);
    if (p < 0) return 0;
    int status;
    waitpid(p, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int probe_seccomp(void)
{
    nb_err err = {0};
    if (nb_seccomp_init(&err) < 0) {
        snprintf(seccomp_why, sizeof seccomp_why, "%s", err.msg);
        return 0;
    }
    pid_t p = fork();
    if (p == 0) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || nb_seccomp_load(nb_seccomp_program()))
            _exit(1);
        _exit(0);
    }
    int status = 1;
    if (p > 0) waitpid(p, &status, 0);
    if (p < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(seccomp_why, sizeof seccomp_why, "the kernel refused the filter");
        return 0;
    }
    return 1;
}

static int put(const char *dir, const char *name, const void *data, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return nb_write_file(path, data, len, 0644);
}

/* Copies a host /etc file (following symlinks) into the skeleton; missing ones are skipped. */
static int copy_etc(const char *etc, const char *name)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "/etc/%s", name);
    size_t len;
    char *data = nb_read_file(src, 4u << 20, &len);
    if (!data) return errno == ENOENT ? 0 : -1;
    int rc = put(etc, name, data, len);
    free(data);
    return rc;
}

static int write_accounts(const char *etc)
{
    size_t cap = 128 + (size_t)NB_SBX_UID_COUNT * 64;
    char *pw = malloc(cap), *gr = malloc(cap);
    if (!pw || !gr) abort();
    size_t np = (size_t)snprintf(pw, cap, "root:x:0:0:root:/root:/usr/sbin/nologin\n");
    size_t ng = (size_t)snprintf(gr, cap, "root:x:0:\n");
    for (unsigned i = 0; i < NB_SBX_UID_COUNT; i++) {
        unsigned id = uid_first + i;
        np += (size_t)snprintf(pw + np, cap - np, "sbx_user%u:x:%u:%u::/tmp:/usr/sbin/nologin\n",
                               id, id, id);
        ng += (size_t)snprintf(gr + ng, cap - ng, "sbx_user%u:x:%u:\n", id, id);
    }
    int rc = put(etc, "passwd", pw, np) < 0 || put(etc, "group", gr, ng) < 0 ? -1 : 0;
    free(pw);
    free(gr);
    return rc;
}

/* The first free block of uids on this host, held by an flock for the daemon's life (the lock
 * goes with the process, so a crashed daemon frees its block). */
static int claim_uid_block(void)
{
    /* Root's alone: a lock anyone could take would let a local user steer (or exhaust) the
     * daemons' uid ranges. */
    if (nb_mkdir_p("/run/nimbus", 0700) < 0 || chmod("/run/nimbus", 0700) < 0) return -1;
    for (unsigned k = 0; k < NB_SBX_UID_BLOCKS; k++) {
        char path[64];
        snprintf(path, sizeof path, "/run/nimbus/uids.%u", k);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) return -1;
        struct stat sb;
        if (fstat(fd, &sb) < 0 || sb.st_uid != 0 || !S_ISREG(sb.st_mode) || fchmod(fd, 0600) < 0) {
            close(fd);
            errno = EPERM;
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            uid_block_fd = fd;
            uid_first = NB_SBX_UID_BASE + k * NB_SBX_UID_COUNT;
            return 0;
        }
        close(fd);
    }
    errno = EBUSY;
    return -1;
}

uid_t nb_sbx_uid_first(void)
{
    return uid_first;
}

/* The skeleton: empty mount points, the host's /usr-merge symlinks mirrored, and a small /etc
 * of copies. Rebuilt at every start; it never holds mounts (those live only in each
 * instance's private mount namespace). */
static int build_skeleton(const char *base)
{
    snprintf(root_dir, sizeof root_dir, "%s/root", base);
    if (nb_rm_rf(root_dir) < 0 && errno != ENOENT) return -1;
    static const char *dirs[] = {
        "usr",  "etc", "var/task", "var/runtime",      "tmp",     "dev",
        "proc", "opt", "etc/ssl",  "etc/alternatives", "etc/pki", "etc/ca-certificates"};
    char p[PATH_MAX];
    for (size_t i = 0; i < NB_ARRAY_LEN(dirs); i++) {
        snprintf(p, sizeof p, "%s/%s", root_dir, dirs[i]);
        if (nb_mkdir_p(p, 0755) < 0) return -1;
    }
    static const char *tops[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
    for (size_t i = 0; i < NB_ARRAY_LEN(tops); i++) {
        char host[64], target[PATH_MAX];
        snprintf(host, sizeof host, "/%s", tops[i]);
        snprintf(p, sizeof p, "%s/%s", root_dir, tops[i]);
        struct stat sb;
        if (lstat(host, &sb) < 0) continue;
        if (S_ISLNK(sb.st_mode)) {
            ssize_t n = readlink(host, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = 0;
            if (symlink(target, p) < 0) return -1;
        } else if (S_ISDIR(sb.st_mode) && mkdir(p, 0755) < 0) {
            return -1;
        }
    }
    /* Node resolves `require('nimbus')` through /node_modules: the helper package lives in the
     * runtime directory (docs/internals/calls.md); dangling for runtimes without it. */
    snprintf(p, sizeof p, "%s/node_modules", root_dir);
    if (symlink("/var/runtime/node_modules", p) < 0) return -1;
    char etc[PATH_MAX];
    snprintf(etc, sizeof etc, "%s/etc", root_dir);
    static const char hosts[] = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
    static const char *copies[] = {"resolv.conf", "nsswitch.conf", "ld.so.cache", "os-release",
                                   "protocols",   "services",      "mime.types"};
    if (put(etc, "hosts", hosts, sizeof hosts - 1) < 0 || write_accounts(etc) < 0) return -1;
    for (size_t i = 0; i < NB_ARRAY_LEN(copies); i++)
        if (copy_etc(etc, copies[i]) < 0) return -1;
    return 0;
}

void nb_sbx_init(const char *data_dir)
{
    if (initialized) return;
    initialized = 1;
    const char *env = getenv("NIMBUS_SANDBOX");
    if (env && strcmp(env, "off") == 0) {
        st.disabled = 1;
        return;
    }
    st.namespaces =
        probe_clone(CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC);
    st.userns = probe_clone(CLONE_NEWUSER);
    st.seccomp = probe_seccomp();
    char base[PATH_MAX];
    if (data_dir) {
        snprintf(base, sizeof base, "%s/sandbox", data_dir);
    } else {
        snprintf(tmp_base, sizeof tmp_base, "/tmp/nimbus-doctor-XXXXXX");
        if (!mkdtemp(tmp_base)) tmp_base[0] = 0;
        snprintf(base, sizeof base, "%s", tmp_base);
    }
    if (geteuid() != 0) {
        snprintf(rootfs_why, sizeof rootfs_why, "not running as root");
    } else if (data_dir && claim_uid_block() < 0) {
        snprintf(rootfs_why, sizeof rootfs_why, "no free block of sandbox uids in /run/nimbus: %s",
                 strerror(errno));
    } else if (!st.namespaces) {
        snprintf(rootfs_why, sizeof rootfs_why, "needs mount namespaces");
    } else if (!base[0] || nb_mkdir_p(base, 0755) < 0 || build_skeleton(base) < 0) {
        snprintf(rootfs_why, sizeof rootfs_why, "cannot build the root skeleton in %s: %s",
                 base[0] ? base : "/tmp", strerror(errno));
    } else {
        st.rootfs = 1;
        st.uid_drop = 1;
    }
    st.cgroup = nb_cg_init(NULL);
}

const nb_sbx_status *nb_sbx_get(void)
{
    return &st;
}

const char *nb_sbx_root(void)
{
    return root_dir;
}

typedef struct row {
    const char *layer;
    int ok;
    char detail[256];
} row;

static int rows(row out[6])
{
    int n = 0;
    row *r = &out[n++];
    r->layer = "namespaces";
    r->ok = st.namespaces;
    snprintf(r->detail, sizeof r->detail, "%s",
             st.namespaces ? "own pid, mount, network, uts and ipc namespaces per instance"
                           : "MISSING: instances share the host's processes, mounts and network");
    r = &out[n++];
    r->layer = "root";
    r->ok = st.rootfs;
    if (st.rootfs)
        snprintf(r->detail, sizeof r->detail,
                 "pivot_root into a read-only root: /usr, a small /etc, code at /var/task, "
                 "private tmpfs /tmp, minimal /dev, masked /proc");
    else
        snprintf(r->detail, sizeof r->detail, "MISSING (%s): functions see the host's files",
                 rootfs_why);
    r = &out[n++];
    r->layer = "user";
    r->ok = st.uid_drop;
    if (st.uid_drop)
        snprintf(r->detail, sizeof r->detail,
                 "one unprivileged uid per instance (from %u), every capability dropped, "
                 "no_new_privs, clean environment",
                 (unsigned)uid_first);
    else
        snprintf(r->detail, sizeof r->detail, "MISSING: functions run as the daemon's user");
    r = &out[n++];
    r->layer = "seccomp";
    r->ok = st.seccomp;
    if (st.seccomp)
        snprintf(r->detail, sizeof r->detail,
                 "%d system calls denied (Docker's default set and more), foreign ABIs killed",
                 nb_seccomp_rule_count());
    else
        snprintf(r->detail, sizeof r->detail, "MISSING (%s): every system call is allowed",
                 seccomp_why);
    r = &out[n++];
    r->layer = "cgroups";
    r->ok = st.cgroup != NB_CG_NONE;
    snprintf(r->detail, sizeof r->detail, "%s%s", nb_cg_describe(),
             st.cgroup != NB_CG_NONE ? ""
                                     : "; MISSING: rlimits only (open files, file size, "
                                       "processes per uid); memory and CPU are not limited");
    r = &out[n++];
    r->layer = "userns";
    r->ok = 1; /* informational: not used on purpose */
    snprintf(r->detail, sizeof r->detail, "%s",
             st.userns ? "available, not used: the uid drop plus seccomp gives the same "
                         "separation without exposing the kernel's user-namespace surface"
                       : "unavailable (not needed)");
    return n;
}

int nb_sbx_report(FILE *f)
{
    row r[6];
    int n = rows(r), all = 1;
    fprintf(f, "%-11s %-8s %s\n", "LAYER", "STATUS", "DETAIL");
    if (st.disabled) {
        fprintf(f, "%-11s %-8s %s\n", "sandbox", "OFF",
                "NIMBUS_SANDBOX=off: plain processes, no isolation at all");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        fprintf(f, "%-11s %-8s %s\n", r[i].layer, r[i].ok ? "ok" : "missing", r[i].detail);
        all &= r[i].ok;
    }
    return all;
}

const char *nb_sbx_fatal(void)
{
    static char why[256];
    if (st.disabled || geteuid() != 0 || st.uid_drop) return NULL;
    snprintf(why, sizeof why,
             "cannot sandbox functions (%s) and will not run them as root; fix that, or set "
             "NIMBUS_SANDBOX=off for trusted code only",
             rootfs_why[0] ? rootfs_why : "the root layer is missing");
    return why;
}

const char *nb_sbx_summary(void)
{
    if (st.disabled) return "off";
    if (st.namespaces && st.rootfs && st.uid_drop && st.seccomp && st.cgroup != NB_CG_NONE)
        return "full";
    return "partial";
}

void nb_sbx_log(void)
{
    if (st.disabled) {
        nb_warn("sandbox", "NIMBUS_SANDBOX=off: functions run as plain processes with no "
                           "isolation at all; never use this with untrusted code");
        return;
    }
    row r[6];
    int n = rows(r);
    for (int i = 0; i < n; i++) {
        if (r[i].ok)
            nb_info("sandbox", "%s: %s", r[i].layer, r[i].detail);
        else
            nb_warn("sandbox", "%s: %s", r[i].layer, r[i].detail);
    }
}

uid_t nb_sbx_uid_acquire(void)
{
    uid_t uid = (uid_t)-1;
    pthread_mutex_lock(&uid_lock);
    for (unsigned n = 0; n < NB_SBX_UID_COUNT; n++) {
        /* Next-fit: a uid is not handed out again right after its release, so nothing of the
         * previous holder can still be around when it is. */
        unsigned i = (uid_cursor + n) % NB_SBX_UID_COUNT;
        if (!(uid_used[i / 64] & (1ull << (i % 64)))) {
            uid_used[i / 64] |= 1ull << (i % 64);
            uid_cursor = i + 1;
            uid = uid_first + i;
            break;
        }
    }
    pthread_mutex_unlock(&uid_lock);
    return uid;
}

void nb_sbx_uid_release(uid_t uid)
{
    if (uid < uid_first || uid >= uid_first + NB_SBX_UID_COUNT) return;
    unsigned i = uid - uid_first;
    pthread_mutex_lock(&uid_lock);
    uid_used[i / 64] &= ~(1ull << (i % 64));
    pthread_mutex_unlock(&uid_lock);
}

void nb_sbx_shutdown(void)
{
    nb_cg_shutdown();
    if (tmp_base[0]) nb_rm_rf(tmp_base);
    if (uid_block_fd >= 0) close(uid_block_fd);
    uid_block_fd = -1;
}
