/* nb_cg against the real kernel: OOM kill, pids limit, kill, peak memory, CPU time, limits
 * rewritten on reuse, the spare bound, shutdown cleanup. Needs root and usable cgroups; skips
 * otherwise (NIMBUS_TEST_REQUIRE_CGROUPS=1 turns the skip into a failure, for CI). */
#include "sandbox/cgroup.h"

#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "check.h"

#define MiB (1 << 20)

static char tag[64];

static void skip(const char *why)
{
    const char *req = getenv("NIMBUS_TEST_REQUIRE_CGROUPS");
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "cgroups required but unusable: %s\n", why);
        exit(1);
    }
    printf("skip: %s\n", why);
    exit(0);
}

/* Forks a child that joins the slot and then runs body(arg); the parent returns once the child
 * is in the slot. */
static pid_t spawn_in(nb_cg_slot *s, void (*body)(int), int arg)
{
    int fds[NB_CG_MAX_JOIN], ready[2];
    int n = nb_cg_open_join_fds(s, fds);
    CHECK(n >= 1 && n <= NB_CG_MAX_JOIN);
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        for (int i = 0; i < n; i++)
            if (write(fds[i], "0", 1) != 1) _exit(90);
        if (write(ready[1], "r", 1) != 1) _exit(91);
        close(ready[1]);
        body(arg);
        _exit(0);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(ready[1]);
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    return pid;
}

static int wait_status(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return st;
}

static int killed_by_sigkill(int st)
{
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

/* Orphaned grandchildren come to us (subreaper); reap them so their pids are uncharged. */
static void reap_all(void)
{
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
}

static void eat_memory(int unused)
{
    static char *keep[256];
    for (int i = 0; i < 256; i++) {
        keep[i] = malloc(MiB);
        if (!keep[i]) _exit(3);
        memset(keep[i], 1, MiB);
    }
    _exit(0);
}

static void fork_bomb(int wfd)
{
    int res[2] = {0, 0}; /* forks that worked, forks refused with EAGAIN */
    for (int i = 0; i < 64; i++) {
        pid_t p = fork();
        if (p == 0) {
            for (;;)
                pause();
        }
        if (p > 0)
            res[0]++;
        else if (errno == EAGAIN)
            res[1]++;
    }
    if (write(wfd, res, sizeof res) != sizeof res) _exit(4);
    for (;;)
        pause();
}

static void burn_cpu(int ms)
{
    struct timespec t;
    do
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    while (t.tv_sec * 1000 + t.tv_nsec / 1000000 < ms);
    _exit(0);
}

static void sleep_forever(int unused)
{
    for (;;)
        pause();
}

/* ---- the filesystem side: every group named after the tag, in any hierarchy ---- */

static char found[16][PATH_MAX];
static int nfound;
static const char *looking_for;

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (type != FTW_D) return FTW_CONTINUE;
    if (strcmp(path + ftw->base, looking_for) == 0) {
        if (nfound < 16) snprintf(found[nfound++], PATH_MAX, "%s", path);
        return FTW_SKIP_SUBTREE;
    }
    return ftw->level >= 6 ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
}

static int find_groups(const char *name)
{
    nfound = 0;
    looking_for = name;
    CHECK(nftw("/sys/fs/cgroup", visit, 32, FTW_PHYS | FTW_ACTIONRETVAL) == 0);
    return nfound;
}

static int64_t read_i64(const char *dir, const char *file)
{
    char path[PATH_MAX + 64], buf[64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int64_t v = -1;
    if (fgets(buf, sizeof buf, f)) v = strtoll(buf, NULL, 10);
    fclose(f);
    return v;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The limit files of a slot in every hierarchy match memory_mb and pids. */
static void check_limits(nb_cg_slot *s, int memory_mb, int pids)
{
    const char *slot = base_name(nb_cg_path(s));
    CHECK(find_groups(tag) >= 1);
    int64_t bytes = (int64_t)memory_mb * MiB, ncpu = (memory_mb + 1768) / 1769;
    for (int i = 0; i < nfound; i++) {
        char dir[PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s/%s", found[i], slot);
        struct stat st;
        CHECK(stat(dir, &st) == 0);
        if (nb_cg_mode_get() == NB_CG_V2) {
            CHECK(read_i64(dir, "memory.max") == bytes);
            CHECK(read_i64(dir, "pids.max") == pids);
            continue;
        }
        int64_t v;
        if ((v = read_i64(dir, "memory.limit_in_bytes")) >= 0) {
            CHECK(v == bytes);
            v = read_i64(dir, "memory.memsw.limit_in_bytes");
            CHECK(v == -1 || v == bytes);
            CHECK(read_i64(dir, "memory.swappiness") == 0);
        }
        if ((v = read_i64(dir, "pids.max")) >= 0) CHECK(v == pids);
        if ((v = read_i64(dir, "cpu.shares")) >= 0) {
            int64_t shares = (int64_t)memory_mb * 1024 / 1769;
            CHECK(v == (shares < 2 ? 2 : shares));
            CHECK(read_i64(dir, "cpu.cfs_period_us") == 100000);
            CHECK(read_i64(dir, "cpu.cfs_quota_us") == (ncpu < 1 ? 1 : ncpu) * 100000);
        }
    }
}

static nb_cg_slot *acquire(int memory_mb, int pids)
{
    nb_err err = {0};
    nb_cg_limits lim = {memory_mb, pids};
    nb_cg_slot *s = nb_cg_acquire(&lim, &err);
    if (!s) fprintf(stderr, "acquire: %s\n", err.msg);
    CHECK(s);
    return s;
}

static void test_oom(nb_cg_slot *s, int memory_mb)
{
    pid_t pid = spawn_in(s, eat_memory, 0);
    CHECK(killed_by_sigkill(wait_status(pid)));
    CHECK(nb_cg_oom_kills(s) == 1);
    int64_t peak = nb_cg_peak_bytes(s);
    printf("oom: killed, peak %lld bytes\n", (long long)peak);
    CHECK(peak > (int64_t)memory_mb * MiB / 2 && peak <= (int64_t)(memory_mb + 1) * MiB);
    CHECK(nb_cg_procs(s) == 0);
}

static void test_pids(nb_cg_slot *s)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn_in(s, fork_bomb, p[1]);
    close(p[1]);
    int res[2];
    CHECK(read(p[0], res, sizeof res) == sizeof res);
    close(p[0]);
    int procs = nb_cg_procs(s);
    printf("pids: %d forks worked, %d refused, %d processes in the slot\n", res[0], res[1], procs);
    CHECK(res[0] >= 1 && res[0] + 1 <= 16 && res[1] > 0 && res[0] + res[1] == 64);
    CHECK(procs == res[0] + 1);
    CHECK(nb_cg_kill(s) == 0);
    CHECK(nb_cg_procs(s) == 0);
    CHECK(killed_by_sigkill(wait_status(pid)));
    reap_all();
    CHECK(nb_cg_oom_kills(s) == 0);
}

static void test_cpu(nb_cg_slot *s)
{
    int64_t before = nb_cg_cpu_usec(s); /* the fork bomb's share */
    CHECK(before >= 0);
    pid_t pid = spawn_in(s, burn_cpu, 300);
    int st = wait_status(pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int64_t us = nb_cg_cpu_usec(s) - before;
    printf("cpu: %lld us for 300 ms of spinning\n", (long long)us);
    CHECK(us >= 250000 && us < 5000000);
}

static pid_t main_pid;

/* A failed CHECK exits: do not leave the groups behind (children only ever _exit). */
static void cleanup(void)
{
    if (getpid() == main_pid) nb_cg_shutdown();
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (geteuid() != 0) skip("not root");
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    snprintf(tag, sizeof tag, "nimbus-test-%d", (int)getpid());
    main_pid = getpid();
    atexit(cleanup);

    nb_cg_mode mode = nb_cg_init(tag);
    printf("%s\n", nb_cg_describe());
    if (mode == NB_CG_NONE) skip(nb_cg_describe());
    CHECK(nb_cg_init("ignored") == mode && nb_cg_mode_get() == mode);
    /* The memory controller is bound to v1 when its v1 hierarchy is mounted. */
    if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
        CHECK(mode == NB_CG_V1);
        CHECK(strncmp(nb_cg_describe(), "cgroup v1: memory, pids", 23) == 0);
    }

    nb_err err = {0};
    nb_cg_limits bad = {0, 16};
    CHECK(!nb_cg_acquire(&bad, &err) && strcmp(err.code, "internal") == 0);

    nb_cg_slot *a = acquire(64, 16);
    check_limits(a, 64, 16);
    CHECK(nb_cg_procs(a) == 0 && nb_cg_oom_kills(a) == 0);
    test_oom(a, 64);

    nb_cg_slot *b = acquire(64, 16);
    CHECK(strcmp(nb_cg_path(a), nb_cg_path(b)) != 0);
    test_pids(b);
    test_cpu(b);

    /* release kills what is left */
    pid_t sleeper = spawn_in(b, sleep_forever, 0);
    CHECK(nb_cg_procs(b) == 1);
    nb_cg_release(b);
    CHECK(killed_by_sigkill(wait_status(sleeper)));

    /* reuse: the last released slot comes back with its limits rewritten (raised, then
     * lowered: memsw ordering) and fresh baselines */
    char a_path[PATH_MAX];
    snprintf(a_path, sizeof a_path, "%s", nb_cg_path(a));
    nb_cg_release(a);
    nb_cg_slot *c = acquire(128, 32);
    CHECK(strcmp(nb_cg_path(c), a_path) == 0);
    check_limits(c, 128, 32);
    CHECK(nb_cg_oom_kills(c) == 0 && nb_cg_procs(c) == 0);
    CHECK(nb_cg_cpu_usec(c) >= 0 && nb_cg_cpu_usec(c) < 1000);
    if (mode == NB_CG_V1) CHECK(nb_cg_peak_bytes(c) >= 0 && nb_cg_peak_bytes(c) < 64 * MiB);
    nb_cg_release(c);
    c = acquire(32, 8);
    CHECK(strcmp(nb_cg_path(c), a_path) == 0);
    check_limits(c, 32, 8);
    test_oom(c, 32); /* the new, lower limit is the one that bites */
    nb_cg_release(c);
    c = acquire(3000, 64); /* two CPUs' worth: quota 200000 */
    check_limits(c, 3000, 64);
    nb_cg_release(c);

    /* the spare bound */
    enum { N = 70 };
    nb_cg_slot *many[N];
    for (int i = 0; i < N; i++)
        many[i] = acquire(16, 4);
    for (int i = 0; i < N; i++)
        nb_cg_release(many[i]);
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", a_path);
    dirname(parent);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls -d %s/s* | wc -l", parent);
    FILE *ls = popen(cmd, "r");
    int nslots = -1;
    CHECK(ls && fscanf(ls, "%d", &nslots) == 1);
    pclose(ls);
    printf("pool: %d slot groups after releasing %d\n", nslots, N);
    CHECK(nslots == 64);

    nb_cg_shutdown();
    CHECK(nb_cg_mode_get() == NB_CG_NONE);
    CHECK(find_groups(tag) == 0);

    /* shutdown with a slot still acquired: its processes die, its groups go, and the owner's
     * late release only frees */
    char tag2[80];
    snprintf(tag2, sizeof tag2, "%s-b", tag);
    CHECK(nb_cg_init(tag2) == mode);
    nb_cg_slot *d = acquire(64, 16);
    sleeper = spawn_in(d, sleep_forever, 0);
    nb_cg_shutdown();
    CHECK(killed_by_sigkill(wait_status(sleeper)));
    CHECK(nb_cg_procs(d) == -1 && nb_cg_kill(d) == 0);
    nb_cg_release(d);
    CHECK(find_groups(tag2) == 0);
    CHECK(!nb_cg_acquire(&(nb_cg_limits){64, 16}, &err) && strcmp(err.code, "unavailable") == 0);
    printf("ok\n");
    return 0;
}
