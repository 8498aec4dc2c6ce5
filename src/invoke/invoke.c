#include "invoke/invoke.h"

#include "base/log.h"
#include "base/util.h"
#include "logs/logs.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fn_entry fn_entry;
typedef struct inv_impl inv_impl;

typedef enum pool_state { POOL_ACTIVE, POOL_DRAINING } pool_state;
static const char *pool_state_names[] = {"active", "draining"};

/* nb_inst.owner_flags */
#define INST_IN_IDLE   1u /* on its pool's idle stack */
#define INST_RELEASING 2u /* the scheduler stopped it; still counted until STOPPED */

/* The instances of one function version. Counters partition its live instances:
 * n_live = n_starting + n_idle + n_running + (instances stopping or between two hooks). */
typedef struct pool {
    nb_invoker *iv;
    fn_entry *fn; /* NULL once the function is deleted (the pool then only drains) */
    nb_fn_version *ver;
    pool_state state;
    nb_inst *idle_top; /* idle stack through owner_link: [0] newer, [1] older */
    nb_inst *idle_bottom;
    int n_idle;
    int n_starting; /* spawned, not yet ready */
    int n_running;  /* invocations on an instance */
    int n_live;     /* not yet STOPPED */
    int n_alloc;    /* not yet freed */
    inv_impl *q_head, *q_tail;
    int q_len;
    struct pool *wprev, *wnext; /* iv->waiting: pools with a non-empty queue */
    int waiting;
    int64_t retry_at_us; /* min_instances: no restart before this after an init failure */
    int64_t backoff_ms;
    struct pool *next;
} pool;

struct fn_entry {
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    nb_fn_version *latest;
    nb_fn_scaling scale; /* the latest's settings: the function's, whatever the version */
    pool *pools;
    int n_live; /* instances of every version, not yet STOPPED */
    int64_t invocations, cold_starts, throttles, starts, last_cold_start_ms;
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
    inv_impl *qprev, *qnext;
    int64_t deadline_us; /* queue_timeout_ms after arrival */
    nb_inst *inst;
    int explicit_version; /* asked for ?version=N: never moved to a newer version */
    int requeued;         /* handed back once by an instance that died before fetching it */
};

#define BUCKETS       1024
#define REAP_EVERY_MS 250
#define QUEUE_TICK_MS 10

struct nb_invoker {
    nb_invoker_config cfg;
    char code_root[PATH_MAX];
    char runtimes_dir[PATH_MAX];
    nb_inst_env env;
    fn_entry *buckets[BUCKETS];
    pool *orphans; /* pools of deleted functions, draining */
    pool *waiting; /* pools with waiters, oldest first (a FIFO of who gets freed capacity) */
    pool *waiting_tail;
    size_t inflight;
    size_t instances; /* not yet STOPPED */
    size_t allocated; /* not yet freed (hooks still to come) */
    int64_t mem_mb;   /* memory_mb of the instances not yet STOPPED */
    int releasing;    /* instances the scheduler stopped that still count against the caps */
    uv_timer_t reaper;
    uv_timer_t qtimer; /* queue timeouts, running only while someone waits */
    int stopping;
    int closes_left; /* timers still closing in nb_invoker_free */
};

static const char *inv_state_names[] = {"queued", "running", "done"};

static void queue_tick(uv_timer_t *t);

static void inv_set_state(inv_impl *inv, nb_inv_state s)
{
    nb_debug("invoke", "%s %s -> %s fn=%s", inv->pub.request_id, inv_state_names[inv->pub.state],
             inv_state_names[s], inv->pub.ver->name);
    inv->pub.state = s;
}

static void pool_set_state(pool *p, pool_state s, const char *why)
{
    if (p->state == s) return;
    nb_info("invoke", "pool %s v%lld %s -> %s why=%s instances=%d", p->ver->name,
            (long long)p->ver->version, pool_state_names[p->state], pool_state_names[s], why,
            p->n_live);
    p->state = s;
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

/* Frees a draining pool once nothing refers to it. */
static void pool_maybe_free(pool *p)
{
    if (p->state != POOL_DRAINING || p->n_alloc > 0 || p->q_len > 0) return;
    unlink_pool(p->fn ? &p->fn->pools : &p->iv->orphans, p);
    pool_free(p);
}

static pool *pool_find(fn_entry *e, int64_t version)
{
    for (pool *p = e->pools; p; p = p->next)
        if (p->ver->version == version) return p;
    return NULL;
}

static pool *pool_get(nb_invoker *iv, fn_entry *e, nb_fn_version *ver)
{
    pool *p = pool_find(e, ver->version);
    if (p) return p;
    p = calloc(1, sizeof *p);
    if (!p) abort();
    p->iv = iv;
    p->fn = e;
    p->ver = nb_fn_version_ref(ver);
    /* Only the latest version's pool keeps warm instances; others serve explicit version
     * requests and stop their instances once idle, then are freed. */
    p->state = e->latest && e->latest->version == ver->version ? POOL_ACTIVE : POOL_DRAINING;
    p->next = e->pools;
    e->pools = p;
    return p;
}

static pool *active_pool(fn_entry *e)
{
    if (!e || !e->latest) return NULL;
    pool *p = pool_find(e, e->latest->version);
    return p && p->state == POOL_ACTIVE ? p : NULL;
}

static nb_inst **link_of(nb_inst *inst, int i)
{
    return (nb_inst **)&inst->owner_link[i];
}

static void idle_push(pool *p, nb_inst *inst)
{
    *link_of(inst, 0) = NULL;
    *link_of(inst, 1) = p->idle_top;
    if (p->idle_top)
        *link_of(p->idle_top, 0) = inst;
    else
        p->idle_bottom = inst;
    p->idle_top = inst;
    inst->owner_flags |= INST_IN_IDLE;
    p->n_idle++;
}

static void idle_remove(pool *p, nb_inst *inst)
{
    if (!(inst->owner_flags & INST_IN_IDLE)) return;
    nb_inst *newer = *link_of(inst, 0), *older = *link_of(inst, 1);
    if (newer)
        *link_of(newer, 1) = older;
    else
        p->idle_top = older;
    if (older)
        *link_of(older, 0) = newer;
    else
        p->idle_bottom = newer;
    inst->owner_flags &= ~INST_IN_IDLE;
    p->n_idle--;
}

/* Instances that are or will be able to serve: what min_instances and scale-down count. */
static int pool_usable(const pool *p)
{
    return p->n_starting + p->n_idle + p->n_running;
}

static int fn_usable(const fn_entry *e)
{
    int n = 0;
    for (const pool *p = e->pools; p; p = p->next)
        n += pool_usable(p);
    return n;
}

/* Waiters with no instance starting for them: what max_queue bounds. */
static int fn_queued(const fn_entry *e)
{
    int n = 0;
    for (const pool *p = e->pools; p; p = p->next)
        if (p->q_len > p->n_starting) n += p->q_len - p->n_starting;
    return n;
}

static int min_instances(const pool *p)
{
    return p->state == POOL_ACTIVE && p->fn ? p->fn->scale.min_instances : 0;
}

/* Stops an idle (or just freed) instance; it counts against the caps until STOPPED. */
static void release(pool *p, nb_inst *inst, const char *why)
{
    idle_remove(p, inst);
    if (!(inst->owner_flags & INST_RELEASING)) {
        inst->owner_flags |= INST_RELEASING;
        p->iv->releasing++;
    }
    nb_inst_stop(inst, why);
}

/* Drain: stop idle instances now; busy ones stop when they finish. */
static void pool_drain(pool *p, const char *why)
{
    pool_set_state(p, POOL_DRAINING, why);
    while (p->idle_top)
        release(p, p->idle_top, why);
    pool_maybe_free(p);
}

static void waiting_link(pool *p)
{
    nb_invoker *iv = p->iv;
    if (p->waiting) return;
    p->waiting = 1;
    p->wnext = NULL;
    p->wprev = iv->waiting_tail;
    if (iv->waiting_tail)
        iv->waiting_tail->wnext = p;
    else
        iv->waiting = p;
    iv->waiting_tail = p;
    if (!uv_is_active((uv_handle_t *)&iv->qtimer))
        uv_timer_start(&iv->qtimer, queue_tick, QUEUE_TICK_MS, QUEUE_TICK_MS);
}

static void waiting_unlink(pool *p)
{
    nb_invoker *iv = p->iv;
    if (!p->waiting) return;
    p->waiting = 0;
    if (p->wprev)
        p->wprev->wnext = p->wnext;
    else
        iv->waiting = p->wnext;
    if (p->wnext)
        p->wnext->wprev = p->wprev;
    else
        iv->waiting_tail = p->wprev;
    p->wprev = p->wnext = NULL;
}

/* ---------- invocations ---------- */

static void log_platform(inv_impl *inv, const nb_inst *inst, const char *report_json,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void log_platform(inv_impl *inv, const nb_inst *inst, const char *report_json,
                         const char *fmt, ...)
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
        .report_json = report_json,
    };
    nb_logs_append(inv->iv->cfg.logs, &l);
}

/* END and REPORT, as Lambda writes them; the REPORT record also carries its figures as JSON.
 * Max Memory Used appears only once the sandbox measures it (never a guess). */
static void log_report(inv_impl *inv)
{
    const nb_inst *inst = inv->inst;
    int64_t us = inv->pub.ended_us - inv->pub.started_us;
    long long billed = us > 0 ? (us + 999) / 1000 : 1;
    double init_ms = inv->pub.cold && inst->ready_us
                         ? (double)(inst->ready_us - inst->started_us) / 1000.0
                         : 0.0;
    int64_t peak = inst->max_memory_used_mb;
    char peak_txt[48] = "", init_txt[48] = "", peak_json[24] = "null", init_json[24] = "null";
    if (peak > 0) {
        snprintf(peak_txt, sizeof peak_txt, "\tMax Memory Used: %lld MB", (long long)peak);
        snprintf(peak_json, sizeof peak_json, "%lld", (long long)peak);
    }
    if (inv->pub.cold) {
        snprintf(init_txt, sizeof init_txt, "\tInit Duration: %.2f ms", init_ms);
        snprintf(init_json, sizeof init_json, "%.2f", init_ms);
    }
    char json[256];
    snprintf(json, sizeof json,
             "{\"duration_ms\":%.2f,\"billed_duration_ms\":%lld,\"memory_size_mb\":%d,"
             "\"max_memory_used_mb\":%s,\"cold_start\":%s,\"init_duration_ms\":%s}",
             (double)us / 1000.0, billed, inv->pub.ver->cfg.memory_mb, peak_json,
             inv->pub.cold ? "true" : "false", init_json);
    log_platform(inv, inst, NULL, "END RequestId: %s", inv->pub.request_id);
    log_platform(inv, inst, json,
                 "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %lld ms\tMemory Size: "
                 "%d MB%s%s",
                 inv->pub.request_id, (double)us / 1000.0, billed, inv->pub.ver->cfg.memory_mb,
                 peak_txt, init_txt);
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
        inv->pool->n_running--;
        log_report(inv);
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

/* 429: answered now and never run. fn may be NULL (a deleted function's pool). */
static void inv_throttle(inv_impl *inv, fn_entry *e, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void inv_throttle(inv_impl *inv, fn_entry *e, const char *reason, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (e) e->throttles++;
    inv->pub.throttled = 1;
    inv->pub.retry_after_s = 1;
    snprintf(inv->pub.throttle_reason, sizeof inv->pub.throttle_reason, "%s", reason);
    nb_debug("invoke", "%s throttled fn=%s: %s", inv->pub.request_id, inv->pub.ver->name, msg);
    inv_finish(inv, NB_OUTCOME_UNHANDLED, "TooManyRequestsException", msg,
               n < 0                    ? 0
               : (size_t)n < sizeof msg ? (size_t)n
                                        : sizeof msg - 1,
               "text/plain");
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
    inv->pool = p;
    inv->pub.cold = cold;
    inv->pub.init_ms = cold ? nb_inst_init_ms(inst) : 0;
    inv->pub.started_us = nb_mono_us();
    if (p->fn) {
        p->fn->invocations++;
        if (cold) {
            p->fn->cold_starts++;
            p->fn->last_cold_start_ms = inv->pub.init_ms;
        }
    }
    p->n_running++;
    inv_set_state(inv, NB_INV_RUNNING);
    log_platform(inv, inst, NULL, "START RequestId: %s Version: %lld", inv->pub.request_id,
                 (long long)inv->pub.ver->version);
    /* The instance copies what it must keep of the job (its strings are on this stack). */
    if (nb_inst_dispatch(inst, &job, inv) < 0) {
        inv_fail(inv, "Sandbox.Failure", "RequestId: %s Error: instance refused the invocation",
                 inv->pub.request_id);
    }
}

/* ---------- the queue ---------- */

static void queue_unlink(pool *p, inv_impl *inv)
{
    if (inv->qprev)
        inv->qprev->qnext = inv->qnext;
    else
        p->q_head = inv->qnext;
    if (inv->qnext)
        inv->qnext->qprev = inv->qprev;
    else
        p->q_tail = inv->qprev;
    inv->qprev = inv->qnext = NULL;
    p->q_len--;
    if (p->q_len == 0) waiting_unlink(p);
}

static void queue_push(pool *p, inv_impl *inv, int at_head)
{
    inv->pool = p;
    if (at_head) {
        inv->qnext = p->q_head;
        inv->qprev = NULL;
        if (p->q_head)
            p->q_head->qprev = inv;
        else
            p->q_tail = inv;
        p->q_head = inv;
    } else {
        inv->qprev = p->q_tail;
        inv->qnext = NULL;
        if (p->q_tail)
            p->q_tail->qnext = inv;
        else
            p->q_head = inv;
        p->q_tail = inv;
    }
    p->q_len++;
    waiting_link(p);
}

static inv_impl *queue_pop(pool *p)
{
    inv_impl *inv = p->q_head;
    if (inv) queue_unlink(p, inv);
    return inv;
}

/* ---------- capacity ---------- */

static const nb_inst_hooks hooks;

/* Whether one more instance of p may start now, within the function's and the daemon's caps.
 * Instances still stopping count: their memory is not yet given back. */
static int room_for(const pool *p, int *fn_bound)
{
    const nb_invoker *iv = p->iv;
    *fn_bound = 0;
    if (iv->stopping) return 0;
    if (p->fn && p->fn->scale.max_concurrency != NB_SCALE_UNSET &&
        p->fn->n_live >= p->fn->scale.max_concurrency) {
        *fn_bound = 1;
        return 0;
    }
    return (int64_t)iv->instances < iv->cfg.max_instances &&
           iv->mem_mb + p->ver->cfg.memory_mb <= iv->cfg.max_memory_mb;
}

static nb_inst *start_one(pool *p, nb_inst_result *res, char *why, size_t size)
{
    nb_invoker *iv = p->iv;
    nb_inst *inst = nb_inst_start(&iv->env, p->ver, &hooks, p, res, why, size);
    if (!inst) return NULL;
    p->n_starting++;
    p->n_live++;
    p->n_alloc++;
    if (p->fn) {
        p->fn->n_live++;
        p->fn->starts++;
    }
    iv->instances++;
    iv->allocated++;
    iv->mem_mb += p->ver->cfg.memory_mb;
    return inst;
}

/* The least recently used idle instance among the pools of list (not `except`), skipping
 * those min_instances keeps. */
static nb_inst *lru_idle(pool *list, const pool *except, pool **owner)
{
    nb_inst *best = NULL;
    for (pool *q = list; q; q = q->next) {
        if (q == except || !q->idle_bottom || pool_usable(q) <= min_instances(q)) continue;
        if (!best || q->idle_bottom->idle_since_us < best->idle_since_us) {
            best = q->idle_bottom;
            *owner = q;
        }
    }
    return best;
}

/* p has waiters and no room: stop idle instances elsewhere (least recently used first) to
 * make some, unless enough are already on their way out. */
static void make_room(pool *p, int fn_bound)
{
    nb_invoker *iv = p->iv;
    while (p->q_len - p->n_starting > iv->releasing) {
        pool *owner = NULL;
        nb_inst *victim = NULL;
        if (fn_bound) {
            victim = lru_idle(p->fn->pools, p, &owner);
        } else {
            for (int b = 0; b < BUCKETS; b++) {
                for (fn_entry *e = iv->buckets[b]; e; e = e->next) {
                    pool *o = NULL;
                    nb_inst *c = lru_idle(e->pools, p, &o);
                    if (c && (!victim || c->idle_since_us < victim->idle_since_us)) {
                        victim = c;
                        owner = o;
                    }
                }
            }
        }
        if (!victim) return;
        release(owner, victim, fn_bound ? "making room (max_concurrency)" : "making room (caps)");
    }
}

/* Starts instances until every waiter of p has one coming, within the caps. */
static void start_instances(pool *p)
{
    while (p->q_len > p->n_starting) {
        int fn_bound;
        if (!room_for(p, &fn_bound)) {
            make_room(p, fn_bound);
            return;
        }
        nb_inst_result res = {0};
        char why[NB_ERR_MSG_MAX];
        if (!start_one(p, &res, why, sizeof why)) {
            inv_impl *inv = queue_pop(p);
            if (inv)
                inv_fail(inv, res.error_type, "RequestId: %s Error: %s", inv->pub.request_id, why);
        }
    }
}

/* Capacity was given back: the pools that wait get it in the order they started waiting. */
static void kick_waiting(nb_invoker *iv)
{
    if (iv->stopping) return;
    for (pool *p = iv->waiting; p;) {
        pool *next = p->wnext;
        start_instances(p);
        p = next;
    }
}

/* Keeps min_instances of the latest version started (at deploy, at daemon start, when one
 * dies). After an init failure restarts back off (1 s doubling to 60 s) so a broken function
 * does not spin. */
static void ensure_min(fn_entry *e)
{
    pool *p = active_pool(e);
    if (!p || p->iv->stopping || nb_mono_us() < p->retry_at_us) return;
    while (pool_usable(p) < e->scale.min_instances) {
        int fn_bound;
        if (!room_for(p, &fn_bound)) return;
        nb_inst_result res = {0};
        char why[NB_ERR_MSG_MAX];
        if (!start_one(p, &res, why, sizeof why)) {
            nb_warn("invoke", "min_instances of %s: %s", e->name, why);
            p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 1000;
            if (p->backoff_ms > 60000) p->backoff_ms = 60000;
            p->retry_at_us = nb_mono_us() + p->backoff_ms * 1000;
            return;
        }
    }
}

/* ---------- instance hooks ---------- */

/* An instance is free: give it the oldest waiter or put it on the idle stack, unless its
 * version is draining or the function is above its max_concurrency (scale-down). */
static void serve(pool *p, nb_inst *inst, int cold)
{
    nb_invoker *iv = p->iv;
    if (iv->stopping) {
        release(p, inst, "shutdown");
        return;
    }
    if (p->fn && p->fn->scale.max_concurrency != NB_SCALE_UNSET &&
        fn_usable(p->fn) >= p->fn->scale.max_concurrency) {
        release(p, inst, "above max_concurrency");
        return;
    }
    inv_impl *inv = queue_pop(p);
    if (inv) {
        run_on(p, inv, inst, cold);
        return;
    }
    if (p->state == POOL_DRAINING) {
        release(p, inst, "version retired");
        pool_maybe_free(p);
        return;
    }
    idle_push(p, inst);
    /* Other functions may be waiting for capacity this one could give up. */
    if (iv->waiting) kick_waiting(iv);
}

static void hook_ready(nb_inst *inst)
{
    pool *p = inst->owner;
    p->n_starting--;
    p->backoff_ms = 0;
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
        p->n_running--;
        inv_set_state(inv, NB_INV_QUEUED);
        queue_push(p, inv, 1);
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
    nb_invoker *iv = p->iv;
    idle_remove(p, inst);
    p->n_live--;
    if (p->fn) p->fn->n_live--;
    iv->instances--;
    iv->mem_mb -= p->ver->cfg.memory_mb;
    if (inst->owner_flags & INST_RELEASING) iv->releasing--;
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
        p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 1000;
        if (p->backoff_ms > 60000) p->backoff_ms = 60000;
        p->retry_at_us = nb_mono_us() + p->backoff_ms * 1000;
    }
    if (!iv->stopping) {
        kick_waiting(iv);
        ensure_min(p->fn);
    }
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

/* ---------- invoke ---------- */

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
    const nb_fn_scaling *sc = &e->scale;
    if (sc->max_concurrency == 0) {
        inv_throttle(inv, e, "ReservedFunctionConcurrentInvocationLimitExceeded",
                     "Rate Exceeded: function %s is disabled (max_concurrency 0)", e->name);
        return;
    }
    pool *p = pool_get(iv, e, ver);
    inv->explicit_version = ver->version != e->latest->version;
    if (p->idle_top) {
        nb_inst *inst = p->idle_top;
        idle_remove(p, inst);
        run_on(p, inv, inst, 0);
        return;
    }
    /* Decided before queueing, since starting an instance may fail and answer a waiter at
     * once: is an instance already coming for this waiter, or can one start? Else it waits in
     * the bounded queue. */
    int fn_bound;
    int covered = p->q_len < p->n_starting || room_for(p, &fn_bound);
    if (!covered && fn_queued(e) >= sc->max_queue) {
        int cap_reached = sc->max_concurrency != NB_SCALE_UNSET;
        inv_throttle(inv, e,
                     cap_reached ? "ReservedFunctionConcurrentInvocationLimitExceeded"
                                 : "ConcurrentInvocationLimitExceeded",
                     "Rate Exceeded: %s is at its %s and %d invocations are queued (max_queue)",
                     e->name, cap_reached ? "max_concurrency" : "instance limit", fn_queued(e));
        return;
    }
    inv->deadline_us = inv->pub.queued_us + (int64_t)sc->queue_timeout_ms * 1000;
    queue_push(p, inv, 0);
    start_instances(p);
}

void nb_inv_detach(nb_inv *pub)
{
    inv_impl *inv = (inv_impl *)pub;
    inv->cb = NULL;
    inv->ud = NULL;
}

/* Waiters with no instance coming (past the first n_starting of each queue) that waited
 * longer than their queue_timeout_ms are throttled. */
static void queue_tick(uv_timer_t *t)
{
    nb_invoker *iv = t->data;
    int64_t now = nb_mono_us();
    for (pool *p = iv->waiting; p;) {
        pool *next = p->wnext;
        int pos = 0;
        for (inv_impl *inv = p->q_head; inv;) {
            inv_impl *qn = inv->qnext;
            if (pos++ >= p->n_starting && inv->deadline_us <= now) {
                queue_unlink(p, inv);
                pos--;
                inv_throttle(inv, p->fn, "ReservedFunctionConcurrentInvocationLimitExceeded",
                             "Rate Exceeded: no instance of %s became free within %lld ms "
                             "(queue_timeout_ms)",
                             p->ver->name,
                             (long long)((inv->deadline_us - inv->pub.queued_us) / 1000));
            }
            inv = qn;
        }
        pool_maybe_free(p);
        p = next;
    }
    if (!iv->waiting) uv_timer_stop(&iv->qtimer);
}

/* ---------- lifecycle of functions ---------- */

/* Brings a function within its (new) settings: disabled throttles every waiter, a lower
 * max_concurrency stops idle instances above it (busy ones stop when they finish),
 * min_instances start. */
static void apply_scaling(nb_invoker *iv, fn_entry *e)
{
    const nb_fn_scaling *sc = &e->scale;
    if (sc->max_concurrency == 0) {
        for (pool *p = e->pools; p; p = p->next) {
            inv_impl *inv;
            while ((inv = queue_pop(p)))
                inv_throttle(inv, e, "ReservedFunctionConcurrentInvocationLimitExceeded",
                             "Rate Exceeded: function %s was disabled (max_concurrency 0)",
                             e->name);
        }
    }
    if (sc->max_concurrency != NB_SCALE_UNSET) {
        while (fn_usable(e) > sc->max_concurrency) {
            pool *owner = NULL;
            nb_inst *victim = NULL;
            for (pool *p = e->pools; p; p = p->next) {
                if (p->idle_bottom &&
                    (!victim || p->idle_bottom->idle_since_us < victim->idle_since_us)) {
                    victim = p->idle_bottom;
                    owner = p;
                }
            }
            if (!victim) break;
            release(owner, victim, "above max_concurrency");
        }
    }
    for (pool *p = e->pools; p;) {
        pool *next = p->next;
        pool_maybe_free(p);
        p = next;
    }
    ensure_min(e);
    kick_waiting(iv);
}

void nb_invoker_publish(nb_invoker *iv, nb_fn_version *v)
{
    fn_entry *e = lookup(iv, v->ns, v->name);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) abort();
        snprintf(e->ns, sizeof e->ns, "%s", v->ns);
        snprintf(e->name, sizeof e->name, "%s", v->name);
        e->last_cold_start_ms = -1;
        unsigned h = hash_key(v->ns, v->name);
        e->next = iv->buckets[h];
        iv->buckets[h] = e;
    }
    nb_fn_version *old = e->latest;
    e->latest = nb_fn_version_ref(v);
    e->scale = v->cfg.scaling;
    if (old && old->version == v->version) {
        /* Same version, new settings: nothing restarts. */
        nb_fn_version_unref(old);
        apply_scaling(iv, e);
        return;
    }
    pool *active = pool_get(iv, e, v);
    for (pool *p = e->pools; p;) {
        pool *next = p->next;
        if (p != active && p->state == POOL_ACTIVE) {
            /* Its waiters asked for "the latest": they go to the new version, which will
             * serve them sooner than instances of a version being retired. */
            for (inv_impl *inv = p->q_head; inv;) {
                inv_impl *qn = inv->qnext;
                if (!inv->explicit_version) {
                    queue_unlink(p, inv);
                    nb_fn_version_unref(inv->pub.ver);
                    inv->pub.ver = nb_fn_version_ref(v);
                    queue_push(active, inv, 0);
                }
                inv = qn;
            }
            pool_drain(p, "new version");
        }
        p = next;
    }
    nb_fn_version_unref(old);
    apply_scaling(iv, e);
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
            pool_drain(p, "function deleted");
        }
        nb_fn_version_unref(e->latest);
        free(e);
        return;
    }
}

static int64_t idle_timeout_us(const nb_invoker *iv, const fn_entry *e)
{
    int64_t ms = e->scale.idle_timeout_s != NB_SCALE_UNSET ? (int64_t)e->scale.idle_timeout_s * 1000
                                                           : iv->cfg.idle_timeout_ms;
    return ms * 1000;
}

/* Scale-down: the least recently used idle instances above min_instances stop after their
 * function's idle timeout; and min_instances are restarted where a backoff held them. */
static void reap_idle(uv_timer_t *t)
{
    nb_invoker *iv = t->data;
    int64_t now = nb_mono_us();
    for (int b = 0; b < BUCKETS; b++) {
        for (fn_entry *e = iv->buckets[b]; e; e = e->next) {
            int64_t limit = idle_timeout_us(iv, e);
            for (pool *p = e->pools; p;) {
                pool *next = p->next;
                /* The bottom of the stack is the least recently used. */
                while (p->idle_bottom && now - p->idle_bottom->idle_since_us > limit &&
                       pool_usable(p) > min_instances(p))
                    release(p, p->idle_bottom, "idle timeout");
                pool_maybe_free(p);
                p = next;
            }
            if (e->scale.min_instances > 0) ensure_min(e);
        }
    }
}

void nb_invoker_default_caps(int *max_instances, int64_t *max_memory_mb)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    int64_t phys_mb = pages > 0 && psize > 0 ? (int64_t)pages * psize / (1 << 20) : 4096;
    /* Three quarters of the machine for instances' memory settings (the rest for the daemon,
     * the page cache and the system); one instance per 64 MB at most, as few runtimes fit in
     * less, between 8 and 4096. */
    *max_memory_mb = phys_mb * 3 / 4;
    int64_t n = phys_mb / 64;
    *max_instances = (int)(n < 8 ? 8 : n > 4096 ? 4096 : n);
}

nb_invoker *nb_invoker_new(const nb_invoker_config *cfg)
{
    nb_invoker *iv = calloc(1, sizeof *iv);
    if (!iv) abort();
    iv->cfg = *cfg;
    int def_n;
    int64_t def_mem;
    nb_invoker_default_caps(&def_n, &def_mem);
    if (iv->cfg.max_instances <= 0) iv->cfg.max_instances = def_n;
    if (iv->cfg.max_memory_mb <= 0) iv->cfg.max_memory_mb = def_mem;
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
    uv_timer_start(&iv->reaper, reap_idle, REAP_EVERY_MS, REAP_EVERY_MS);
    uv_unref((uv_handle_t *)&iv->reaper);
    uv_timer_init(cfg->loop, &iv->qtimer);
    iv->qtimer.data = iv;
    uv_unref((uv_handle_t *)&iv->qtimer);
    nb_info("invoke", "caps: %d instances, %lld MB of instance memory; idle timeout %lld s",
            iv->cfg.max_instances, (long long)iv->cfg.max_memory_mb,
            (long long)(iv->cfg.idle_timeout_ms / 1000));
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

int nb_invoker_stats(nb_invoker *iv, const char *ns, const char *name, nb_fn_stats *out)
{
    memset(out, 0, sizeof *out);
    fn_entry *e = lookup(iv, ns, name);
    if (!e) return -1;
    for (pool *p = e->pools; p; p = p->next) {
        int stopping = p->n_live - pool_usable(p);
        if (stopping < 0) stopping = 0;
        if (p->state == POOL_ACTIVE) {
            out->starting += p->n_starting;
            out->idle += p->n_idle;
            out->busy += p->n_running;
            out->draining += stopping;
        } else {
            out->draining += p->n_live;
        }
        out->in_flight += p->n_running;
        out->queued += p->q_len;
    }
    out->invocations = e->invocations;
    out->cold_starts = e->cold_starts;
    out->throttles = e->throttles;
    out->instance_starts = e->starts;
    out->last_cold_start_ms = e->last_cold_start_ms;
    return 0;
}

void nb_invoker_caps(const nb_invoker *iv, int *max_instances, int64_t *max_memory_mb)
{
    *max_instances = iv->cfg.max_instances;
    *max_memory_mb = iv->cfg.max_memory_mb;
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
    while (p->idle_top)
        release(p, p->idle_top, "shutdown");
    inv_impl *inv;
    while ((inv = queue_pop(p)))
        inv_fail(inv, "Sandbox.Failure", "RequestId: %s Error: nimbus is shutting down",
                 inv->pub.request_id);
}

void nb_invoker_stop_all(nb_invoker *iv)
{
    iv->stopping = 1;
    uv_timer_stop(&iv->reaper);
    uv_timer_stop(&iv->qtimer);
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
    nb_invoker *iv = h->data;
    if (--iv->closes_left == 0) free(iv);
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
    iv->stopping = 1;
    iv->closes_left = 2;
    uv_close((uv_handle_t *)&iv->reaper, free_invoker);
    uv_close((uv_handle_t *)&iv->qtimer, free_invoker);
}
