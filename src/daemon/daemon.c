#include "daemon/daemon.h"

#include "base/log.h"
#include "base/util.h"
#include "gateway/api.h"
#include "gateway/http.h"
#include "instance/instance.h"
#include "instance/spawn.h"
#include "sandbox/sandbox.h"
#include "invoke/invoke.h"
#include "logs/logs.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

struct nb_embedded_file {
    const char *name;
    const unsigned char *data;
    size_t len;
};
extern const struct nb_embedded_file nb_embedded_files[];

typedef struct daemon {
    uv_loop_t *loop;
    char data_dir[PATH_MAX];
    char listen_host[256];
    int listen_port;
    int64_t drain_timeout_ms;
    int max_instances;     /* 0: sized from memory */
    int64_t max_memory_mb; /* 0: sized from memory */
    int lock_fd;
    nb_store *store;
    nb_logs *logs;
    nb_invoker *invoker;
    nb_http *http;
    nb_api api;
    uv_signal_t sigterm, sigint, sigchld;
    uv_timer_t drain_timer;
    uv_prepare_t log_flush;
    int64_t drain_deadline_us;
    int shutting_down;
    int stopped; /* instances told to stop; the loop ends when the last is reaped */
} daemon_t;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: nimbus serve [--listen HOST:PORT] [--data DIR] [--drain-timeout S]\n"
        "                    [--max-instances N] [--max-memory-mb MB]\n\n"
        "Runs the nimbus daemon: the admin API, the function instances and their logs.\n\n"
        "Options:\n"
        "  --listen HOST:PORT   address to serve on (env NIMBUS_LISTEN; default 127.0.0.1:8080;\n"
        "                       port 0 picks a free port, written to DATA/listen)\n"
        "  --data DIR           data directory (env NIMBUS_DATA; default ./nimbus-data)\n"
        "  --drain-timeout S    on SIGTERM/SIGINT, how long in-flight invocations may run on\n"
        "                       (default 30)\n"
        "  --max-instances N    instances alive at once, all functions together (env\n"
        "                       NIMBUS_MAX_INSTANCES; default: physical memory / 64 MB, 8..4096)\n"
        "  --max-memory-mb MB   sum of the memory_mb of those instances (env "
        "NIMBUS_MAX_MEMORY_MB;\n"
        "                       default: three quarters of physical memory)\n"
        "  --routes             print the admin API's routes and exit\n"
        "  --check              print what isolation this host gives functions and exit\n"
        "                       (the same table as 'nimbus doctor'; exit 1 if a layer is missing)\n"
        "  -h, --help           this help\n\n"
        "Environment: NIMBUS_LOG_LEVEL=debug|info|warn|error, NIMBUS_IDLE_TIMEOUT_S (default "
        "300),\nNIMBUS_SPAWN_SHELLS (pre-spawned instance shells, default 8), NIMBUS_SANDBOX=off "
        "(no isolation\nat all: benchmarks and debugging only).\n");
}

/* A positive integer option or environment value; -1 if malformed or out of range. */
static int64_t parse_count(const char *s, int64_t max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max) return -1;
    return v;
}

static int parse_listen(const char *s, char *host, size_t hsize, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || end == colon + 1) return -1;
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && colon[-1] == ']') { /* [::1]:8080 */
        s++;
        n -= 2;
    }
    if (n >= hsize) return -1;
    memcpy(host, s, n);
    host[n] = 0;
    *port = (int)p;
    return 0;
}

/* Takes an exclusive lock on DATA/nimbus.lock for the daemon's life; a second daemon fails. */
static int take_lock(daemon_t *d)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/nimbus.lock", d->data_dir);
    d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        nb_error("daemon", "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "?";
        ssize_t n = pread(d->lock_fd, pid, sizeof pid - 1, 0);
        if (n > 0) pid[n] = 0;
        pid[strcspn(pid, "\n")] = 0;
        fprintf(stderr, "nimbus: another nimbus (pid %s) is already running on %s\n", pid,
                d->data_dir);
        return -1;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(d->lock_fd, 0) < 0 || pwrite(d->lock_fd, buf, (size_t)n, 0) < 0)
        nb_warn("daemon", "cannot record pid in %s", path);
    return 0;
}

static int ensure_token(daemon_t *d)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/admin.token", d->data_dir);
    size_t len = 0;
    char *tok = nb_read_file(path, 256, &len);
    if (tok) {
        tok[strcspn(tok, "\r\n")] = 0;
        snprintf(d->api.token, sizeof d->api.token, "%s", tok);
        free(tok);
        if (strlen(d->api.token) >= 32) return 0;
        nb_warn("daemon", "%s is too short; generating a new token", path);
    }
    char hex[65];
    nb_random_hex(hex, 32);
    char line[80];
    snprintf(line, sizeof line, "%s\n", hex);
    if (nb_write_file(path, line, strlen(line), 0600) < 0) {
        nb_error("daemon", "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(d->api.token, sizeof d->api.token, "%s", hex);
    nb_info("daemon", "created admin token in %s", path);
    return 0;
}

/* The runtime shims travel inside the binary; they are rewritten at every start so an
 * upgrade of nimbus upgrades them too. */
static int write_runtimes(daemon_t *d)
{
    for (const struct nb_embedded_file *f = nb_embedded_files; f->name; f++) {
        char path[PATH_MAX], dir[PATH_MAX];
        snprintf(path, sizeof path, "%s/runtimes/%s", d->data_dir, f->name);
        snprintf(dir, sizeof dir, "%s", path);
        *strrchr(dir, '/') = 0;
        if (nb_mkdir_p(dir, 0755) < 0 || nb_write_file(path, f->data, f->len, 0644) < 0) {
            nb_error("daemon", "cannot write %s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void on_sigchld(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        nb_inst_reaped(pid, status);
}

/* Runs before the loop blocks: whatever this turn logged goes to disk in one write per file. */
static void on_prepare(uv_prepare_t *p)
{
    nb_logs_flush(((daemon_t *)p->data)->logs);
}

static void finish_shutdown(daemon_t *d)
{
    uv_timer_stop(&d->drain_timer);
    nb_info("daemon", "stopping %zu instances", nb_invoker_instances(d->invoker));
    nb_invoker_stop_all(d->invoker);
    nb_api_end_streams(&d->api);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    /* SIGCHLD stays referenced: uv_run must keep polling until every instance is reaped. */
    d->stopped = 1;
}

static void drain_tick(uv_timer_t *t)
{
    daemon_t *d = t->data;
    size_t left = nb_invoker_inflight(d->invoker);
    if (left == 0 || nb_mono_us() >= d->drain_deadline_us) {
        if (left) nb_warn("daemon", "drain deadline passed with %zu invocations in flight", left);
        finish_shutdown(d);
    }
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;
    if (d->shutting_down) {
        nb_warn("daemon", "second signal: stopping now");
        d->drain_deadline_us = 0;
        return;
    }
    d->shutting_down = 1;
    d->api.draining = 1;
    nb_info("daemon", "%s: draining %zu in-flight invocations (up to %lld ms)", strsignal(signum),
            nb_invoker_inflight(d->invoker), (long long)d->drain_timeout_ms);
    nb_http_stop_accepting(d->http);
    d->drain_deadline_us = nb_mono_us() + d->drain_timeout_ms * 1000;
    uv_timer_start(&d->drain_timer, drain_tick, 0, 20);
}

int nb_daemon_doctor(void)
{
    nb_sbx_init(NULL);
    int all = nb_sbx_report(stdout);
    nb_sbx_shutdown();
    return all ? 0 : 1;
}

int nb_daemon_main(int argc, char **argv)
{
    nb_log_init();
    daemon_t d;
    memset(&d, 0, sizeof d);
    d.lock_fd = -1;
    d.drain_timeout_ms = 30000;
    const char *listen = getenv("NIMBUS_LISTEN");
    const char *data = getenv("NIMBUS_DATA");
    const char *max_inst = getenv("NIMBUS_MAX_INSTANCES");
    const char *max_mem = getenv("NIMBUS_MAX_MEMORY_MB");
    const char *idle = getenv("NIMBUS_IDLE_TIMEOUT_S");
    if (!listen || !*listen) listen = "127.0.0.1:8080";
    if (!data || !*data) data = "./nimbus-data";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--routes") == 0) {
            nb_api_print_routes(stdout);
            return 0;
        } else if (strcmp(a, "--check") == 0) {
            return nb_daemon_doctor();
        } else if (strcmp(a, "--listen") == 0 && val) {
            listen = val;
            i++;
        } else if (strcmp(a, "--data") == 0 && val) {
            data = val;
            i++;
        } else if (strcmp(a, "--drain-timeout") == 0 && val) {
            char *end;
            long s = strtol(val, &end, 10);
            if (*end || s < 0 || s > 3600) {
                fprintf(stderr, "nimbus: --drain-timeout must be 0..3600 seconds\n");
                return 2;
            }
            d.drain_timeout_ms = s * 1000;
            i++;
        } else if (strcmp(a, "--max-instances") == 0 && val) {
            max_inst = val;
            i++;
        } else if (strcmp(a, "--max-memory-mb") == 0 && val) {
            max_mem = val;
            i++;
        } else {
            fprintf(
                stderr,
                "nimbus: serve: unknown or incomplete option '%s' (see 'nimbus serve --help')\n",
                a);
            return 2;
        }
    }
    if (max_inst && *max_inst && (d.max_instances = (int)parse_count(max_inst, 100000)) < 0) {
        fprintf(stderr, "nimbus: --max-instances / NIMBUS_MAX_INSTANCES must be 1..100000\n");
        return 2;
    }
    if (max_mem && *max_mem && (d.max_memory_mb = parse_count(max_mem, INT64_C(1) << 40)) < 0) {
        fprintf(stderr, "nimbus: --max-memory-mb / NIMBUS_MAX_MEMORY_MB must be a positive "
                        "number of MB\n");
        return 2;
    }
    int64_t idle_s = 0;
    if (idle && *idle && (idle_s = parse_count(idle, 86400)) < 0) {
        fprintf(stderr, "nimbus: NIMBUS_IDLE_TIMEOUT_S must be 1..86400\n");
        return 2;
    }
    if (parse_listen(listen, d.listen_host, sizeof d.listen_host, &d.listen_port) < 0) {
        fprintf(stderr, "nimbus: invalid listen address '%s' (want HOST:PORT)\n", listen);
        return 2;
    }
    if (nb_mkdir_p(data, 0700) < 0 || !realpath(data, d.data_dir)) {
        fprintf(stderr, "nimbus: cannot use data dir %s: %s\n", data, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (take_lock(&d) < 0) return 1;

    int rc = 1;
    nb_err err = {0};
    char path[PATH_MAX];
    if (ensure_token(&d) < 0 || write_runtimes(&d) < 0) goto out;
    snprintf(path, sizeof path, "%s/nimbus.db", d.data_dir);
    if (!(d.store = nb_store_sqlite_open(path, &err))) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    nb_sbx_init(d.data_dir);
    nb_sbx_log();
    nb_spawn_start();
    d.loop = uv_default_loop();
    snprintf(path, sizeof path, "%s/logs", d.data_dir);
    d.logs = nb_logs_new(path, 0);
    nb_invoker_config icfg = {
        .loop = d.loop,
        .data_dir = d.data_dir,
        .store = d.store,
        .logs = d.logs,
        .idle_timeout_ms = idle_s * 1000,
        .max_instances = d.max_instances,
        .max_memory_mb = d.max_memory_mb,
    };
    d.invoker = nb_invoker_new(&icfg);
    if (nb_invoker_load(d.invoker, &err) < 0) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    d.api.data_dir = d.data_dir;
    d.api.store = d.store;
    d.api.invoker = d.invoker;
    d.api.logs = d.logs;
    snprintf(d.api.blob_root, sizeof d.api.blob_root, "%s/blobs", d.data_dir);
    snprintf(d.api.code_root, sizeof d.api.code_root, "%s/code", d.data_dir);
    d.http = nb_http_new(d.loop, nb_api_handle, &d.api);
    int port = 0;
    if (nb_http_listen(d.http, d.listen_host, d.listen_port, &port, &err) < 0) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    char addr[300];
    snprintf(addr, sizeof addr, "%s:%d\n", strchr(d.listen_host, ':') ? "[::1]" : d.listen_host,
             port);
    if (strchr(d.listen_host, ':')) snprintf(addr, sizeof addr, "[%s]:%d\n", d.listen_host, port);
    snprintf(path, sizeof path, "%s/listen", d.data_dir);
    nb_write_file(path, addr, strlen(addr), 0644);

    uv_signal_init(d.loop, &d.sigchld);
    uv_signal_start(&d.sigchld, on_sigchld, SIGCHLD);
    uv_signal_init(d.loop, &d.sigterm);
    d.sigterm.data = &d;
    uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
    uv_signal_init(d.loop, &d.sigint);
    d.sigint.data = &d;
    uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
    uv_timer_init(d.loop, &d.drain_timer);
    d.drain_timer.data = &d;
    uv_prepare_init(d.loop, &d.log_flush);
    d.log_flush.data = &d;
    uv_prepare_start(&d.log_flush, on_prepare);
    uv_unref((uv_handle_t *)&d.log_flush);
    nb_info("daemon", "nimbus %s serving on http://%s:%d data=%s store=%s sandbox=%s",
            NIMBUS_VERSION, d.listen_host, port, d.data_dir, d.store->ops->name, nb_sbx_summary());

    while (!d.stopped || nb_invoker_allocated(d.invoker) > 0)
        uv_run(d.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&d.sigchld, NULL);
    nb_invoker_free(d.invoker);
    /* Let pending closes run. */
    uv_run(d.loop, UV_RUN_NOWAIT);
    nb_info("daemon", "stopped cleanly");
    rc = 0;
out:
    if (d.store) d.store->ops->close(d.store);
    nb_logs_free(d.logs);
    nb_spawn_stop();
    nb_sbx_shutdown();
    if (d.lock_fd >= 0) close(d.lock_fd);
    return rc;
}
