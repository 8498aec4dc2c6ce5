/* nb_seccomp: the system-call filter every function runtime runs under.
 *
 * A deny list at least as strict as Docker's default profile: kernel keyrings, bpf,
 * perf_event_open, userfaultfd, ptrace and cross-process memory access, the whole mount family,
 * namespace creation and joining, kexec, module loading, io_uring, clock and host settings,
 * swap, reboot, quotactl, handle-based opens. Denied calls fail with EPERM; clone3 fails with
 * ENOSYS so libcs fall back to clone, whose namespace flags the filter can inspect. A system
 * call made through a foreign ABI (i386 via int 0x80, x32) kills the process: the deny list is
 * written for the native ABI only and must not be bypassable through another syscall table.
 *
 * Compiled once with libseccomp (nb_seccomp_init) into a classic BPF program that every spawn
 * reuses; loading it in a freshly cloned child is a single prctl, async-signal-safe.
 * Threads: nb_seccomp_init once before any spawn; nb_seccomp_program from any thread after. */
#ifndef NB_SECCOMP_H
#define NB_SECCOMP_H

#include "base/err.h"

#include <linux/filter.h>

int nb_seccomp_init(nb_err *err);
/* The compiled filter, or NULL when nb_seccomp_init failed or was not called. */
const struct sock_fprog *nb_seccomp_program(void);
/* Installs prog in the calling thread (no_new_privs must already be set). Async-signal-safe;
 * -1 with errno on failure. */
int nb_seccomp_load(const struct sock_fprog *prog);
/* How many system calls the filter denies (for the doctor report). */
int nb_seccomp_rule_count(void);

#endif
