/* nb_spawn: the one place where function processes are created.
 *
 * Every instance starts here, so the sandbox (issue: sandbox) and the zygote/template fork path
 * plug in behind this interface without touching the scheduler. Today a spawn is:
 *
 *   daemon --clone(NEWPID|NEWNET|NEWNS|NEWUTS|NEWIPC)--> init (pid 1 of the instance)
 *   init: private mounts, own /proc, hostname, loopback up, Runtime API listener (if asked)
 *   init --clone--> runtime (pid 2): stdio + channel on fds 0..3, cwd, execve
 *   init waits; when the runtime exits, init exits with its status and the kernel kills
 *   everything else in the PID namespace, so killing init kills all descendants.
 *
 * When namespaces are not permitted (not root, no user namespaces) the spawn degrades to a
 * plain child in its own process group, with the Runtime API on an ephemeral loopback port;
 * this is logged once at start as a warning.
 *
 * Setup failures in the child travel back over a close-on-exec socket (errno + step); EOF on
 * it means execve succeeded. Called on the loop thread; blocks until the exec (about 1 ms). */
#ifndef NB_SPAWN_H
#define NB_SPAWN_H

#include "base/err.h"

#include <sys/types.h>

typedef struct nb_spawn_spec {
    char *const *argv;
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
} nb_spawn_spec;

typedef struct nb_spawn_result {
    pid_t pid;          /* the instance's init (or the runtime itself when degraded) */
    int runtime_api_fd; /* listening socket, or -1 */
    int runtime_api_port;
} nb_spawn_result;

/* Detects once whether namespaces can be used. Returns 1 (isolated) or 0 (degraded). */
int nb_spawn_init(void);
int nb_spawn_isolated(void);
/* 0 on success; on failure err says which step failed (exec errors map to
 * Runtime.InvalidEntrypoint in the caller). *exec_errno is set when execve itself failed. */
int nb_spawn(const nb_spawn_spec *spec, nb_spawn_result *out, int *exec_errno, nb_err *err);
/* Kills the instance and all its descendants. */
void nb_spawn_kill(pid_t pid);

#endif
