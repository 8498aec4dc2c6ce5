/* nb_cg: per-instance resource limits through Linux control groups.
 *
 * Detected once at start (nb_cg_init): cgroup v2 when the unified hierarchy has the memory and
 * pids controllers available to us, cgroup v1 when the memory and pids hierarchies are mounted
 * and writable (cpu and cpuacct are used when they are too), otherwise NONE (the caller then
 * relies on rlimits only and says so). docs/internals/cgroup.md has the details.
 *
 * Layout: one parent group per daemon ("nimbus-<pid>") created under the daemon's own cgroup
 * in each hierarchy, and below it one child group per *slot*. A slot is acquired for an
 * instance, the instance's init joins it before it forks the runtime, and the slot is released
 * when the instance is gone. Released slots are kept (bounded number of spares) and reused,
 * because creating a memory cgroup costs far more than rewriting a few limit files.
 *
 * Limits per slot: memory = memory_mb with swap off, pids.max, CPU weight proportional to memory
 * (1769 MB = 1 vCPU worth of weight, as Lambda allocates CPU) and a hard CPU cap of
 * max(1, ceil(memory_mb / 1769)) CPUs.
 *
 * Threads: every function may be called from any thread (the pool is mutex-protected); none is
 * called on an invocation's warm path. nb_cg_shutdown must not overlap the others. */
#ifndef NB_CGROUP_H
#define NB_CGROUP_H

#include "base/err.h"

#include <stdint.h>
#include <stdio.h>

typedef enum nb_cg_mode { NB_CG_NONE, NB_CG_V1, NB_CG_V2 } nb_cg_mode;

typedef struct nb_cg_slot nb_cg_slot;

typedef struct nb_cg_limits {
    int memory_mb; /* > 0 */
    int pids_max;  /* > 0 */
} nb_cg_limits;

#define NB_CG_MAX_JOIN 4 /* cgroup.procs files to join at most (v1: one per hierarchy) */

/* Detects the cgroup mode once and creates the daemon's parent groups. tag names the parent
 * group ("nimbus-<pid>" when NULL; "<tag>.1" and so on when a live daemon holds that name).
 * Never fails hard: on any problem it settles on NB_CG_NONE and records why (nb_cg_describe).
 * Returns the mode. Idempotent until nb_cg_shutdown, after which it detects again. On v2 it
 * may move the calling process into "<tag>/daemon" (see the doc). */
nb_cg_mode nb_cg_init(const char *tag);
nb_cg_mode nb_cg_mode_get(void);
/* One human line: what is in use or what is missing, e.g.
 * "cgroup v2: memory, pids, cpu under /sys/fs/cgroup/system.slice/nimbus.service/nimbus-123" or
 * "none: v2: ...; v1: mkdir /sys/fs/cgroup/memory/nimbus-123: EROFS". Static storage. */
const char *nb_cg_describe(void);

/* A slot with the limits applied, its peak-memory counter reset and its OOM-kill baseline
 * recorded. NULL with err set: NB_E_UNAVAILABLE when the mode is NONE, NB_E_INTERNAL when the
 * limits are invalid or the kernel refuses. CPU limits are best effort (logged once). */
nb_cg_slot *nb_cg_acquire(const nb_cg_limits *lim, nb_err *err);
/* Re-applies limits to a slot already holding a process (a pre-spawned shell about to become
 * an instance) and restarts its peak and its OOM/CPU baselines. -1 with err when the kernel
 * refuses the limits (the caller should then discard the slot's process). */
int nb_cg_reset(nb_cg_slot *s, const nb_cg_limits *lim, nb_err *err);
/* Opens the slot's cgroup.procs file(s) for writing (O_WRONLY|O_CLOEXEC) into fds, returning
 * how many (<= NB_CG_MAX_JOIN) or -1 with errno. A process joins the slot by writing "0" to each
 * of them (async-signal-safe, so a freshly cloned child can do it before exec). Join before
 * unsharing a user namespace: kernels before 5.16 check the writer's credentials at write
 * time. The caller closes them. */
int nb_cg_open_join_fds(nb_cg_slot *s, int fds[NB_CG_MAX_JOIN]);
/* OOM kills in this slot since it was acquired (from memory.events / memory.oom_control), -1
 * when the kernel does not count them (v1 before 4.13). */
int nb_cg_oom_kills(nb_cg_slot *s);
/* Peak memory use in bytes since acquire (memory.peak / memory.max_usage_in_bytes), -1 when
 * unknown (v2 before 6.12 on a reused slot). Starts from what the slot holds at acquire, which
 * includes page cache an earlier tenant left charged to it. */
int64_t nb_cg_peak_bytes(nb_cg_slot *s);
/* CPU time used in microseconds since acquire (cpu.stat usage_usec / cpuacct.usage), -1 when
 * unknown. */
int64_t nb_cg_cpu_usec(nb_cg_slot *s);
/* Number of processes currently in the slot, -1 when unknown. */
int nb_cg_procs(nb_cg_slot *s);
/* SIGKILLs every process in the slot (cgroup.kill on v2, a loop over cgroup.procs on v1) and
 * waits briefly until it is empty. 0 when empty afterwards. */
int nb_cg_kill(nb_cg_slot *s);
/* Returns the slot to the pool once its processes are gone (kills leftovers first). Spares
 * above the pool bound are removed. s is invalid afterwards. */
void nb_cg_release(nb_cg_slot *s);
/* Removes every spare slot and the daemon's parent groups (daemon exit). Slots still acquired
 * are killed and removed too; their nb_cg_release then only frees them. */
void nb_cg_shutdown(void);
/* Absolute path of the slot's group in the first hierarchy (for logs and tests). */
const char *nb_cg_path(const nb_cg_slot *s);

#endif
