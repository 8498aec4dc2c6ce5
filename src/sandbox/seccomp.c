#include "sandbox/seccomp.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/socket.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static struct sock_fprog program;
static int rules;

/* Denied with EPERM whatever their arguments. Names the running libseccomp does not know (an
 * older header on a newer kernel, or the reverse) are skipped, not fatal. */
static const char *const denied[] = {
    /* keyrings: shared kernel state across the whole host */
    "add_key",
    "keyctl",
    "request_key",
    /* kernel attack surface rarely needed by functions */
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    /* other processes' memory */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    /* the mount family and the filesystem root */
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    /* namespaces: creation goes through clone flags (below), joining through setns */
    "unshare",
    "setns",
    /* kernel code and the machine */
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "vhangup",
    "iopl",
    "ioperm",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "lookup_dcookie",
    "vm86",
    "vm86old",
    /* host-wide settings */
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    "sethostname",
    "setdomainname",
    /* handle-based opens walk around mount boundaries */
    "open_by_handle_at",
    "name_to_handle_at",
    /* NUMA policy of memory the host shares */
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    "get_mempolicy",
    "fanotify_init",
    /* newer calls Docker's allow list does not grant: host mount tables, other processes'
     * memory, LSM state, secret memory */
    "open_tree_attr",
    "statmount",
    "listmount",
    "process_mrelease",
    "set_mempolicy_home_node",
    "lsm_get_self_attr",
    "lsm_set_self_attr",
    "lsm_list_modules",
    "memfd_secret",
};

/* Calls newer than the libseccomp this was built with: by number, on the ABI we know them for. */
static const struct {
    const char *name;
    int nr;
} by_number[] = {
#if defined(__x86_64__)
    {"statmount", 457},
    {"listmount", 458},
    {"lsm_get_self_attr", 459},
    {"lsm_set_self_attr", 460},
    {"lsm_list_modules", 461},
    {"open_tree_attr", 467},
#endif
    {NULL, 0},
};

static int number_of(const char *name)
{
    int nr = seccomp_syscall_resolve_name(name);
    for (size_t i = 0; nr == __NR_SCMP_ERROR && by_number[i].name; i++)
        if (strcmp(by_number[i].name, name) == 0) nr = by_number[i].nr;
    return nr;
}

static const unsigned long ns_flags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                         CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};

int nb_seccomp_init(nb_err *err)
{
    if (program.filter) return 0;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return nb_err_set(err, 500, NB_E_INTERNAL, "seccomp: libseccomp init failed");
    /* Only the native ABI is in the filter; libseccomp sends every other one (i386, and x32
     * system-call numbers on x86_64) to the bad-architecture action. */
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    rules = 0;
    for (size_t i = 0; rc == 0 && i < sizeof denied / sizeof denied[0]; i++) {
        int nr = number_of(denied[i]);
        if (nr == __NR_SCMP_ERROR) continue;
        int real = nr >= 0; /* negative: a pseudo-number for a call this ABI lacks */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        /* -EDOM etc.: a pseudo-syscall this architecture does not have. */
        if (rc == -EDOM || rc == -EINVAL)
            rc = 0;
        else if (rc == 0)
            rules += real;
    }
    if (rc == 0) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        rules++;
    }
    for (size_t i = 0; rc == 0 && i < sizeof ns_flags / sizeof ns_flags[0]; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
    /* vsock reaches the hypervisor's services, past every network namespace. */
    if (rc == 0) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_EQ, AF_VSOCK));
        rules++;
    }
    /* personality: the flags that turn off ASLR, map page zero or make data executable. A rule
     * may test an argument only once, so "flag set and not the 0xffffffff query" is one
     * masked test per flag with bit 31 clear, and every value with bit 31 set but one of the
     * lower bits clear (anything but the query: the kernel stores such values as they are)
     * is refused by one rule per lower bit. */
    static const unsigned long bad_persona[] = {
        0x0040000 /* ADDR_NO_RANDOMIZE */, 0x0100000 /* MMAP_PAGE_ZERO */,
        0x0200000 /* ADDR_COMPAT_LAYOUT */, 0x0400000 /* READ_IMPLIES_EXEC */};
    for (size_t i = 0; rc == 0 && i < sizeof bad_persona / sizeof bad_persona[0]; i++)
        rc = seccomp_rule_add(
            ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
            SCMP_A0(SCMP_CMP_MASKED_EQ, bad_persona[i] | 0x80000000ul, bad_persona[i]));
    for (unsigned bit = 0; rc == 0 && bit < 31; bit++)
        rc = seccomp_rule_add(
            ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
            SCMP_A0(SCMP_CMP_MASKED_EQ, 0x80000000ul | (1ul << bit), 0x80000000ul));
    if (rc == 0) rules++;
    if (rc < 0) {
        seccomp_release(ctx);
        return nb_err_set(err, 500, NB_E_INTERNAL, "seccomp: building the filter: %s",
                          strerror(-rc));
    }
    /* libseccomp 2.5 exports only to an fd: go through an anonymous memory file. */
    void *bpf = NULL;
    off_t len = -1;
    int fd = memfd_create("nimbus-seccomp", MFD_CLOEXEC);
    if (fd >= 0 && seccomp_export_bpf(ctx, fd) == 0 && (len = lseek(fd, 0, SEEK_END)) > 0 &&
        (bpf = malloc((size_t)len)) != NULL && pread(fd, bpf, (size_t)len, 0) != len) {
        free(bpf);
        bpf = NULL;
    }
    if (fd >= 0) close(fd);
    seccomp_release(ctx);
    if (!bpf) return nb_err_set(err, 500, NB_E_INTERNAL, "seccomp: exporting the filter failed");
    program.len = (unsigned short)(len / sizeof(struct sock_filter));
    program.filter = bpf;
    return 0;
}

const struct sock_fprog *nb_seccomp_program(void)
{
    return program.filter ? &program : NULL;
}

int nb_seccomp_load(const struct sock_fprog *prog)
{
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0);
}

int nb_seccomp_rule_count(void)
{
    return rules;
}
