#include "invoke/invoke.h"

#include "base/log.h"
#include "base/util.h"
#include "logs/logs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fn_entry fn_entry;
typedef struct inv_impl inv_impl;

/* The instances of one function version. */
typedef struct pool {
    nb_invoker *iv;
    fn_entry *fn; /* NULL once the function is deleted (the pool then only drains) */
    nb_fn_version *ver;
    nb_inst **idle; /* stack: top = most recently used */
    int n_idle;
    int n_starting; /* spawned, not yet ready */
    int n_live;     /* not yet STOPPED */
    int n_alloc;    /* not yet freed */
    inv_impl *q_head, *q_tail;
    int q_len;
    int retired;
    struct pool *next;
} pool;

struct fn_entry {
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    nb_fn_version *latest;
    pool *pools;
    fn_entry *next;
};

struct inv_impl {
    nb_inv pub;
    nb_invoker *iv;
    pool *pool;
    char *event;
    size_t event_len;
    nb_inv_done_cb cb;
    void *ud;
    inv_impl *qnext;
    nb_inst *inst;
    int requeued; /* handed back once by an instance that died before fetching it */
};

#define BUCKETS 1024

struct nb_invoker {
    nb_invoker_config cfg;
    char code_root[PATH_MAX];
    char runtimes_dir[PATH_MAX];
    nb_inst_env env;
    fn_entry *buckets[BUCKETS];
    pool *orphans; /* pools of deleted functions, draining */
    size_t inflight;
    size_t instances; /* not yet STOPPED */
    size_t allocated; /* not yet freed (hooks still to come) */
    uv_timer_t reaper;
    int stopping;
};

static const char *inv_state_names[] = {"queued", "running", "done"};

static void inv_set_state(inv_impl *inv, nb_inv_state s)
{
    nb_debug("invoke", "%s %s -> %s fn=%s", inv->pub.request_id, inv_state_names[inv->pub.state],
             inv_state_names[s], inv->pub.ver->name);
    inv->pub.state = s;
}

/* ---------- registry ---------- */

static unsigned hash_key(const char *ns, const char *name)
{
    unsigned h = 2166136261u;
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % BUCKETS;
}

static fn_entry *lookup(nb_invoker *iv, const char *ns, const char *name)
{
    for (fn_entry *e = iv->buckets[hash_key(ns, name)]; e; e = e->next)
        if (strcmp(e->name, name) == 0 && strcmp(e->ns, ns) == 0) return e;
    return NULL;
}

nb_fn_version *nb_invoker_latest(nb_invoker *iv, const char *ns, const char *name)
{
    fn_entry *e = lookup(iv, ns, name);
    return e ? e->latest : NULL;
}

/* ---------- pools ---------- */

static void pool_free(pool *p)
{
    nb_fn_version_unref(p->ver);
    free(p->idle);
    free(p);
}

static void unlink_pool(pool **list, pool *p)
{
    for (pool **pp = list; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* Frees a retired pool once nothing refers to it. */
static void pool_maybe_free(pool *p)
{
    if (!p->retired || p->n_alloc > 0 || p->q_len > 0) return;
    unlink_pool(p->fn ? &p->fn->pools : &p->iv->orphans, p);
    pool_free(p);
}

static pool *pool_get(nb_invoker *iv, fn_entry *e, nb_fn_version *ver)
{
    for (pool *p = e->pools; p; p = p->next)
        if (p->ver->version == ver->version) return p;
    pool *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->iv = iv;
    p->fn = e;
    p->ver = nb_fn_version_ref(ver);
    p->idle = calloc((size_t)iv->cfg.max_instances_per_version, sizeof *p->idle);
    if (!p->idle) abort();
    /* Only the latest version's pool keeps warm instances; others serve explicit version
     * requests and are reaped when idle like any other, then freed. */
    p->retired = !e->latest || e->latest->version != ver->version;
    p->next = e->pools;
    e->pools = p;
    return p;
}

static void idle_remove(pool *p, nb_inst *inst)
{
    for (int i = 0; i < p->n_idle; i++) {
        if (p->idle[i] == inst) {
            memmove(&p->idle[i], &p->idle[i + 1], (size_t)(p->n_idle - i - 1) * sizeof *p->idle);
            p->n_idle--;
            return;
        }
    }
}

/* Retire: stop idle instances now; busy ones stop when they finish. */
static void pool_retire(pool *p)
{
    p->retired = 1;
    while (p->n_idle > 0)
        nb_inst_stop(p->idle[--p->n_idle], "version retired");
    pool_maybe_free(p);
}

/* ---------- invocations ---------- */

static void log_platform(inv_impl *inv, const nb_inst *inst, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_platform(inv_impl *inv, const nb_inst *inst, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    nb_log_line l = {
        .ns = inv->pub.ver->ns,
        .fn = inv->pub.ver->name,
        .version = inv->pub.ver->version,
        .instance = inst ? inst->name : NULL,
        .request_id = inv->pub.request_id,
        .stream = "platform",
        .text = line,
        .len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1,
    };
    nb_logs_append(inv->iv->cfg.logs, &l);
}

static void inv_finish(inv_impl *inv, enum nb_inst_outcome outcome, const char *type,
                       const char *body, size_t len, const char *ctype)
{
    nb_invoker *iv = inv->iv;
    inv->pub.ended_us = nb_mono_us();
    inv->pub.outcome = outcome;
    snprintf(inv->pub.error_type, sizeof inv->pub.error_type, "%s", type ? type : "");
    snprintf(inv->pub.content_type, sizeof inv->pub.content_type, "%s",
             ctype ? ctype : "application/json");
    inv->pub.body = malloc(len + 1);
    if (!inv->pub.body) abort();
    if (len) memcpy(inv->pub.body, body, len);
    inv->pub.body[len] = 0;
    inv->pub.body_len = len;
    if (inv->pub.state == NB_INV_RUNNING) {
        double dur = (double)(inv->pub.ended_us - inv->pub.started_us) / 1000.0;
        long long billed = (inv->pub.ended_us - inv->pub.started_us + 999) / 1000;
        log_platform(inv, inv->inst, "END RequestId: %s", inv->pub.request_id);
        char init[64] = "";
        if (inv->pub.cold)
            snprintf(init, sizeof init, "\tInit Duration: %lld.00 ms", (long long)inv->pub.init_ms);
        log_platform(inv, inv->inst,
                     "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %lld ms\tMemory "
                     "Size: %d MB%s",
                     inv->pub.request_id, dur, billed ? billed : 1, inv->pub.ver->cfg.memory_mb,
                     init);
    }
    inv_set_state(inv, NB_INV_DONE);
    iv->inflight--;
    if (inv->cb) inv->cb(&inv->pub, inv->ud);
    free(inv->pub.body);
    free(inv->event);
    nb_fn_version_unref(inv->pub.ver);
    free(inv);
}

static void inv_fail(inv_impl *inv, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void inv_fail(inv_impl *inv, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = nb_fn_error_vjson(type, fmt, ap);
    va_end(ap);
    inv_finish(inv, NB_OUTCOME_UNHANDLED, type, s, strlen(s), NULL);
    free(s);
}

static void trace_id(char *out, size_t size)
{
    char a[25], b[17];
    nb_random_hex(a, 12);
    nb_random_hex(b, 8);
    snprintf(out, size, "Root=1-%08llx-%s;Parent=%s;Sampled=0", (long long)(nb_now_ms() / 1000), a,
             b);
}

static void run_on(pool *p, inv_impl *inv, nb_inst *inst, int cold)
{
    char arn[256], trace[96];
    snprintf(arn, sizeof arn, "arn:aws:lambda:us-east-1:000000000000:function:%s",
             inv->pub.ver->name);
    trace_id(trace, sizeof trace);
    int64_t timeout_ms = (int64_t)p->ver->cfg.timeout_s * 1000;
    nb_inst_job job = {
        .request_id = inv->pub.request_id,
        .function_arn = arn,
        .trace_id = trace,
        .client_context = "",
        .event = inv->event,
        .event_len = inv->event_len,
        .deadline_ms = nb_now_ms() + timeout_ms,
        .timeout_ms = timeout_ms,
    };
    inv->inst = inst;
    inv->pub.cold = cold;
    inv->pub.init_ms = cold ? nb_inst_init_ms(inst) : 0;
    inv->pub.started_us = nb_mono_us();
    inv_set_state(inv, NB_INV_RUNNING);
    log_platform(inv, inst, "START RequestId: %s Version: %lld", inv->pub.request_id,
                 (long long)inv->pub.ver->version);
    /* The instance copies what it must keep of the job (its strings are on this stack). */
    if (nb_inst_dispatch(inst, &job, inv) < 0) {
        inv_fail(inv, "Sandbox.Failure", "RequestId: %s Error: instance refused the invocation",
                 inv->pub.request_id);
    }
}

static inv_impl *queue_pop(pool *p)
{
    inv_impl *inv = p->q_head;
    if (!inv) return NULL;
    p->q_head = inv->qnext;
    if (!p->q_head) p->q_tail = NULL;
    p->q_len--;
    inv->qnext = NULL;
    return inv;
}

static void start_instances(pool *p);

/* An instance is free: give it the oldest waiter or put it on the idle stack. */
static void serve(pool *p, nb_inst *inst, int cold)
{
    if (p->iv->stopping) {
        nb_inst_stop(inst, "shutdown");
        return;
    }
    inv_impl *inv = queue_pop(p);
    if (inv) {
        run_on(p, inv, inst, cold);
        return;
    }
    if (p->retired) {
        nb_inst_stop(inst, "version retired");
        pool_maybe_free(p);
        return;
    }
    p->idle[p->n_idle++] = inst;
}

static void hook_ready(nb_inst *inst)
{
    pool *p = inst->owner;
    p->n_starting--;
    serve(p, inst, 1);
}

static void hook_result(nb_inst *inst, void *tag, const nb_inst_result *res)
{
    inv_impl *inv = tag;
    pool *p = inst->owner;
    if (res->outcome == NB_OUTCOME_UNDELIVERED && !inv->requeued && !p->iv->stopping) {
        /* It never ran: back to the head of the queue; the instance's stopped hook, which
         * follows, starts the replacement that will serve it. Once only, so a runtime that
         * keeps dying cannot bounce an invocation forever. */
        inv->requeued = 1;
        inv->inst = NULL;
        inv_set_state(inv, NB_INV_QUEUED);
        inv->qnext = p->q_head;
        p->q_head = inv;
        if (!p->q_tail) p->q_tail = inv;
        p->q_len++;
        return;
    }
    inv_finish(inv, res->outcome == NB_OUTCOME_UNDELIVERED ? NB_OUTCOME_UNHANDLED : res->outcome,
               res->error_type, res->body, res->len, res->content_type);
}

static void hook_idle(nb_inst *inst)
{
    serve(inst->owner, inst, 0);
}

static void hook_unavailable(nb_inst *inst)
{
    idle_remove(inst->owner, inst);
}

static void hook_stopped(nb_inst *inst, const nb_inst_result *init_error)
{
    pool *p = inst->owner;
    idle_remove(p, inst);
    p->n_live--;
    p->iv->instances--;
    if (!inst->ready_us) {
        p->n_starting--;
        /* The invocation waiting longest gets the init failure, as the one that caused the
         * cold start would on Lambda; the others wait for the replacement started below. */
        if (init_error && init_error->error_type[0]) {
            inv_impl *inv = queue_pop(p);
            if (inv) {
                inv_finish(inv, NB_OUTCOME_UNHANDLED, init_error->error_type, init_error->body,
                           init_error->len, NULL);
            }
        }
    }
    if (!p->iv->stopping) start_instances(p);
    pool_maybe_free(p);
}

static void hook_freed(nb_inst *inst)
{
    pool *p = inst->owner;
    p->n_alloc--;
    p->iv->allocated--;
    pool_maybe_free(p);
}

static const nb_inst_hooks hooks = {
    .ready = hook_ready,
    .result = hook_result,
    .idle = hook_idle,
    .unavailable = hook_unavailable,
    .stopped = hook_stopped,
    .freed = hook_freed,
};

/* Starts instances until every waiter has one coming, within the per-version cap. */
static void start_instances(pool *p)
{
    nb_invoker *iv = p->iv;
    while (p->q_len > p->n_starting && p->n_live < iv->cfg.max_instances_per_version) {
        nb_inst_result res = {0};
        char why[NB_ERR_MSG_MAX];
        nb_inst *inst = nb_inst_start(&iv->env, p->ver, &hooks, p, &res, why, sizeof why);
        if (!inst) {
            inv_impl *inv = queue_pop(p);
            if (inv)
                inv_fail(inv, res.error_type, "RequestId: %s Error: %s", inv->pub.request_id, why);
            continue;
        }
        p->n_starting++;
        p->n_live++;
        p->n_alloc++;
        iv->instances++;
        iv->allocated++;
    }
}

void nb_invoke(nb_invoker *iv, nb_fn_version *ver, const char *event, size_t len,
               const char *request_id, nb_inv_done_cb cb, void *ud, nb_inv **handle)
{
    inv_impl *inv = calloc(1, sizeof *inv);
    if (!inv) abort();
    inv->iv = iv;
    inv->pub.ver = nb_fn_version_ref(ver);
    snprintf(inv->pub.request_id, sizeof inv->pub.request_id, "%s", request_id);
    inv->pub.queued_us = nb_mono_us();
    inv->event = malloc(len + 1);
    if (!inv->event) abort();
    if (len) memcpy(inv->event, event, len);
    inv->event[len] = 0;
    inv->event_len = len;
    inv->cb = cb;
    inv->ud = ud;
    iv->inflight++;
    if (handle) *handle = &inv->pub;
    fn_entry *e = lookup(iv, ver->ns, ver->name);
    if (!e || iv->stopping) {
        inv_fail(inv, "Sandbox.Failure", "function %s is not available", ver->name);
        return;
    }
    pool *p = inv->pool = pool_get(iv, e, ver);
    if (p->n_idle > 0) {
        run_on(p, inv, p->idle[--p->n_idle], 0);
        return;
    }
    if (p->q_tail)
        p->q_tail->qnext = inv;
    else
        p->q_head = inv;
    p->q_tail = inv;
    p->q_len++;
    start_instances(p);
}

void nb_inv_detach(nb_inv *pub)
{
    inv_impl *inv = (inv_impl *)pub;
    inv->cb = NULL;
    inv->ud = NULL;
}

/* ---------- lifecycle of functions ---------- */

void nb_invoker_publish(nb_invoker *iv, nb_fn_version *v)
{
    fn_entry *e = lookup(iv, v->ns, v->name);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) abort();
        snprintf(e->ns, sizeof e->ns, "%s", v->ns);
        snprintf(e->name, sizeof e->name, "%s", v->name);
        unsigned h = hash_key(v->ns, v->name);
        e->next = iv->buckets[h];
        iv->buckets[h] = e;
    }
    if (e->latest && e->latest->version == v->version) return;
    nb_fn_version *old = e->latest;
    e->latest = nb_fn_version_ref(v);
    for (pool *p = e->pools; p;) {
        pool *next = p->next;
        if (p->ver->version != v->version && !p->retired) pool_retire(p);
        p = next;
    }
    nb_fn_version_unref(old);
}

void nb_invoker_remove(nb_invoker *iv, const char *ns, const char *name)
{
    unsigned h = hash_key(ns, name);
    for (fn_entry **pe = &iv->buckets[h]; *pe; pe = &(*pe)->next) {
        fn_entry *e = *pe;
        if (strcmp(e->ns, ns) != 0 || strcmp(e->name, name) != 0) continue;
        *pe = e->next;
        while (e->pools) {
            pool *p = e->pools;
            e->pools = p->next;
            p->fn = NULL;
            p->next = iv->orphans;
            iv->orphans = p;
            pool_retire(p);
        }
        nb_fn_version_unref(e->latest);
        free(e);
        return;
    }
}

static void reap_idle(uv_timer_t *t)
{
    nb_invoker *iv = t->data;
    int64_t now = nb_mono_us();
    for (int b = 0; b < BUCKETS; b++) {
        for (fn_entry *e = iv->buckets[b]; e; e = e->next) {
            for (pool *p = e->pools; p;) {
                pool *next = p->next;
                /* The bottom of the stack is the least recently used. */
                while (p->n_idle > 0 &&
                       now - p->idle[0]->idle_since_us > iv->cfg.idle_timeout_ms * 1000) {
                    nb_inst *inst = p->idle[0];
                    idle_remove(p, inst);
                    nb_inst_stop(inst, "idle timeout");
                }
                pool_maybe_free(p);
                p = next;
            }
        }
    }
}

nb_invoker *nb_invoker_new(const nb_invoker_config *cfg)
{
    nb_invoker *iv = calloc(1, sizeof *iv);
    if (!iv) abort();
    iv->cfg = *cfg;
    if (iv->cfg.max_instances_per_version <= 0) iv->cfg.max_instances_per_version = 64;
    if (iv->cfg.idle_timeout_ms <= 0) iv->cfg.idle_timeout_ms = 300000;
    if (iv->cfg.init_timeout_ms <= 0) iv->cfg.init_timeout_ms = 10000;
    snprintf(iv->code_root, sizeof iv->code_root, "%s/code", cfg->data_dir);
    snprintf(iv->runtimes_dir, sizeof iv->runtimes_dir, "%s/runtimes", cfg->data_dir);
    iv->env = (nb_inst_env){
        .loop = cfg->loop,
        .runtimes_dir = iv->runtimes_dir,
        .code_root = iv->code_root,
        .logs = cfg->logs,
        .init_timeout_ms = iv->cfg.init_timeout_ms,
    };
    uv_timer_init(cfg->loop, &iv->reaper);
    iv->reaper.data = iv;
    uint64_t every =
        (uint64_t)(iv->cfg.idle_timeout_ms < 4000 ? iv->cfg.idle_timeout_ms / 4 + 1 : 1000);
    uv_timer_start(&iv->reaper, reap_idle, every, every);
    uv_unref((uv_handle_t *)&iv->reaper);
    return iv;
}

int nb_invoker_load(nb_invoker *iv, nb_err *err)
{
    nb_fn_version **vs;
    size_t n;
    if (iv->cfg.store->ops->fn_list(iv->cfg.store, NULL, &vs, NULL, &n, err) < 0) return -1;
    for (size_t i = 0; i < n; i++)
        nb_invoker_publish(iv, vs[i]);
    nb_store_free_versions(vs, n);
    nb_info("invoke", "loaded %zu functions", n);
    return 0;
}

size_t nb_invoker_inflight(const nb_invoker *iv)
{
    return iv->inflight;
}

size_t nb_invoker_instances(const nb_invoker *iv)
{
    return iv->instances;
}

size_t nb_invoker_allocated(const nb_invoker *iv)
{
    return iv->allocated;
}

static void stop_pool(pool *p)
{
    while (p->n_idle > 0)
        nb_inst_stop(p->idle[--p->n_idle], "shutdown");
    inv_impl *inv;
    while ((inv = queue_pop(p)))
        inv_fail(inv, "Sandbox.Failure", "RequestId: %s Error: nimbus is shutting down",
                 inv->pub.request_id);
}

void nb_invoker_stop_all(nb_invoker *iv)
{
    iv->stopping = 1;
    uv_timer_stop(&iv->reaper);
    for (int b = 0; b < BUCKETS; b++)
        for (fn_entry *e = iv->buckets[b]; e; e = e->next)
            for (pool *p = e->pools; p; p = p->next)
                stop_pool(p);
    for (pool *p = iv->orphans; p; p = p->next)
        stop_pool(p);
    nb_inst_stop_all();
}

static void free_invoker(uv_handle_t *h)
{
    free(h->data);
}

void nb_invoker_free(nb_invoker *iv)
{
    for (int b = 0; b < BUCKETS; b++) {
        while (iv->buckets[b]) {
            fn_entry *e = iv->buckets[b];
            iv->buckets[b] = e->next;
            while (e->pools) {
                pool *p = e->pools;
                e->pools = p->next;
                pool_free(p);
            }
            nb_fn_version_unref(e->latest);
            free(e);
        }
    }
    while (iv->orphans) {
        pool *p = iv->orphans;
        iv->orphans = p->next;
        pool_free(p);
    }
    uv_close((uv_handle_t *)&iv->reaper, free_invoker);
}
