#include "instance/spawn.h"

#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NS_FLAGS         (CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
#define RUNTIME_API_PORT 9001

static int isolated = -1;

/* A raw clone without CLONE_VM behaves like fork() but skips glibc's fork handlers, which take
 * locks (malloc's among them) that another thread of the daemon might hold. */
static pid_t raw_clone(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

int nb_spawn_init(void)
{
    if (isolated >= 0) return isolated;
    pid_t p = raw_clone(NS_FLAGS);
    if (p == 0) _exit(0);
    if (p > 0) {
        waitpid(p, NULL, 0);
        isolated = 1;
    } else {
        isolated = 0;
        nb_warn("spawn",
                "namespaces unavailable (%s): instances run without isolation and the "
                "Runtime API listens on an ephemeral loopback port; run as root",
                strerror(errno));
    }
    return isolated;
}

int nb_spawn_isolated(void)
{
    return isolated > 0;
}

/* Child-side report: which step failed and errno. Only async-signal-safe calls below. */
enum step {
    STEP_OK,
    STEP_MOUNT,
    STEP_HOSTNAME,
    STEP_LOOPBACK,
    STEP_LISTEN,
    STEP_CLONE,
    STEP_FDS,
    STEP_CWD,
    STEP_EXEC
};
static const char *step_names[] = {"ok",    "mount", "hostname", "loopback", "listen",
                                   "clone", "fds",   "chdir",    "exec"};

struct report {
    int step;
    int err;
    int port;
};

static void child_fail(int fd, int step)
{
    struct report r = {step, errno, 0};
    ssize_t w = write(fd, &r, sizeof r);
    (void)w;
    _exit(127);
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

/* Async-signal-safe: no snprintf in the child. */
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

static int send_fd(int sock, int fd, int port)
{
    struct report r = {STEP_OK, 0, port};
    struct iovec iov = {&r, sizeof r};
    char ctrl[CMSG_SPACE(sizeof(int))];
    memset(ctrl, 0, sizeof ctrl);
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &m, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static void close_from(int lowfd)
{
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0u, 0) == 0) return;
    for (int fd = lowfd; fd < 65536; fd++)
        close(fd);
}

/* The runtime process: fds 0..3 in place, everything else closed, then execve. */
static void exec_runtime(const nb_spawn_spec *spec, int report)
{
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
    if (chdir(spec->cwd) < 0) child_fail(4, STEP_CWD);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
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

static void isolated_init(const nb_spawn_spec *spec, int report)
{
    detach_from_terminal(report);
    /* init is a copy of the daemon's memory (admin token, other functions' config): not
     * dumpable, so its /proc/1/mem cannot be read by the runtime once capabilities are dropped. */
    prctl(PR_SET_DUMPABLE, 0);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) child_fail(report, STEP_MOUNT);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        child_fail(report, STEP_MOUNT);
    if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
        child_fail(report, STEP_HOSTNAME);
    if (loopback_up() < 0) child_fail(report, STEP_LOOPBACK);
    if (spec->want_runtime_api) {
        int port = 0;
        int l = listen_loopback(RUNTIME_API_PORT, &port);
        if (l < 0 || send_fd(report, l, port) < 0) child_fail(report, STEP_LISTEN);
        close(l);
        set_api_env(spec, port);
    }
    pid_t rt = raw_clone(0);
    if (rt < 0) child_fail(report, STEP_CLONE);
    if (rt == 0) exec_runtime(spec, report);
    /* pid 1: hold nothing open, reap, and mirror the runtime's exit. */
    close_from(0);
    for (;;) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p == rt) {
            if (WIFSIGNALED(status)) {
                /* Re-raise so the daemon sees the same signal; pid 1 cannot be killed by its own
                 * signal from inside, so exit with the shell convention instead. */
                _exit(128 + WTERMSIG(status));
            }
            _exit(WEXITSTATUS(status));
        }
        if (p < 0 && errno == ECHILD) _exit(127);
    }
}

static void degraded_child(const nb_spawn_spec *spec, int report)
{
    detach_from_terminal(report);
    if (spec->want_runtime_api) {
        int port = 0;
        int l = listen_loopback(0, &port);
        if (l < 0 || send_fd(report, l, port) < 0) child_fail(report, STEP_LISTEN);
        close(l);
        set_api_env(spec, port);
    }
    exec_runtime(spec, report);
}

int nb_spawn(const nb_spawn_spec *spec, nb_spawn_result *out, int *exec_errno, nb_err *err)
{
    int sv[2];
    *exec_errno = 0;
    out->pid = -1;
    out->runtime_api_fd = -1;
    out->runtime_api_port = 0;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return nb_err_sys(err, errno, "spawn: socketpair");
    int iso = nb_spawn_init();
    pid_t pid = raw_clone(iso ? NS_FLAGS : 0);
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return nb_err_sys(err, e, "spawn: clone");
    }
    if (pid == 0) {
        close(sv[0]);
        if (iso)
            isolated_init(spec, sv[1]);
        else
            degraded_child(spec, sv[1]);
        _exit(127);
    }
    close(sv[1]);
    out->pid = pid;
    /* Read reports until EOF: an optional listener fd, then either nothing (exec succeeded)
     * or a failure record. */
    for (;;) {
        struct report r;
        char ctrl[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&r, sizeof r};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
        ssize_t n = recvmsg(sv[0], &m, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) break;
        if (n != (ssize_t)sizeof r) {
            nb_err_set(err, 500, NB_E_INTERNAL, "spawn: short report from child");
            goto fail;
        }
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_type == SCM_RIGHTS) {
            memcpy(&out->runtime_api_fd, CMSG_DATA(c), sizeof(int));
            out->runtime_api_port = r.port;
            continue;
        }
        if (r.step == STEP_EXEC) *exec_errno = r.err;
        nb_err_set(err, 500, NB_E_INTERNAL, "spawn: %s failed: %s",
                   r.step >= 0 && r.step <= STEP_EXEC ? step_names[r.step] : "?", strerror(r.err));
        goto fail;
    }
    close(sv[0]);
    return 0;
fail:
    close(sv[0]);
    nb_spawn_kill(pid);
    waitpid(pid, NULL, 0);
    if (out->runtime_api_fd >= 0) close(out->runtime_api_fd);
    out->runtime_api_fd = -1;
    out->pid = -1;
    return -1;
}

void nb_spawn_kill(pid_t pid)
{
    if (pid <= 0) return;
    if (nb_spawn_isolated())
        kill(pid, SIGKILL); /* init dies, the kernel kills the rest of its PID namespace */
    else
        kill(-pid, SIGKILL);
}
