#include "instance/spawn.h"

#include "function/function.h"

#include "base/log.h"
#include "base/util.h"
#include "sandbox/sandbox.h"
#include "sandbox/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NS_FLAGS         (CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
#define RUNTIME_API_PORT 9001
#define OPEN_FILES_MAX   1024
#define PIDS_MAX         1024
#define GO_FDS           5 /* a shell's hand-over: stdout, stderr, channel, task tree, runtime tree */

/* A raw clone without CLONE_VM behaves like fork() but skips glibc's fork handlers, which take
 * locks (malloc's among them) that another thread of the daemon might hold. */
static pid_t raw_clone(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

int nb_spawn_rootfs(void)
{
    return nb_sbx_get()->rootfs;
}

/* ---------- the mount plan ----------
 *
 * Everything the child does to build the root is decided in the parent as a list of steps with
 * ready-made paths, so the child only makes system calls (it is a copy of a multi-threaded
 * process: no malloc, no stdio). */

enum mop {
    M_SELF_BIND, /* make the skeleton a mount point */
    M_BIND_RO,   /* read-only bind, recursive; src is a host path */
    M_TMPFS,
    M_REMOUNT_RO, /* a tmpfs made read-only once filled */
    M_FILE,       /* an empty file to bind a device onto */
    M_DEV,        /* bind a host device node */
    M_SYMLINK,
    M_PROC,
    M_MASK,    /* /dev/null over a /proc file (missing ones are fine) */
    M_MASKDIR, /* an empty read-only tmpfs over a /proc directory */
    M_RO,      /* a /proc subtree bound read-only onto itself */
};

#define PLAN_MAX   64
#define ARENA_SIZE 16384

typedef struct mount_step {
    enum mop op;
    unsigned long flags;
    const char *src;
    const char *dst;
    const char *data;
} mount_step;

typedef struct plan {
    mount_step steps[PLAN_MAX];
    int n;
    char arena[ARENA_SIZE];
    size_t used;
    int overflow;
    char tmp_opts[64];
} plan;

static const char *arena_path(plan *p, const char *a, const char *b)
{
    size_t need = strlen(a) + strlen(b) + 1;
    if (p->used + need > sizeof p->arena) {
        p->overflow = 1;
        return "";
    }
    char *s = p->arena + p->used;
    memcpy(s, a, strlen(a));
    memcpy(s + strlen(a), b, strlen(b) + 1);
    p->used += need;
    return s;
}

static void add(plan *p, enum mop op, const char *src, const char *dst_rel, unsigned long flags,
                const char *data)
{
    if (p->n >= PLAN_MAX) {
        p->overflow = 1;
        return;
    }
    p->steps[p->n++] = (mount_step){op, flags, src, arena_path(p, nb_sbx_root(), dst_rel), data};
}

static int is_dir(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void build_plan(plan *p, const nb_spawn_spec *spec)
{
    p->n = 0;
    p->used = 0;
    p->overflow = 0;
    const char *root = nb_sbx_root();
    add(p, M_SELF_BIND, root, "", 0, NULL);
    add(p, M_BIND_RO, "/usr", "/usr", 0, NULL);
    /* Hosts without the merged /usr have real /bin, /lib...; the skeleton mirrors symlinks. */
    static const char *tops[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
    char skel[PATH_MAX];
    for (size_t i = 0; i < NB_ARRAY_LEN(tops); i++) {
        snprintf(skel, sizeof skel, "%s%s", root, tops[i]);
        if (is_dir(skel) && is_dir(tops[i])) add(p, M_BIND_RO, tops[i], tops[i], 0, NULL);
    }
    static const char *etcdirs[] = {"/etc/ssl", "/etc/pki", "/etc/alternatives",
                                    "/etc/ca-certificates"};
    for (size_t i = 0; i < NB_ARRAY_LEN(etcdirs); i++)
        if (is_dir(etcdirs[i])) add(p, M_BIND_RO, etcdirs[i], etcdirs[i], 0, NULL);
    /* A shell (spec without a task_dir) gets the function's directories at hand-over. */
    if (spec->task_dir) add(p, M_BIND_RO, spec->task_dir, NB_SPAWN_TASK_DIR, 0, NULL);
    if (spec->runtime_dir) add(p, M_BIND_RO, spec->runtime_dir, NB_SPAWN_RUNTIME_DIR, 0, NULL);
    snprintf(p->tmp_opts, sizeof p->tmp_opts, "size=%dm,mode=1777", spec->tmp_mb);
    add(p, M_TMPFS, "tmpfs", "/tmp", MS_NOSUID | MS_NODEV, p->tmp_opts);
    static const char dev_opts[] = "size=64k,nr_inodes=64,mode=755";
    add(p, M_TMPFS, "tmpfs", "/dev", MS_NOSUID | MS_NOEXEC, dev_opts);
    static const char *devs[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};
    for (size_t i = 0; i < NB_ARRAY_LEN(devs); i++) {
        add(p, M_FILE, NULL, devs[i], 0, NULL);
        add(p, M_DEV, devs[i], devs[i], 0, NULL);
    }
    static const char *links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                     {"/proc/self/fd/0", "/dev/stdin"},
                                     {"/proc/self/fd/1", "/dev/stdout"},
                                     {"/proc/self/fd/2", "/dev/stderr"}};
    for (size_t i = 0; i < NB_ARRAY_LEN(links); i++)
        add(p, M_SYMLINK, links[i][0], links[i][1], 0, NULL);
    add(p, M_REMOUNT_RO, NULL, "/dev", MS_NOSUID | MS_NOEXEC, dev_opts);
    add(p, M_PROC, "proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* What container runtimes hide: kernel memory and keys, timers and scheduler internals
     * (they leak other tenants' activity), and the knobs that change the host. */
    static const char *masked[] = {
        "/proc/kcore",       "/proc/keys",          "/proc/timer_list",    "/proc/timer_stats",
        "/proc/sched_debug", "/proc/latency_stats", "/proc/kallsyms",      "/proc/kpagecount",
        "/proc/kpageflags",  "/proc/kpagecgroup",   "/proc/sysrq-trigger", "/proc/config.gz"};
    for (size_t i = 0; i < NB_ARRAY_LEN(masked); i++)
        add(p, M_MASK, "/dev/null", masked[i], 0, NULL);
    static const char *maskdirs[] = {"/proc/acpi", "/proc/scsi", "/proc/asound", "/proc/driver"};
    for (size_t i = 0; i < NB_ARRAY_LEN(maskdirs); i++)
        add(p, M_MASKDIR, "tmpfs", maskdirs[i], MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "size=0,mode=555");
    static const char *ro[] = {"/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"};
    for (size_t i = 0; i < NB_ARRAY_LEN(ro); i++)
        add(p, M_RO, NULL, ro[i], 0, NULL);
}

static void rlim(struct rlimit *r, rlim_t v)
{
    r->rlim_cur = r->rlim_max = v;
}

static char *cmdline_area;
static size_t cmdline_len;

void nb_spawn_set_cmdline(char *area, size_t len)
{
    cmdline_area = area;
    cmdline_len = len;
}

/* ---------- child side: only async-signal-safe calls below ---------- */

/* An init never execs, so /proc/1/cmdline would show the daemon's (its data dir among it) to
 * the function: overwrite this copy's command line, as setproctitle does. */
static void rename_init(void)
{
    static const char name[] = "nimbus-init";
    if (cmdline_area && cmdline_len >= sizeof name) {
        memset(cmdline_area, 0, cmdline_len);
        memcpy(cmdline_area, name, sizeof name);
    }
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

enum step {
    STEP_OK,
    STEP_CGROUP,
    STEP_MOUNT,
    STEP_PIVOT,
    STEP_HOSTNAME,
    STEP_LOOPBACK,
    STEP_LISTEN,
    STEP_CLONE,
    STEP_FDS,
    STEP_LIMITS,
    STEP_CREDS,
    STEP_SECCOMP,
    STEP_CWD,
    STEP_EXEC
};
static const char *step_names[] = {"ok",       "cgroup join", "mount", "pivot_root", "hostname",
                                   "loopback", "listen",      "clone", "fds",        "rlimits",
                                   "uid drop", "seccomp",     "chdir", "exec"};

struct report {
    int step;
    int err;
    int port;
    char what[120]; /* the mount point that failed, when step is STEP_MOUNT */
};

/* Everything the child needs, prepared by the parent. */
typedef struct child_ctx {
    const nb_spawn_spec *spec;
    const plan *plan; /* NULL: no root of our own */
    int join_fds[NB_CG_MAX_JOIN];
    int njoin;
    uid_t uid; /* (uid_t)-1: keep the daemon's */
    const struct sock_fprog *seccomp;
    int own_net;
    int refuse_root; /* the sandbox is on: running the function as root is an error */
    struct rlimit nofile, fsize, core, nproc;
    uid_t uid_lo, uid_hi; /* the daemon's uid block: a hand-over must name a uid in it */
} child_ctx;

static void child_fail_at(int fd, int step, const char *what)
{
    struct report r = {step, errno, 0, ""};
    for (size_t i = 0; what && what[i] && i < sizeof r.what - 1; i++)
        r.what[i] = what[i];
    ssize_t w = write(fd, &r, sizeof r);
    (void)w;
    _exit(127);
}

static void child_fail(int fd, int step)
{
    child_fail_at(fd, step, NULL);
}

/* Read-only, nosuid, nodev on dst and every mount below it (mount_setattr, Linux 5.12); a
 * classic remount, where that call is missing, reaches the top mount only. */
static int seal_tree(const char *dst, unsigned long extra)
{
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                          (extra & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0)};
    if (syscall(SYS_mount_setattr, AT_FDCWD, dst, AT_RECURSIVE, &attr, sizeof attr) == 0) return 0;
    if (errno != ENOSYS) return -1;
    return mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | extra,
                 NULL);
}

static int bind_ro(const char *src, const char *dst, unsigned long extra)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
    return seal_tree(dst, extra);
}

static int run_step(const mount_step *s)
{
    switch (s->op) {
    case M_SELF_BIND:
        return mount(s->src, s->dst, NULL, MS_BIND, NULL);
    case M_BIND_RO:
        return bind_ro(s->src, s->dst, 0);
    case M_TMPFS:
        return mount(s->src, s->dst, "tmpfs", s->flags, s->data);
    case M_REMOUNT_RO:
        return mount(NULL, s->dst, NULL, MS_REMOUNT | MS_RDONLY | s->flags, s->data);
    case M_FILE: {
        int fd = open(s->dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0) return -1;
        close(fd);
        return 0;
    }
    case M_DEV:
        return mount(s->src, s->dst, NULL, MS_BIND, NULL);
    case M_SYMLINK:
        return symlink(s->src, s->dst);
    case M_PROC:
        return mount(s->src, s->dst, "proc", s->flags, NULL);
    case M_MASK:
        if (mount(s->src, s->dst, NULL, MS_BIND, NULL) < 0 && errno != ENOENT) return -1;
        return 0;
    case M_MASKDIR:
        if (mount(s->src, s->dst, "tmpfs", s->flags, s->data) < 0 && errno != ENOENT) return -1;
        return 0;
    case M_RO:
        if (bind_ro(s->dst, s->dst, MS_NOEXEC) < 0 && errno != ENOENT) return -1;
        return 0;
    }
    return 0;
}

static void build_root(const child_ctx *cx, int report)
{
    const plan *p = cx->plan;
    for (int i = 0; i < p->n; i++)
        if (run_step(&p->steps[i]) < 0) child_fail_at(report, STEP_MOUNT, p->steps[i].dst);
    /* pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
     * new root visible, with no directory needed to park the old one in. */
    if (chdir(p->steps[0].dst) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        child_fail(report, STEP_PIVOT);
}

static void seal_root(int report)
{
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        child_fail(report, STEP_PIVOT);
}

static int loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return rc;
}

static int listen_loopback(int port, int *bound_port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
        close(s);
        return -1;
    }
    *bound_port = ntohs(a.sin_port);
    return s;
}

/* No snprintf in the child. */
static void set_api_env(const nb_spawn_spec *spec, int port)
{
    if (!spec->runtime_api_env) return;
    char *p = spec->runtime_api_env + strlen(spec->runtime_api_env);
    char *end = spec->runtime_api_env + spec->runtime_api_env_size - 1;
    const char *host = "127.0.0.1:";
    while (*host && p < end)
        *p++ = *host++;
    char digits[8];
    int n = 0;
    do {
        digits[n++] = (char)('0' + port % 10);
        port /= 10;
    } while (port && n < 7);
    while (n > 0 && p < end)
        *p++ = digits[--n];
    *p = 0;
}

/* One message with nfds descriptors attached (at most GO_FDS). Async-signal-safe: the
 * children use it too. */
static int send_with_fds(int sock, const void *data, size_t len, const int *fds, int nfds)
{
    char ctrl[CMSG_SPACE(sizeof(int) * GO_FDS)];
    memset(ctrl, 0, sizeof ctrl);
    struct iovec iov = {(void *)data, len};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctrl,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    return sendmsg(sock, &m, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static int send_fd(int sock, int fd, int port)
{
    struct report r = {STEP_OK, 0, port, ""};
    return send_with_fds(sock, &r, sizeof r, &fd, 1);
}

/* close_range (Linux 5.9), or every fd up to the hard limit: none may reach the function. */
static void close_span(unsigned lo, unsigned hi)
{
    if (lo > hi || syscall(SYS_close_range, lo, hi, 0) == 0) return;
    struct rlimit rl;
    unsigned max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < (1u << 20)
                       ? (unsigned)rl.rlim_max
                       : 1u << 20;
    for (unsigned fd = lo; fd <= hi && fd < max; fd++)
        close((int)fd);
}

static void close_from(int lowfd)
{
    close_span((unsigned)lowfd, ~0u);
}

/* A child of the daemon holds copies of all its descriptors (client connections, the store,
 * other instances' pipes); an init keeps only what it needs, at once, or a pipe it holds would
 * never see EOF. */
static void close_except(const int *keep, int n)
{
    int lo = 0;
    for (;;) {
        int next = -1; /* the smallest kept fd >= lo */
        for (int i = 0; i < n; i++)
            if (keep[i] >= lo && (next < 0 || keep[i] < next)) next = keep[i];
        if (next < 0) break;
        if (next > lo) close_span((unsigned)lo, (unsigned)next - 1);
        lo = next + 1;
    }
    close_span((unsigned)lo, ~0u);
}

/* Root with every capability to a uid with none: the bounding set is emptied first (that needs
 * CAP_SETPCAP, gone after the switch), then groups, gid, uid; the kernel clears the permitted
 * and effective sets on the uid change, and the ambient set is cleared explicitly. */
static int drop_privileges(uid_t uid)
{
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) return -1;
    if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, uid, uid, uid) < 0 ||
        syscall(SYS_setresuid, uid, uid, uid) < 0)
        return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -1;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    return (int)syscall(SYS_capset, &h, d);
}

/* The runtime process: fds 0..3 in place, everything else closed, limits, credentials,
 * filter, then execve. */
static void exec_runtime(const child_ctx *cx, int report)
{
    const nb_spawn_spec *spec = cx->spec;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* Move the report fd above the ones we dup onto so dup2 cannot clobber it. */
    int rep = fcntl(report, F_DUPFD_CLOEXEC, 10);
    if (devnull < 0 || rep < 0) child_fail(report, STEP_FDS);
    int chan = spec->channel_fd >= 0 ? fcntl(spec->channel_fd, F_DUPFD, 10) : -1;
    if (spec->channel_fd >= 0 && chan < 0) child_fail(rep, STEP_FDS);
    int out = fcntl(spec->stdout_fd, F_DUPFD, 10), errfd = fcntl(spec->stderr_fd, F_DUPFD, 10);
    if (out < 0 || errfd < 0 || dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
        child_fail(rep, STEP_FDS);
    if (chan >= 0 && dup2(chan, 3) < 0) child_fail(rep, STEP_FDS);
    /* Keep 0..3 and the report fd (close-on-exec), drop everything else the daemon had. */
    if (dup2(rep, 4) < 0 || fcntl(4, F_SETFD, FD_CLOEXEC) < 0) child_fail(rep, STEP_FDS);
    close_from(5);
    if (chan < 0) close(3);
    if (setrlimit(RLIMIT_NOFILE, &cx->nofile) < 0 || setrlimit(RLIMIT_FSIZE, &cx->fsize) < 0 ||
        setrlimit(RLIMIT_CORE, &cx->core) < 0)
        child_fail(4, STEP_LIMITS);
    /* A second fence behind nb_sbx_fatal: root with every capability is never a function's
     * identity, unless the operator turned the sandbox off. */
    if (cx->uid == (uid_t)-1 && cx->refuse_root && geteuid() == 0) {
        errno = EPERM;
        child_fail(4, STEP_CREDS);
    }
    if (cx->uid != (uid_t)-1) {
        /* Per uid, and each instance has its own: a second fence against fork bombs. */
        if (setrlimit(RLIMIT_NPROC, &cx->nproc) < 0) child_fail(4, STEP_LIMITS);
        if (drop_privileges(cx->uid) < 0) child_fail(4, STEP_CREDS);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(4, STEP_CREDS);
    if (chdir(spec->cwd) < 0) child_fail(4, STEP_CWD);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    if (cx->seccomp && nb_seccomp_load(cx->seccomp) < 0) child_fail(4, STEP_SECCOMP);
    execve(spec->argv[0], spec->argv, spec->envp);
    child_fail(4, STEP_EXEC);
}

/* Both kinds of child: their own session (a terminal's Ctrl-C for the daemon must not reach
 * functions; the daemon drains them itself), and gone when the daemon goes. */
static void detach_from_terminal(int report)
{
    setsid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(report, STEP_FDS);
}

static void join_cgroup(const child_ctx *cx, int report)
{
    for (int i = 0; i < cx->njoin; i++)
        if (write(cx->join_fds[i], "0", 1) != 1) child_fail(report, STEP_CGROUP);
}

static void start_runtime(const child_ctx *cx, int report) __attribute__((noreturn));

/* What every init does first, direct or shell: keep only the descriptors it needs (keep, and
 * the cgroup files), take its own name and session, become undumpable, join its cgroup, and
 * stop mount propagation to the host. */
static void init_prologue(const child_ctx *cx, const int *keep, int nkeep, int report)
{
    int fds[NB_CG_MAX_JOIN + 4];
    memcpy(fds, keep, sizeof(int) * (size_t)nkeep);
    memcpy(fds + nkeep, cx->join_fds, sizeof(int) * (size_t)cx->njoin);
    close_except(fds, nkeep + cx->njoin);
    rename_init();
    detach_from_terminal(report);
    /* init is a copy of the daemon's memory (admin token, other functions' config): not
     * dumpable, so its /proc/1/mem cannot be read by the runtime. */
    prctl(PR_SET_DUMPABLE, 0);
    join_cgroup(cx, report);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) child_fail(report, STEP_MOUNT);
}

static void isolated_init(const child_ctx *cx, int report)
{
    const nb_spawn_spec *spec = cx->spec;
    int keep[4] = {report, spec->stdout_fd, spec->stderr_fd, spec->channel_fd};
    init_prologue(cx, keep, 4, report);
    if (cx->plan) {
        build_root(cx, report);
        seal_root(report);
    } else if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        child_fail(report, STEP_MOUNT);
    if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
        child_fail(report, STEP_HOSTNAME);
    if (cx->own_net && loopback_up() < 0) child_fail(report, STEP_LOOPBACK);
    start_runtime(cx, report);
}

/* The instance's listener if asked, then the runtime as pid 2; init becomes the reaper. */
static void start_runtime(const child_ctx *cx, int report)
{
    const nb_spawn_spec *spec = cx->spec;
    if (spec->want_runtime_api) {
        int port = 0;
        /* In the host's network a fixed port would collide between instances. */
        int l = listen_loopback(cx->own_net ? RUNTIME_API_PORT : 0, &port);
        if (l < 0 || send_fd(report, l, port) < 0) child_fail(report, STEP_LISTEN);
        close(l);
        set_api_env(spec, port);
    }
    pid_t rt = raw_clone(0);
    if (rt < 0) child_fail(report, STEP_CLONE);
    if (rt == 0) exec_runtime(cx, report);
    /* pid 1: hold nothing open, reap, and mirror the runtime's exit. */
    close_from(0);
    for (;;) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p == rt) {
            /* pid 1 cannot be killed by its own signal from inside, so a signal death is
             * passed on with the shell convention instead. */
            if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
            _exit(WEXITSTATUS(status));
        }
        if (p < 0 && errno == ECHILD) _exit(127);
    }
}

static void degraded_child(const child_ctx *cx, int report)
{
    detach_from_terminal(report);
    join_cgroup(cx, report);
    if (cx->spec->want_runtime_api) {
        int port = 0;
        int l = listen_loopback(0, &port);
        if (l < 0 || send_fd(report, l, port) < 0) child_fail(report, STEP_LISTEN);
        close(l);
        set_api_env(cx->spec, port);
    }
    exec_runtime(cx, report);
}

/* ---------- pre-spawned shells ----------
 *
 * The slow part of a sandboxed start is not ours to speed up: joining a cgroup and detaching
 * the old root each wait for an RCU grace period (milliseconds). A shell is an init that has
 * already done all of that for no function in particular: namespaces, cgroup slot, the generic
 * root, pivot_root. A spawn hands a ready shell the function's part: its code and runtime
 * directories as detached mount trees (open_tree), the uid, /tmp's size, argv and environment,
 * the pipes; the shell mounts them, seals the root and starts the runtime as a direct spawn
 * would. */

#define GO_MAGIC    0x6e627331u /* "nbs1" */
#define GO_BLOB_MAX 32768

struct go_hdr {
    uint32_t magic;
    uid_t uid;
    int tmp_mb;
    int want_api;
    int has_runtime;
    int nargv, nenv;
    uint32_t blob_len; /* cwd, hostname, argv..., envp..., each NUL-terminated */
};

static int attach_tree(int tree, const char *dst)
{
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0) return -1;
    return seal_tree(dst, 0);
}

/* The shell's hand-over: everything arrives in one message; the buffers are static because
 * the shell is a copy of a multi-threaded process and must not call malloc. */
static void shell_go(child_ctx *cx, int sock)
{
    static char msg[sizeof(struct go_hdr) + GO_BLOB_MAX];
    static char *argv[16], *envp[128], api_env[64];
    static nb_spawn_spec spec;
    char ctrl[CMSG_SPACE(sizeof(int) * GO_FDS)];
    struct iovec iov = {msg, sizeof msg};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    ssize_t n;
    do
        n = recvmsg(sock, &m, 0);
    while (n < 0 && errno == EINTR);
    if (n == 0) _exit(0); /* the daemon let the shell go unused */
    struct go_hdr h;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    errno = EPROTO;
    if (n < (ssize_t)sizeof h || !c || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int) * GO_FDS))
        child_fail(sock, STEP_FDS);
    memcpy(&h, msg, sizeof h);
    int fds[GO_FDS];
    memcpy(fds, CMSG_DATA(c), sizeof fds);
    if (h.magic != GO_MAGIC || h.blob_len != (size_t)n - sizeof h || h.nargv < 1 ||
        h.uid < cx->uid_lo || h.uid >= cx->uid_hi || h.tmp_mb < 1 || h.tmp_mb > 1048576 ||
        h.nargv >= (int)(sizeof argv / sizeof argv[0]) || h.nenv < 0 ||
        h.nenv >= (int)(sizeof envp / sizeof envp[0]) - 1)
        child_fail(sock, STEP_FDS);
    /* Split the blob into its strings. */
    char *p = msg + sizeof h, *end = msg + n;
    char *strs[2 + 16 + 128];
    int want = 2 + h.nargv + h.nenv;
    for (int i = 0; i < want; i++) {
        char *z = memchr(p, 0, (size_t)(end - p));
        if (!z) child_fail(sock, STEP_FDS);
        strs[i] = p;
        p = z + 1;
    }
    for (int i = 0; i < h.nargv; i++)
        argv[i] = strs[2 + i];
    argv[h.nargv] = NULL;
    int ne = 0;
    for (int i = 0; i < h.nenv; i++)
        envp[ne++] = strs[2 + h.nargv + i];
    memset(&spec, 0, sizeof spec);
    spec.argv = argv;
    spec.envp = envp;
    spec.cwd = strs[0];
    spec.hostname = strs[1];
    spec.stdout_fd = fds[0];
    spec.stderr_fd = fds[1];
    spec.channel_fd = fds[2];
    spec.want_runtime_api = h.want_api;
    spec.tmp_mb = h.tmp_mb;
    if (h.want_api) {
        memcpy(api_env, "AWS_LAMBDA_RUNTIME_API=", 24);
        envp[ne++] = api_env;
        spec.runtime_api_env = api_env;
        spec.runtime_api_env_size = sizeof api_env;
    }
    envp[ne] = NULL;
    cx->spec = &spec;
    cx->uid = h.uid;
    rlim(&cx->fsize, ((rlim_t)h.tmp_mb + 1) << 20);
    char opts[64] = "size=", *o = opts + 5;
    int digits[12], nd = 0, v = h.tmp_mb;
    do {
        digits[nd++] = v % 10;
        v /= 10;
    } while (v && nd < 11);
    while (nd > 0)
        *o++ = (char)('0' + digits[--nd]);
    memcpy(o, "m,mode=1777", 12);
    if (attach_tree(fds[3], NB_SPAWN_TASK_DIR) < 0) child_fail(sock, STEP_MOUNT);
    if (h.has_runtime && attach_tree(fds[4], NB_SPAWN_RUNTIME_DIR) < 0)
        child_fail(sock, STEP_MOUNT);
    close(fds[3]);
    close(fds[4]);
    if (mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0)
        child_fail(sock, STEP_MOUNT);
    seal_root(sock);
    if (sethostname(spec.hostname, strlen(spec.hostname)) < 0) child_fail(sock, STEP_HOSTNAME);
    start_runtime(cx, sock);
}

static void shell_main(child_ctx *cx, int sock)
{
    int keep[1] = {sock};
    init_prologue(cx, keep, 1, sock);
    build_root(cx, sock);
    if (loopback_up() < 0) child_fail(sock, STEP_LOOPBACK);
    struct report ready = {STEP_OK, 0, 0, ""};
    if (write(sock, &ready, sizeof ready) != (ssize_t)sizeof ready) _exit(127);
    shell_go(cx, sock);
}

/* ---------- parent side ---------- */

static void fail_message(nb_err *err, const struct report *r)
{
    const char *what = r->step >= 0 && r->step <= STEP_EXEC ? step_names[r->step] : "?";
    if (r->step == STEP_MOUNT && r->what[0])
        nb_err_set(err, 500, NB_E_INTERNAL, "spawn: mount %.119s failed: %s", r->what,
                   strerror(r->err));
    else
        nb_err_set(err, 500, NB_E_INTERNAL, "spawn: %s failed: %s", what, strerror(r->err));
}

/* The settings every sandboxed child shares, for a direct spawn or a shell. */
static void base_ctx(child_ctx *cx, int own_net, int tmp_mb)
{
    const nb_sbx_status *sb = nb_sbx_get();
    memset(cx, 0, sizeof *cx);
    cx->uid = (uid_t)-1;
    cx->own_net = own_net;
    rlim(&cx->nofile, OPEN_FILES_MAX);
    /* Past /tmp's size a file cannot grow anyway; the margin lets ENOSPC, the error a
     * function expects from a full disk, come first. */
    rlim(&cx->fsize, ((rlim_t)tmp_mb + 1) << 20);
    /* 1, not 0: a pipe core_pattern (systemd-coredump, apport) ignores 0 and would run a root
     * helper on the function's memory; the kernel refuses pipe dumps at exactly 1, and a file
     * dump needs a page. */
    rlim(&cx->core, 1);
    cx->refuse_root = !sb->disabled;
    cx->uid_lo = nb_sbx_uid_first();
    cx->uid_hi = cx->uid_lo + NB_SBX_UID_COUNT;
    rlim(&cx->nproc, PIDS_MAX);
    if (!sb->disabled && sb->seccomp) cx->seccomp = nb_seccomp_program();
}

static int join_slot(nb_cg_slot *cg, child_ctx *cx, nb_err *err)
{
    if (!cg) return 0;
    cx->njoin = nb_cg_open_join_fds(cg, cx->join_fds);
    if (cx->njoin < 0) {
        cx->njoin = 0;
        return nb_err_set(err, 500, NB_E_INTERNAL, "spawn: opening the cgroup failed");
    }
    return 0;
}

static void close_join(child_ctx *cx)
{
    for (int i = 0; i < cx->njoin; i++)
        close(cx->join_fds[i]);
    cx->njoin = 0;
}

int nb_spawn_poll(nb_spawn_result *out, int *exec_errno, nb_err *err)
{
    for (;;) {
        struct report r;
        char ctrl[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&r, sizeof r};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
        ssize_t n = recvmsg(out->report_fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return NB_SPAWN_PENDING;
        if (n == 0) return NB_SPAWN_EXECED;
        if (n != (ssize_t)sizeof r)
            return nb_err_set(err, 500, NB_E_INTERNAL, "spawn: short report from child");
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_type == SCM_RIGHTS) {
            memcpy(&out->runtime_api_fd, CMSG_DATA(c), sizeof(int));
            out->runtime_api_port = r.port;
            continue;
        }
        if (r.step == STEP_EXEC) *exec_errno = r.err;
        fail_message(err, &r);
        return -1;
    }
}

/* ---- the shell pool: filled by a background thread, emptied by spawns ---- */

#define SHELLS_MAX 64

typedef struct shell {
    pid_t pid;
    int sock;
    nb_cg_slot *cg;
    int ready;
} shell;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    shell s[SHELLS_MAX];
    int n, want, stop, running;
    pthread_t thread;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void shell_discard(shell *sh)
{
    kill(sh->pid, SIGKILL);
    close(sh->sock);
    if (sh->cg) nb_cg_release(sh->cg);
}

static int shell_create(shell *out)
{
    const nb_sbx_status *sb = nb_sbx_get();
    static _Thread_local plan pl;
    nb_spawn_spec generic = {.tmp_mb = NB_EPHEMERAL_MIN}; /* resized at the hand-over */
    build_plan(&pl, &generic);
    child_ctx cx;
    base_ctx(&cx, 1, generic.tmp_mb);
    cx.plan = &pl;
    nb_err err = {0};
    out->cg = NULL;
    if (sb->cgroup != NB_CG_NONE) {
        /* The smallest a function may ask for, until the hand-over sets its own. */
        nb_cg_limits lim = {NB_MEMORY_MIN, PIDS_MAX};
        if (!(out->cg = nb_cg_acquire(&lim, &err)) || join_slot(out->cg, &cx, &err) < 0) {
            if (out->cg) nb_cg_release(out->cg);
            return -1;
        }
    }
    int sv[2];
    pid_t pid = -1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0) {
        pid = raw_clone(NS_FLAGS | CLONE_NEWNET);
        if (pid == 0) {
            close(sv[0]);
            shell_main(&cx, sv[1]);
            _exit(127);
        }
        close(sv[1]);
        if (pid < 0) close(sv[0]);
    }
    close_join(&cx);
    if (pid < 0) {
        if (out->cg) nb_cg_release(out->cg);
        return -1;
    }
    out->pid = pid;
    out->sock = sv[0];
    out->ready = 0;
    return 0;
}

/* Keeps `want` shells around. The thread lives until shutdown: shells die with it
 * (PR_SET_PDEATHSIG follows the creating thread). */
static void *refill(void *arg)
{
    (void)arg;
    int failures = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.stop && pool.n >= pool.want)
            pthread_cond_wait(&pool.cv, &pool.mu);
        if (pool.stop) break;
        pthread_mutex_unlock(&pool.mu);
        shell sh;
        int rc = shell_create(&sh);
        pthread_mutex_lock(&pool.mu);
        if (rc == 0) {
            failures = 0;
            pool.s[pool.n++] = sh;
        } else if (++failures >= 3) {
            nb_warn("spawn", "cannot pre-spawn instance shells; every start spawns afresh");
            pool.want = 0;
        }
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

void nb_spawn_start(void)
{
    const nb_sbx_status *sb = nb_sbx_get();
    const char *env = getenv("NIMBUS_SPAWN_SHELLS");
    int want = env ? atoi(env) : 8;
    if (want <= 0 || !sb->rootfs || sb->disabled || pool.running) return;
    /* Handing a function its code needs the new mount API (Linux 5.2). */
    int probe = (int)syscall(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (probe < 0) {
        nb_warn("spawn", "open_tree unavailable (%s): no pre-spawned shells", strerror(errno));
        return;
    }
    close(probe);
    pool.want = want < SHELLS_MAX ? want : SHELLS_MAX;
    pool.stop = 0;
    if (pthread_create(&pool.thread, NULL, refill, NULL) == 0) pool.running = 1;
}

void nb_spawn_stop(void)
{
    if (!pool.running) return;
    pthread_mutex_lock(&pool.mu);
    pool.stop = 1;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    pthread_join(pool.thread, NULL);
    pool.running = 0;
    for (int i = 0; i < pool.n; i++) {
        shell_discard(&pool.s[i]);
        waitpid(pool.s[i].pid, NULL, 0);
    }
    pool.n = 0;
}

/* A shell that reported ready, without waiting for one: a start never blocks on the pool. */
static int shell_take(shell *out)
{
    int got = 0;
    pthread_mutex_lock(&pool.mu);
    for (int i = 0; i < pool.n && !got;) {
        shell *sh = &pool.s[i];
        if (!sh->ready) {
            struct pollfd pfd = {sh->sock, POLLIN, 0};
            struct report r;
            if (poll(&pfd, 1, 0) == 1) {
                if (recv(sh->sock, &r, sizeof r, MSG_DONTWAIT) == (ssize_t)sizeof r &&
                    r.step == STEP_OK) {
                    sh->ready = 1;
                } else {
                    /* It failed to set up or died: its zombie goes to the daemon's reaper. */
                    shell_discard(sh);
                    pool.s[i] = pool.s[--pool.n];
                    continue;
                }
            }
        }
        if (sh->ready) {
            *out = *sh;
            pool.s[i] = pool.s[--pool.n];
            got = 1;
        } else {
            i++;
        }
    }
    if (got) pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return got;
}

static int put_str(char *blob, size_t *off, const char *str)
{
    size_t n = strlen(str) + 1;
    if (*off + n > GO_BLOB_MAX) return -1;
    memcpy(blob + *off, str, n);
    *off += n;
    return 0;
}

/* The hand-over message: header, strings, and the five descriptors. */
static int shell_send(int sock, const nb_spawn_spec *spec, uid_t uid, int tree_task, int tree_rt,
                      nb_err *err)
{
    static _Thread_local char msg[sizeof(struct go_hdr) + GO_BLOB_MAX];
    char *blob = msg + sizeof(struct go_hdr);
    size_t off = 0;
    struct go_hdr h = {GO_MAGIC, uid, spec->tmp_mb, spec->want_runtime_api, tree_rt >= 0, 0, 0, 0};
    int bad = put_str(blob, &off, spec->cwd) < 0 || put_str(blob, &off, spec->hostname) < 0;
    for (int i = 0; !bad && spec->argv[i]; i++, h.nargv++)
        bad = h.nargv >= 15 || put_str(blob, &off, spec->argv[i]) < 0;
    for (int i = 0; !bad && spec->envp[i]; i++) {
        if (spec->envp[i] == spec->runtime_api_env) continue; /* the shell writes its own */
        bad = h.nenv >= 126 || put_str(blob, &off, spec->envp[i]) < 0;
        h.nenv++;
    }
    if (bad) return nb_err_set(err, 500, NB_E_INTERNAL, "spawn: environment too large");
    h.blob_len = (uint32_t)off;
    memcpy(msg, &h, sizeof h);
    int fds[GO_FDS] = {spec->stdout_fd, spec->stderr_fd, spec->channel_fd, tree_task,
                       tree_rt >= 0 ? tree_rt : tree_task};
    if (send_with_fds(sock, msg, sizeof h + off, fds, GO_FDS) < 0)
        return nb_err_sys(err, errno, "spawn: hand-over");
    return 0;
}

/* 1: started through a shell (0 or -1 in *rc); 0: no usable shell, spawn directly. */
static int spawn_in_shell(const nb_spawn_spec *spec, nb_spawn_result *out, nb_err *err, int *rc)
{
    shell sh;
    if (!pool.running || spec->network_host || !shell_take(&sh)) return 0;
    int64_t t0 = nb_mono_us();
    nb_cg_limits lim = {spec->memory_mb, PIDS_MAX};
    if (sh.cg && nb_cg_reset(sh.cg, &lim, err) < 0) {
        shell_discard(&sh);
        return 0;
    }
    out->pid = sh.pid;
    out->cg = sh.cg;
    out->uid = nb_sbx_uid_acquire();
    int tree_task = -1, tree_rt = -1;
    const unsigned tflags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE;
    if (out->uid == (uid_t)-1) {
        *rc = nb_err_set(err, 503, NB_E_UNAVAILABLE, "spawn: every sandbox uid is in use");
    } else if ((tree_task = (int)syscall(SYS_open_tree, AT_FDCWD, spec->task_dir, tflags)) < 0 ||
               (spec->runtime_dir &&
                (tree_rt = (int)syscall(SYS_open_tree, AT_FDCWD, spec->runtime_dir, tflags)) < 0)) {
        *rc = nb_err_sys(err, errno, "spawn: open_tree %s", spec->task_dir);
    } else {
        *rc = shell_send(sh.sock, spec, out->uid, tree_task, tree_rt, err);
    }
    if (tree_task >= 0) close(tree_task);
    if (tree_rt >= 0) close(tree_rt);
    nb_debug("spawn", "pid %d: shell handed over in %lld us", (int)out->pid,
             (long long)(nb_mono_us() - t0));
    if (*rc < 0) {
        close(sh.sock);
        nb_spawn_kill(out);
        waitpid(out->pid, NULL, 0);
        out->pid = -1;
        nb_spawn_release(out);
        return 1;
    }
    out->report_fd = sh.sock;
    return 1;
}

int nb_spawn(const nb_spawn_spec *spec, nb_spawn_result *out, nb_err *err)
{
    const nb_sbx_status *sb = nb_sbx_get();
    out->pid = -1;
    out->report_fd = -1;
    out->runtime_api_fd = -1;
    out->runtime_api_port = 0;
    out->uid = (uid_t)-1;
    out->cg = NULL;
    child_ctx cx;
    base_ctx(&cx, sb->namespaces && !spec->network_host, spec->tmp_mb);
    out->host_net = !cx.own_net;
    int rc;
    if (spawn_in_shell(spec, out, err, &rc)) return rc;
    int64_t t1 = nb_mono_us();

    cx.spec = spec;
    /* plan is large: static per thread instead of on a loop thread's stack. */
    static _Thread_local plan pl;
    if (sb->rootfs) {
        build_plan(&pl, spec);
        if (pl.overflow) return nb_err_set(err, 500, NB_E_INTERNAL, "spawn: mount plan too big");
        cx.plan = &pl;
    }
    if (sb->uid_drop) {
        cx.uid = nb_sbx_uid_acquire();
        if (cx.uid == (uid_t)-1)
            return nb_err_set(err, 503, NB_E_UNAVAILABLE, "spawn: every sandbox uid is in use");
        out->uid = cx.uid;
    }
    if (!sb->disabled && sb->cgroup != NB_CG_NONE) {
        nb_cg_limits lim = {spec->memory_mb, PIDS_MAX};
        out->cg = nb_cg_acquire(&lim, err);
        if (!out->cg || join_slot(out->cg, &cx, err) < 0) {
            nb_spawn_release(out);
            return nb_err_prefix(err, "spawn");
        }
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = errno;
        close_join(&cx);
        nb_spawn_release(out);
        return nb_err_sys(err, e, "spawn: socketpair");
    }
    int iso = sb->namespaces && !sb->disabled;
    pid_t pid = raw_clone(iso ? NS_FLAGS | (cx.own_net ? CLONE_NEWNET : 0) : 0);
    if (pid == 0) {
        close(sv[0]);
        if (iso)
            isolated_init(&cx, sv[1]);
        else
            degraded_child(&cx, sv[1]);
        _exit(127);
    }
    int clone_errno = errno;
    close_join(&cx);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        nb_spawn_release(out);
        return nb_err_sys(err, clone_errno, "spawn: clone");
    }
    out->pid = pid;
    out->report_fd = sv[0];
    nb_debug("spawn", "pid %d: cloned after %lld us", (int)pid, (long long)(nb_mono_us() - t1));
    return 0;
}

void nb_spawn_kill(const nb_spawn_result *r)
{
    if (r->pid <= 0) return;
    const nb_sbx_status *sb = nb_sbx_get();
    if (sb->namespaces && !sb->disabled)
        kill(r->pid, SIGKILL); /* init dies, the kernel kills the rest of its PID namespace */
    else
        kill(-r->pid, SIGKILL);
}

int nb_spawn_oom_killed(const nb_spawn_result *r)
{
    return r->cg && nb_cg_oom_kills(r->cg) > 0;
}

int64_t nb_spawn_peak_bytes(const nb_spawn_result *r)
{
    return r->cg ? nb_cg_peak_bytes(r->cg) : -1;
}

int64_t nb_spawn_cpu_usec(const nb_spawn_result *r)
{
    return r->cg ? nb_cg_cpu_usec(r->cg) : -1;
}

void nb_spawn_release(nb_spawn_result *r)
{
    if (r->cg) nb_cg_release(r->cg);
    r->cg = NULL;
    if (r->uid != (uid_t)-1) nb_sbx_uid_release(r->uid);
    r->uid = (uid_t)-1;
}

/* The kernel's socket table knows who opened the other end of a loopback connection: ask
 * sock_diag for the connecting socket (local = the peer's address) and compare its owner. */
static int loopback_peer_uid(int fd, uid_t *uid)
{
    struct sockaddr_in self, peer;
    socklen_t sl = sizeof self, pl = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&self, &sl) < 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &pl) < 0 || self.sin_family != AF_INET)
        return -1;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return -1;
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 req;
    } q;
    memset(&q, 0, sizeof q);
    q.nh.nlmsg_len = sizeof q;
    q.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    q.nh.nlmsg_flags = NLM_F_REQUEST;
    q.req.sdiag_family = AF_INET;
    q.req.sdiag_protocol = IPPROTO_TCP;
    q.req.idiag_states = ~0u;
    q.req.id.idiag_sport = peer.sin_port;
    q.req.id.idiag_dport = self.sin_port;
    q.req.id.idiag_src[0] = peer.sin_addr.s_addr;
    q.req.id.idiag_dst[0] = self.sin_addr.s_addr;
    q.req.id.idiag_cookie[0] = q.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    int rc = -1;
    char buf[1024];
    if (send(nl, &q, sizeof q, 0) == (ssize_t)sizeof q) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        struct nlmsghdr *h = (struct nlmsghdr *)buf;
        if (n >= (ssize_t)sizeof *h && NLMSG_OK(h, (size_t)n) &&
            h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
            h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
            const struct inet_diag_msg *d = NLMSG_DATA(h);
            /* Only the connecting socket itself will do, never a listener the lookup might
             * fall back to. */
            if (d->id.idiag_sport == peer.sin_port && d->id.idiag_dport == self.sin_port &&
                d->idiag_state != 10 /* TCP_LISTEN */) {
                *uid = d->idiag_uid;
                rc = 0;
            }
        }
    }
    close(nl);
    return rc;
}

int nb_spawn_peer_ok(const nb_spawn_result *r, int fd)
{
    if (!r->host_net || r->uid == (uid_t)-1) return 1;
    uid_t uid;
    return loopback_peer_uid(fd, &uid) == 0 && uid == r->uid;
}
