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
#include "gateway/gw.h"
#include "gateway/alog.h"
#include "metering/usage.h"
#include "events/async.h"
#include "events/bus.h"
#include "events/calls.h"
#include "events/fan.h"
#include "events/queue.h"
#include "events/schedules.h"
#include "events/topics.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

struct nb_embedded_file {
    const char *name;
    const unsigned char *data;
    size_t len;
};
extern const struct nb_embedded_file nb_embedded_files[];

typedef struct daemon daemon_t;

/* One event loop of the data plane: its thread (loop 0 is the main thread's), its listener,
 * HTTP context, API, invoker (pools, instances) and logs. */
typedef struct dloop {
    daemon_t *d;
    int index;
    char tag[12]; /* X-Nimbus-Loop */
    uv_loop_t own;
    uv_loop_t *loop;
    pthread_t thread;
    int has_thread;
    nb_logs *logs;
    nb_invoker *invoker;
    nb_calls *calls; /* what its functions' calls do besides invoke */
    nb_http *http;
    nb_api api;
    nb_http *gw_http; /* the API gateway's listener */
    nb_gw_loop *gw;
    uv_async_t ctl;   /* the main thread's orders: drain, stop */
    atomic_int order; /* ORDER_* (only ever raised) */
    int order_done;   /* the last order this loop carried out */
    uv_prepare_t log_flush;
    uv_timer_t stop_tick; /* while stopping: re-check the end condition (other loops' work) */
    int stopped;
} dloop;

enum { ORDER_NONE, ORDER_DRAIN, ORDER_STOP };

struct daemon {
    uv_loop_t *loop; /* loop 0's */
    int nloops;
    dloop *loops;
    nb_sched *sched;
    pthread_mutex_t admin_mu;
    atomic_int loops_done; /* threads whose loop has ended */
    char data_dir[PATH_MAX];
    char listen_host[256];
    int listen_port;
    char gw_host[256];
    int gw_port;
    nb_alog *alog;
    nb_use *use;         /* metering: every invocation's record, usage and cost */
    uv_timer_t use_tick; /* loop 0, each second: provisioned concurrency's kept time */
    uv_timer_t ser_tick; /* loop 0, each second: the console's dashboard series */
    const char *prices;  /* --prices / NIMBUS_PRICES: the price sheet's file, or NULL */
    nb_gw *gw;
    nb_q *q;
    _Atomic(nb_async *) async; /* loop 0's dispatcher; NULL before it starts and once stopping */
    nb_schd *schd;             /* loop 0's scheduler */
    /* Loop 0's forwarder (topic fan-out, event rules); published once its sources are set. */
    _Atomic(nb_fan *) fan;
    _Atomic(nb_topics *) topics; /* loop 0's topic fan-out planner and webhook deliverer */
    nb_bus *bus;                 /* rules (planned on loop 0) and platform events (any thread) */
    nb_met *metrics;             /* GET /metrics: counted on every loop, read by scrapes */
    int metrics_public;          /* --metrics-public: /metrics without the admin token */
    int64_t drain_timeout_ms;
    int max_instances;     /* 0: sized from memory */
    int64_t max_memory_mb; /* 0: sized from memory */
    int max_call_depth;    /* calls between functions: the deepest chain */
    int lock_fd;
    nb_store *store;
    char token[80];
    uv_signal_t sigterm, sigint, sigchld;
    uv_timer_t drain_timer;
    int64_t drain_deadline_us;
    int shutting_down;
    int stopping; /* every loop was told to stop */
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: nimbus serve [--listen HOST:PORT] [--gateway-listen HOST:PORT] [--data DIR]\n"
        "                    [--drain-timeout S] [--max-instances N] [--max-memory-mb MB]\n"
        "                    [--loops N] [--max-call-depth N] [--metrics-public]\n"
        "                    [--prices FILE]\n\n"
        "Runs the nimbus daemon: the admin API, the API gateway, the function instances and\n"
        "their logs.\n\n"
        "Options:\n"
        "  --prices FILE        the price sheet `nimbus usage` costs with (env NIMBUS_PRICES):\n"
        "                       JSON {\"request_per_million\", \"gb_second\",\n"
        "                       \"provisioned_gb_second\", \"cpu_ms\"} in dollars; missing keys\n"
        "                       keep Lambda's x86 prices (docs/internals/metering.md)\n"
        "  --listen HOST:PORT   the admin API's address (env NIMBUS_LISTEN; default\n"
        "                       127.0.0.1:8080; port 0 picks a free port, written to DATA/listen)\n"
        "  --gateway-listen HOST:PORT\n"
        "                       the API gateway's address, where APIs answer (env\n"
        "                       NIMBUS_GATEWAY_LISTEN; default 127.0.0.1:8000; port 0 picks a\n"
        "                       free port, written to DATA/gateway.listen)\n"
        "  --data DIR           data directory (env NIMBUS_DATA; default ./nimbus-data)\n"
        "  --drain-timeout S    on SIGTERM/SIGINT, how long in-flight invocations may run on\n"
        "                       (default 30)\n"
        "  --max-instances N    instances alive at once, all functions together (env\n"
        "                       NIMBUS_MAX_INSTANCES; default: physical memory / 64 MB, 8..4096)\n"
        "  --max-memory-mb MB   sum of the memory_mb of those instances (env "
        "NIMBUS_MAX_MEMORY_MB;\n"
        "                       default: three quarters of physical memory)\n"
        "  --loops N            event loops serving requests, each on its own thread with its\n"
        "                       own listener on the address (env NIMBUS_LOOPS; default: one per\n"
        "                       online CPU, at most 64)\n"
        "  --max-call-depth N   how deep functions may call functions (A calls B calls C...);\n"
        "                       a deeper call fails with call_depth_exceeded (env\n"
        "                       NIMBUS_MAX_CALL_DEPTH; default 16, at most 1000)\n"
        "  --metrics-public     serve GET /metrics without the admin token (for scrapers that\n"
        "                       cannot send one; default: the token is required)\n"
        "  --routes             print the admin API's routes and exit\n"
        "  --check              print what isolation this host gives functions and exit\n"
        "                       (the same table as 'nimbus doctor'; exit 1 if a layer is missing)\n"
        "  -h, --help           this help\n\n"
        "Environment: NIMBUS_LOG_LEVEL=debug|info|warn|error, NIMBUS_IDLE_TIMEOUT_S (default "
        "300),\nNIMBUS_SPAWN_SHELLS (pre-spawned instance shells, default 8), NIMBUS_SANDBOX=off "
        "(no isolation\nat all: benchmarks and debugging only).\n");
}

/* The durable queues' writer thread: a queue has visible messages. */
static void on_q_notify(void *ud, const char *queue)
{
    daemon_t *d = ud;
    nb_async_notify(atomic_load(&d->async), queue);
    nb_fan_notify(atomic_load(&d->fan), queue);
    nb_topics_notify(atomic_load(&d->topics), queue);
}

/* "host:port\n" as clients write it (IPv6 in brackets). */
static void format_addr(const char *host, int port, char *out, size_t size)
{
    if (strchr(host, ':'))
        snprintf(out, size, "[%s]:%d\n", host, port);
    else
        snprintf(out, size, "%s:%d\n", host, port);
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
        snprintf(d->token, sizeof d->token, "%s", tok);
        free(tok);
        if (strlen(d->token) >= 32) return 0;
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
    snprintf(d->token, sizeof d->token, "%s", hex);
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
    /* `require('nimbus')` / `import 'nimbus'` resolve by walking node_modules upwards from the
     * function's code. In the sandbox /node_modules points at the runtime's (the skeleton's
     * link); without the sandbox the code is DATA/code/SHA, so DATA/node_modules does. */
    char link[PATH_MAX];
    snprintf(link, sizeof link, "%s/node_modules", d->data_dir);
    if (symlink("runtimes/node/node_modules", link) < 0 && errno != EEXIST)
        nb_warn("daemon", "cannot link %s: %s", link, strerror(errno));
    return 0;
}

/* Loop 0 reaps every child; nb_inst_reaped hands each exit to the loop that owns it. */
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
    nb_logs_flush(((dloop *)p->data)->logs);
}

/* The order to drain or stop, carried out on the loop's own thread. */
static void on_stop_tick(uv_timer_t *t)
{
    (void)t; /* waking up is all: run_loop re-checks */
}

static void on_ctl(uv_async_t *a)
{
    dloop *l = a->data;
    int order = atomic_load(&l->order);
    if (order >= ORDER_DRAIN && l->order_done < ORDER_DRAIN) {
        l->api.draining = 1;
        nb_http_stop_accepting(l->http);
        nb_http_stop_accepting(l->gw_http);
        nb_gw_loop_drain(l->gw);
        if (l->index == 0) {
            nb_async_stop(atomic_load(&l->d->async));
            nb_fan_stop(atomic_load(&l->d->fan));
            nb_topics_stop(atomic_load(&l->d->topics));
            nb_schd_stop(l->d->schd);
        }
        l->order_done = ORDER_DRAIN;
    }
    if (order >= ORDER_STOP && l->order_done < ORDER_STOP) {
        nb_invoker_stop_all(l->invoker);
        nb_api_end_streams(&l->api);
        l->order_done = ORDER_STOP;
        /* The loop ends once every instance is reaped and no invocation is owed anywhere
         * (see run_loop); that last part changes on other loops, hence the tick. */
        l->stopped = 1;
        uv_timer_start(&l->stop_tick, on_stop_tick, 20, 20);
    }
}

static void give_order(daemon_t *d, int order)
{
    for (int i = 0; i < d->nloops; i++) {
        atomic_store(&d->loops[i].order, order);
        uv_async_send(&d->loops[i].ctl);
    }
}

static void finish_shutdown(daemon_t *d)
{
    uv_timer_stop(&d->drain_timer);
    nb_info("daemon", "stopping the instances of %d loops", d->nloops);
    d->stopping = 1;
    give_order(d, ORDER_STOP);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    /* SIGCHLD stays referenced: loop 0 must keep reaping until every loop's instances are. */
}

static void drain_tick(uv_timer_t *t)
{
    daemon_t *d = t->data;
    /* Async events whose invocation ended but whose settlement (a retry copy, a destination
     * record, the delete) is not written yet count too: stopping before would run them again. */
    size_t left = nb_sched_inflight(d->sched) + (size_t)nb_async_inflight(atomic_load(&d->async)) +
                  (size_t)nb_fan_inflight(atomic_load(&d->fan));
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
    nb_info("daemon", "%s: draining %zu in-flight invocations (up to %lld ms)", strsignal(signum),
            nb_sched_inflight(d->sched), (long long)d->drain_timeout_ms);
    give_order(d, ORDER_DRAIN);
    d->drain_deadline_us = nb_mono_us() + d->drain_timeout_ms * 1000;
    uv_timer_start(&d->drain_timer, drain_tick, 0, 20);
}

/* Everything of one loop but its thread; on the main thread, before any loop runs. */
static void loop_init(daemon_t *d, dloop *l, int index, int64_t idle_s)
{
    l->d = d;
    l->index = index;
    snprintf(l->tag, sizeof l->tag, "%d", index);
    if (index == 0) {
        l->loop = uv_default_loop();
    } else {
        uv_loop_init(&l->own);
        l->loop = &l->own;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/logs", d->data_dir);
    l->logs = nb_logs_new(path, 0);
    nb_logs_attach(l->logs, l->loop);
    nb_invoker_config icfg = {
        .loop = l->loop,
        .sched = d->sched,
        .index = index,
        .data_dir = d->data_dir,
        .store = d->store,
        .logs = l->logs,
        .idle_timeout_ms = idle_s * 1000,
        .max_call_depth = d->max_call_depth,
        .metrics = d->metrics,
        .use = d->use,
    };
    /* The port first: the functions' calls answer through it, as the API's sends do. */
    l->api.port = nb_async_port_new(l->loop);
    l->calls = nb_calls_new(d->q, l->api.port);
    icfg.call_ops = &nb_calls_ops;
    icfg.call_ud = l->calls;
    l->invoker = nb_invoker_new(&icfg);
    l->api.data_dir = d->data_dir;
    snprintf(l->api.token, sizeof l->api.token, "%s", d->token);
    l->api.store = d->store;
    l->api.invoker = l->invoker;
    l->api.logs = l->logs;
    l->api.admin_mu = &d->admin_mu;
    snprintf(l->api.blob_root, sizeof l->api.blob_root, "%s/blobs", d->data_dir);
    snprintf(l->api.code_root, sizeof l->api.code_root, "%s/code", d->data_dir);
    l->api.gw = d->gw;
    l->api.alog = d->alog;
    l->api.use = d->use;
    l->api.q = d->q;
    l->api.metrics = d->metrics;
    l->api.metrics_public = d->metrics_public;
    l->http = nb_http_new(l->loop, nb_api_handle, &l->api);
    l->gw = nb_gw_loop_new(d->gw, l->invoker);
    l->gw_http = nb_http_new(l->loop, nb_gw_handle, l->gw);
    /* Above the gateway's own cap, so that it answers over-cap bodies itself, in JSON. */
    nb_http_set_max_body(l->gw_http, NB_GW_MAX_BODY + (1u << 20));
    if (d->nloops > 1) {
        nb_http_set_loop_tag(l->http, l->tag);
        nb_http_set_loop_tag(l->gw_http, l->tag);
    }
    uv_async_init(l->loop, &l->ctl, on_ctl);
    l->ctl.data = l;
    uv_timer_init(l->loop, &l->stop_tick);
    uv_prepare_init(l->loop, &l->log_flush);
    l->log_flush.data = l;
    uv_prepare_start(&l->log_flush, on_prepare);
    uv_unref((uv_handle_t *)&l->log_flush);
}

/* Runs a loop until it was told to stop, its last instance is gone and no invocation is in
 * flight on any loop: an invocation forwarded from here may still be answered by another
 * loop, or one forwarded to here be waiting for this loop's instances. */
static void run_loop(dloop *l)
{
    while (!l->stopped || nb_invoker_allocated(l->invoker) > 0 ||
           nb_sched_inflight(l->d->sched) > 0)
        uv_run(l->loop, UV_RUN_ONCE);
}

static void *loop_thread(void *arg)
{
    dloop *l = arg;
    run_loop(l);
    atomic_fetch_add(&l->d->loops_done, 1);
    /* Loop 0 waits for every loop to end before it ends: wake it. */
    uv_async_send(&l->d->loops[0].ctl);
    return NULL;
}

/* After the loop ended (its thread joined): closes and frees what it owned. */
static void loop_release(dloop *l)
{
    if (!l->invoker) return;
    uv_close((uv_handle_t *)&l->ctl, NULL);
    uv_close((uv_handle_t *)&l->stop_tick, NULL);
    uv_close((uv_handle_t *)&l->log_flush, NULL);
    nb_logs_detach(l->logs);
    nb_async_port_free(l->api.port);
    l->api.port = NULL;
    nb_invoker_free(l->invoker);
    nb_calls_free(l->calls);
    l->calls = NULL;
    /* Let pending closes run. */
    uv_run(l->loop, UV_RUN_NOWAIT);
    uv_run(l->loop, UV_RUN_NOWAIT);
    /* Last: nothing runs on the loop any more that could reach it. */
    nb_gw_loop_free(l->gw);
    l->gw = NULL;
    if (l->index != 0) uv_loop_close(l->loop);
}

/* Metering's database and price sheet (docs/internals/metering.md). */
static int open_usage(daemon_t *d, nb_err *err)
{
    /* Off only to measure what metering costs (the throughput benchmark's "off" run). */
    const char *off = getenv("NIMBUS_METERING");
    if (off && strcmp(off, "off") == 0) {
        nb_warn("daemon", "metering is off (NIMBUS_METERING=off): no usage is recorded");
        return 0;
    }
    nb_use_config ucfg = {0};
    nb_use_prices_default(&ucfg.prices);
    if (d->prices && *d->prices) {
        size_t len;
        char *text = nb_read_file(d->prices, 1 << 20, &len);
        if (!text) return nb_err_sys(err, errno, "--prices %s", d->prices);
        int rc = nb_use_prices_parse(&ucfg.prices, text, len, err);
        free(text);
        if (rc < 0) return nb_err_prefix(err, "--prices %s", d->prices);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/usage.db", d->data_dir);
    return (d->use = nb_use_open(path, &ucfg, err)) ? 0 : -1;
}

static void provisioned_one(void *ud, const char *ns, const char *fn, int memory_mb, int kept)
{
    daemon_t *d = ud;
    nb_use_rec r;
    memset(&r, 0, sizeof r);
    r.start_ms = nb_now_ms();
    r.memory_mb = memory_mb;
    r.kept_ms = (int64_t)kept * 1000; /* this second, for each instance kept */
    snprintf(r.ns, sizeof r.ns, "%s", ns);
    snprintf(r.fn, sizeof r.fn, "%s", fn);
    nb_use_record(d->use, &r);
}

/* Once a second: instances kept warm by min_instances are charged for the second, as
 * provisioned concurrency is. Sampled rather than summed at stop, so a long-lived instance
 * shows up minute by minute, not when it finally stops. */
static void on_use_tick(uv_timer_t *t)
{
    daemon_t *d = t->data;
    if (d->shutting_down || !d->use) return;
    nb_invoker_provisioned(d->loops[0].invoker, provisioned_one, d);
}

static void on_ser_tick(uv_timer_t *t)
{
    daemon_t *d = t->data;
    nb_met_sample(d->metrics, (int64_t)time(NULL));
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
    const char *gw_listen = getenv("NIMBUS_GATEWAY_LISTEN");
    const char *data = getenv("NIMBUS_DATA");
    const char *max_inst = getenv("NIMBUS_MAX_INSTANCES");
    const char *max_mem = getenv("NIMBUS_MAX_MEMORY_MB");
    const char *idle = getenv("NIMBUS_IDLE_TIMEOUT_S");
    const char *loops = getenv("NIMBUS_LOOPS");
    const char *call_depth = getenv("NIMBUS_MAX_CALL_DEPTH");
    d.prices = getenv("NIMBUS_PRICES");
    if (!listen || !*listen) listen = "127.0.0.1:8080";
    if (!gw_listen || !*gw_listen) gw_listen = "127.0.0.1:8000";
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
        } else if (strcmp(a, "--gateway-listen") == 0 && val) {
            gw_listen = val;
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
        } else if (strcmp(a, "--loops") == 0 && val) {
            loops = val;
            i++;
        } else if (strcmp(a, "--metrics-public") == 0) {
            d.metrics_public = 1;
        } else if (strcmp(a, "--prices") == 0 && val) {
            d.prices = val;
            i++;
        } else if (strcmp(a, "--max-call-depth") == 0 && val) {
            call_depth = val;
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
    d.nloops = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (d.nloops < 1) d.nloops = 1;
    if (d.nloops > 64) d.nloops = 64;
    if (loops && *loops && (d.nloops = (int)parse_count(loops, 64)) < 0) {
        fprintf(stderr, "nimbus: --loops / NIMBUS_LOOPS must be 1..64\n");
        return 2;
    }
    d.max_call_depth = NB_CALL_DEPTH_DEFAULT;
    if (call_depth && *call_depth && (d.max_call_depth = (int)parse_count(call_depth, 1000)) < 0) {
        fprintf(stderr, "nimbus: --max-call-depth / NIMBUS_MAX_CALL_DEPTH must be 1..1000\n");
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
    if (parse_listen(gw_listen, d.gw_host, sizeof d.gw_host, &d.gw_port) < 0) {
        fprintf(stderr, "nimbus: invalid gateway listen address '%s' (want HOST:PORT)\n",
                gw_listen);
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
    d.store = nb_store_locked(d.store);
    snprintf(path, sizeof path, "%s/gateway.db", d.data_dir);
    if (!(d.alog = nb_alog_open(path, NULL, &err))) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    if (open_usage(&d, &err) < 0) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    snprintf(path, sizeof path, "%s/events.db", d.data_dir);
    if (!(d.q = nb_q_open(path, on_q_notify, &d, &err))) {
        nb_error("daemon", "events: %s", err.msg);
        goto out;
    }
    d.metrics = nb_met_new();
    nb_gw_config gcfg = {
        .data_dir = d.data_dir, .store = d.store, .alog = d.alog, .metrics = d.metrics};
    if (!(d.gw = nb_gw_new(&gcfg, &err))) {
        nb_error("daemon", "gateway: %s", err.msg);
        goto out;
    }
    nb_sbx_init(d.data_dir);
    nb_sbx_log();
    if (nb_sbx_fatal()) {
        nb_error("sandbox", "%s", nb_sbx_fatal());
        goto out;
    }
    nb_spawn_start();
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    /* Recursive: an admin route's answer may, through h2o, run another request's handler. */
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&d.admin_mu, &ma);
    pthread_mutexattr_destroy(&ma);
    d.sched = nb_sched_new(d.nloops, d.max_instances, d.max_memory_mb);
    nb_met_set_sources(d.metrics, d.sched, d.q);
    d.loops = calloc((size_t)d.nloops, sizeof *d.loops);
    if (!d.loops) abort();
    for (int i = 0; i < d.nloops; i++)
        loop_init(&d, &d.loops[i], i, idle_s);
    d.loop = d.loops[0].loop;
    if (nb_invoker_load(d.loops[0].invoker, &err) < 0) {
        nb_error("daemon", "%s", err.msg);
        goto out;
    }
    /* Async events and queue subscriptions are dispatched from loop 0 (its invoker forwards
     * to the others as it does for any invocation). */
    /* Events the previous process had taken and not settled: nobody else will, so at once. */
    int64_t released = nb_q_release_inflight(d.q, "fn/");
    if (released)
        nb_info("daemon", "%lld async events taken before a stop are delivered again",
                (long long)released);
    atomic_store(&d.async, nb_async_new(d.loops[0].loop, d.loops[0].invoker, d.q, d.store));
    d.schd = nb_schd_new(d.loops[0].loop, d.q, d.store);
    nb_fan *fan = nb_fan_new(d.loops[0].loop, d.q);
    atomic_store(&d.topics, nb_topics_new(d.loops[0].loop, d.q, d.store, fan));
    d.bus = nb_bus_new(d.q, d.store, fan, d.loops[0].invoker);
    nb_async_set_bus(atomic_load(&d.async), d.bus);
    nb_schd_set_bus(d.schd, d.bus);
    nb_topics_set_bus(atomic_load(&d.topics), d.bus);
    for (int i = 0; i < d.nloops; i++)
        nb_calls_set_bus(d.loops[i].calls, d.bus);
    /* Its sources are registered here, before the queue store's writer thread can see it. */
    atomic_store(&d.fan, fan);
    for (int i = 0; i < d.nloops; i++) {
        d.loops[i].api.async = atomic_load(&d.async);
        d.loops[i].api.schd = d.schd;
        d.loops[i].api.topics = atomic_load(&d.topics);
        d.loops[i].api.bus = d.bus;
    }
    int port = d.listen_port;
    for (int i = 0; i < d.nloops; i++) {
        /* Port 0: the first listener picks it, the others bind the same one. */
        if (nb_http_listen(d.loops[i].http, d.listen_host, port, d.nloops > 1, &port, &err) < 0) {
            nb_error("daemon", "%s", err.msg);
            goto out;
        }
    }
    int gw_port = d.gw_port;
    for (int i = 0; i < d.nloops; i++) {
        if (nb_http_listen(d.loops[i].gw_http, d.gw_host, gw_port, d.nloops > 1, &gw_port, &err) <
            0) {
            nb_error("daemon", "gateway: %s", err.msg);
            goto out;
        }
    }
    char addr[300], gw_addr[300];
    format_addr(d.listen_host, port, addr, sizeof addr);
    format_addr(d.gw_host, gw_port, gw_addr, sizeof gw_addr);

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
    uv_timer_init(d.loop, &d.use_tick);
    d.use_tick.data = &d;
    uv_timer_start(&d.use_tick, on_use_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&d.use_tick);
    uv_timer_init(d.loop, &d.ser_tick);
    d.ser_tick.data = &d;
    nb_met_sample(d.metrics, (int64_t)time(NULL)); /* the first step's base */
    uv_timer_start(&d.ser_tick, on_ser_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&d.ser_tick);
    for (int i = 1; i < d.nloops; i++) {
        /* Signals go to loop 0 (the main thread): the loops' threads block them. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        d.loops[i].has_thread =
            pthread_create(&d.loops[i].thread, NULL, loop_thread, &d.loops[i]) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!d.loops[i].has_thread) {
            nb_error("daemon", "cannot start the thread of loop %d", i);
            abort();
        }
    }
    /* Written once every loop listens: whoever reads it may connect to any of them. */
    snprintf(path, sizeof path, "%s/gateway.listen", d.data_dir);
    nb_write_file(path, gw_addr, strlen(gw_addr), 0644);
    snprintf(path, sizeof path, "%s/listen", d.data_dir);
    nb_write_file(path, addr, strlen(addr), 0644);
    nb_info("daemon",
            "nimbus %s serving on http://%s:%d gateway=http://%s:%d loops=%d data=%s store=%s "
            "sandbox=%s",
            NIMBUS_VERSION, d.listen_host, port, d.gw_host, gw_port, d.nloops, d.data_dir,
            d.store->ops->name, nb_sbx_summary());

    run_loop(&d.loops[0]);
    /* Loop 0 reaps for all: it goes on until every other loop has ended. */
    while (atomic_load(&d.loops_done) < d.nloops - 1)
        uv_run(d.loop, UV_RUN_ONCE);
    for (int i = 1; i < d.nloops; i++)
        if (d.loops[i].has_thread) pthread_join(d.loops[i].thread, NULL);
    uv_close((uv_handle_t *)&d.sigchld, NULL);
    uv_close((uv_handle_t *)&d.use_tick, NULL);
    uv_close((uv_handle_t *)&d.ser_tick, NULL);
    /* The queues' last commit runs its callbacks, which post to the loops' ports and the
     * dispatcher: both still exist until after it. */
    nb_async *async = atomic_exchange(&d.async, NULL);
    nb_topics_stop(atomic_load(&d.topics)); /* its thread uses the queues */
    nb_q_close(d.q);
    d.q = NULL;
    nb_async_free(async);
    nb_fan_free(atomic_exchange(&d.fan, NULL));
    nb_topics_free(atomic_exchange(&d.topics, NULL));
    nb_schd_free(d.schd);
    d.schd = NULL;
    nb_bus_free(d.bus); /* after everything that emits or plans events */
    d.bus = NULL;
    for (int i = 0; i < d.nloops; i++)
        loop_release(&d.loops[i]);
    nb_info("daemon", "stopped cleanly");
    rc = 0;
out:
    if (rc != 0 && d.loops) _exit(1); /* loops half set up: nothing worth tidying */
    nb_gw_free(d.gw);
    if (d.q) nb_q_close(d.q);
    if (d.alog) nb_alog_close(d.alog);
    nb_use_close(d.use); /* after the loops: their last invocations' records are committed */
    if (d.store) d.store->ops->close(d.store);
    for (int i = 0; d.loops && i < d.nloops; i++)
        nb_logs_free(d.loops[i].logs);
    free(d.loops);
    nb_sched_free(d.sched);
    nb_met_free(d.metrics); /* after every loop and the gateway: they count into it */
    pthread_mutex_destroy(&d.admin_mu);
    nb_spawn_stop();
    nb_sbx_shutdown();
    if (d.lock_fd >= 0) close(d.lock_fd);
    return rc;
}
