/* nb_spawn: the one place where function processes are created, and where the sandbox is
 * applied to them (docs/security.md, docs/internals/spawn.md).
 *
 *   daemon --clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET])--> init (pid 1 of the instance)
 *   init: joins the instance's cgroup; private mounts; builds the root from the read-only
 *         skeleton (binds of /usr and friends, code at /var/task, runtime at /var/runtime,
 *         tmpfs /tmp of ephemeral_storage_mb, minimal /dev, own /proc with sensitive paths
 *         masked); pivot_root; hostname; loopback up; the Runtime API listener if asked
 *   init --clone--> runtime (pid 2): stdio + channel on fds 0..3, rlimits, bounding set
 *         emptied, unprivileged uid/gid, no_new_privs, seccomp filter, execve
 *   init waits; when the runtime exits, init exits with its status and the kernel kills
 *   everything else in the PID namespace, so killing init kills all descendants.
 *
 * Each layer is used when nb_sbx_init found it available; what is missing was reported once at
 * start. With no namespaces at all (not root) a spawn is a plain child in its own process
 * group, with the Runtime API on an ephemeral loopback port.
 *
 * nb_spawn returns once the child exists (a clone, or a hand-over to a pre-spawned shell): the
 * slow part of a sandboxed start (cgroup join, mounts) runs in the child while the caller's
 * loop goes on. What follows arrives on result->report_fd, to watch for readability and drain
 * with nb_spawn_poll: the Runtime API listener if asked for, then EOF when execve succeeded or a
 * failure record (step, errno, the mount point). Called on a loop thread. The result owns a
 * uid, a cgroup slot and report_fd until nb_spawn_release / the caller closes report_fd. */
#ifndef NB_SPAWN_H
#define NB_SPAWN_H

#include "base/err.h"
#include "sandbox/cgroup.h"

#include <stdint.h>
#include <sys/types.h>

/* Where the code and the runtime's files appear inside the sandbox. */
#define NB_SPAWN_TASK_DIR    "/var/task"
#define NB_SPAWN_RUNTIME_DIR "/var/runtime"

typedef struct nb_spawn_spec {
    char *const *argv; /* paths as the runtime will see them (see nb_spawn_rootfs) */
    char *const *envp;
    const char *cwd;
    const char *hostname;
    int stdout_fd; /* child ends; dup'ed onto 1 and 2 */
    int stderr_fd;
    int channel_fd;       /* dup'ed onto 3 */
    int want_runtime_api; /* create a loopback listener for the Lambda Runtime API */
    /* With want_runtime_api: a writable "AWS_LAMBDA_RUNTIME_API=" string that is also in
     * envp; the child appends "127.0.0.1:<port>" to it before execve. */
    char *runtime_api_env;
    size_t runtime_api_env_size;
    /* The sandbox. */
    const char *task_dir;    /* host path of the unpacked code: /var/task */
    const char *runtime_dir; /* host path of nimbus's runtime files: /var/runtime, or NULL */
    int memory_mb;
    int tmp_mb;
    int network_host; /* share the host's network namespace (network: host) */
} nb_spawn_spec;

typedef struct nb_spawn_result {
    pid_t pid;          /* the instance's init (or the runtime itself when degraded) */
    int report_fd;      /* nonblocking reports of the start; the caller closes it */
    int runtime_api_fd; /* listening socket, or -1 */
    int runtime_api_port;
    uid_t uid;      /* the instance's uid, (uid_t)-1 when it runs as the daemon's */
    nb_cg_slot *cg; /* NULL without cgroups */
    int host_net;   /* in the host's network: Runtime API peers must be checked */
} nb_spawn_result;

/* The daemon's argv area (contiguous, from argv[0] to the end of the last argument): each
 * instance's init overwrites its own copy so the function cannot read the daemon's command line.
 * Main thread, before the first spawn. */
void nb_spawn_set_cmdline(char *area, size_t len);
/* Starts / stops the pool of pre-spawned shells (NIMBUS_SPAWN_SHELLS, default 8, at most 64; 0
 * disables): after nb_sbx_init, from the main thread. */
void nb_spawn_start(void);
void nb_spawn_stop(void);
/* 1 when instances see the sandbox's paths (/var/task, /var/runtime) rather than the host's. */
int nb_spawn_rootfs(void);
/* 0 once the child runs (the start may still fail: see nb_spawn_poll), -1 with err when it
 * could not even begin. */
int nb_spawn(const nb_spawn_spec *spec, nb_spawn_result *out, nb_err *err);

enum { NB_SPAWN_PENDING = 0, NB_SPAWN_EXECED = 1 };
/* Drains report_fd without blocking. PENDING: nothing more yet (a listener that arrived is now
 * in runtime_api_fd/port); EXECED: execve succeeded, report_fd is spent; -1: the start failed,
 * err says at which step, *exec_errno is set when execve itself failed (the caller maps that
 * to Runtime.InvalidEntrypoint); the child is exiting. */
int nb_spawn_poll(nb_spawn_result *out, int *exec_errno, nb_err *err);
/* Kills the instance and all its descendants. */
void nb_spawn_kill(const nb_spawn_result *r);
/* After the instance's init was reaped: did the kernel's OOM killer act in its cgroup? */
int nb_spawn_oom_killed(const nb_spawn_result *r);
/* Peak memory of the instance in bytes, -1 when unknown (no cgroups). */
int64_t nb_spawn_peak_bytes(const nb_spawn_result *r);
/* CPU time used by the instance's cgroup so far in µs; -1 without one (or without CPU
 * accounting). One pread on a kept fd: cheap enough to call per invocation. */
int64_t nb_spawn_cpu_usec(const nb_spawn_result *r);
/* Gives back the uid and the cgroup slot (killing anything left in it). Idempotent. */
void nb_spawn_release(nb_spawn_result *r);
/* For an instance in the host's network: 1 when the TCP connection fd (accepted on the
 * instance's Runtime API listener) comes from a process of that instance (its uid), so no
 * other local process can drive its Runtime API. Always 1 in the instance's own network. */
int nb_spawn_peer_ok(const nb_spawn_result *r, int fd);

#endif
