/* nb_cg: cgroup v2 / v1 detection, the daemon's parent groups and the slot pool
 * (docs/internals/cgroup.md). */
#include "sandbox/cgroup.h"

#include "base/log.h"
#include "base/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SPARES_MAX     64
#define CPU_MB         1769 /* memory that buys one vCPU, as on Lambda */
#define CFS_PERIOD_US  100000
#define KILL_ROUNDS    100
#define RMDIR_ROUNDS   50
#define PROCS_FILE_MAX (4u << 20)

enum { C_MEMORY = 1, C_PIDS = 2, C_CPU = 4, C_CPUACCT = 8 };
static const char *const ctrl_names[] = {"memory", "pids", "cpu", "cpuacct"};
#define NCTRL 4

/* Where CPU time comes from: v1 cpuacct.usage (ns), v2 cpu.stat usage_usec (there even
 * without the cpu controller). */
enum { ACCT_NONE, ACCT_CPUACCT, ACCT_CPUSTAT };

typedef struct hier {
    unsigned ctrl;       /* the controllers of interest this hierarchy carries */
    char dir[PATH_MAX];  /* the daemon's parent group in it: .../<tag> */
    char base[PATH_MAX]; /* the group the parent was created in */
} hier;

struct nb_cg_slot {
    nb_cg_slot *prev, *next;
    unsigned id;
    int made;     /* its groups exist */
    int used;     /* a tenant ran in it: the kernel's peak no longer starts at this acquire */
    int peak_new; /* v2: no tenant before this one, so memory.peak is this tenant's */
    int gone;     /* removed by nb_cg_shutdown while still acquired */
    int peak_fd;  /* v1: memory.max_usage_in_bytes kept open; v2: memory.peak reset through this fd
                     (kernel >= 6.12); else -1 */
    int oom_base; /* -1 when the kernel does not count OOM kills */
    int64_t cpu_base;
    int cpu_fd; /* cpu.stat / cpuacct.usage kept open once read (read per invocation); -1 */
    char path[PATH_MAX]; /* in the first hierarchy */
};

static struct {
    pthread_mutex_t mu;
    int inited;
    nb_cg_mode mode;
    char desc[1024];
    hier h[NB_CG_MAX_JOIN];
    int nh;
    int mem_i, pids_i, cpu_i, acct_i; /* indexes into h, -1 when absent */
    int acct;
    /* v2 delegation: see v2_parent() */
    int moved;             /* the daemon moved itself into <tag>/daemon */
    unsigned home_enabled; /* controllers we enabled in h[0].base's subtree_control */
    unsigned parent_enabled;
    nb_cg_slot *spares;
    int nspares;
    nb_cg_slot *busy;
    unsigned next_id;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .desc = "none: not initialised", .cpu_i = -1, .acct_i = -1};

/* ---- small file helpers: every one returns 0 / a length, or -errno ---- */

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

static void appendf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t size, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, size - n, fmt, ap);
    va_end(ap);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static int cg_write(const char *dir, const char *file, const char *val)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = strlen(val);
    ssize_t w;
    do
        w = write(fd, val, len);
    while (w < 0 && errno == EINTR);
    int e = w < 0 ? errno : (size_t)w == len ? 0 : EIO;
    close(fd);
    return -e;
}

static int cg_writef(const char *dir, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cg_writef(const char *dir, const char *file, const char *fmt, ...)
{
    char val[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    return cg_write(dir, file, val);
}

static int cg_read(const char *dir, const char *file, char *buf, size_t size)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t r = read(fd, buf + len, size - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return (int)len;
}

static int cg_read_i64(const char *dir, const char *file, int64_t *out)
{
    char buf[64];
    int n = cg_read(dir, file, buf, sizeof buf);
    if (n < 0) return n;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf) return -EINVAL;
    *out = v;
    return 0;
}

/* Finds "key N" in a flat-keyed file (memory.events, memory.oom_control, cpu.stat). */
static int parse_key(const char *text, const char *key, int64_t *out)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ') {
            *out = strtoll(p + kl + 1, NULL, 10);
            return 0;
        }
    }
    return -ENODATA;
}

static int cg_read_key(const char *dir, const char *file, const char *key, int64_t *out)
{
    char buf[4096];
    int n = cg_read(dir, file, buf, sizeof buf);
    return n < 0 ? n : parse_key(buf, key, out);
}

/* rmdir of a memory group can fail with EBUSY for a moment after its last process exited
 * (the exit is not fully accounted yet), so it is retried briefly. */
static int rmdir_retry(const char *path)
{
    for (int i = 0;; i++) {
        if (rmdir(path) == 0 || errno == ENOENT) return 0;
        if (errno != EBUSY || i == RMDIR_ROUNDS) return -errno;
        sleep_ms(2);
    }
}

/* ---- killing: v2 cgroup.kill, or a loop over cgroup.procs ---- */

typedef struct pidlist {
    pid_t *v;
    size_t n;
} pidlist;

static int read_pids(const char *dir, pidlist *out)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    out->v = NULL;
    out->n = 0;
    size_t len;
    char *text = nb_read_file(path, PROCS_FILE_MAX, &len);
    if (!text) return -errno;
    size_t cap = 0;
    for (char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            pid_t *nv = realloc(out->v, cap * sizeof *nv);
            if (!nv) abort();
            out->v = nv;
        }
        out->v[out->n++] = (pid_t)v;
        p = end;
        while (*p == '\n')
            p++;
    }
    free(text);
    return (int)out->n;
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static int no_pidfd; /* set once by any thread, hence the atomics */

/* SIGKILLs the processes listed in dir/cgroup.procs; returns how many were listed.
 * A pid read from the file may be reaped and reused by an unrelated process before kill()
 * reaches it. With pidfds that cannot hit a stranger: the pidfd pins the process holding the
 * pid when it was opened, and finding the pid in a second read of the list means that process
 * was still a member then (if it died in between, the pidfd signal fails harmlessly and a
 * group member that took over the pid is met in the next round). */
static int kill_listed(const char *dir)
{
    pidlist a;
    int n = read_pids(dir, &a);
    if (n <= 0) return n;
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
    if (!__atomic_load_n(&no_pidfd, __ATOMIC_RELAXED)) {
        int *fds = malloc(a.n * sizeof *fds);
        if (!fds) abort();
        for (size_t i = 0; i < a.n; i++) {
            fds[i] = (int)syscall(SYS_pidfd_open, a.v[i], 0);
            if (fds[i] < 0 && errno == ENOSYS) __atomic_store_n(&no_pidfd, 1, __ATOMIC_RELAXED);
            /* out of fds and the like: a plain kill beats leaving it alive */
            if (fds[i] < 0 && errno != ESRCH) fds[i] = -2;
        }
        pidlist b;
        if (read_pids(dir, &b) > 0) {
            qsort(b.v, b.n, sizeof *b.v, cmp_pid);
            for (size_t i = 0; i < a.n; i++) {
                if (fds[i] == -1 || !bsearch(&a.v[i], b.v, b.n, sizeof *b.v, cmp_pid)) continue;
                if (fds[i] >= 0)
                    syscall(SYS_pidfd_send_signal, fds[i], SIGKILL, NULL, 0);
                else
                    kill(a.v[i], SIGKILL);
            }
            free(b.v);
        }
        for (size_t i = 0; i < a.n; i++)
            if (fds[i] >= 0) close(fds[i]);
        free(fds);
        if (!__atomic_load_n(&no_pidfd, __ATOMIC_RELAXED)) {
            free(a.v);
            return n;
        }
    }
#endif
    for (size_t i = 0; i < a.n; i++)
        kill(a.v[i], SIGKILL);
    free(a.v);
    return n;
}

static int count_procs(const char *const *dirs, int ndirs)
{
    int most = -1;
    for (int i = 0; i < ndirs; i++) {
        pidlist l;
        int n = read_pids(dirs[i], &l);
        free(l.v);
        if (n > most) most = n;
    }
    return most;
}

/* Kills everything in the given groups (one per hierarchy) and waits until they are empty.
 * The loop repeats because a process can fork between the read and the kill; new children of
 * a process with SIGKILL pending are refused by the kernel, so this converges in a few rounds.
 * Bounded (about half a second) because a process stuck in uninterruptible sleep dies late. */
static int kill_groups(const char *const *dirs, int ndirs, int v2)
{
    int use_kill_file = v2 && cg_write(dirs[0], "cgroup.kill", "1") == 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        int listed = 0, readable = 0;
        for (int i = 0; i < ndirs; i++) {
            int n = use_kill_file ? count_procs(&dirs[i], 1) : kill_listed(dirs[i]);
            if (n >= 0) readable = 1;
            if (n > 0) listed += n;
        }
        if (!readable) return -1;
        if (!listed) return 0;
        sleep_ms(round < 10 ? 1 : 5);
    }
    return count_procs(dirs, ndirs) == 0 ? 0 : -1;
}

/* ---- slots ---- */

static void slot_dir(const nb_cg_slot *s, int i, char *out, size_t size)
{
    snprintf(out, size, "%s/s%u", g.h[i].dir, s->id);
}

typedef struct slot_dirs {
    char buf[NB_CG_MAX_JOIN][PATH_MAX + 16];
    const char *p[NB_CG_MAX_JOIN];
} slot_dirs;

static void slot_dirs_of(const nb_cg_slot *s, slot_dirs *d)
{
    for (int i = 0; i < g.nh; i++) {
        slot_dir(s, i, d->buf[i], sizeof d->buf[i]);
        d->p[i] = d->buf[i];
    }
}

static int slot_kill(nb_cg_slot *s)
{
    slot_dirs d;
    slot_dirs_of(s, &d);
    return kill_groups(d.p, g.nh, g.mode == NB_CG_V2);
}

/* Kills what is left and removes the slot's groups. 0 when all are gone. */
static int slot_destroy(nb_cg_slot *s)
{
    if (s->peak_fd >= 0) close(s->peak_fd);
    s->peak_fd = -1;
    if (s->cpu_fd >= 0) close(s->cpu_fd);
    s->cpu_fd = -1;
    slot_kill(s);
    slot_dirs d;
    slot_dirs_of(s, &d);
    int rc = 0;
    for (int i = 0; i < g.nh; i++) {
        int r = rmdir_retry(d.p[i]);
        if (r < 0) {
            nb_warn("cgroup", "cannot remove %s: %s; left behind", d.p[i], strerror(-r));
            rc = -1;
        }
    }
    return rc;
}

static nb_cg_slot *slot_new_locked(void)
{
    nb_cg_slot *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->id = g.next_id++;
    s->peak_fd = -1;
    s->cpu_fd = -1;
    slot_dir(s, 0, s->path, sizeof s->path);
    return s;
}

static int slot_mkdir(nb_cg_slot *s, nb_err *err)
{
    slot_dirs d;
    slot_dirs_of(s, &d);
    for (int i = 0; i < g.nh; i++) {
        if (mkdir(d.p[i], 0755) == 0) continue;
        nb_err_sys(err, errno, "cgroup: mkdir %s", d.p[i]);
        while (--i >= 0)
            rmdir(d.p[i]);
        return -1;
    }
    s->made = 1;
    return 0;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int warned_cpu;

/* The CPU limits are best effort: a parent with a smaller quota than ours (EINVAL) or a kernel
 * without CFS bandwidth control must not cost the instance its memory and pids limits. */
static void cpu_failed(const char *dir, const char *file, int r)
{
    if (__atomic_exchange_n(&warned_cpu, 1, __ATOMIC_RELAXED)) return;
    nb_warn("cgroup", "cannot set %s/%s: %s; CPU not capped (reported once)", dir, file,
            strerror(-r));
}

static int apply_v1(const char *mem, const char *pids, const char *cpu, const nb_cg_limits *lim,
                    nb_err *err)
{
    int64_t bytes = (int64_t)lim->memory_mb << 20, cur;
    const char *file = "memory.limit_in_bytes", *memsw = "memory.memsw.limit_in_bytes";
    int r = cg_read_i64(mem, file, &cur);
    if (r < 0) goto fail;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", mem, memsw);
    int have_memsw = access(path, F_OK) == 0; /* absent without swap accounting */
    /* The kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step, so
     * memsw moves first when the limit rises (a reused slot) and last when it falls. */
    if (have_memsw && bytes > cur) {
        file = memsw;
        if ((r = cg_writef(mem, file, "%lld", (long long)bytes)) < 0) goto fail;
        have_memsw = 0;
    }
    file = "memory.limit_in_bytes";
    if ((r = cg_writef(mem, file, "%lld", (long long)bytes)) < 0) goto fail;
    if (have_memsw) {
        file = memsw;
        if ((r = cg_writef(mem, file, "%lld", (long long)bytes)) < 0) goto fail;
    }
    /* Without swap accounting (no memsw files) this at least keeps anonymous memory in RAM;
     * old kernels refuse it below a hierarchical parent, which changes nothing that matters. */
    cg_write(mem, "memory.swappiness", "0");
    file = "pids.max";
    if ((r = cg_writef(pids, file, "%d", lim->pids_max)) < 0) goto fail_pids;
    if (cpu) {
        int64_t shares = (int64_t)lim->memory_mb * 1024 / CPU_MB;
        shares = shares < 2 ? 2 : shares > 262144 ? 262144 : shares;
        int64_t ncpu = ceil_div(lim->memory_mb, CPU_MB);
        if (ncpu < 1) ncpu = 1;
        if ((r = cg_writef(cpu, "cpu.shares", "%lld", (long long)shares)) < 0)
            cpu_failed(cpu, "cpu.shares", r);
        if ((r = cg_writef(cpu, "cpu.cfs_period_us", "%d", CFS_PERIOD_US)) < 0)
            cpu_failed(cpu, "cpu.cfs_period_us", r);
        else if ((r = cg_writef(cpu, "cpu.cfs_quota_us", "%lld",
                                (long long)(ncpu * CFS_PERIOD_US))) < 0)
            cpu_failed(cpu, "cpu.cfs_quota_us", r);
    }
    return 0;
fail:
    return nb_err_sys(err, -r, "cgroup: write %s/%s", mem, file);
fail_pids:
    return nb_err_sys(err, -r, "cgroup: write %s/%s", pids, file);
}

static int apply_v2(const char *dir, const nb_cg_limits *lim, nb_err *err)
{
    int64_t bytes = (int64_t)lim->memory_mb << 20;
    const char *file = "memory.max";
    int r = cg_writef(dir, file, "%lld", (long long)bytes);
    if (r < 0) goto fail;
    /* memory.swap.max is absent when swap accounting is off; nothing to turn off then. */
    file = "memory.swap.max";
    if ((r = cg_write(dir, file, "0")) < 0 && r != -ENOENT) goto fail;
    file = "pids.max";
    if ((r = cg_writef(dir, file, "%d", lim->pids_max)) < 0) goto fail;
    if (g.cpu_i >= 0) {
        int64_t weight = (int64_t)lim->memory_mb * 100 / CPU_MB;
        weight = weight < 1 ? 1 : weight > 10000 ? 10000 : weight;
        int64_t ncpu = ceil_div(lim->memory_mb, CPU_MB);
        if (ncpu < 1) ncpu = 1;
        if ((r = cg_writef(dir, "cpu.weight", "%lld", (long long)weight)) < 0)
            cpu_failed(dir, "cpu.weight", r);
        if ((r = cg_writef(dir, "cpu.max", "%lld %d", (long long)(ncpu * CFS_PERIOD_US),
                           CFS_PERIOD_US)) < 0)
            cpu_failed(dir, "cpu.max", r);
    }
    return 0;
fail:
    return nb_err_sys(err, -r, "cgroup: write %s/%s", dir, file);
}

static int slot_apply(nb_cg_slot *s, const nb_cg_limits *lim, nb_err *err)
{
    slot_dirs d;
    slot_dirs_of(s, &d);
    if (g.mode == NB_CG_V2) return apply_v2(d.p[0], lim, err);
    return apply_v1(d.p[g.mem_i], d.p[g.pids_i], g.cpu_i >= 0 ? d.p[g.cpu_i] : NULL, lim, err);
}

static int read_oom(nb_cg_slot *s, int64_t *v)
{
    char dir[PATH_MAX + 16];
    slot_dir(s, g.mem_i, dir, sizeof dir);
    return cg_read_key(dir, g.mode == NB_CG_V2 ? "memory.events" : "memory.oom_control", "oom_kill",
                       v);
}

static int read_cpu_usec(nb_cg_slot *s, int64_t *v)
{
    if (g.acct == ACCT_NONE) return -ENOENT;
    int is_stat = g.acct == ACCT_CPUSTAT;
    /* Metering reads this twice per invocation: one pread on a kept fd, not a path walk. The
     * file is the slot's for its whole life (reuse included), so the fd stays valid until
     * slot_destroy. */
    if (s->cpu_fd >= 0) {
        char buf[1024];
        ssize_t n = pread(s->cpu_fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            if (is_stat) return parse_key(buf, "usage_usec", v);
            *v = strtoll(buf, NULL, 10) / 1000;
            return 0;
        }
    }
    char dir[PATH_MAX + 16];
    slot_dir(s, g.acct_i, dir, sizeof dir);
    if (s->cpu_fd < 0) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", dir, is_stat ? "cpu.stat" : "cpuacct.usage");
        s->cpu_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    int r = is_stat ? cg_read_key(dir, "cpu.stat", "usage_usec", v)
                    : cg_read_i64(dir, "cpuacct.usage", v);
    if (r == 0 && !is_stat) *v /= 1000;
    return r;
}

/* OOM and CPU counters are baselines, not resets: memory.oom_control, memory.events and
 * cpu.stat cannot be reset. Peak memory can, and is. */
static void slot_baseline(nb_cg_slot *s)
{
    char mem[PATH_MAX + 16];
    slot_dir(s, g.mem_i, mem, sizeof mem);
    if (g.mode == NB_CG_V1) {
        cg_write(mem, "memory.max_usage_in_bytes", "0");
        /* Read after every invocation (REPORT's Max Memory Used): one pread on a kept fd, not a
         * path walk through cgroupfs each time. */
        if (s->peak_fd < 0) {
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/memory.max_usage_in_bytes", mem);
            s->peak_fd = open(path, O_RDONLY | O_CLOEXEC);
        }
    } else if (s->used) {
        /* Since 6.12 a write to memory.peak restarts the peak for reads through the same fd;
         * older kernels refuse the write and only a fresh group's peak is meaningful. */
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/memory.peak", mem);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && write(fd, "reset\n", 6) == 6)
            s->peak_fd = fd;
        else if (fd >= 0)
            close(fd);
    }
    s->peak_new = !s->used;
    int64_t v;
    s->oom_base = read_oom(s, &v) == 0 ? (int)v : -1;
    s->cpu_base = read_cpu_usec(s, &v) == 0 ? v : 0;
}

static void list_push(nb_cg_slot **head, nb_cg_slot *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
}

static void list_unlink(nb_cg_slot **head, nb_cg_slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* Returns s configured (on no list), or NULL with err set and s freed. Takes g.mu only to
 * number a replacement slot (the caller holds it during init): the filesystem work needs no
 * lock because the hierarchy paths are fixed between init and shutdown and a slot has one
 * owner. */
static nb_cg_slot *get_slot(nb_cg_slot *s, const nb_cg_limits *lim, nb_err *err, int locked)
{
    nb_err e = {0};
    for (;;) {
        int spare = s->made;
        if (!spare && slot_mkdir(s, &e) < 0) break;
        if (slot_apply(s, lim, &e) == 0) {
            slot_baseline(s);
            return s;
        }
        if (slot_destroy(s) < 0 || !spare) break;
        /* A spare may refuse a lower limit (v1 EBUSY: charges it cannot reclaim); a new group
         * has none. */
        nb_warn("cgroup", "spare %s refused the limits (%s); replacing it", s->path, e.msg);
        free(s);
        if (!locked) pthread_mutex_lock(&g.mu);
        s = slot_new_locked();
        if (!locked) pthread_mutex_unlock(&g.mu);
    }
    free(s);
    if (err) *err = e;
    return NULL;
}

/* ---- detection ---- */

typedef struct mnt {
    char dir[PATH_MAX];
    char root[PATH_MAX]; /* the hierarchy path mounted there (not "/" under bind mounts) */
    unsigned ctrl;
} mnt;

typedef struct mounts {
    mnt v1[16];
    int nv1;
    mnt v2;
    int have_v2;
} mounts;

static void unescape(char *s)
{
    /* mountinfo writes space, tab, newline and backslash as \ooo */
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

static unsigned ctrl_bits(const char *list)
{
    unsigned bits = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    char *save;
    for (char *t = strtok_r(buf, ", \n", &save); t; t = strtok_r(NULL, ", \n", &save))
        for (int i = 0; i < NCTRL; i++)
            if (strcmp(t, ctrl_names[i]) == 0) bits |= 1u << i;
    return bits;
}

static int read_mounts(mounts *m, char *why, size_t wn)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) {
        snprintf(why, wn, "/proc/self/mountinfo: %s", ename(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        /* id parent maj:min root mountpoint options [optional...] - fstype source superopts */
        char *field[6], *save, *p = line;
        int n = 0;
        for (; n < 6 && (field[n] = strtok_r(p, " ", &save)); n++)
            p = NULL;
        if (n < 6) continue;
        char *t, *fstype = NULL, *super = NULL;
        while ((t = strtok_r(NULL, " ", &save)) && strcmp(t, "-") != 0) {
        }
        if (t && (fstype = strtok_r(NULL, " ", &save)) && strtok_r(NULL, " ", &save))
            super = strtok_r(NULL, " \n", &save);
        if (!fstype || !super) continue;
        mnt *dst = NULL;
        if (strcmp(fstype, "cgroup2") == 0 && !m->have_v2) {
            dst = &m->v2;
            m->have_v2 = 1;
        } else if (strcmp(fstype, "cgroup") == 0 && m->nv1 < (int)NB_ARRAY_LEN(m->v1)) {
            unsigned bits = ctrl_bits(super);
            if (!bits) continue; /* name=systemd, freezer, ... */
            dst = &m->v1[m->nv1++];
            dst->ctrl = bits;
        }
        if (!dst) continue;
        unescape(field[3]);
        unescape(field[4]);
        snprintf(dst->root, sizeof dst->root, "%s", field[3]);
        snprintf(dst->dir, sizeof dst->dir, "%s", field[4]);
    }
    free(line);
    fclose(f);
    return 0;
}

/* The process's own group in a hierarchy as a filesystem path, from /proc/self/cgroup
 * ("ID:controllers:path", v2's line is "0::path"). Falls back to the mount itself when the
 * path lies outside what is mounted (bind mounts, cgroup namespaces). */
static void own_group(const mnt *m, int v2, char *out, size_t size)
{
    snprintf(out, size, "%s", m->dir);
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        const char *ctrls = c1 + 1, *path = c2 + 1;
        if (v2 ? (strcmp(line, "0") != 0 || *ctrls) : !(ctrl_bits(ctrls) & m->ctrl)) continue;
        size_t rl = strcmp(m->root, "/") == 0 ? 0 : strlen(m->root);
        if (strncmp(path, m->root, rl) != 0 || (path[rl] != '/' && path[rl] != 0)) break;
        path += rl;
        if (strstr(path, "/..") || strstr(path, " (deleted)")) break;
        if (strcmp(path, "/") != 0) snprintf(out, size, "%s%s", m->dir, path);
        break;
    }
    free(line);
    fclose(f);
}

static int valid_tag(const char *t)
{
    size_t n = strlen(t);
    return n > 0 && n < 64 && !strchr(t, '/') && strcmp(t, ".") != 0 && strcmp(t, "..") != 0;
}

/* 1 when a process lives in parent or any group below it. */
static int group_in_use(const char *parent)
{
    const char *p = parent;
    if (count_procs(&p, 1) > 0) return 1;
    DIR *d = opendir(parent);
    if (!d) return 0;
    struct dirent *e;
    char sub[PATH_MAX + 300];
    int used = 0;
    while (!used && (e = readdir(d))) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
        snprintf(sub, sizeof sub, "%s/%s", parent, e->d_name);
        p = sub;
        used = count_procs(&p, 1) > 0;
    }
    closedir(d);
    return used;
}

/* Removes the empty groups a dead daemon with the same tag left (same pid after a restart in
 * a fresh PID namespace) so the directory can be reused. */
static void clean_stale(const char *parent, int quiet)
{
    DIR *d = opendir(parent);
    if (!d) return;
    struct dirent *e;
    char sub[PATH_MAX + 300];
    while ((e = readdir(d))) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
        snprintf(sub, sizeof sub, "%s/%s", parent, e->d_name);
        int r = rmdir_retry(sub);
        if (!quiet || r < 0)
            nb_warn("cgroup", "stale group %s: %s", sub, r == 0 ? "removed" : strerror(-r));
    }
    closedir(d);
}

/* Groups "nimbus-<pid>" of daemons that are gone (killed with SIGKILL, so no shutdown ran)
 * and hold no process: removed, so crashed daemons do not pile up empty groups. Only the
 * directory the groups are made in is scanned, normally the daemon's own cgroup; a daemon of
 * another PID namespace would look dead from here, which is why two of them must not both fall
 * back to a hierarchy's root. */
static void reap_dead_daemons(const char *base)
{
    DIR *d = opendir(base);
    if (!d) return;
    struct dirent *e;
    char sub[PATH_MAX + 300];
    int n = 0;
    while ((e = readdir(d))) {
        char *end;
        if (e->d_type != DT_DIR || strncmp(e->d_name, "nimbus-", 7) != 0) continue;
        long pid = strtol(e->d_name + 7, &end, 10);
        if (pid <= 0 || (*end && *end != '.') || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(sub, sizeof sub, "%s/%s", base, e->d_name);
        if (group_in_use(sub)) continue;
        clean_stale(sub, 1);
        n += rmdir_retry(sub) == 0;
    }
    closedir(d);
    if (n) nb_info("cgroup", "removed %d groups left in %s by daemons that died", n, base);
}

/* mkdir base/tag, 0 or -errno. A group of that name with processes in it belongs to a live
 * daemon (two containers with pid 1 both falling back to the hierarchy root): never touch it,
 * take "<tag>.1" and so on instead. */
static int make_parent(const char *base, const char *tag, char *out, size_t size)
{
    reap_dead_daemons(base);
    for (int k = 0; k < 8; k++) {
        if (k)
            snprintf(out, size, "%s/%s.%d", base, tag, k);
        else
            snprintf(out, size, "%s/%s", base, tag);
        if (mkdir(out, 0755) == 0) return 0;
        if (errno != EEXIST) return -errno;
        if (group_in_use(out)) continue;
        clean_stale(out, 0);
        return 0;
    }
    return -EEXIST;
}

static unsigned read_ctrl_file(const char *dir, const char *file)
{
    char buf[512];
    return cg_read(dir, file, buf, sizeof buf) < 0 ? 0 : ctrl_bits(buf);
}

/* Enables the controllers in bits for dir's children, one at a time so a refusal names the
 * controller. Returns the bits that were not enabled before and now are; *fail_bit and the
 * return of -errno report the first failure. */
static int enable_ctrls(const char *dir, unsigned bits, unsigned *added, unsigned *fail_bit)
{
    unsigned have = read_ctrl_file(dir, "cgroup.subtree_control");
    *added = 0;
    for (int i = 0; i < NCTRL; i++) {
        unsigned b = 1u << i;
        if (!(bits & b) || (have & b)) continue;
        int r = cg_writef(dir, "cgroup.subtree_control", "+%s", ctrl_names[i]);
        if (r < 0) {
            *fail_bit = b;
            return r;
        }
        *added |= b;
    }
    return 0;
}

static void disable_ctrls(const char *dir, unsigned bits)
{
    for (int i = NCTRL - 1; i >= 0; i--)
        if (bits & (1u << i)) {
            int r = cg_writef(dir, "cgroup.subtree_control", "-%s", ctrl_names[i]);
            if (r < 0)
                nb_warn("cgroup", "cannot disable %s in %s: %s", ctrl_names[i], dir, strerror(-r));
        }
}

/* Undoes v2_parent(): the parent's controllers, the home's controllers, the daemon's move. */
static void v2_unwind(const char *home, const char *parent)
{
    char leaf[PATH_MAX + 16];
    snprintf(leaf, sizeof leaf, "%s/daemon", parent);
    disable_ctrls(parent, g.parent_enabled);
    disable_ctrls(home, g.home_enabled);
    g.parent_enabled = g.home_enabled = 0;
    if (g.moved) {
        int r = cg_write(home, "cgroup.procs", "0");
        if (r < 0) {
            nb_warn("cgroup", "cannot move the daemon back to %s: %s; leaving %s", home,
                    strerror(-r), parent);
            return;
        }
        g.moved = 0;
    }
    rmdir_retry(leaf);
    rmdir_retry(parent);
}

/* The v2 parent group. The "no internal processes" rule (cgroup-v2.rst, "No Internal Process
 * Constraint") lets a non-root group hand controllers to its children only while it has no
 * processes of its own, and the daemon lives in `home`. So when enabling the controllers in
 * home is refused with EBUSY, the daemon moves itself into <tag>/daemon, a leaf next to the
 * slots, and tries again; that works when the daemon was alone in home (systemd service with
 * Delegate=yes, a container where nimbus is pid 1). home == the mount root of the real
 * hierarchy is exempt from the rule and needs no move. */
static int v2_parent(const char *home, int own, const char *tag, unsigned want, char *parent,
                     size_t psize, char *why, size_t wn)
{
    int r = make_parent(home, tag, parent, psize);
    if (r < 0) {
        snprintf(why, wn, "mkdir %s: %s", parent, ename(-r));
        return -1;
    }
    unsigned added = 0, fail_bit = 0;
    g.moved = 0;
    g.home_enabled = g.parent_enabled = 0;
    r = enable_ctrls(home, want, &added, &fail_bit);
    g.home_enabled = added;
    if (r == -EBUSY && own) {
        char leaf[PATH_MAX + 16];
        snprintf(leaf, sizeof leaf, "%s/daemon", parent);
        if (mkdir(leaf, 0755) < 0 && errno != EEXIST) {
            snprintf(why, wn, "mkdir %s: %s", leaf, ename(errno));
            goto fail;
        }
        if ((r = cg_write(leaf, "cgroup.procs", "0")) < 0) {
            snprintf(why, wn, "moving the daemon into %s: %s", leaf, ename(-r));
            goto fail;
        }
        g.moved = 1;
        r = enable_ctrls(home, want, &added, &fail_bit);
        g.home_enabled |= added;
        if (r == -EBUSY) {
            snprintf(why, wn,
                     "%s has processes besides nimbus, so it cannot delegate controllers (no "
                     "internal processes rule); run nimbus in a cgroup of its own with "
                     "Delegate=yes",
                     home);
            goto fail;
        }
    }
    if (r < 0 && fail_bit != C_CPU) {
        snprintf(why, wn, "enabling +%s in %s/cgroup.subtree_control: %s",
                 ctrl_names[__builtin_ctz(fail_bit)], home, ename(-r));
        goto fail;
    }
    /* cpu can be refused (real-time threads outside the root group); run without it. */
    if (r < 0) want &= ~(unsigned)C_CPU;
    r = enable_ctrls(parent, want, &added, &fail_bit);
    g.parent_enabled = added;
    if (r < 0 && fail_bit != C_CPU) {
        snprintf(why, wn, "enabling +%s in %s/cgroup.subtree_control: %s",
                 ctrl_names[__builtin_ctz(fail_bit)], parent, ename(-r));
        goto fail;
    }
    if (r < 0) want &= ~(unsigned)C_CPU;
    g.h[0].ctrl = want;
    return 0;
fail:
    v2_unwind(home, parent);
    return -1;
}

/* The controllers base can give its children; 0 with why set when memory or pids is missing. */
static unsigned v2_avail(const char *base, char *why, size_t wn)
{
    char buf[512];
    int n = cg_read(base, "cgroup.controllers", buf, sizeof buf);
    unsigned avail = n < 0 ? 0 : ctrl_bits(buf);
    if ((avail & (C_MEMORY | C_PIDS)) == (C_MEMORY | C_PIDS)) return avail;
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    snprintf(why, wn, "%s/cgroup.controllers is '%s', needs memory and pids", base,
             n < 0 ? ename(-n) : buf);
    return 0;
}

static int setup_v2(const mounts *m, const char *tag, char *why, size_t wn)
{
    if (!m->have_v2) {
        snprintf(why, wn, "no cgroup2 mount");
        return -1;
    }
    char home[PATH_MAX], first[512] = "";
    own_group(&m->v2, 1, home, sizeof home);
    hier *h = &g.h[0];
    /* The daemon's own group first; the hierarchy root when that does not work (controllers
     * not delegated, not writable, shared with other processes), as Docker's cgroupfs driver
     * does. */
    const char *bases[2] = {home, m->v2.dir};
    for (int i = 0; i < 2; i++) {
        if (i == 1 && strcmp(home, m->v2.dir) == 0) break;
        unsigned avail = v2_avail(bases[i], why, wn);
        if (avail && v2_parent(bases[i], i == 0, tag, avail & (C_MEMORY | C_PIDS | C_CPU), h->dir,
                               sizeof h->dir, why, wn) == 0) {
            snprintf(h->base, sizeof h->base, "%s", bases[i]);
            if (i == 1) nb_warn("cgroup", "own group unusable (%s); using %s", first, h->dir);
            g.nh = 1;
            g.mem_i = g.pids_i = 0;
            g.cpu_i = (h->ctrl & C_CPU) ? 0 : -1;
            g.acct_i = 0; /* cpu.stat is there without the cpu controller too */
            g.acct = ACCT_CPUSTAT;
            return 0;
        }
        if (i == 0) snprintf(first, sizeof first, "%s", why);
    }
    if (strcmp(first, why) != 0) {
        char last[512];
        snprintf(last, sizeof last, "%s", why);
        snprintf(why, wn, "%s; at the root: %s", first, last);
    }
    return -1;
}

static void teardown_v1_parents(void)
{
    for (int i = 0; i < g.nh; i++) {
        int r = rmdir_retry(g.h[i].dir);
        if (r < 0) nb_warn("cgroup", "cannot remove %s: %s", g.h[i].dir, strerror(-r));
    }
    g.nh = 0;
}

static int setup_v1(const mounts *m, const char *tag, char *why, size_t wn, char *note, size_t nn)
{
    const mnt *by_ctrl[NCTRL] = {0};
    for (int i = 0; i < m->nv1; i++)
        for (int c = 0; c < NCTRL; c++)
            if ((m->v1[i].ctrl & (1u << c)) && !by_ctrl[c]) by_ctrl[c] = &m->v1[i];
    if (!by_ctrl[0] || !by_ctrl[1]) {
        snprintf(why, wn, "no v1 %s hierarchy mounted", !by_ctrl[0] ? "memory" : "pids");
        return -1;
    }
    g.nh = 0;
    g.mem_i = g.pids_i = g.cpu_i = g.acct_i = -1;
    g.acct = ACCT_NONE;
    const mnt *tried[NCTRL];
    int ntried = 0;
    /* memory first: nb_cg_path and the join order follow it */
    for (int c = 0; c < NCTRL; c++) {
        const mnt *mt = by_ctrl[c];
        int dup = 0;
        for (int i = 0; mt && i < ntried; i++)
            dup |= tried[i] == mt; /* comounted "cpu,cpuacct" */
        if (!mt || dup) continue;
        tried[ntried++] = mt;
        hier *h = &g.h[g.nh];
        char home[PATH_MAX];
        own_group(mt, 0, home, sizeof home);
        int r = make_parent(home, tag, h->dir, sizeof h->dir);
        snprintf(h->base, sizeof h->base, "%s", home);
        char failed[PATH_MAX + 300];
        snprintf(failed, sizeof failed, "mkdir %s: %s", h->dir, ename(-r));
        if (r < 0 && strcmp(home, mt->dir) != 0) {
            r = make_parent(mt->dir, tag, h->dir, sizeof h->dir);
            snprintf(h->base, sizeof h->base, "%s", mt->dir);
            if (r == 0) nb_warn("cgroup", "%s; using %s", failed, h->dir);
            if (r < 0) appendf(failed, sizeof failed, ", at the root: %s", ename(-r));
        }
        if (r < 0) {
            if (c <= 1) {
                snprintf(why, wn, "%s", failed);
                teardown_v1_parents();
                return -1;
            }
            appendf(note, nn, "; %s: %s", ctrl_names[c], failed);
            continue;
        }
        h->ctrl = mt->ctrl & (C_MEMORY | C_PIDS | C_CPU | C_CPUACCT);
        g.nh++;
    }
    for (int i = 0; i < g.nh; i++) {
        if ((g.h[i].ctrl & C_MEMORY) && g.mem_i < 0) g.mem_i = i;
        if ((g.h[i].ctrl & C_PIDS) && g.pids_i < 0) g.pids_i = i;
        if ((g.h[i].ctrl & C_CPU) && g.cpu_i < 0) g.cpu_i = i;
        if ((g.h[i].ctrl & C_CPUACCT) && g.acct_i < 0) g.acct_i = i;
    }
    g.acct = g.acct_i >= 0 ? ACCT_CPUACCT : ACCT_NONE;
    return 0;
}

static void teardown_parents(void)
{
    if (g.mode == NB_CG_V2 && g.nh)
        v2_unwind(g.h[0].base, g.h[0].dir);
    else
        teardown_v1_parents();
    g.nh = 0;
}

static void describe(const char *extra)
{
    snprintf(g.desc, sizeof g.desc, "cgroup v%d:", g.mode == NB_CG_V2 ? 2 : 1);
    unsigned all = 0;
    for (int i = 0; i < g.nh; i++)
        all |= g.h[i].ctrl;
    for (int c = 0, first = 1; c < NCTRL; c++)
        if (all & (1u << c)) {
            appendf(g.desc, sizeof g.desc, "%s %s", first ? "" : ",", ctrl_names[c]);
            first = 0;
        }
    appendf(g.desc, sizeof g.desc, " under %s", g.h[0].dir);
    if (g.moved) appendf(g.desc, sizeof g.desc, " (daemon moved to %s/daemon)", g.h[0].dir);
    if (g.cpu_i < 0) appendf(g.desc, sizeof g.desc, "; no cpu controller: CPU not capped");
    if (g.acct == ACCT_NONE) appendf(g.desc, sizeof g.desc, "; CPU time not measured");
    appendf(g.desc, sizeof g.desc, "%s", extra);
}

nb_cg_mode nb_cg_init(const char *tag)
{
    pthread_mutex_lock(&g.mu);
    if (g.inited) {
        nb_cg_mode m = g.mode;
        pthread_mutex_unlock(&g.mu);
        return m;
    }
    char name[64], why2[768] = "", why1[768] = "", note[768] = "";
    if (tag)
        snprintf(name, sizeof name, "%s", tag);
    else
        snprintf(name, sizeof name, "nimbus-%d", (int)getpid());
    g.mode = NB_CG_NONE;
    g.nh = 0;
    g.cpu_i = g.acct_i = -1;
    g.moved = 0;
    mounts *m = calloc(1, sizeof *m);
    if (!m) abort();
    if (tag && !valid_tag(tag)) {
        snprintf(why1, sizeof why1, "invalid tag '%s'", tag);
    } else if (read_mounts(m, why1, sizeof why1) == 0) {
        /* A controller lives in one hierarchy only, so at most one of these can work; v2 first
         * because on hybrid hosts the unified mount usually has no controllers. */
        if (setup_v2(m, name, why2, sizeof why2) == 0) {
            g.mode = NB_CG_V2;
        } else if (setup_v1(m, name, why1, sizeof why1, note, sizeof note) == 0) {
            g.mode = NB_CG_V1;
            appendf(note, sizeof note, "; v2 not used: %s", why2);
        }
    }
    free(m);
    if (g.mode != NB_CG_NONE) {
        /* A first slot proves that limits can actually be written here (a read-only bind
         * mount, a missing pids.max) and becomes the first spare. */
        nb_cg_limits probe = {128, 64};
        nb_err err = {0};
        nb_cg_slot *s = get_slot(slot_new_locked(), &probe, &err, 1);
        if (s) {
            list_push(&g.spares, s);
            g.nspares = 1;
            describe(note);
        } else {
            char *why = g.mode == NB_CG_V2 ? why2 : why1;
            snprintf(why, sizeof why1, "probe slot: %s", err.msg);
            teardown_parents();
            g.mode = NB_CG_NONE;
        }
    }
    /* Not logged here: the sandbox reports every layer in one table (nb_sbx_log). */
    if (g.mode == NB_CG_NONE) {
        if (why2[0] && why1[0])
            snprintf(g.desc, sizeof g.desc, "none: v2: %s; v1: %s", why2, why1);
        else
            snprintf(g.desc, sizeof g.desc, "none: %s", why2[0] ? why2 : why1);
    }
    g.inited = 1;
    nb_cg_mode mode = g.mode;
    pthread_mutex_unlock(&g.mu);
    return mode;
}

nb_cg_mode nb_cg_mode_get(void)
{
    pthread_mutex_lock(&g.mu);
    nb_cg_mode m = g.inited ? g.mode : NB_CG_NONE;
    pthread_mutex_unlock(&g.mu);
    return m;
}

const char *nb_cg_describe(void)
{
    return g.desc;
}

nb_cg_slot *nb_cg_acquire(const nb_cg_limits *lim, nb_err *err)
{
    if (!lim || lim->memory_mb <= 0 || lim->pids_max <= 0) {
        nb_err_set(err, 500, NB_E_INTERNAL, "cgroup: invalid limits");
        return NULL;
    }
    pthread_mutex_lock(&g.mu);
    if (!g.inited || g.mode == NB_CG_NONE) {
        nb_err_set(err, 503, NB_E_UNAVAILABLE, "cgroups unavailable: %s", g.desc);
        pthread_mutex_unlock(&g.mu);
        return NULL;
    }
    nb_cg_slot *s = g.spares;
    if (s) {
        list_unlink(&g.spares, s);
        g.nspares--;
    } else {
        s = slot_new_locked();
    }
    pthread_mutex_unlock(&g.mu);
    s = get_slot(s, lim, err, 0);
    if (!s) return NULL;
    pthread_mutex_lock(&g.mu);
    list_push(&g.busy, s);
    pthread_mutex_unlock(&g.mu);
    return s;
}

int nb_cg_reset(nb_cg_slot *s, const nb_cg_limits *lim, nb_err *err)
{
    if (slot_apply(s, lim, err) < 0) return -1;
    if (s->peak_fd >= 0) close(s->peak_fd);
    s->peak_fd = -1;
    slot_baseline(s);
    return 0;
}

int nb_cg_open_join_fds(nb_cg_slot *s, int fds[NB_CG_MAX_JOIN])
{
    if (!s || s->gone) {
        errno = EINVAL;
        return -1;
    }
    slot_dirs d;
    slot_dirs_of(s, &d);
    for (int i = 0; i < g.nh; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/cgroup.procs", d.p[i]);
        fds[i] = open(path, O_WRONLY | O_CLOEXEC);
        if (fds[i] < 0) {
            int e = errno;
            while (--i >= 0)
                close(fds[i]);
            errno = e;
            return -1;
        }
    }
    return g.nh;
}

int nb_cg_oom_kills(nb_cg_slot *s)
{
    int64_t v;
    if (!s || s->gone || s->oom_base < 0 || read_oom(s, &v) < 0) return -1;
    return (int)(v - s->oom_base);
}

int64_t nb_cg_peak_bytes(nb_cg_slot *s)
{
    if (!s || s->gone) return -1;
    char dir[PATH_MAX + 16];
    slot_dir(s, g.mem_i, dir, sizeof dir);
    int64_t v;
    if (s->peak_fd >= 0) {
        char buf[64];
        ssize_t n = pread(s->peak_fd, buf, sizeof buf - 1, 0);
        if (n <= 0) return -1;
        buf[n] = 0;
        return strtoll(buf, NULL, 10);
    }
    if (g.mode == NB_CG_V1) return cg_read_i64(dir, "memory.max_usage_in_bytes", &v) == 0 ? v : -1;
    if (!s->peak_new) return -1; /* the kernel's peak covers earlier tenants too */
    return cg_read_i64(dir, "memory.peak", &v) == 0 ? v : -1;
}

int64_t nb_cg_cpu_usec(nb_cg_slot *s)
{
    int64_t v;
    if (!s || s->gone || read_cpu_usec(s, &v) < 0) return -1;
    return v - s->cpu_base;
}

int nb_cg_procs(nb_cg_slot *s)
{
    if (!s || s->gone) return -1;
    slot_dirs d;
    slot_dirs_of(s, &d);
    return count_procs(d.p, g.nh);
}

int nb_cg_kill(nb_cg_slot *s)
{
    if (!s) return -1;
    if (s->gone) return 0;
    return slot_kill(s);
}

void nb_cg_release(nb_cg_slot *s)
{
    if (!s) return;
    pthread_mutex_lock(&g.mu);
    int gone = s->gone;
    if (!gone) list_unlink(&g.busy, s);
    pthread_mutex_unlock(&g.mu);
    if (gone) {
        free(s);
        return;
    }
    if (s->peak_fd >= 0) close(s->peak_fd);
    s->peak_fd = -1;
    int empty = nb_cg_procs(s) == 0 || nb_cg_kill(s) == 0;
    pthread_mutex_lock(&g.mu);
    if (empty && g.nspares < SPARES_MAX) {
        s->used = 1;
        list_push(&g.spares, s);
        g.nspares++;
        s = NULL;
    }
    pthread_mutex_unlock(&g.mu);
    if (s) {
        slot_destroy(s);
        free(s);
    }
}

void nb_cg_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.inited) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    while (g.spares) {
        nb_cg_slot *s = g.spares;
        list_unlink(&g.spares, s);
        slot_destroy(s);
        free(s);
    }
    g.nspares = 0;
    /* Acquired slots stay allocated for their owner's nb_cg_release, which then only frees. */
    while (g.busy) {
        nb_cg_slot *s = g.busy;
        list_unlink(&g.busy, s);
        slot_destroy(s);
        s->gone = 1;
    }
    if (g.mode != NB_CG_NONE) teardown_parents();
    g.inited = 0;
    g.mode = NB_CG_NONE;
    snprintf(g.desc, sizeof g.desc, "none: shut down");
    pthread_mutex_unlock(&g.mu);
}

const char *nb_cg_path(const nb_cg_slot *s)
{
    return s ? s->path : "";
}
