#include "instance/instance.h"

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "instance/channel.h"
#include "instance/rapi_parse.h"
#include "instance/spawn.h"
#include "logs/logs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Output a single instance may push per second before its pipes stop being read; the
 * runtime then blocks in write(2) instead of the daemon drowning in its output. */
#define OUTPUT_BYTES_PER_SEC (4u << 20)
#define REAP_GRACE_MS        1000
#define RAPI_MAX_CONNS       8

typedef enum transport { TRANSPORT_NONE, TRANSPORT_CHANNEL, TRANSPORT_HTTP } transport;

typedef struct rapi_conn rapi_conn;

/* A call of the job in flight waiting for its answer (nb_inst_call_done). */
typedef struct pending_call {
    uint32_t id;
    int used;
    int http;        /* asked on the Runtime API: answered on conn */
    rapi_conn *conn; /* NULL once that connection closed: the answer is dropped */
} pending_call;

typedef struct out_stream {
    uv_pipe_t pipe;
    nb_buf line;
    const char *name;
    int open;
    struct inst_impl *inst;
} out_stream;

typedef struct inst_impl {
    nb_inst pub;
    nb_inst_env env;
    const nb_inst_hooks *hooks;
    pid_t pid;
    nb_spawn_result sr;      /* uid and cgroup slot, given back in finalize */
    int64_t cpu_at_dispatch; /* the cgroup's CPU µs when the job in flight started; -1 none */
    transport transport;
    int handles; /* open uv handles; memory goes when it drops to 0 after STOPPED */
    int reaped, exit_status, finalized;

    uv_pipe_t chan;
    int chan_open;
    nb_buf chan_in;

    out_stream out, err;
    size_t out_window_bytes;
    int64_t out_window_start;
    int out_paused;

    uv_timer_t timer; /* init deadline, then invocation deadline */
    uv_timer_t aux;   /* output throttle resume, reap grace */
    int timer_is_init;

    uv_poll_t report_poll; /* the spawn's reports: the listener, then exec or failure */
    int report_open;

    uv_tcp_t rapi_listener;
    int rapi_open;
    rapi_conn *conns;
    rapi_conn *next_waiter; /* a parked GET /next */
    int job_undelivered;    /* dispatched but not yet handed to an HTTP runtime */

    /* The job in flight; strings owned by the invocation, alive until hooks->result. */
    void *tag;
    nb_inst_job job;
    char request_id[40];
    char last_request_id[40];
    /* Copies of the job's strings: an HTTP runtime fetches the job later, after the caller's
     * buffers are gone (the event itself is owned by the invocation until the result). */
    char function_arn[256];
    char trace_id[128];
    char client_context[4096];

    /* The job's calls still waiting; all forgotten when the job ends. */
    pending_call calls[NB_INST_MAX_CALLS];
    int n_calls;
    uint32_t next_http_call;

    nb_inst_result init_error;
    nb_buf init_error_body;
    char init_error_type[96];
    char stop_reason[96];

    struct inst_impl *next_all;
} inst_impl;

/* An exit reaped on the SIGCHLD thread, on its way to the owning loop. */
typedef struct reaped_exit {
    pid_t pid;
    int status;
    int64_t at_us; /* when it was reaped */
    struct reaped_exit *next;
} reaped_exit;

struct nb_inst_loop {
    uv_loop_t *loop;
    inst_impl *all; /* every instance of this loop until freed */
    uv_async_t wake;
    pthread_mutex_t mu; /* guards exits: written by the reaping thread */
    reaped_exit *exits;
};

struct rapi_conn {
    uv_tcp_t tcp;
    inst_impl *inst;
    nb_buf in;
    nb_rapi_req req;
    int closing;
    int writes_pending;
    int close_after_write; /* the client sent "Connection: close": close once answered */
    int parked;            /* a call waits for its answer: not reading further requests */
    int call_keep_alive;   /* the call's request allowed keep-alive (req is reset meanwhile) */
    rapi_conn *next;
};

static atomic_int next_id; /* instance names are unique across loops */

/* pid -> owning loop, for nb_inst_reaped (written at spawn, read at reap: the cold path only,
 * so one mutex for the process is fine). Exits reaped before their pid is registered wait in
 * `early` (bounded: the shell pool's own children pass through here too). */
#define ROUTE_BUCKETS 256
#define EARLY_MAX     64
typedef struct route {
    pid_t pid;
    nb_inst_loop *owner;
    struct route *next;
} route;
static pthread_mutex_t route_mu = PTHREAD_MUTEX_INITIALIZER;
static route *routes[ROUTE_BUCKETS];
static reaped_exit *early;
static int n_early;

static const char *state_names[] = {"starting", "idle", "busy", "stopping", "stopped"};

const char *nb_inst_state_name(nb_inst_state s)
{
    return state_names[s];
}

static void set_state(inst_impl *in, nb_inst_state s, const char *why)
{
    if (in->pub.state == s) return;
    nb_debug("instance", "%s %s -> %s fn=%s/%s v=%lld%s%s", in->pub.name,
             state_names[in->pub.state], state_names[s], in->pub.ver->ns, in->pub.ver->name,
             (long long)in->pub.ver->version, why ? " why=" : "", why ? why : "");
    if (s == NB_INST_STOPPED || s == NB_INST_STOPPING || in->pub.state == NB_INST_STARTING)
        nb_info("instance", "%s %s -> %s fn=%s v=%lld%s%s", in->pub.name,
                state_names[in->pub.state], state_names[s], in->pub.ver->name,
                (long long)in->pub.ver->version, why ? " why=" : "", why ? why : "");
    in->pub.state = s;
}

/* ---------- logs ---------- */

static void emit_line(inst_impl *in, const char *stream, const char *text, size_t len)
{
    if (len && text[len - 1] == '\r') len--;
    nb_log_line l = {
        .ns = in->pub.ver->ns,
        .fn = in->pub.ver->name,
        .version = in->pub.ver->version,
        .instance = in->pub.name,
        .request_id = in->request_id[0] ? in->request_id : in->last_request_id,
        .stream = stream,
        .text = text,
        .len = len,
    };
    nb_logs_append(in->env.logs, &l);
}

static void handle_close_cb(uv_handle_t *h);

/* Every handle closes through here so the close callback can find its instance. */
static void close_handle(inst_impl *in, uv_handle_t *h)
{
    if (uv_is_closing(h)) return;
    h->data = in;
    uv_close(h, handle_close_cb);
}

/* Every read of an instance's pipes and Runtime API connections lands here: the read
 * callbacks consume or copy the bytes before the loop reads again (loop thread only). */
static _Thread_local char read_scratch[64 << 10];

static void scratch_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = read_scratch;
    buf->len = sizeof read_scratch;
}

static void maybe_finalize(inst_impl *in);

static void throttle_resume(uv_timer_t *t);

static void out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    out_stream *os = s->data;
    inst_impl *in = os->inst;
    if (n < 0) {
        if (os->line.len) emit_line(in, os->name, os->line.data, os->line.len);
        nb_buf_reset(&os->line);
        os->open = 0;
        close_handle(in, (uv_handle_t *)&os->pipe);
        maybe_finalize(in);
        return;
    }
    const char *p = buf->base, *end = buf->base + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t take = (size_t)((nl ? nl : end) - p);
        size_t room = NB_LOGS_LINE_MAX - os->line.len;
        if (take > room) take = room;
        nb_buf_append(&os->line, p, take);
        p += take;
        if (os->line.len >= NB_LOGS_LINE_MAX || (p < end && *p == '\n')) {
            emit_line(in, os->name, os->line.data, os->line.len);
            nb_buf_reset(&os->line);
            if (p < end && *p == '\n') p++;
        }
    }
    int64_t now = nb_mono_us();
    if (now - in->out_window_start > 1000000) {
        in->out_window_start = now;
        in->out_window_bytes = 0;
    }
    in->out_window_bytes += (size_t)n;
    /* Once reaped, aux is the reap-grace timer: no throttling may replace it. */
    if (in->out_window_bytes > OUTPUT_BYTES_PER_SEC && !in->out_paused && !in->reaped) {
        in->out_paused = 1;
        uv_read_stop((uv_stream_t *)&in->out.pipe);
        uv_read_stop((uv_stream_t *)&in->err.pipe);
        int64_t wait = 1000 - (now - in->out_window_start) / 1000;
        uv_timer_start(&in->aux, throttle_resume, wait > 0 ? (uint64_t)wait : 1, 0);
    }
}

static void throttle_resume(uv_timer_t *t)
{
    inst_impl *in = t->data;
    if (!in->out_paused) return;
    in->out_paused = 0;
    in->out_window_bytes = 0;
    in->out_window_start = nb_mono_us();
    if (in->out.open) uv_read_start((uv_stream_t *)&in->out.pipe, scratch_alloc, out_read);
    if (in->err.open) uv_read_start((uv_stream_t *)&in->err.pipe, scratch_alloc, out_read);
}

static void platform_line(inst_impl *in, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void platform_line(inst_impl *in, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    emit_line(in, "platform", line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---------- results ---------- */

static void drop_calls(inst_impl *in);
static void start_call(inst_impl *in, rapi_conn *c, uint32_t id, nb_chan_str op, nb_chan_str target,
                       nb_chan_str attrs, const char *body, size_t len);

/* Reads what the runtime already wrote to its stdout/stderr pipes. The loop may see an answer
 * before output written just ahead of it (different fds, one poll), and the answer makes the
 * END/REPORT lines: draining first keeps a function's prints between its START and END. Bounded,
 * and skipped while the output is throttled; EOF is left for the pipe's own read callback. */
static void drain_output(inst_impl *in)
{
    /* Not read_scratch: this runs inside a Runtime API read callback (an answer arriving),
     * whose pipelined bytes may still be waiting in read_scratch. */
    static _Thread_local char buf[64 << 10];
    out_stream *streams[2] = {&in->out, &in->err};
    for (int i = 0; i < 2; i++) {
        out_stream *os = streams[i];
        for (int round = 0; round < 4 && os->open && !in->out_paused; round++) {
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&os->pipe, &fd) != 0) break;
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0) break;
            uv_buf_t b = uv_buf_init(buf, (unsigned)n);
            out_read((uv_stream_t *)&os->pipe, n, &b);
        }
    }
}

/* From the cgroup, never guessed: stays 0 (reported as absent) without one. */
static void update_peak(inst_impl *in)
{
    int64_t peak = nb_spawn_peak_bytes(&in->sr);
    if (peak > 0) in->pub.max_memory_used_mb = (peak + (1 << 20) - 1) >> 20;
    /* The job's CPU time: the group's counter now minus at dispatch. The instance runs one job
     * at a time, so whatever its processes used in between was that job's. */
    int64_t cpu = in->cpu_at_dispatch >= 0 ? nb_spawn_cpu_usec(&in->sr) : -1;
    in->pub.cpu_us = cpu >= in->cpu_at_dispatch ? cpu - in->cpu_at_dispatch : -1;
}

/* Ends the job in flight. keep: the instance carries on, and is IDLE again before the owner
 * hears the result, so the owner can take it back (next job, free list) before the caller gets
 * the answer: a caller that sends its next request the moment it has one finds the instance
 * free, whichever loop takes that request. */
static void deliver_result(inst_impl *in, int keep, enum nb_inst_outcome outcome, const char *type,
                           const char *body, size_t len, const char *ctype)
{
    if (!in->tag) return;
    update_peak(in);
    drain_output(in);
    void *tag = in->tag;
    in->tag = NULL;
    in->job_undelivered = 0;
    drop_calls(in);
    uv_timer_stop(&in->timer);
    nb_inst_result r = {outcome, type ? type : "", body, len, ctype ? ctype : "application/json"};
    snprintf(in->last_request_id, sizeof in->last_request_id, "%s", in->request_id);
    in->request_id[0] = 0;
    if (keep && in->pub.state == NB_INST_BUSY) {
        set_state(in, NB_INST_IDLE, NULL);
        in->pub.idle_since_us = nb_mono_us();
    }
    in->hooks->result(&in->pub, tag, &r);
}

/* A platform-made error for the job in flight; keep as for deliver_result. */
static void platform_error(inst_impl *in, int keep, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void platform_error(inst_impl *in, int keep, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = nb_fn_error_vjson(type, fmt, ap);
    va_end(ap);
    deliver_result(in, keep, NB_OUTCOME_UNHANDLED, type, s, strlen(s), NULL);
    free(s);
}

static void finish_job(inst_impl *in, enum nb_inst_outcome outcome, const char *type,
                       const char *body, size_t len, const char *ctype)
{
    deliver_result(in, 1, outcome, type, body, len, ctype);
}

static void set_init_error(inst_impl *in, const char *type, const char *body, size_t len)
{
    if (in->init_error_type[0]) return; /* the first reason wins */
    snprintf(in->init_error_type, sizeof in->init_error_type, "%s", type);
    nb_buf_reset(&in->init_error_body);
    if (body && len) nb_buf_append(&in->init_error_body, body, len);
}

static void init_error_message(inst_impl *in, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void init_error_message(inst_impl *in, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = nb_fn_error_vjson(type, fmt, ap);
    va_end(ap);
    set_init_error(in, type, s, strlen(s));
    free(s);
}

/* ---------- lifecycle ---------- */

static void kill_process(inst_impl *in, const char *why)
{
    nb_inst_state was = in->pub.state;
    if (was == NB_INST_STOPPING || was == NB_INST_STOPPED) return;
    snprintf(in->stop_reason, sizeof in->stop_reason, "%s", why);
    set_state(in, NB_INST_STOPPING, why);
    if (!in->reaped) nb_spawn_kill(&in->sr);
    /* The owner may still list it as free: tell it before anything is dispatched to it. */
    if (was == NB_INST_IDLE) in->hooks->unavailable(&in->pub);
}

static void became_ready(inst_impl *in)
{
    if (in->pub.state != NB_INST_STARTING) return;
    uv_timer_stop(&in->timer);
    in->pub.ready_us = nb_mono_us();
    in->pub.idle_since_us = in->pub.ready_us;
    set_state(in, NB_INST_IDLE, NULL);
    in->hooks->ready(&in->pub);
}

static void close_report(inst_impl *in)
{
    if (!in->report_open) return;
    in->report_open = 0;
    uv_poll_stop(&in->report_poll);
    close_handle(in, (uv_handle_t *)&in->report_poll);
}

static void close_all(inst_impl *in)
{
    close_report(in);
    if (in->chan_open) {
        in->chan_open = 0;
        close_handle(in, (uv_handle_t *)&in->chan);
    }
    if (in->rapi_open) {
        in->rapi_open = 0;
        close_handle(in, (uv_handle_t *)&in->rapi_listener);
    }
    for (rapi_conn *c = in->conns; c; c = c->next) {
        if (!c->closing) {
            c->closing = 1;
            close_handle(in, (uv_handle_t *)&c->tcp);
        }
    }
    if (in->out.open) {
        in->out.open = 0;
        close_handle(in, (uv_handle_t *)&in->out.pipe);
    }
    if (in->err.open) {
        in->err.open = 0;
        close_handle(in, (uv_handle_t *)&in->err.pipe);
    }
    close_handle(in, (uv_handle_t *)&in->timer);
    close_handle(in, (uv_handle_t *)&in->aux);
}

static void describe_exit(inst_impl *in, char *buf, size_t size)
{
    int st = in->exit_status;
    if (WIFSIGNALED(st))
        snprintf(buf, size, "signal: %s", strsignal(WTERMSIG(st)));
    else if (WEXITSTATUS(st) > 128)
        snprintf(buf, size, "signal: %s", strsignal(WEXITSTATUS(st) - 128));
    else
        snprintf(buf, size, "exit status %d", WEXITSTATUS(st));
}

/* Runs once the process is reaped and its transports have drained (or the grace ran out). */
static void finalize(inst_impl *in)
{
    if (in->finalized) return;
    in->finalized = 1;
    char how[96];
    describe_exit(in, how, sizeof how);
    nb_inst_state was = in->pub.state;
    /* The cgroup's OOM counter, not the signal, says why: SIGKILL has other senders. */
    int oom = nb_spawn_oom_killed(&in->sr);
    update_peak(in);
    nb_spawn_release(&in->sr);
    if (oom) snprintf(how + strlen(how), sizeof how - strlen(how), " (out of memory)");
    const char *exit_type = oom ? "Runtime.OutOfMemory" : "Runtime.ExitError";
    if (in->tag) {
        char *s = nb_fn_error_json(exit_type, "RequestId: %s Error: Runtime exited with error: %s",
                                   in->request_id, how);
        /* A Runtime API job the runtime never fetched (it exited instead of calling /next, as
         * runtimes do after reporting a crash) did not run: the owner may give it to the
         * replacement instance instead of failing it. */
        deliver_result(in, 0, in->job_undelivered ? NB_OUTCOME_UNDELIVERED : NB_OUTCOME_UNHANDLED,
                       exit_type, s, strlen(s), NULL);
        free(s);
    }
    if (was == NB_INST_STARTING) {
        init_error_message(in, exit_type, "Runtime exited without providing a reason: %s", how);
    }
    if (was != NB_INST_STOPPING) platform_line(in, "instance %s exited: %s", in->pub.name, how);
    set_state(in, NB_INST_STOPPED, was == NB_INST_STOPPING ? in->stop_reason : how);
    nb_inst_result ie = {NB_OUTCOME_UNHANDLED, in->init_error_type, in->init_error_body.data,
                         in->init_error_body.len, "application/json"};
    in->hooks->stopped(&in->pub, in->pub.ready_us ? NULL : &ie);
    close_all(in);
}

static int drained(inst_impl *in)
{
    if (in->chan_open || in->out.open || in->err.open) return 0;
    for (rapi_conn *c = in->conns; c; c = c->next)
        if (!c->closing) return 0;
    return 1;
}

static void maybe_finalize(inst_impl *in)
{
    if (in->reaped && !in->finalized && drained(in)) finalize(in);
}

static void reap_grace(uv_timer_t *t)
{
    inst_impl *in = t->data;
    if (in->reaped && !in->finalized) finalize(in);
}

static void reaped_here(nb_inst_loop *l, pid_t pid, int status)
{
    for (inst_impl *in = l->all; in; in = in->next_all) {
        if (in->pid != pid || in->reaped) continue;
        in->reaped = 1;
        in->exit_status = status;
        if (in->pub.state == NB_INST_IDLE) kill_process(in, "exited while idle");
        /* A timeout or throttle timer is moot now; wait briefly for the pipes to drain so the
         * last lines and a final INIT_ERROR frame are not lost. */
        uv_timer_stop(&in->timer);
        in->out_paused = 0;
        if (in->out.open) uv_read_start((uv_stream_t *)&in->out.pipe, scratch_alloc, out_read);
        if (in->err.open) uv_read_start((uv_stream_t *)&in->err.pipe, scratch_alloc, out_read);
        uv_timer_start(&in->aux, reap_grace, REAP_GRACE_MS, 0);
        maybe_finalize(in);
        return;
    }
}

static void deliver(nb_inst_loop *l, pid_t pid, int status)
{
    reaped_exit *e = malloc(sizeof *e);
    if (!e) abort();
    e->pid = pid;
    e->status = status;
    pthread_mutex_lock(&l->mu);
    e->next = l->exits;
    l->exits = e;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
}

int nb_inst_reaped(pid_t pid, int status)
{
    pthread_mutex_lock(&route_mu);
    for (route **p = &routes[(unsigned)pid % ROUTE_BUCKETS]; *p; p = &(*p)->next) {
        if ((*p)->pid == pid) {
            route *r = *p;
            *p = r->next;
            pthread_mutex_unlock(&route_mu);
            deliver(r->owner, pid, status);
            free(r);
            return 1;
        }
    }
    reaped_exit *e = malloc(sizeof *e);
    if (!e) abort();
    e->pid = pid;
    e->status = status;
    e->at_us = nb_mono_us();
    e->next = early;
    early = e;
    if (++n_early > EARLY_MAX) { /* drop the oldest: not an instance's, or long forgotten */
        reaped_exit **pp = &early;
        while ((*pp)->next)
            pp = &(*pp)->next;
        free(*pp);
        *pp = NULL;
        n_early--;
    }
    pthread_mutex_unlock(&route_mu);
    return 0;
}

/* Right after the spawn: from now on the pid's exit reaches l (or already has). An early exit
 * of the same pid reaped before this spawn began is a former holder of a reused pid. */
static void route_add(nb_inst_loop *l, pid_t pid, int64_t spawned_us)
{
    pthread_mutex_lock(&route_mu);
    for (reaped_exit **p = &early; *p; p = &(*p)->next) {
        if ((*p)->pid == pid) {
            reaped_exit *e = *p;
            *p = e->next;
            n_early--;
            if (e->at_us < spawned_us) {
                free(e);
                break;
            }
            pthread_mutex_unlock(&route_mu);
            deliver(l, e->pid, e->status);
            free(e);
            return;
        }
    }
    route *r = malloc(sizeof *r);
    if (!r) abort();
    r->pid = pid;
    r->owner = l;
    r->next = routes[(unsigned)pid % ROUTE_BUCKETS];
    routes[(unsigned)pid % ROUTE_BUCKETS] = r;
    pthread_mutex_unlock(&route_mu);
}

static void on_wake(uv_async_t *a)
{
    nb_inst_loop *l = a->data;
    pthread_mutex_lock(&l->mu);
    reaped_exit *list = l->exits;
    l->exits = NULL;
    pthread_mutex_unlock(&l->mu);
    while (list) {
        reaped_exit *next = list->next;
        reaped_here(l, list->pid, list->status);
        free(list);
        list = next;
    }
}

nb_inst_loop *nb_inst_loop_new(uv_loop_t *loop)
{
    nb_inst_loop *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->loop = loop;
    pthread_mutex_init(&l->mu, NULL);
    uv_async_init(loop, &l->wake, on_wake);
    l->wake.data = l;
    /* Does not keep the loop alive by itself: instances' own handles do. */
    uv_unref((uv_handle_t *)&l->wake);
    return l;
}

static void free_iloop(uv_handle_t *h)
{
    nb_inst_loop *l = h->data;
    while (l->exits) {
        reaped_exit *n = l->exits->next;
        free(l->exits);
        l->exits = n;
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void nb_inst_loop_free(nb_inst_loop *l)
{
    if (l) uv_close((uv_handle_t *)&l->wake, free_iloop);
}

static void handle_close_cb(uv_handle_t *h)
{
    inst_impl *in = h->data;
    if (h == (uv_handle_t *)&in->report_poll) {
        close(in->sr.report_fd);
        in->sr.report_fd = -1;
    }
    if (h->type == UV_TCP && h != (uv_handle_t *)&in->rapi_listener) {
        rapi_conn *c = (rapi_conn *)h;
        for (rapi_conn **p = &in->conns; *p; p = &(*p)->next) {
            if (*p == c) {
                *p = c->next;
                break;
            }
        }
        if (in->next_waiter == c) in->next_waiter = NULL;
        nb_buf_free(&c->in);
        nb_rapi_req_free(&c->req);
        free(c);
    }
    if (--in->handles > 0) {
        maybe_finalize(in);
        return;
    }
    for (inst_impl **p = &in->env.iloop->all; *p; p = &(*p)->next_all) {
        if (*p == in) {
            *p = in->next_all;
            break;
        }
    }
    in->hooks->freed(&in->pub);
    nb_fn_version_unref(in->pub.ver);
    nb_buf_free(&in->chan_in);
    nb_buf_free(&in->out.line);
    nb_buf_free(&in->err.line);
    nb_buf_free(&in->init_error_body);
    free(in);
}

static void timer_fired(uv_timer_t *t)
{
    inst_impl *in = t->data;
    if (in->pub.state == NB_INST_STARTING) {
        init_error_message(in, "Runtime.InitTimeout", "Init phase timed out after %.2f seconds",
                           (double)in->env.init_timeout_ms / 1000.0);
        kill_process(in, "init timeout");
    } else if (in->pub.state == NB_INST_BUSY && in->tag) {
        double secs = (double)in->job.timeout_ms / 1000.0;
        platform_line(in, "RequestId: %s Error: Task timed out after %.2f seconds", in->request_id,
                      secs);
        platform_error(in, 0, "Sandbox.Timedout",
                       "RequestId: %s Error: Task timed out after %.2f seconds", in->request_id,
                       secs);
        kill_process(in, "invocation timeout");
    }
}

/* ---------- native channel ---------- */

static void chan_protocol_error(inst_impl *in, const char *what)
{
    nb_warn("instance", "%s channel protocol error: %s", in->pub.name, what);
    if (in->pub.state == NB_INST_STARTING)
        init_error_message(in, "Runtime.InvalidProtocol", "channel protocol error: %s", what);
    else if (in->tag)
        platform_error(in, 0, "Runtime.InvalidProtocol",
                       "RequestId: %s Error: channel protocol error: %s", in->request_id, what);
    kill_process(in, "protocol error");
}

static int id_matches(inst_impl *in, const char *p, size_t len)
{
    return in->tag && strlen(in->request_id) == len && memcmp(in->request_id, p, len) == 0;
}

static void chan_frame(inst_impl *in, const nb_chan_msg *m)
{
    if (in->transport == TRANSPORT_HTTP) {
        chan_protocol_error(in, "channel used after the Runtime API");
        return;
    }
    in->transport = TRANSPORT_CHANNEL;
    switch (m->type) {
    case NB_CHAN_READY:
        if (in->pub.state != NB_INST_STARTING) return chan_protocol_error(in, "READY twice");
        became_ready(in);
        break;
    case NB_CHAN_RESPONSE:
        if (!id_matches(in, m->request_id.p, m->request_id.len))
            return chan_protocol_error(in, "RESPONSE for a request not in flight");
        if (m->body.len > (6u << 20)) {
            platform_error(in, 1, "Function.ResponseSizeTooLarge",
                           "Response payload size (%zu bytes) exceeded maximum allowed payload "
                           "size (6291456 bytes).",
                           m->body.len);
            break;
        }
        finish_job(in, NB_OUTCOME_OK, NULL, m->body.p, m->body.len, NULL);
        break;
    case NB_CHAN_ERROR:
    case NB_CHAN_FATAL_ERROR: {
        if (!id_matches(in, m->request_id.p, m->request_id.len))
            return chan_protocol_error(in, "ERROR for a request not in flight");
        char type[96];
        snprintf(type, sizeof type, "%.*s", (int)(m->error_type.len < 95 ? m->error_type.len : 95),
                 m->error_type.p);
        if (m->type == NB_CHAN_FATAL_ERROR) {
            /* Answer, then retire: the runtime is exiting and must not get the next job. */
            deliver_result(in, 0, NB_OUTCOME_HANDLED, type, m->body.p, m->body.len, NULL);
            kill_process(in, "runtime crashed");
        } else {
            finish_job(in, NB_OUTCOME_HANDLED, type, m->body.p, m->body.len, NULL);
        }
        break;
    }
    case NB_CHAN_CALL:
        if (!in->tag || in->pub.state != NB_INST_BUSY)
            return chan_protocol_error(in, "CALL with no invocation in flight");
        start_call(in, NULL, m->call_id, m->op, m->target, m->attrs, m->body.p, m->body.len);
        break;
    case NB_CHAN_INIT_ERROR: {
        if (in->pub.state != NB_INST_STARTING)
            return chan_protocol_error(in, "INIT_ERROR after init");
        char type[96];
        snprintf(type, sizeof type, "%.*s", (int)(m->error_type.len < 95 ? m->error_type.len : 95),
                 m->error_type.p);
        set_init_error(in, type, m->body.p, m->body.len);
        break;
    }
    default:
        chan_protocol_error(in, "unexpected frame type");
    }
}

static void chan_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    inst_impl *in = h->data;
    (void)hint;
    size_t want = 64 << 10;
    if (nb_buf_reserve(&in->chan_in, want) < 0) {
        /* Cap reached without a complete frame: the decoder already rejected it, so this
         * only happens if the peer sends a frame larger than the cap. */
        want = in->chan_in.max - in->chan_in.len;
        if (want == 0 || nb_buf_reserve(&in->chan_in, want) < 0) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
    }
    buf->base = in->chan_in.data + in->chan_in.len;
    buf->len = want;
}

static void chan_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    inst_impl *in = s->data;
    (void)buf;
    if (n == UV_ENOBUFS) {
        chan_protocol_error(in, "frame over the size cap");
        n = UV_EOF;
    }
    if (n < 0) {
        in->chan_open = 0;
        close_handle(in, (uv_handle_t *)&in->chan);
        /* A channel runtime without its channel can serve nothing: it is exiting. */
        if (in->transport == TRANSPORT_CHANNEL && in->pub.state == NB_INST_IDLE)
            kill_process(in, "channel closed");
        maybe_finalize(in);
        return;
    }
    in->chan_in.len += (size_t)n;
    size_t off = 0;
    while (in->chan_open) {
        nb_chan_msg m;
        long used = nb_chan_decode(in->chan_in.data + off, in->chan_in.len - off, &m);
        if (used == 0) break;
        if (used < 0) {
            chan_protocol_error(in, "malformed frame");
            break;
        }
        chan_frame(in, &m);
        off += (size_t)used;
    }
    nb_buf_consume(&in->chan_in, off);
}

typedef struct write_req {
    uv_write_t req;
    char *data;
} write_req;

static void write_done(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    (void)status; /* a dead peer shows up as EOF/exit; nothing to do here */
    free(w->data);
    free(w);
}

static int stream_write(uv_stream_t *s, char *data, size_t len)
{
    write_req *w = malloc(sizeof *w);
    if (!w) abort();
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&w->req, s, &b, 1, write_done);
    if (rc < 0) {
        free(data);
        free(w);
    }
    return rc;
}

static int chan_send_job(inst_impl *in)
{
    nb_buf out;
    nb_buf_init(&out, NB_CHAN_MAX_FRAME + 4);
    nb_chan_msg m = {.type = NB_CHAN_INVOKE, .deadline_ms = (uint64_t)in->job.deadline_ms};
    m.request_id = (nb_chan_str){in->request_id, strlen(in->request_id)};
    m.function_arn = (nb_chan_str){in->job.function_arn, strlen(in->job.function_arn)};
    m.trace_id = (nb_chan_str){in->job.trace_id, strlen(in->job.trace_id)};
    m.client_context = (nb_chan_str){in->job.client_context, strlen(in->job.client_context)};
    m.body = (nb_chan_str){in->job.event, in->job.event_len};
    if (nb_chan_encode(&out, &m) < 0) {
        nb_buf_free(&out);
        return -1;
    }
    size_t len;
    char *data = nb_buf_steal(&out, &len);
    return stream_write((uv_stream_t *)&in->chan, data, len);
}

/* ---------- Lambda Runtime API (HTTP) ---------- */

static void rapi_close(rapi_conn *c);

typedef struct conn_write_req {
    uv_write_t req;
    char *data;
    rapi_conn *conn;
} conn_write_req;

/* Closing right after uv_write would cancel a write still in progress (an event can be 6 MiB),
 * so a connection marked close_after_write closes here, once its last answer is out. */
static void conn_write_done(uv_write_t *req, int status)
{
    conn_write_req *w = (conn_write_req *)req;
    rapi_conn *c = w->conn;
    (void)status;
    free(w->data);
    free(w);
    c->writes_pending--;
    if (c->close_after_write && c->writes_pending == 0 && c->inst->next_waiter != c && !c->parked)
        rapi_close(c);
}

static void conn_write(rapi_conn *c, char *data, size_t len)
{
    if (c->closing) {
        free(data);
        return;
    }
    conn_write_req *w = malloc(sizeof *w);
    if (!w) abort();
    w->data = data;
    w->conn = c;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_done) < 0) {
        free(data);
        free(w);
        rapi_close(c);
        return;
    }
    c->writes_pending++;
}

static void rapi_send(rapi_conn *c, int status, const char *reason, const char *extra_headers,
                      const char *ctype, const char *body, size_t len)
{
    nb_buf out;
    nb_buf_init(&out, NB_RAPI_MAX_BODY + 8192);
    nb_buf_appendf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                   status, reason, ctype, len, extra_headers ? extra_headers : "",
                   c->req.keep_alive ? "" : "Connection: close\r\n");
    if (nb_buf_append(&out, body, len) < 0) {
        nb_buf_free(&out);
        return;
    }
    size_t n;
    char *data = nb_buf_steal(&out, &n);
    conn_write(c, data, n);
}

static void rapi_json(rapi_conn *c, int status, const char *reason, const char *json)
{
    rapi_send(c, status, reason, NULL, "application/json", json, strlen(json));
}

static void rapi_error(rapi_conn *c, int status, const char *reason, const char *type,
                       const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "errorMessage", msg, "errorType", type);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    rapi_json(c, status, reason, s);
    free(s);
}

static void rapi_deliver(inst_impl *in, rapi_conn *c)
{
    char headers[2048];
    int n = snprintf(headers, sizeof headers,
                     "Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %lld\r\n"
                     "Lambda-Runtime-Invoked-Function-Arn: %s\r\nLambda-Runtime-Trace-Id: %s\r\n",
                     in->request_id, (long long)in->job.deadline_ms, in->job.function_arn,
                     in->job.trace_id);
    if (in->job.client_context[0] && n > 0 && (size_t)n < sizeof headers)
        snprintf(headers + n, sizeof headers - (size_t)n, "Lambda-Runtime-Client-Context: %s\r\n",
                 in->job.client_context);
    in->job_undelivered = 0;
    rapi_send(c, 200, "OK", headers, "application/json", in->job.event, in->job.event_len);
}

/* Runtimes may name any error type; keep Lambda's shape or fall back to Unknown. */
static void normalize_error_type(const char *raw, char *out, size_t size)
{
    const char *dot = strchr(raw, '.');
    int ok = (strncmp(raw, "Runtime.", 8) == 0 || strncmp(raw, "Function.", 9) == 0) && dot &&
             dot[1] >= 'A' && dot[1] <= 'Z';
    for (const char *p = dot ? dot + 1 : raw; ok && *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) ok = 0;
    if (ok)
        snprintf(out, size, "%s", raw);
    else
        snprintf(out, size, "%s",
                 strncmp(raw, "Function.", 9) == 0 ? "Function.Unknown" : "Runtime.Unknown");
}

static size_t base64_decode(const char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = in[i] ? strchr(tbl, in[i]) : NULL;
        if (!p) continue; /* padding and whitespace */
        acc = acc << 6 | (unsigned)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    return o;
}

static void rapi_call(rapi_conn *c, const char *id, size_t idlen, const char *what);

static void rapi_handle(rapi_conn *c)
{
    inst_impl *in = c->inst;
    nb_rapi_req *r = &c->req;
    const char *prefix = "/2018-06-01/runtime/";
    if (strncmp(r->path, prefix, strlen(prefix)) != 0) {
        rapi_error(c, 404, "Not Found", "NotFound", "unknown Runtime API path");
        return;
    }
    const char *rest = r->path + strlen(prefix);
    if (in->transport == TRANSPORT_CHANNEL) {
        rapi_error(c, 403, "Forbidden", "InvalidStateTransition",
                   "runtime uses the native channel");
        return;
    }
    in->transport = TRANSPORT_HTTP;
    if (strcmp(rest, "invocation/next") == 0 && strcmp(r->method, "GET") == 0) {
        if (in->next_waiter) {
            rapi_error(c, 403, "Forbidden", "InvalidStateTransition",
                       "a /next call is already waiting");
            return;
        }
        if (in->tag && !in->job_undelivered) {
            /* /next while an invocation is open and no response came: Lambda treats it as a
             * runtime bug; the invocation fails and the instance continues. */
            platform_error(
                in, 1, "Runtime.InvalidResponse",
                "RequestId: %s Error: runtime asked for the next invocation without answering",
                in->request_id);
        }
        if (in->pub.state == NB_INST_STARTING) became_ready(in);
        if (in->tag && in->job_undelivered)
            rapi_deliver(in, c);
        else
            in->next_waiter = c;
        return;
    }
    if (strcmp(rest, "init/error") == 0 && strcmp(r->method, "POST") == 0) {
        if (in->pub.state != NB_INST_STARTING) {
            rapi_error(c, 403, "Forbidden", "InvalidStateTransition", "not in init");
            return;
        }
        char type[96];
        normalize_error_type(r->error_type[0] ? r->error_type : "Runtime.Unknown", type,
                             sizeof type);
        set_init_error(in, type, r->body.data, r->body.len);
        rapi_json(c, 202, "Accepted", "{\"status\":\"OK\"}");
        return;
    }
    if (strncmp(rest, "invocation/", 11) == 0 && strcmp(r->method, "POST") == 0) {
        const char *id = rest + 11;
        const char *slash = strrchr(id, '/');
        if (!slash) {
            rapi_error(c, 404, "Not Found", "NotFound", "unknown Runtime API path");
            return;
        }
        const char *first = strchr(id, '/');
        if (strncmp(first, "/nimbus/", 8) == 0) {
            rapi_call(c, id, (size_t)(first - id), first + 8);
            return;
        }
        size_t idlen = (size_t)(slash - id);
        const char *verb = slash + 1;
        int is_resp = strcmp(verb, "response") == 0, is_err = strcmp(verb, "error") == 0;
        if (!is_resp && !is_err) {
            rapi_error(c, 404, "Not Found", "NotFound", "unknown Runtime API path");
            return;
        }
        if (!in->tag || in->job_undelivered) {
            rapi_error(c, 403, "Forbidden", "InvalidStateTransition", "no invocation in flight");
            return;
        }
        if (!id_matches(in, id, idlen)) {
            rapi_error(c, 400, "Bad Request", "InvalidRequestID", "Invalid request ID");
            return;
        }
        if (is_resp && r->response_mode[0] && strcasecmp(r->response_mode, "streaming") != 0) {
            rapi_error(c, 400, "Bad Request", "InvalidFunctionResponseMode",
                       "Invalid function response mode");
            platform_error(in, 1, "Runtime.InvalidResponseModeHeader",
                           "RequestId: %s Error: invalid response mode '%s'", in->request_id,
                           r->response_mode);
            return;
        }
        if (r->too_large) {
            rapi_error(c, 413, "Payload Too Large", "RequestEntityTooLarge",
                       "Exceeded maximum allowed payload size (6291556 bytes).");
            platform_error(
                in, 1, "Function.ResponseSizeTooLarge",
                "Response payload size exceeded maximum allowed payload size (6291556 bytes).");
            return;
        }
        rapi_json(c, 202, "Accepted", "{\"status\":\"OK\"}");
        if (is_resp && !r->error_type[0]) {
            finish_job(in, NB_OUTCOME_OK, NULL, r->body.data, r->body.len,
                       r->content_type[0] ? r->content_type : NULL);
            return;
        }
        char type[96];
        normalize_error_type(r->error_type[0] ? r->error_type : "Runtime.Unknown", type,
                             sizeof type);
        if (is_resp && r->has_error_body_trailer) {
            /* A streamed response that failed midway: the error is in the trailer. */
            char *dec = malloc(r->error_body.len + 1);
            if (!dec) abort();
            size_t n = base64_decode(r->error_body.data, r->error_body.len, dec);
            finish_job(in, NB_OUTCOME_HANDLED, type, dec, n, NULL);
            free(dec);
            return;
        }
        if (r->body.len == 0) {
            platform_error(in, 1, type,
                           "RequestId: %s Error: runtime reported an error without details",
                           in->request_id);
            return;
        }
        finish_job(in, NB_OUTCOME_HANDLED, type, r->body.data, r->body.len, NULL);
        return;
    }
    rapi_error(c, 404, "Not Found", "NotFound", "unknown Runtime API path");
}

static void rapi_close(rapi_conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    if (c->inst->next_waiter == c) c->inst->next_waiter = NULL;
    for (int i = 0; i < NB_INST_MAX_CALLS; i++)
        if (c->inst->calls[i].conn == c) c->inst->calls[i].conn = NULL;
    close_handle(c->inst, (uv_handle_t *)&c->tcp);
}

/* No more requests on this connection; it closes after its answer (for a parked /next, after
 * the invocation that answers it). */
static void close_when_answered(rapi_conn *c)
{
    c->close_after_write = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->writes_pending == 0 && c->inst->next_waiter != c && !c->parked) rapi_close(c);
}

static void rapi_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    rapi_conn *c = (rapi_conn *)s;
    if (n < 0) {
        rapi_close(c);
        maybe_finalize(c->inst);
        return;
    }
    const char *p = buf->base;
    size_t left = (size_t)n;
    /* Bodies go straight into the parser; only an unfinished head is buffered. */
    while (left > 0 && !c->closing) {
        long used;
        if (c->in.len) {
            if (nb_buf_append(&c->in, p, left) < 0) {
                rapi_close(c);
                return;
            }
            p += left;
            left = 0;
            used = nb_rapi_parse(&c->req, c->in.data, c->in.len);
            if (used > 0) nb_buf_consume(&c->in, (size_t)used);
        } else {
            used = nb_rapi_parse(&c->req, p, left);
            if (used >= 0) {
                p += used;
                left -= (size_t)used;
                if (c->req.state != NB_RAPI_DONE && left > 0) {
                    if (nb_buf_append(&c->in, p, left) < 0) {
                        rapi_close(c);
                        return;
                    }
                    left = 0;
                }
            }
        }
        if (used < 0) {
            c->req.keep_alive = 0;
            rapi_error(c, 400, "Bad Request", "BadRequest", "malformed request");
            close_when_answered(c);
            return;
        }
        while (c->req.state == NB_RAPI_DONE && !c->closing) {
            int keep = c->req.keep_alive;
            rapi_handle(c);
            if (!keep) {
                close_when_answered(c);
                return;
            }
            nb_rapi_req_reset(&c->req);
            if (c->parked) {
                /* The runtime waits for the call's answer; a request pipelined behind it would
                 * be answered out of order, so the connection closes after that answer. */
                if (c->in.len || left) c->close_after_write = 1;
                nb_buf_reset(&c->in);
                return;
            }
            if (c->in.len) {
                long u = nb_rapi_parse(&c->req, c->in.data, c->in.len);
                if (u < 0) {
                    rapi_close(c);
                    return;
                }
                nb_buf_consume(&c->in, (size_t)u);
            }
        }
    }
}

/* ---------- calls (docs/internals/calls.md) ---------- */

static pending_call *find_call(inst_impl *in, uint32_t id)
{
    for (int i = 0; i < NB_INST_MAX_CALLS; i++)
        if (in->calls[i].used && in->calls[i].id == id) return &in->calls[i];
    return NULL;
}

static void answer_http_call(rapi_conn *c, int status, const char *code, const char *body,
                             size_t len)
{
    char headers[256];
    /* X-Nimbus-Call tells a client it reached nimbus: on AWS Lambda the path is a 404 without
     * it. A callee's failure keeps status 200, as the admin API's invoke does. */
    snprintf(headers, sizeof headers, "X-Nimbus-Call: 1\r\n%s%s%s%s%s%s",
             code[0] ? "X-Nimbus-Error-Code: " : "", code, code[0] ? "\r\n" : "",
             code[0] && status == 200 ? "X-Nimbus-Function-Error: " : "",
             code[0] && status == 200 ? code : "", code[0] && status == 200 ? "\r\n" : "");
    const char *reason = status == 200   ? "OK"
                         : status == 202 ? "Accepted"
                         : status < 500  ? "Client Error"
                                         : "Server Error";
    c->parked = 0;
    /* The request was reset while the call was parked: say what its own head asked for. */
    c->req.keep_alive = c->call_keep_alive && !c->close_after_write;
    if (len > NB_RAPI_MAX_BODY) {
        /* A callee's error can be larger than an HTTP answer may be here: say so, rather than
         * leave the caller waiting for nothing. */
        static const char big[] = "{\"error\":{\"code\":\"payload_too_large\",\"message\":"
                                  "\"the call's answer is over the Runtime API's 6 MiB\"}}";
        rapi_send(c, 413, "Client Error",
                  "X-Nimbus-Call: 1\r\nX-Nimbus-Error-Code: payload_too_large\r\n",
                  "application/json", big, sizeof big - 1);
    } else {
        rapi_send(c, status, reason, headers, "application/json", body, len);
    }
    if (c->close_after_write) {
        if (c->writes_pending == 0) rapi_close(c);
    } else if (!c->closing) {
        uv_read_start((uv_stream_t *)&c->tcp, scratch_alloc, rapi_read);
    }
}

void nb_inst_call_done(nb_inst *pub, uint32_t call_id, int status, const char *error_code,
                       const char *body, size_t len)
{
    inst_impl *in = (inst_impl *)pub;
    pending_call *pc = find_call(in, call_id);
    if (!pc) return; /* the job ended, or the runtime stopped waiting */
    pending_call done = *pc;
    pc->used = 0;
    in->n_calls--;
    if (!error_code) error_code = "";
    if (done.http) {
        if (done.conn && !done.conn->closing)
            answer_http_call(done.conn, status, error_code, body, len);
        return;
    }
    if (!in->chan_open) return;
    nb_buf out;
    nb_buf_init(&out, NB_CHAN_MAX_FRAME + 4);
    nb_chan_msg m = {.type = NB_CHAN_CALL_RESULT, .call_id = call_id, .status = (uint16_t)status};
    m.error_code = (nb_chan_str){error_code, strlen(error_code)};
    m.body = (nb_chan_str){body, len};
    if (nb_chan_encode(&out, &m) < 0) {
        /* A result over the frame cap: the runtime still gets an answer it can act on. */
        nb_buf_reset(&out);
        static const char big[] = "{\"error\":{\"code\":\"payload_too_large\",\"message\":"
                                  "\"the call's result is over the channel's frame size\"}}";
        m.status = 413;
        m.error_code = (nb_chan_str){"payload_too_large", 17};
        m.body = (nb_chan_str){big, sizeof big - 1};
        if (nb_chan_encode(&out, &m) < 0) {
            nb_buf_free(&out);
            return;
        }
    }
    size_t n;
    char *data = nb_buf_steal(&out, &n);
    stream_write((uv_stream_t *)&in->chan, data, n);
}

/* An answer the instance gives itself, before the owner ever hears of the call. */
static void refuse_call(inst_impl *in, rapi_conn *c, uint32_t id, int status, const char *code,
                        const char *msg)
{
    char *s = nb_error_body(code, msg);
    if (c) {
        answer_http_call(c, status, code, s, strlen(s));
    } else if (in->chan_open) {
        nb_buf out;
        nb_buf_init(&out, 64u << 10);
        nb_chan_msg m = {.type = NB_CHAN_CALL_RESULT, .call_id = id, .status = (uint16_t)status};
        m.error_code = (nb_chan_str){code, strlen(code)};
        m.body = (nb_chan_str){s, strlen(s)};
        if (nb_chan_encode(&out, &m) == 0) {
            size_t n;
            char *data = nb_buf_steal(&out, &n);
            stream_write((uv_stream_t *)&in->chan, data, n);
        } else {
            nb_buf_free(&out);
        }
    }
    free(s);
}

static void start_call(inst_impl *in, rapi_conn *c, uint32_t id, nb_chan_str op, nb_chan_str target,
                       nb_chan_str attrs, const char *body, size_t len)
{
    nb_inst_call call = {
        .call_id = id, .attrs = attrs.p, .attrs_len = attrs.len, .body = body, .len = len};
    if (c) {
        /* Parked before the owner hears of it: it may answer at once. */
        c->parked = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    /* Names travel into error messages, logs and JSON: text only. */
    if (op.len == 0 || op.len >= sizeof call.op || memchr(op.p, 0, op.len) ||
        !nb_utf8_valid(op.p, op.len) || target.len >= sizeof call.target ||
        (target.len && (memchr(target.p, 0, target.len) || !nb_utf8_valid(target.p, target.len)))) {
        refuse_call(in, c, id, 400, NB_E_BAD_REQUEST, "malformed call: op or target");
        return;
    }
    if (!c && find_call(in, id)) {
        refuse_call(in, c, id, 400, NB_E_BAD_REQUEST, "call id already waiting for an answer");
        return;
    }
    pending_call *slot = NULL;
    for (int i = 0; i < NB_INST_MAX_CALLS && !slot; i++)
        if (!in->calls[i].used) slot = &in->calls[i];
    if (!slot) {
        refuse_call(in, c, id, 429, NB_E_TOO_MANY,
                    "too many calls waiting for an answer (64 per instance)");
        return;
    }
    *slot = (pending_call){.id = id, .used = 1, .http = c != NULL, .conn = c};
    in->n_calls++;
    memcpy(call.op, op.p, op.len);
    if (target.len) memcpy(call.target, target.p, target.len);
    in->hooks->call(&in->pub, in->tag, &call);
}

/* The job ended: its calls' answers, when they come, are dropped. A runtime still waiting on
 * the Runtime API hears so now. */
static void drop_calls(inst_impl *in)
{
    for (int i = 0; i < NB_INST_MAX_CALLS && in->n_calls > 0; i++) {
        pending_call *pc = &in->calls[i];
        if (!pc->used) continue;
        pc->used = 0;
        in->n_calls--;
        if (pc->http && pc->conn && !pc->conn->closing) {
            static const char gone[] = "{\"error\":{\"code\":\"unavailable\",\"message\":"
                                       "\"the invocation ended before the call's answer\"}}";
            answer_http_call(pc->conn, 410, NB_E_UNAVAILABLE, gone, sizeof gone - 1);
        }
    }
    in->n_calls = 0;
}

static void call_refusal(rapi_conn *c, int status, const char *code, const char *msg)
{
    char *s = nb_error_body(code, msg);
    answer_http_call(c, status, code, s, strlen(s));
    free(s);
}

/* POST /2018-06-01/runtime/invocation/{id}/nimbus/{op}[/{target}] */
static void rapi_call(rapi_conn *c, const char *id, size_t idlen, const char *what)
{
    inst_impl *in = c->inst;
    nb_rapi_req *r = &c->req;
    c->call_keep_alive = r->keep_alive;
    /* Refusals carry X-Nimbus-Call too: the client reached nimbus, just not in a good state. */
    if (!in->tag || in->job_undelivered) {
        call_refusal(c, 403, "InvalidStateTransition", "no invocation in flight");
        return;
    }
    if (!id_matches(in, id, idlen)) {
        call_refusal(c, 400, "InvalidRequestID", "Invalid request ID");
        return;
    }
    if (r->too_large || r->attrs_too_large) {
        call_refusal(c, 413, NB_E_TOO_LARGE,
                     r->too_large ? "call body over 6 MiB" : "X-Nimbus-Attributes over 64 KiB");
        return;
    }
    const char *slash = strchr(what, '/');
    nb_chan_str op = {what, slash ? (size_t)(slash - what) : strlen(what)};
    nb_chan_str target = {slash ? slash + 1 : "", slash ? strlen(slash + 1) : 0};
    nb_chan_str attrs = {r->attrs.data, r->attrs.len};
    start_call(in, c, ++in->next_http_call, op, target, attrs, r->body.data, r->body.len);
}

static void rapi_accept(uv_stream_t *server, int status)
{
    inst_impl *in = server->data;
    if (status < 0) return;
    rapi_conn *c = calloc(1, sizeof *c);
    if (!c) abort();
    int open_conns = 0;
    for (rapi_conn *o = in->conns; o; o = o->next)
        open_conns += !o->closing;
    c->inst = in;
    nb_buf_init(&c->in, NB_RAPI_MAX_HEAD + (64u << 10));
    nb_rapi_req_init(&c->req);
    uv_tcp_init(in->env.loop, &c->tcp);
    c->tcp.data = c;
    in->handles++;
    c->next = in->conns;
    in->conns = c;
    uv_os_fd_t fd;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_fileno((uv_handle_t *)&c->tcp, &fd) < 0) {
        rapi_close(c);
        return;
    }
    /* In the host's network anyone local can connect; only the instance itself may talk. */
    if (!nb_spawn_peer_ok(&in->sr, fd)) {
        nb_warn("instance", "%s: refused a Runtime API connection from another process",
                in->pub.name);
        rapi_close(c);
        return;
    }
    /* A runtime needs one or two connections; a function opening many would make the daemon
     * hold up to a head and a body per connection. Over the cap the oldest idle connection
     * goes (a runtime's working connection is its newest); with none idle, the new one does. */
    if (open_conns >= RAPI_MAX_CONNS) {
        rapi_conn *victim = NULL;
        for (rapi_conn *o = c->next; o; o = o->next)
            if (!o->closing && o->in.len == 0 && o->req.state == NB_RAPI_HEAD &&
                o != in->next_waiter && o->writes_pending == 0)
                victim = o; /* the list is newest first: keep the last match */
        nb_warn("instance", "%s: more than %d Runtime API connections; dropping one", in->pub.name,
                RAPI_MAX_CONNS);
        if (!victim) {
            rapi_close(c);
            return;
        }
        rapi_close(victim);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, scratch_alloc, rapi_read);
}

/* ---------- start ---------- */

static void attach_listener(inst_impl *in)
{
    int fd = in->sr.runtime_api_fd;
    in->sr.runtime_api_fd = -1;
    if (in->pub.state >= NB_INST_STOPPING) {
        close(fd);
        return;
    }
    uv_tcp_init(in->env.loop, &in->rapi_listener);
    in->rapi_listener.data = in;
    uv_tcp_open(&in->rapi_listener, fd);
    uv_listen((uv_stream_t *)&in->rapi_listener, 16, rapi_accept);
    in->rapi_open = 1;
    in->handles++;
}

/* The child's reports while it sets up: the sandbox work runs there, not on this loop. */
static void report_ready(uv_poll_t *h, int status, int events)
{
    inst_impl *in = h->data;
    (void)events;
    int exec_errno = 0;
    nb_err err = {0};
    int r = status < 0 ? nb_err_set(&err, 500, NB_E_INTERNAL, "spawn: %s", uv_strerror(status))
                       : nb_spawn_poll(&in->sr, &exec_errno, &err);
    if (in->sr.runtime_api_fd >= 0) attach_listener(in);
    if (r == NB_SPAWN_PENDING) return;
    close_report(in);
    if (r == NB_SPAWN_EXECED) return;
    const char *type = exec_errno ? "Runtime.InvalidEntrypoint" : "Sandbox.Failure";
    nb_warn("instance", "%s start failed: %s", in->pub.name, err.msg);
    platform_line(in, "%s: %s", type, err.msg);
    init_error_message(in, type, "%s", err.msg);
    kill_process(in, "start failed");
}

static void env_add(char **envp, int *n, int max, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void env_add(char **envp, int *n, int max, const char *fmt, ...)
{
    if (*n >= max - 1) return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&envp[*n], fmt, ap) >= 0) (*n)++;
    va_end(ap);
}

static const char *python_path(void)
{
    return "/usr/bin/python3";
}

static const char *node_path(void)
{
    return access("/usr/bin/node", X_OK) == 0 ? "/usr/bin/node" : "/usr/local/bin/node";
}

nb_inst *nb_inst_start(const nb_inst_env *env, nb_fn_version *ver, const nb_inst_hooks *hooks,
                       void *owner, nb_inst_result *res_out, char *errbuf, size_t errsize)
{
    const nb_fn_config *cfg = &ver->cfg;
    /* host_*: where the files are; task_root/runtime_dir: where the runtime sees them. */
    char host_task[PATH_MAX], host_runtime[PATH_MAX];
    char task_root[PATH_MAX], shim[PATH_MAX], runtime_dir[PATH_MAX];
    int rootfs = nb_spawn_rootfs();
    snprintf(host_task, sizeof host_task, "%s/%s", env->code_root, cfg->code_sha256);
    snprintf(host_runtime, sizeof host_runtime, "%s/%s", env->runtimes_dir,
             cfg->kind == NB_RT_PYTHON ? "python" : "node");
    snprintf(task_root, sizeof task_root, "%s", rootfs ? NB_SPAWN_TASK_DIR : host_task);
    const char *argv[6] = {0};
    switch (cfg->kind) {
    case NB_RT_PYTHON:
        snprintf(runtime_dir, sizeof runtime_dir, "%s",
                 rootfs ? NB_SPAWN_RUNTIME_DIR : host_runtime);
        snprintf(shim, sizeof shim, "%s/bootstrap.py", runtime_dir);
        argv[0] = python_path();
        argv[1] = "-u";
        argv[2] = "-B";
        argv[3] = shim;
        break;
    case NB_RT_NODE:
        snprintf(runtime_dir, sizeof runtime_dir, "%s",
                 rootfs ? NB_SPAWN_RUNTIME_DIR : host_runtime);
        snprintf(shim, sizeof shim, "%s/bootstrap.mjs", runtime_dir);
        argv[0] = node_path();
        argv[1] = shim;
        break;
    case NB_RT_PROVIDED:
        snprintf(runtime_dir, sizeof runtime_dir, "%s", task_root);
        snprintf(shim, sizeof shim, "%s/bootstrap", task_root);
        argv[0] = shim;
        break;
    }

    inst_impl *in = calloc(1, sizeof *in);
    if (!in) abort();
    in->pub.id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed) + 1;
    snprintf(in->pub.name, sizeof in->pub.name, "i-%d", in->pub.id);
    in->pub.ver = nb_fn_version_ref(ver);
    in->pub.owner = owner;
    in->pub.started_us = nb_mono_us();
    in->pub.cpu_us = -1;
    in->cpu_at_dispatch = -1;
    in->env = *env;
    in->hooks = hooks;
    nb_buf_init(&in->chan_in, NB_CHAN_MAX_FRAME + 4);
    nb_buf_init(&in->out.line, NB_LOGS_LINE_MAX);
    nb_buf_init(&in->err.line, NB_LOGS_LINE_MAX);
    nb_buf_init(&in->init_error_body, 256u << 10);
    in->out.name = "stdout";
    in->err.name = "stderr";
    in->out.inst = in->err.inst = in;

    /* Environment: Lambda's reserved variables, then the function's own (validated at deploy
     * not to collide). */
    char *envp[96] = {0};
    int ne = 0, max = (int)NB_ARRAY_LEN(envp);
    char today[32], stream_id[33];
    nb_time_iso8601(nb_now_ms(), today, sizeof today);
    nb_random_hex(stream_id, 16);
    env_add(envp, &ne, max, "PATH=/usr/local/bin:/usr/bin:/bin");
    env_add(envp, &ne, max, "LANG=C.UTF-8");
    env_add(envp, &ne, max, "TZ=:UTC");
    env_add(envp, &ne, max, "LAMBDA_TASK_ROOT=%s", task_root);
    env_add(envp, &ne, max, "LAMBDA_RUNTIME_DIR=%s", runtime_dir);
    env_add(envp, &ne, max, "_HANDLER=%s", cfg->handler);
    env_add(envp, &ne, max, "AWS_LAMBDA_FUNCTION_NAME=%s", ver->name);
    env_add(envp, &ne, max, "AWS_LAMBDA_FUNCTION_VERSION=%lld", (long long)ver->version);
    env_add(envp, &ne, max, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%d", cfg->memory_mb);
    env_add(envp, &ne, max, "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/%s", ver->name);
    env_add(envp, &ne, max, "AWS_LAMBDA_LOG_STREAM_NAME=%.4s/%.2s/%.2s/[%lld]%s", today, today + 5,
            today + 8, (long long)ver->version, stream_id);
    env_add(envp, &ne, max, "AWS_REGION=us-east-1");
    env_add(envp, &ne, max, "AWS_DEFAULT_REGION=us-east-1");
    env_add(envp, &ne, max, "AWS_LAMBDA_INITIALIZATION_TYPE=on-demand");
    env_add(envp, &ne, max, "NIMBUS_CHANNEL_FD=3");
    if (cfg->kind != NB_RT_PROVIDED) {
        env_add(envp, &ne, max, "AWS_EXECUTION_ENV=AWS_Lambda_%s", cfg->runtime);
        if (cfg->kind == NB_RT_PYTHON) env_add(envp, &ne, max, "PYTHONUNBUFFERED=1");
    }
    const char *k;
    json_t *v;
    json_object_foreach(cfg->environment, k, v)
        env_add(envp, &ne, max, "%s=%s", k, json_string_value(v));

    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, chan[2] = {-1, -1};
    int ok = pipe2(outp, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0 &&
             socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) == 0;
    nb_spawn_result sr = {.pid = -1, .report_fd = -1, .runtime_api_fd = -1, .uid = (uid_t)-1};
    nb_err err = {0};
    int64_t spawn_us = 0;
    if (ok) {
        nb_spawn_spec spec = {
            .argv = (char *const *)argv,
            .envp = envp,
            .cwd = task_root,
            .hostname = ver->name,
            .stdout_fd = outp[1],
            .stderr_fd = errp[1],
            .channel_fd = chan[1],
            .want_runtime_api = cfg->kind == NB_RT_PROVIDED,
            .task_dir = host_task,
            .runtime_dir = cfg->kind == NB_RT_PROVIDED ? NULL : host_runtime,
            .memory_mb = cfg->memory_mb,
            .tmp_mb = cfg->ephemeral_storage_mb,
            .network_host = cfg->network == NB_NET_HOST,
        };
        /* The child writes the listener's address into this slot before execve. */
        char api_env[64] = "AWS_LAMBDA_RUNTIME_API=";
        if (cfg->kind == NB_RT_PROVIDED && ne < max - 1) {
            envp[ne] = api_env;
            spec.runtime_api_env = api_env;
            spec.runtime_api_env_size = sizeof api_env;
        }
        spawn_us = nb_mono_us();
        ok = nb_spawn(&spec, &sr, &err) == 0;
        envp[ne] = NULL;
    } else {
        nb_err_sys(&err, errno, "instance pipes");
    }
    for (int i = 0; i < ne; i++)
        free(envp[i]);
    if (outp[1] >= 0) close(outp[1]);
    if (errp[1] >= 0) close(errp[1]);
    if (chan[1] >= 0) close(chan[1]);
    if (!ok) {
        if (outp[0] >= 0) close(outp[0]);
        if (errp[0] >= 0) close(errp[0]);
        if (chan[0] >= 0) close(chan[0]);
        snprintf(errbuf, errsize, "%s", err.msg);
        res_out->outcome = NB_OUTCOME_UNHANDLED;
        res_out->error_type = "Sandbox.Failure";
        nb_warn("instance", "start %s v%lld failed: %s", ver->name, (long long)ver->version,
                err.msg);
        nb_fn_version_unref(in->pub.ver);
        nb_buf_free(&in->chan_in);
        nb_buf_free(&in->out.line);
        nb_buf_free(&in->err.line);
        nb_buf_free(&in->init_error_body);
        free(in);
        return NULL;
    }
    in->pid = sr.pid;
    in->sr = sr;
    in->next_all = env->iloop->all;
    env->iloop->all = in;
    route_add(env->iloop, sr.pid, spawn_us);

    uv_pipe_init(env->loop, &in->chan, 0);
    uv_pipe_open(&in->chan, chan[0]);
    in->chan.data = in;
    in->chan_open = 1;
    uv_read_start((uv_stream_t *)&in->chan, chan_alloc, chan_read);
    out_stream *streams[2] = {&in->out, &in->err};
    int fds[2] = {outp[0], errp[0]};
    for (int i = 0; i < 2; i++) {
        uv_pipe_init(env->loop, &streams[i]->pipe, 0);
        uv_pipe_open(&streams[i]->pipe, fds[i]);
        streams[i]->pipe.data = streams[i];
        streams[i]->open = 1;
        uv_read_start((uv_stream_t *)&streams[i]->pipe, scratch_alloc, out_read);
    }
    uv_timer_init(env->loop, &in->timer);
    in->timer.data = in;
    uv_timer_init(env->loop, &in->aux);
    in->aux.data = in;
    in->handles = 5;
    uv_poll_init(env->loop, &in->report_poll, sr.report_fd);
    in->report_poll.data = in;
    in->report_open = 1;
    in->handles++;
    uv_poll_start(&in->report_poll, UV_READABLE, report_ready);
    uv_timer_start(&in->timer, timer_fired, (uint64_t)env->init_timeout_ms, 0);
    nb_info("instance", "%s starting fn=%s v=%lld runtime=%s pid=%d", in->pub.name, ver->name,
            (long long)ver->version, cfg->runtime, (int)in->pid);
    return &in->pub;
}

int nb_inst_dispatch(nb_inst *pub, const nb_inst_job *job, void *tag)
{
    inst_impl *in = (inst_impl *)pub;
    if (pub->state != NB_INST_IDLE || in->tag) return -1;
    in->tag = tag;
    in->job = *job;
    snprintf(in->request_id, sizeof in->request_id, "%s", job->request_id);
    snprintf(in->function_arn, sizeof in->function_arn, "%s", job->function_arn);
    snprintf(in->trace_id, sizeof in->trace_id, "%s", job->trace_id);
    snprintf(in->client_context, sizeof in->client_context, "%s", job->client_context);
    in->job.request_id = in->request_id;
    in->job.function_arn = in->function_arn;
    in->job.trace_id = in->trace_id;
    in->job.client_context = in->client_context;
    set_state(in, NB_INST_BUSY, NULL);
    pub->invocations++;
    in->cpu_at_dispatch = nb_spawn_cpu_usec(&in->sr);
    uv_timer_start(&in->timer, timer_fired, (uint64_t)job->timeout_ms, 0);
    if (in->transport == TRANSPORT_CHANNEL) {
        if (chan_send_job(in) < 0) {
            platform_error(in, 0, "Sandbox.Failure",
                           "RequestId: %s Error: could not write to the instance", in->request_id);
            kill_process(in, "channel write failed");
        }
    } else {
        in->job_undelivered = 1;
        if (in->next_waiter) {
            rapi_conn *c = in->next_waiter;
            in->next_waiter = NULL;
            rapi_deliver(in, c);
        }
    }
    return 0;
}

void nb_inst_stop(nb_inst *pub, const char *why)
{
    inst_impl *in = (inst_impl *)pub;
    if (in->tag)
        platform_error(in, 0, "Sandbox.Failure", "RequestId: %s Error: instance stopped: %s",
                       in->request_id, why);
    kill_process(in, why);
}

int64_t nb_inst_init_ms(const nb_inst *inst)
{
    return inst->ready_us ? (inst->ready_us - inst->started_us) / 1000 : 0;
}

void nb_inst_stop_all(nb_inst_loop *l)
{
    for (inst_impl *in = l->all; in; in = in->next_all)
        if (in->pub.state != NB_INST_STOPPED) nb_inst_stop(&in->pub, "shutdown");
}
