/* nb_sbx: what isolation this host can give function instances, decided once at start.
 *
 * nb_sbx_init probes every layer (namespaces, root privileges for pivot_root and the uid drop,
 * seccomp, cgroups), prepares what spawns reuse (the read-only root skeleton under
 * DATA/sandbox/root, the seccomp program, the cgroup parent groups) and logs one line per
 * layer, warning for each one that is missing and saying what isolation remains. nimbus
 * doctor prints the same table (nb_sbx_report). The per-instance work happens in
 * src/instance/spawn.c, which reads the decisions made here.
 *
 * Instances run as unprivileged uids from a private range (one uid per live instance, handed
 * out by nb_sbx_uid_acquire), each with a matching sbx_user<uid> entry in the sandbox's
 * /etc/passwd so getpwuid() works inside. Each daemon on a host holds its own block of uids
 * (an flock on /run/nimbus/uids.<k>), so instances of two daemons never share a uid.
 *
 * Threads: nb_sbx_init/nb_sbx_shutdown on the main thread, once; the rest from any thread. */
#ifndef NB_SANDBOX_H
#define NB_SANDBOX_H

#include "base/err.h"
#include "sandbox/cgroup.h"

#include <stdio.h>
#include <sys/types.h>

#define NB_SBX_UID_BASE   900000000u /* far above any uid a distribution hands out */
#define NB_SBX_UID_COUNT  4096       /* uids per daemon */
#define NB_SBX_UID_BLOCKS 64         /* daemons per host, each with its own block of uids */

typedef struct nb_sbx_status {
    int disabled;   /* NIMBUS_SANDBOX=off: plain fork+exec, for benchmarks and debugging */
    int namespaces; /* new pid, mount, net, uts and ipc namespaces per instance */
    int rootfs;     /* pivot_root into the read-only minimal root */
    int uid_drop;   /* unprivileged uid per instance, every capability dropped */
    int seccomp;
    int userns; /* user namespaces available (reported; not used, see docs/security.md) */
    nb_cg_mode cgroup;
} nb_sbx_status;

/* Probes and prepares everything once. data_dir holds the skeleton (DATA/sandbox); NULL for a
 * probe only (doctor: the root skeleton goes to a temporary directory that is removed by
 * nb_sbx_shutdown). Never fails: a missing layer is recorded and reported. */
void nb_sbx_init(const char *data_dir);
const nb_sbx_status *nb_sbx_get(void);
/* The read-only root skeleton every instance pivots into. */
const char *nb_sbx_root(void);
/* Prints the isolation table ("layer  status  detail") to f. Returns 1 when every layer is in
 * place, 0 when something is missing. */
int nb_sbx_report(FILE *f);
/* Why the daemon must not start, or NULL: running as root without the uid drop (and the root
 * it comes with) would run functions as root with every capability. */
const char *nb_sbx_fatal(void);
/* "full" (every layer), "partial" (see the table) or "off". */
const char *nb_sbx_summary(void);
/* Logs the same table through the structured log (daemon start). */
void nb_sbx_log(void);

/* This daemon's block: [first, first + NB_SBX_UID_COUNT). */
uid_t nb_sbx_uid_first(void);
/* A uid no other live instance has, or (uid_t)-1 when all are taken. */
uid_t nb_sbx_uid_acquire(void);
void nb_sbx_uid_release(uid_t uid);

/* Removes the cgroup groups (daemon exit). */
void nb_sbx_shutdown(void);

#endif
