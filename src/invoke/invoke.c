#include "invoke/invoke.h"

#include "base/log.h"
#include "base/util.h"
#include "logs/logs.h"
#include "metrics/metrics.h"
#include "metering/usage.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fn_entry fn_entry;
typedef struct inv_impl inv_impl;

/* ---------- what the loops share (docs/internals/scheduler.md, "Threading model") ----------
 *
 * Each loop has its own nb_invoker: registry copy, pools, queues, instances. What must hold
 * across loops is shared through atomics only, never a lock on the invocation path:
 * - per function (fn_shared): instances alive (max_concurrency), waiters with no instance
 *   coming (max_queue), and one slot per loop of figures that loop alone writes (stats, and
 *   where idle or usable instances are, which is how a loop picks another to forward to);
 * - daemon-wide (nb_sched): instances alive and their memory (the global caps), instances being
 *   stopped, and per loop its in-flight count, idle instances and whether it has waiters.
 * Registry changes (publish, remove) come from the admin path under the sched mutex, as
 * messages to every loop plus a generation number a loop checks before each lookup. */

#define MAX_LOOPS 64

/* One loop's share of a function: written by that loop only, read by any (relaxed). */
typedef struct loop_slot {
    atomic_int starting, idle, busy, draining, in_flight, queued;
    atomic_int usable;      /* starting + idle + running, every version */
    atomic_int idle_active; /* idle instances of the latest version: where to forward */
    atomic_int movable;     /* waiters another loop's idle instance may take (M_STEAL) */
    atomic_llong invocations, cold_starts, throttles, starts;
} __attribute__((aligned(64))) loop_slot;

typedef struct fn_shared {
    atomic_int refs;
    atomic_int live;   /* instances of every version on every loop not yet STOPPED */
    atomic_int queued; /* waiters with no instance coming, every loop: what max_queue bounds */
    atomic_llong last_cold_start_ms;
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    struct fn_shared *next; /* the sched's registry (under its mutex) */
    loop_slot *slots;       /* nloops */
} fn_shared;

/* Per loop, daemon-wide figures: written by that loop only. */
typedef struct loop_stat {
    atomic_long inflight;
    atomic_int idle_total; /* idle instances, any function: where room can be made */
    atomic_int waiting;    /* has pools with waiters: wants to hear of freed capacity */
} __attribute__((aligned(64))) loop_stat;

typedef enum msg_type { M_PUBLISH, M_REMOVE, M_INVOKE, M_RESULT, M_GIVEBACK, M_STEAL } msg_type;

typedef struct xmsg {
    msg_type type;
    nb_fn_version *ver;
    fn_shared *sh;
    char ns[NB_NAME_MAX + 1];
    char name[NB_NAME_MAX + 1];
    inv_impl *inv;
    int from; /* M_STEAL: the loop with an idle instance */
    struct xmsg *next;
} xmsg;

struct nb_sched {
    int nloops;
    int max_instances;
    int64_t max_memory_mb;
    atomic_int instances;   /* alive (not yet STOPPED), every loop */
    atomic_llong mem_mb;    /* their memory_mb */
    atomic_int releasing;   /* stopped by a scheduler, still counted */
    atomic_int room_wanted; /* a loop waits for the caps and has no idle instance to stop */
    pthread_mutex_t mu;     /* fns and the registry queues */
    atomic_uint gen;        /* bumped with every registry message */
    fn_shared *fns;
    nb_invoker *loops[MAX_LOOPS];
    xmsg *reg_head[MAX_LOOPS], *reg_tail[MAX_LOOPS];
    loop_stat lstat[MAX_LOOPS];
};

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
    int q_latest;     /* waiters that asked for "the latest" (not ?version=N): movable to a loop */
    int n_qslots;     /* this pool's part of fn_shared.queued: max(0, q_len - n_starting) */
    int64_t asked_us; /* last time it asked another loop to give an instance back */
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
    fn_shared *sh; /* shared with the other loops' entries of the function */
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
    int explicit_version;    /* asked for ?version=N: never moved to a newer version */
    int requeued;            /* handed back once by an instance that died before fetching it */
    int moved;               /* forwarded from its home loop: explicit_version is already decided */
    int stolen;              /* admitted to a queue on another loop: never throttled again */
    nb_invoker *home;        /* the loop whose HTTP request waits for it (cb runs there) */
    int64_t deadline_cap_ms; /* a callee ends by its caller's deadline (epoch ms); 0: none */
    int64_t deadline_ms;     /* of its run, once running */
    nb_call *calls;          /* calls it made that wait for their answer */
};

/* A call made by a running invocation (docs/internals/calls.md). Owned by whatever carries out
 * the operation until nb_call_finish; the invocation only points at it, and detaches it when it
 * ends (inv = NULL), so a late answer is dropped instead of reaching an instance that moved on. */
struct nb_call {
    inv_impl *inv;
    nb_inst *inst;
    uint32_t call_id;
    nb_call *next; /* the invocation's calls */
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
    nb_sched *sched;
    int index;
    unsigned gen_seen;
    size_t inflight;  /* this loop's: its own requests' invocations, wherever they run */
    size_t instances; /* this loop's, not yet STOPPED */
    size_t allocated; /* not yet freed (hooks still to come) */
    int idle_total;
    pthread_mutex_t inbox_mu; /* guards the inbox: other loops post to it */
    xmsg *in_head, *in_tail;
    uv_async_t wake;
    atomic_int poked; /* capacity was given back somewhere: kick the waiting pools */
    uv_timer_t reaper;
    uv_timer_t qtimer; /* queue timeouts, running only while someone waits */
    int stopping;
    int closes_left; /* timers still closing in nb_invoker_free */
};

static const char *inv_state_names[] = {"queued", "running", "done"};

static void queue_tick(uv_timer_t *t);
static void touch(pool *p);

static void set_inflight(nb_invoker *iv, size_t n)
{
    iv->inflight = n;
    atomic_store_explicit(&iv->sched->lstat[iv->index].inflight, (long)n, memory_order_relaxed);
}

static void poke(nb_invoker *t)
{
    atomic_store(&t->poked, 1);
    uv_async_send(&t->wake);
}

/* Capacity came back: the other loops that have waiters try to use it. */
static void poke_waiting(nb_invoker *iv)
{
    nb_sched *s = iv->sched;
    for (int i = 0; i < s->nloops; i++)
        if (i != iv->index && atomic_load_explicit(&s->lstat[i].waiting, memory_order_relaxed))
            poke(s->loops[i]);
}

static void post(nb_invoker *t, xmsg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&t->inbox_mu);
    if (t->in_tail)
        t->in_tail->next = m;
    else
        t->in_head = m;
    t->in_tail = m;
    pthread_mutex_unlock(&t->inbox_mu);
    uv_async_send(&t->wake);
}

static xmsg *msg_new(msg_type type)
{
    xmsg *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->type = type;
    return m;
}

static fn_shared *sh_ref(fn_shared *f)
{
    if (f) atomic_fetch_add(&f->refs, 1);
    return f;
}

static void sh_unref(fn_shared *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) > 1) return;
    free(f->slots);
    free(f);
}

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

static void registry_sync(nb_invoker *iv);

nb_fn_version *nb_invoker_latest(nb_invoker *iv, const char *ns, const char *name)
{
    registry_sync(iv);
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
    p->iv->idle_total++;
    atomic_store_explicit(&p->iv->sched->lstat[p->iv->index].idle_total, p->iv->idle_total,
                          memory_order_relaxed);
    touch(p);
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
    p->iv->idle_total--;
    atomic_store_explicit(&p->iv->sched->lstat[p->iv->index].idle_total, p->iv->idle_total,
                          memory_order_relaxed);
    touch(p);
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

/* Usable instances of e on every loop: this loop's counted now, the others' from their slots
 * (what max_concurrency scale-down compares). */
static int fn_usable_all(const nb_invoker *iv, const fn_entry *e)
{
    int n = fn_usable(e);
    for (int i = 0; i < iv->sched->nloops; i++)
        if (i != iv->index)
            n += atomic_load_explicit(&e->sh->slots[i].usable, memory_order_relaxed);
    return n;
}

/* This loop's figures of e, as the API shows them. */
static void local_stats(const fn_entry *e, nb_fn_stats *out, int *idle_active)
{
    memset(out, 0, sizeof *out);
    *idle_active = 0;
    for (const pool *p = e->pools; p; p = p->next) {
        int stopping = p->n_live - pool_usable(p);
        if (stopping < 0) stopping = 0;
        if (p->state == POOL_ACTIVE) {
            out->starting += p->n_starting;
            out->idle += p->n_idle;
            out->busy += p->n_running;
            out->draining += stopping;
            *idle_active += p->n_idle;
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
}

static void publish_slot(const nb_invoker *iv, const fn_entry *e);

/* After any change to p: its share of the function's queue count, and this loop's slot. */
static void touch(pool *p)
{
    if (!p) return;
    fn_entry *e = p->fn;
    int want = p->q_len > p->n_starting ? p->q_len - p->n_starting : 0;
    if (want != p->n_qslots) {
        if (e) atomic_fetch_add(&e->sh->queued, want - p->n_qslots);
        p->n_qslots = want;
    }
    if (e) publish_slot(p->iv, e);
}

static void publish_slot(const nb_invoker *iv, const fn_entry *e)
{
    nb_fn_stats st;
    int idle_active;
    local_stats(e, &st, &idle_active);
    loop_slot *sl = &e->sh->slots[iv->index];
    atomic_store_explicit(&sl->starting, st.starting, memory_order_relaxed);
    atomic_store_explicit(&sl->idle, st.idle, memory_order_relaxed);
    atomic_store_explicit(&sl->busy, st.busy, memory_order_relaxed);
    atomic_store_explicit(&sl->draining, st.draining, memory_order_relaxed);
    atomic_store_explicit(&sl->in_flight, st.in_flight, memory_order_relaxed);
    atomic_store_explicit(&sl->queued, st.queued, memory_order_relaxed);
    atomic_store_explicit(&sl->usable, fn_usable(e), memory_order_relaxed);
    atomic_store_explicit(&sl->idle_active, idle_active, memory_order_relaxed);
    const pool *act = active_pool((fn_entry *)e);
    atomic_store_explicit(&sl->movable, act ? act->q_latest : 0, memory_order_relaxed);
    atomic_store_explicit(&sl->invocations, st.invocations, memory_order_relaxed);
    atomic_store_explicit(&sl->cold_starts, st.cold_starts, memory_order_relaxed);
    atomic_store_explicit(&sl->throttles, st.throttles, memory_order_relaxed);
    atomic_store_explicit(&sl->starts, st.instance_starts, memory_order_relaxed);
}

/* Whether another loop has waiters of e, no usable instance of it, and none of those waiters
 * can come here instead (M_STEAL moves only waiters of the latest version): a hop to an idle
 * instance costs far less than a cold start over there. */
static int starved_loop(const nb_invoker *iv, const fn_entry *e)
{
    for (int i = 0; i < iv->sched->nloops; i++) {
        const loop_slot *sl = &e->sh->slots[i];
        if (i != iv->index && atomic_load_explicit(&sl->queued, memory_order_relaxed) > 0 &&
            atomic_load_explicit(&sl->usable, memory_order_relaxed) == 0 &&
            atomic_load_explicit(&sl->movable, memory_order_relaxed) == 0)
            return 1;
    }
    return 0;
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
        atomic_fetch_add(&p->iv->sched->releasing, 1);
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
    atomic_store_explicit(&iv->sched->lstat[iv->index].waiting, 1, memory_order_relaxed);
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
    if (!iv->waiting)
        atomic_store_explicit(&iv->sched->lstat[iv->index].waiting, 0, memory_order_relaxed);
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
    long long billed = (long long)nb_use_billed_ms(us);
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
    /* CPU Time only when the cgroup measured it, like Max Memory Used. */
    char cpu_txt[48] = "", cpu_json[24] = "null";
    if (inv->pub.cpu_us >= 0) {
        snprintf(cpu_txt, sizeof cpu_txt, "\tCPU Time: %.2f ms", (double)inv->pub.cpu_us / 1000.0);
        snprintf(cpu_json, sizeof cpu_json, "%.3f", (double)inv->pub.cpu_us / 1000.0);
    }
    /* duration_ms with µs precision: billed_duration_ms is exactly its ceiling (min 1). */
    char json[384];
    snprintf(json, sizeof json,
             "{\"duration_ms\":%.3f,\"billed_duration_ms\":%lld,\"memory_size_mb\":%d,"
             "\"max_memory_used_mb\":%s,\"cpu_time_ms\":%s,\"cold_start\":%s,"
             "\"init_duration_ms\":%s,\"trigger\":\"%s\"}",
             (double)us / 1000.0, billed, inv->pub.ver->cfg.memory_mb, peak_json, cpu_json,
             inv->pub.cold ? "true" : "false", init_json, nb_use_trigger_name(inv->pub.trigger));
    log_platform(inv, inst, NULL, "END RequestId: %s", inv->pub.request_id);
    log_platform(inv, inst, json,
                 "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %lld ms\tMemory Size: "
                 "%d MB%s%s%s",
                 inv->pub.request_id, (double)us / 1000.0, billed, inv->pub.ver->cfg.memory_mb,
                 peak_txt, cpu_txt, init_txt);
}

/* A bounded string copy without snprintf's format parsing: this runs for every invocation. */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

_Static_assert(sizeof(((nb_use_rec *)0)->ns) == NB_NAME_MAX + 1 &&
                   sizeof(((nb_use_rec *)0)->fn) == NB_NAME_MAX + 1,
               "a metering record holds any namespace and function name");

/* The metering record of an invocation that ended (docs/internals/metering.md): a struct
 * copy into nb_use's batch. ran: it had an instance (else it was throttled or failed before
 * one, and nothing is billed). */
static void meter(inv_impl *inv, int ran)
{
    nb_use *u = inv->iv->cfg.use;
    if (!u) return;
    const nb_inv *p = &inv->pub;
    nb_use_rec r;
    /* Every field is written below: no memset of the ~400-byte struct on the hot path. */
    int64_t us = ran ? p->ended_us - p->started_us : 0;
    r.start_ms = nb_now_ms() - us / 1000;
    r.duration_us = us;
    r.billed_ms = ran ? nb_use_billed_ms(us) : 0;
    r.init_us = ran && p->cold && inv->inst && inv->inst->ready_us
                    ? inv->inst->ready_us - inv->inst->started_us
                    : 0;
    r.cpu_us = ran ? p->cpu_us : -1;
    r.max_memory_mb = ran && inv->inst ? inv->inst->max_memory_used_mb : 0;
    r.version = p->ver->version;
    r.kept_ms = 0;
    r.memory_mb = p->ver->cfg.memory_mb;
    r.cold = ran && p->cold;
    r.trigger = p->trigger;
    if (p->throttled)
        r.outcome = NB_USE_THROTTLED;
    else if (p->outcome == NB_OUTCOME_OK)
        r.outcome = NB_USE_SUCCESS;
    else if (strcmp(p->error_type, "Sandbox.Timedout") == 0)
        r.outcome = NB_USE_TIMEOUT;
    else if (strcmp(p->error_type, "Runtime.OutOfMemory") == 0)
        r.outcome = NB_USE_OOM;
    else
        r.outcome = NB_USE_ERROR;
    copy_str(r.request_id, sizeof r.request_id, p->request_id);
    copy_str(r.ns, sizeof r.ns, p->ver->ns);
    copy_str(r.fn, sizeof r.fn, p->ver->name);
    copy_str(r.caller, sizeof r.caller, p->caller);
    copy_str(r.error_type, sizeof r.error_type, p->error_type);
    nb_use_record(u, &r);
}

/* On the home loop: the caller hears of it, and the invocation is freed. */
static void inv_deliver(inv_impl *inv)
{
    if (inv->cb) inv->cb(&inv->pub, inv->ud);
    free(inv->pub.body);
    free(inv->event);
    nb_fn_version_unref(inv->pub.ver);
    free(inv);
}

/* The invocation's end, recorded: its result copied, its REPORT logged. The caller is told
 * by inv_answer. */
static void inv_complete(inv_impl *inv, enum nb_inst_outcome outcome, const char *type,
                         const char *body, size_t len, const char *ctype)
{
    inv->pub.ended_us = nb_mono_us();
    inv->pub.outcome = outcome;
    for (nb_call *c = inv->calls; c; c = c->next)
        c->inv = NULL;
    inv->calls = NULL;
    snprintf(inv->pub.error_type, sizeof inv->pub.error_type, "%s", type ? type : "");
    snprintf(inv->pub.content_type, sizeof inv->pub.content_type, "%s",
             ctype ? ctype : "application/json");
    inv->pub.body = malloc(len + 1);
    if (!inv->pub.body) abort();
    if (len) memcpy(inv->pub.body, body, len);
    inv->pub.body[len] = 0;
    inv->pub.body_len = len;
    int ran = inv->pub.state == NB_INV_RUNNING;
    if (ran) {
        inv->pool->n_running--;
        inv->pub.cpu_us = inv->inst ? inv->inst->cpu_us : -1;
        log_report(inv);
    }
    /* Every invocation ends here, throttled ones included: a few relaxed atomic adds for the
     * metrics, one record copied for metering. It ran when it was still RUNNING (DONE is set
     * below). */
    nb_met_invocation(inv->iv->cfg.metrics, &inv->pub, ran,
                      ran && inv->pub.cold && inv->inst->ready_us
                          ? inv->inst->ready_us - inv->inst->started_us
                          : -1);
    meter(inv, ran);
    inv_set_state(inv, NB_INV_DONE);
    touch(inv->pool);
}

static void inv_answer(inv_impl *inv)
{
    nb_invoker *iv = inv->iv;
    if (inv->home != iv) {
        /* Forwarded here: the answer goes back to the loop of its request. */
        xmsg *m = msg_new(M_RESULT);
        m->inv = inv;
        post(inv->home, m);
        return;
    }
    set_inflight(iv, iv->inflight - 1);
    inv_deliver(inv);
}

static void inv_finish(inv_impl *inv, enum nb_inst_outcome outcome, const char *type,
                       const char *body, size_t len, const char *ctype)
{
    inv_complete(inv, outcome, type, body, len, ctype);
    inv_answer(inv);
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
    if (e) {
        e->throttles++;
        publish_slot(inv->iv, e);
    }
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

/* The X-Ray-shaped header a runtime gets: its Root comes from the chain's trace id (the root's
 * request id, a UUID: its 32 hex digits), so every invocation of a chain shows the same Root;
 * Parent is new each time. An id that is not a UUID gets a random Root, as before chains. */
static void trace_header(const char *chain, char *out, size_t size)
{
    char hex[33], b[17];
    size_t n = 0;
    for (const char *p = chain; *p && n < 32; p++) {
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
            hex[n++] = *p;
        else if (*p != '-')
            break;
    }
    hex[n] = 0;
    nb_random_hex(b, 8);
    if (n == 32) {
        snprintf(out, size, "Root=1-%.8s-%.24s;Parent=%s;Sampled=0", hex, hex + 8, b);
        return;
    }
    char a[25];
    nb_random_hex(a, 12);
    snprintf(out, size, "Root=1-%08llx-%s;Parent=%s;Sampled=0", (long long)(nb_now_ms() / 1000), a,
             b);
}

static void run_on(pool *p, inv_impl *inv, nb_inst *inst, int cold)
{
    char arn[256], trace[96];
    snprintf(arn, sizeof arn, "arn:aws:lambda:us-east-1:000000000000:function:%s",
             inv->pub.ver->name);
    trace_header(inv->pub.trace_id, trace, sizeof trace);
    int64_t timeout_ms = (int64_t)p->ver->cfg.timeout_s * 1000;
    if (inv->deadline_cap_ms > 0) {
        /* A callee never outlives the caller waiting for it. */
        int64_t left = inv->deadline_cap_ms - nb_now_ms();
        if (left < timeout_ms) timeout_ms = left > 1 ? left : 1;
    }
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
    inv->deadline_ms = job.deadline_ms;
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
            atomic_store(&p->fn->sh->last_cold_start_ms, inv->pub.init_ms);
        }
    }
    p->n_running++;
    touch(p);
    inv_set_state(inv, NB_INV_RUNNING);
    if (inv->pub.depth > 0)
        log_platform(inv, inst, NULL, "START RequestId: %s Version: %lld Caller: %s Trace: %s",
                     inv->pub.request_id, (long long)inv->pub.ver->version,
                     inv->pub.caller_request_id, inv->pub.trace_id);
    else
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
    if (!inv->explicit_version) p->q_latest--;
    if (p->q_len == 0) waiting_unlink(p);
    touch(p);
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
    if (!inv->explicit_version) p->q_latest++;
    waiting_link(p);
    touch(p);
}

static inv_impl *queue_pop(pool *p)
{
    inv_impl *inv = p->q_head;
    if (inv) queue_unlink(p, inv);
    return inv;
}

/* ---------- capacity ---------- */

static const nb_inst_hooks hooks;

/* Takes the credit for one more instance of p, within the function's max_concurrency and the
 * daemon's caps, counted over every loop: compare-and-swap, so two loops never both take the
 * last one. Instances still stopping count: their memory is not yet given back. *fn_bound
 * says which limit refused. */
static int reserve(const pool *p, int *fn_bound)
{
    const nb_invoker *iv = p->iv;
    nb_sched *s = iv->sched;
    fn_shared *f = p->fn ? p->fn->sh : NULL;
    *fn_bound = 0;
    if (iv->stopping) return 0;
    if (f) {
        int max = p->fn->scale.max_concurrency;
        int cur = atomic_load(&f->live);
        do {
            if (max != NB_SCALE_UNSET && cur >= max) {
                *fn_bound = 1;
                return 0;
            }
        } while (!atomic_compare_exchange_weak(&f->live, &cur, cur + 1));
    }
    int n = atomic_load(&s->instances);
    do {
        if (n >= s->max_instances) goto no_instance;
    } while (!atomic_compare_exchange_weak(&s->instances, &n, n + 1));
    long long mem = atomic_load(&s->mem_mb), want = p->ver->cfg.memory_mb;
    do {
        if (mem + want > s->max_memory_mb) goto no_memory;
    } while (!atomic_compare_exchange_weak(&s->mem_mb, &mem, mem + want));
    return 1;
no_memory:
    atomic_fetch_sub(&s->instances, 1);
no_instance:
    /* Another loop refused while this one held the credit for a moment retries at its next
     * queue tick (10 ms): no poke here, two loops at their caps would wake each other forever. */
    if (f) atomic_fetch_sub(&f->live, 1);
    return 0;
}

/* Gives back what reserve() took (an instance that failed to start, or one that stopped). */
static void unreserve(const pool *p)
{
    nb_sched *s = p->iv->sched;
    if (p->fn) atomic_fetch_sub(&p->fn->sh->live, 1);
    atomic_fetch_sub(&s->instances, 1);
    atomic_fetch_sub(&s->mem_mb, p->ver->cfg.memory_mb);
}

/* Starts an instance with a credit already reserved; on failure the credit is given back. */
static nb_inst *start_one(pool *p, nb_inst_result *res, char *why, size_t size)
{
    nb_invoker *iv = p->iv;
    /* The spawn takes about a millisecond: other loops must see this instance coming during it,
     * or they would queue where no instance will serve (touch() below sets the exact figure). */
    if (p->fn)
        atomic_fetch_add_explicit(&p->fn->sh->slots[iv->index].usable, 1, memory_order_relaxed);
    nb_inst *inst = nb_inst_start(&iv->env, p->ver, &hooks, p, res, why, size);
    if (!inst) {
        touch(p);
        unreserve(p);
        poke_waiting(iv);
        return NULL;
    }
    p->n_starting++;
    p->n_live++;
    p->n_alloc++;
    if (p->fn) p->fn->starts++;
    iv->instances++;
    iv->allocated++;
    touch(p);
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

static nb_inst *lru_idle_any(nb_invoker *iv, const pool *except, pool **owner)
{
    nb_inst *victim = NULL;
    for (int b = 0; b < BUCKETS; b++) {
        for (fn_entry *e = iv->buckets[b]; e; e = e->next) {
            pool *o = NULL;
            nb_inst *c = lru_idle(e->pools, except, &o);
            if (c && (!victim || c->idle_since_us < victim->idle_since_us)) {
                victim = c;
                *owner = o;
            }
        }
    }
    return victim;
}

/* Another loop whose slot for e says it has idle instances of the latest version, or -1. */
static int loop_with_idle(const nb_invoker *iv, const fn_entry *e)
{
    int best = -1, most = 0;
    for (int i = 0; i < iv->sched->nloops; i++) {
        int n = atomic_load_explicit(&e->sh->slots[i].idle_active, memory_order_relaxed);
        if (i != iv->index && n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

/* p has waiters and no room: stop idle instances elsewhere (least recently used first) to
 * make some, unless enough are already on their way out. Idle instances on other loops are
 * asked for: of the same function by a message to the loop that has them (at most every 20 ms
 * per pool), for the caps through room_wanted, which any loop with an idle instance answers. */
static void make_room(pool *p, int fn_bound)
{
    nb_invoker *iv = p->iv;
    nb_sched *s = iv->sched;
    while (p->q_len - p->n_starting > atomic_load(&s->releasing)) {
        pool *owner = NULL;
        nb_inst *victim =
            fn_bound ? lru_idle(p->fn->pools, p, &owner) : lru_idle_any(iv, p, &owner);
        if (!victim) break;
        release(owner, victim, fn_bound ? "making room (max_concurrency)" : "making room (caps)");
    }
    if (p->q_len - p->n_starting <= atomic_load(&s->releasing) || s->nloops == 1) return;
    int64_t now = nb_mono_us();
    if (now - p->asked_us < 20000) return;
    p->asked_us = now;
    if (fn_bound) {
        /* Only when no instance of the function here will serve these waiters. */
        int t = p->fn && fn_usable(p->fn) == 0 ? loop_with_idle(iv, p->fn) : -1;
        if (t < 0) return;
        xmsg *m = msg_new(M_GIVEBACK);
        snprintf(m->ns, sizeof m->ns, "%s", p->fn->ns);
        snprintf(m->name, sizeof m->name, "%s", p->fn->name);
        post(s->loops[t], m);
    } else {
        atomic_store(&s->room_wanted, 1);
        for (int i = 0; i < s->nloops; i++)
            if (i != iv->index && atomic_load(&s->lstat[i].idle_total) > 0) poke(s->loops[i]);
    }
}

/* Starts instances until every waiter of p has one coming, within the caps. */
static void start_instances(pool *p)
{
    while (p->q_len > p->n_starting) {
        int fn_bound;
        if (!reserve(p, &fn_bound)) {
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
    /* Loop 0 keeps them: the other loops forward to its idle instances (one place to count,
     * no loop keeps more than its share of warm instances idle). */
    if (!p || p->iv->index != 0 || p->iv->stopping || nb_mono_us() < p->retry_at_us) return;
    while (pool_usable(p) < e->scale.min_instances) {
        int fn_bound;
        if (!reserve(p, &fn_bound)) return;
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
static void forward(nb_invoker *iv, inv_impl *inv, int target);

/* room_wanted is raised by a loop whose waiters need the caps' room; once no loop waits any
 * more (served, timed out) it is stale: lowered instead of stopping an instance for nobody. */
static int room_still_wanted(nb_sched *s)
{
    if (!atomic_load(&s->room_wanted)) return 0;
    for (int i = 0; i < s->nloops; i++)
        if (atomic_load_explicit(&s->lstat[i].waiting, memory_order_relaxed)) return 1;
    atomic_store(&s->room_wanted, 0);
    return 0;
}

/* Asks one loop with waiters of e to send its oldest one here (M_STEAL). */
static void offer_idle(nb_invoker *iv, fn_entry *e)
{
    nb_sched *s = iv->sched;
    for (int i = 0; i < s->nloops; i++) {
        if (i == iv->index ||
            atomic_load_explicit(&e->sh->slots[i].movable, memory_order_relaxed) == 0)
            continue;
        xmsg *m = msg_new(M_STEAL);
        snprintf(m->ns, sizeof m->ns, "%s", e->sh->ns);
        snprintf(m->name, sizeof m->name, "%s", e->sh->name);
        m->from = iv->index;
        post(s->loops[i], m);
        return;
    }
}

/* The other side of offer_idle: the oldest waiter of the function's latest version goes to
 * the loop that has an idle instance for it (if it is taken meanwhile, the waiter queues
 * there, its deadline unchanged). */
static void steal_waiter(nb_invoker *iv, const char *ns, const char *name, int to)
{
    fn_entry *e = lookup(iv, ns, name);
    pool *p = e ? active_pool(e) : NULL;
    if (!p || iv->stopping) return;
    for (inv_impl *inv = p->q_head; inv; inv = inv->qnext) {
        if (inv->explicit_version) continue;
        queue_unlink(p, inv);
        inv->stolen = 1;
        forward(iv, inv, to);
        return;
    }
}

static void serve(pool *p, nb_inst *inst, int cold)
{
    nb_invoker *iv = p->iv;
    if (iv->stopping) {
        release(p, inst, "shutdown");
        return;
    }
    if (p->fn && p->fn->scale.max_concurrency != NB_SCALE_UNSET &&
        fn_usable_all(iv, p->fn) >= p->fn->scale.max_concurrency) {
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
    /* Nobody here wants it, but another loop has waiters of the function and no instance of
     * it at all: the credit goes back so that loop can start one (instances cannot change
     * loop). A loop with instances of its own is left to them: that costs no restart. */
    if (p->fn && pool_usable(p) >= min_instances(p) &&
        atomic_load(&p->fn->sh->queued) > fn_queued(p->fn) && starved_loop(iv, p->fn)) {
        release(p, inst, "wanted by another loop");
        return;
    }
    if (room_still_wanted(iv->sched) && pool_usable(p) >= min_instances(p) &&
        atomic_exchange(&iv->sched->room_wanted, 0)) {
        release(p, inst, "making room (caps, another loop)");
        return;
    }
    idle_push(p, inst);
    /* A request of this function may be waiting on another loop for a cold start there: the
     * first instance free anywhere serves it, as on a single loop. */
    if (p->fn && p->state == POOL_ACTIVE && iv->sched->nloops > 1) offer_idle(iv, p->fn);
    /* Other functions may be waiting for capacity this one could give up. */
    if (iv->waiting) kick_waiting(iv);
}

static void hook_ready(nb_inst *inst)
{
    pool *p = inst->owner;
    p->n_starting--;
    touch(p);
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
    inv_complete(inv, res->outcome == NB_OUTCOME_UNDELIVERED ? NB_OUTCOME_UNHANDLED : res->outcome,
                 res->error_type, res->body, res->len, res->content_type);
    /* Free again before the caller hears (see the hook's contract): its next request must not
     * start a second instance because this one was not yet back. */
    if (inst->state == NB_INST_IDLE) serve(p, inst, 0);
    inv_answer(inv);
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
    iv->instances--;
    unreserve(p);
    if (inst->owner_flags & INST_RELEASING) atomic_fetch_sub(&iv->sched->releasing, 1);
    if (!inst->ready_us) {
        p->n_starting--;
        touch(p);
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
    touch(p);
    if (!iv->stopping) {
        kick_waiting(iv);
        poke_waiting(iv);
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

/* ---------- calls from running functions (docs/internals/calls.md) ---------- */

void nb_call_finish(nb_call *c, int status, const char *error_code, const char *body, size_t len)
{
    inv_impl *inv = c->inv;
    if (inv) {
        for (nb_call **pp = &inv->calls; *pp; pp = &(*pp)->next) {
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        }
        nb_inst_call_done(c->inst, c->call_id, status, error_code, body, len);
    }
    free(c);
}

void nb_call_fail(nb_call *c, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *s = nb_error_body(code, msg); /* msg may quote a function's bytes */
    nb_call_finish(c, status, code, s, strlen(s));
    free(s);
}

static void call_invoke_done(nb_inv *callee, void *ud)
{
    nb_call *c = ud;
    if (callee->throttled) {
        nb_call_fail(c, 429, NB_E_TOO_MANY, "%s", callee->body);
        return;
    }
    const char *code = callee->outcome == NB_OUTCOME_OK        ? ""
                       : callee->outcome == NB_OUTCOME_HANDLED ? "Handled"
                                                               : "Unhandled";
    nb_call_finish(c, 200, code, callee->body, callee->body_len);
}

/* A bare function name of the caller's namespace: a path or an ARN would name another one. */
static int names_other_namespace(const char *target)
{
    return strchr(target, '/') || strchr(target, ':');
}

static void hook_call(nb_inst *inst, void *tag, const nb_inst_call *call)
{
    inv_impl *inv = tag;
    pool *p = inst->owner;
    nb_invoker *iv = p->iv;
    nb_call *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->inv = inv;
    c->inst = inst;
    c->call_id = call->call_id;
    c->next = inv->calls;
    inv->calls = c;
    const nb_fn_version *me = inv->pub.ver;
    int limit = iv->cfg.max_call_depth > 0 ? iv->cfg.max_call_depth : NB_CALL_DEPTH_DEFAULT;
    nb_call_info info = {
        .iv = iv,
        .call = call,
        .ns = me->ns,
        .fn = me->name,
        .request_id = inv->pub.request_id,
        .next = {.depth = inv->pub.depth + 1,
                 .caller_request_id = inv->pub.request_id,
                 .trace_id = inv->pub.trace_id,
                 .deadline_ms = inv->deadline_ms,
                 .trigger = NB_TRIG_CALL,
                 .caller = me->name},
    };
    int invoke = strcmp(call->op, "invoke") == 0;
    int starts_invocation = invoke || strcmp(call->op, "invoke_async") == 0;
    nb_debug("invoke", "%s call %u %s %s depth=%d", inv->pub.request_id, call->call_id, call->op,
             call->target, info.next.depth);
    if (starts_invocation && names_other_namespace(call->target)) {
        nb_call_fail(c, 403, "forbidden",
                     "%s may only invoke functions of its own namespace '%s', not '%s'", me->name,
                     me->ns, call->target);
        return;
    }
    /* Publishing and emitting continue the chain in the functions they reach (a function
     * subscribed to its own topic would otherwise loop for ever): the same limit. */
    int continues_chain =
        starts_invocation || strcmp(call->op, "publish") == 0 || strcmp(call->op, "emit") == 0;
    if (continues_chain && info.next.depth > limit) {
        nb_call_fail(c, 508, "call_depth_exceeded",
                     "call depth limit %d exceeded: %s calling %s would run at depth %d "
                     "(nimbus serve --max-call-depth)",
                     limit, me->name, call->target, info.next.depth);
        return;
    }
    if (!invoke) {
        if (!iv->cfg.call_ops) {
            nb_call_fail(c, 501, NB_E_UNAVAILABLE, "'%s' calls are not available", call->op);
            return;
        }
        iv->cfg.call_ops->handle(iv->cfg.call_ud, c, &info);
        return;
    }
    nb_fn_version *ver = nb_invoker_latest(iv, me->ns, call->target);
    if (!ver) {
        nb_call_fail(c, 404, NB_E_NOT_FOUND, "function '%s' not found", call->target);
        return;
    }
    if (iv->stopping) {
        nb_call_fail(c, 503, NB_E_UNAVAILABLE, "nimbus is shutting down");
        return;
    }
    char rid[37];
    nb_uuid4(rid);
    /* Through the scheduler like any request: the callee's max_concurrency, queue and the
     * daemon's caps apply, and a throttle comes back as 429. */
    nb_invoke_ex(iv, ver, call->body, call->len, rid, &info.next, call_invoke_done, c, NULL);
}

static const nb_inst_hooks hooks = {
    .ready = hook_ready,
    .result = hook_result,
    .unavailable = hook_unavailable,
    .stopped = hook_stopped,
    .freed = hook_freed,
    .call = hook_call,
};

/* ---------- invoke ---------- */

static void forward(nb_invoker *iv, inv_impl *inv, int target)
{
    /* From here on the invocation belongs to the target loop: nothing of this loop's (its
     * pool) may be touched through it there. */
    inv->pool = NULL;
    inv->moved = 1;
    nb_debug("invoke", "%s forwarded fn=%s loop %d -> %d", inv->pub.request_id, inv->pub.ver->name,
             iv->index, target);
    xmsg *m = msg_new(M_INVOKE);
    m->inv = inv;
    post(iv->sched->loops[target], m);
}

/* The loop holding the most usable instances of e other than this one, if it holds any (the
 * function is at max_concurrency: the next free instance is there), or -1. */
static int loop_with_usable(const nb_invoker *iv, const fn_entry *e)
{
    int best = -1, most = fn_usable(e);
    for (int i = 0; i < iv->sched->nloops; i++) {
        int n = atomic_load_explicit(&e->sh->slots[i].usable, memory_order_relaxed);
        if (i != iv->index && n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

/* The loop with the most idle instances (of any function) other than this one, if this one
 * has none to stop: the caps are full and room is made there. -1 otherwise. */
static int loop_with_room(const nb_invoker *iv, const pool *p)
{
    pool *o;
    if (lru_idle_any((nb_invoker *)iv, p, &o)) return -1;
    int best = -1, most = 0;
    for (int i = 0; i < iv->sched->nloops; i++) {
        int n = atomic_load_explicit(&iv->sched->lstat[i].idle_total, memory_order_relaxed);
        if (i != iv->index && n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

/* The scheduling decision for inv on this loop. may_forward: it arrived here from HTTP (an
 * invocation is forwarded at most once, so it can never bounce between loops). */
static void invoke_here(nb_invoker *iv, inv_impl *inv, int may_forward)
{
    nb_fn_version *ver = inv->pub.ver;
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
    if (!inv->moved) {
        inv->explicit_version = ver->version != e->latest->version;
    } else if (!inv->explicit_version && ver != e->latest) {
        /* It asked for "the latest" and a deploy came in while it travelled. */
        nb_fn_version_unref(inv->pub.ver);
        ver = inv->pub.ver = nb_fn_version_ref(e->latest);
    }
    pool *p = pool_get(iv, e, ver);
    if (p->idle_top) {
        nb_inst *inst = p->idle_top;
        idle_remove(p, inst);
        run_on(p, inv, inst, 0);
        return;
    }
    if (inv->stolen) {
        /* Admitted on its first loop: it waits here, deadline unchanged, whatever max_queue
         * says now (queue_push counts it in the shared queue). */
        queue_push(p, inv, 0);
        start_instances(p);
        return;
    }
    may_forward = may_forward && iv->sched->nloops > 1 && !inv->explicit_version;
    /* Warm elsewhere beats cold here, but only while this loop has none of the function's
     * instances: once it has its own, it grows its own pool like any other, since a hop to
     * another loop costs both loops more than the invocation itself and, under load, idle
     * instances elsewhere only appear for an instant. */
    int t = may_forward && p->n_alloc == 0 ? loop_with_idle(iv, e) : -1;
    if (t >= 0) {
        forward(iv, inv, t);
        return;
    }
    /* Decided before queueing, since starting an instance may fail and answer the invocation
     * at once: is an instance already coming for this waiter, or can one start? */
    int fn_bound = 0;
    int covered = p->q_len < p->n_starting;
    int reserved = !covered && reserve(p, &fn_bound);
    if (!covered && !reserved && may_forward) {
        /* At a limit: wait where capacity will come free (the loop with the function's
         * instances) or can be made (the loop with idle instances to stop). */
        t = fn_bound ? loop_with_usable(iv, e) : loop_with_room(iv, p);
        if (t >= 0) {
            forward(iv, inv, t);
            return;
        }
    }
    if (reserved) {
        nb_inst_result res = {0};
        char why[NB_ERR_MSG_MAX];
        if (!start_one(p, &res, why, sizeof why)) {
            inv_fail(inv, res.error_type, "RequestId: %s Error: %s", inv->pub.request_id, why);
            return;
        }
    } else if (!covered) {
        /* A place in the bounded queue, counted over every loop. */
        int q = atomic_load(&e->sh->queued);
        do {
            if (q >= sc->max_queue) {
                int cap_reached = sc->max_concurrency != NB_SCALE_UNSET;
                inv_throttle(inv, e,
                             cap_reached ? "ReservedFunctionConcurrentInvocationLimitExceeded"
                                         : "ConcurrentInvocationLimitExceeded",
                             "Rate Exceeded: %s is at its %s and %d invocations are queued "
                             "(max_queue)",
                             e->name, cap_reached ? "max_concurrency" : "instance limit", q);
                return;
            }
        } while (!atomic_compare_exchange_weak(&e->sh->queued, &q, q + 1));
        p->n_qslots++; /* taken above: queue_push's touch() must not count it again */
    }
    inv->deadline_us = inv->pub.queued_us + (int64_t)sc->queue_timeout_ms * 1000;
    queue_push(p, inv, 0);
    start_instances(p);
}

void nb_invoke(nb_invoker *iv, nb_fn_version *ver, const char *event, size_t len,
               const char *request_id, nb_inv_done_cb cb, void *ud, nb_inv **handle)
{
    nb_invoke_ex(iv, ver, event, len, request_id, NULL, cb, ud, handle);
}

void nb_invoke_ex(nb_invoker *iv, nb_fn_version *ver, const char *event, size_t len,
                  const char *request_id, const nb_inv_ctx *ctx, nb_inv_done_cb cb, void *ud,
                  nb_inv **handle)
{
    inv_impl *inv = calloc(1, sizeof *inv);
    if (!inv) abort();
    inv->iv = iv;
    inv->home = iv;
    inv->pub.ver = nb_fn_version_ref(ver);
    snprintf(inv->pub.request_id, sizeof inv->pub.request_id, "%s", request_id);
    inv->pub.depth = ctx ? ctx->depth : 0;
    snprintf(inv->pub.caller_request_id, sizeof inv->pub.caller_request_id, "%s",
             ctx && ctx->caller_request_id ? ctx->caller_request_id : "");
    snprintf(inv->pub.trace_id, sizeof inv->pub.trace_id, "%s",
             ctx && ctx->trace_id && ctx->trace_id[0] ? ctx->trace_id : request_id);
    inv->deadline_cap_ms = ctx ? ctx->deadline_ms : 0;
    inv->pub.trigger = ctx ? ctx->trigger : NB_TRIG_HTTP;
    snprintf(inv->pub.caller, sizeof inv->pub.caller, "%s", ctx && ctx->caller ? ctx->caller : "");
    inv->pub.cpu_us = -1;
    inv->pub.queued_us = nb_mono_us();
    inv->event = malloc(len + 1);
    if (!inv->event) abort();
    if (len) memcpy(inv->event, event, len);
    inv->event[len] = 0;
    inv->event_len = len;
    inv->cb = cb;
    inv->ud = ud;
    set_inflight(iv, iv->inflight + 1);
    if (handle) *handle = &inv->pub;
    invoke_here(iv, inv, 1);
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
    /* Capacity freed on another loop reaches this one through a poke; retrying here too
     * covers a credit this loop lost a race for. */
    kick_waiting(iv);
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
        while (fn_usable_all(iv, e) > sc->max_concurrency) {
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

static void apply_publish(nb_invoker *iv, nb_fn_version *v, fn_shared *sh)
{
    fn_entry *e = lookup(iv, v->ns, v->name);
    if (e && e->latest->version > v->version) return; /* never backwards */
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) abort();
        e->sh = sh_ref(sh);
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

static void apply_remove(nb_invoker *iv, const char *ns, const char *name)
{
    nb_logs_forget(iv->cfg.logs, ns, name);
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
        sh_unref(e->sh);
        free(e);
        return;
    }
}

/* Applies the registry messages this loop has not seen yet, in the order they were published.
 * Cheap when there are none: one atomic load, no lock. */
static void registry_sync(nb_invoker *iv)
{
    nb_sched *s = iv->sched;
    unsigned gen = atomic_load_explicit(&s->gen, memory_order_acquire);
    if (gen == iv->gen_seen) return;
    pthread_mutex_lock(&s->mu);
    xmsg *m = s->reg_head[iv->index];
    s->reg_head[iv->index] = s->reg_tail[iv->index] = NULL;
    iv->gen_seen = atomic_load(&s->gen);
    pthread_mutex_unlock(&s->mu);
    while (m) {
        xmsg *next = m->next;
        if (m->type == M_PUBLISH) {
            apply_publish(iv, m->ver, m->sh);
            nb_fn_version_unref(m->ver);
        } else {
            apply_remove(iv, m->ns, m->name);
        }
        sh_unref(m->sh);
        free(m);
        m = next;
    }
}

/* Under s->mu: a message for every loop, in the same order for all. */
static void registry_post(nb_sched *s, msg_type type, nb_fn_version *v, fn_shared *sh,
                          const char *ns, const char *name)
{
    for (int i = 0; i < s->nloops; i++) {
        xmsg *m = msg_new(type);
        m->ver = v ? nb_fn_version_ref(v) : NULL;
        m->sh = sh_ref(sh);
        snprintf(m->ns, sizeof m->ns, "%s", ns);
        snprintf(m->name, sizeof m->name, "%s", name);
        if (s->reg_tail[i])
            s->reg_tail[i]->next = m;
        else
            s->reg_head[i] = m;
        s->reg_tail[i] = m;
    }
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
}

static void wake_others(nb_invoker *iv)
{
    for (int i = 0; i < iv->sched->nloops; i++)
        if (i != iv->index) uv_async_send(&iv->sched->loops[i]->wake);
}

void nb_invoker_publish(nb_invoker *iv, nb_fn_version *v)
{
    nb_sched *s = iv->sched;
    pthread_mutex_lock(&s->mu);
    fn_shared *sh = s->fns;
    while (sh && (strcmp(sh->ns, v->ns) != 0 || strcmp(sh->name, v->name) != 0))
        sh = sh->next;
    if (!sh) {
        sh = calloc(1, sizeof *sh);
        if (!sh) abort();
        if (posix_memalign((void **)&sh->slots, 64, sizeof(loop_slot) * (size_t)s->nloops)) abort();
        memset(sh->slots, 0, sizeof(loop_slot) * (size_t)s->nloops);
        atomic_init(&sh->refs, 1); /* the registry's */
        atomic_init(&sh->last_cold_start_ms, -1);
        snprintf(sh->ns, sizeof sh->ns, "%s", v->ns);
        snprintf(sh->name, sizeof sh->name, "%s", v->name);
        sh->next = s->fns;
        s->fns = sh;
    }
    registry_post(s, M_PUBLISH, v, sh, v->ns, v->name);
    pthread_mutex_unlock(&s->mu);
    wake_others(iv);
    registry_sync(iv);
}

void nb_invoker_remove(nb_invoker *iv, const char *ns, const char *name)
{
    nb_sched *s = iv->sched;
    pthread_mutex_lock(&s->mu);
    fn_shared *sh = NULL;
    for (fn_shared **pp = &s->fns; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->ns, ns) == 0 && strcmp((*pp)->name, name) == 0) {
            sh = *pp;
            *pp = sh->next;
            break;
        }
    }
    registry_post(s, M_REMOVE, NULL, NULL, ns, name);
    pthread_mutex_unlock(&s->mu);
    sh_unref(sh);
    wake_others(iv);
    registry_sync(iv);
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

void nb_invoker_provisioned(nb_invoker *iv,
                            void (*cb)(void *ud, const char *ns, const char *fn, int memory_mb,
                                       int kept),
                            void *ud)
{
    registry_sync(iv);
    for (size_t b = 0; b < BUCKETS; b++)
        for (fn_entry *e = iv->buckets[b]; e; e = e->next) {
            if (e->scale.min_instances <= 0 || !e->latest) continue;
            /* Every loop's instances of every version: min_instances are kept by loop 0, but
             * another loop's instance keeps the function warm as well. */
            int live = atomic_load_explicit(&e->sh->live, memory_order_relaxed);
            int kept = live < e->scale.min_instances ? live : e->scale.min_instances;
            if (kept > 0) cb(ud, e->ns, e->name, e->latest->cfg.memory_mb, kept);
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

nb_sched *nb_sched_new(int nloops, int max_instances, int64_t max_memory_mb)
{
    nb_sched *s = calloc(1, sizeof *s);
    if (!s) abort();
    int def_n;
    int64_t def_mem;
    nb_invoker_default_caps(&def_n, &def_mem);
    s->nloops = nloops < 1 ? 1 : nloops > MAX_LOOPS ? MAX_LOOPS : nloops;
    s->max_instances = max_instances > 0 ? max_instances : def_n;
    s->max_memory_mb = max_memory_mb > 0 ? max_memory_mb : def_mem;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void nb_sched_free(nb_sched *s)
{
    if (!s) return;
    while (s->fns) {
        fn_shared *f = s->fns;
        s->fns = f->next;
        sh_unref(f);
    }
    for (int i = 0; i < MAX_LOOPS; i++) {
        while (s->reg_head[i]) {
            xmsg *m = s->reg_head[i];
            s->reg_head[i] = m->next;
            nb_fn_version_unref(m->ver);
            sh_unref(m->sh);
            free(m);
        }
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int nb_sched_loops(const nb_sched *s)
{
    return s->nloops;
}

size_t nb_sched_inflight(const nb_sched *s)
{
    long n = 0;
    for (int i = 0; i < s->nloops; i++)
        n += atomic_load_explicit(&s->lstat[i].inflight, memory_order_relaxed);
    return n > 0 ? (size_t)n : 0;
}

/* Another loop's instance of a function that waits here: give one idle instance back. */
static void give_back(nb_invoker *iv, const char *ns, const char *name)
{
    fn_entry *e = lookup(iv, ns, name);
    pool *owner = NULL;
    nb_inst *victim = e ? lru_idle(e->pools, NULL, &owner) : NULL;
    if (victim) release(owner, victim, "wanted by another loop");
}

/* Messages from other loops, capacity news, registry changes. */
static void on_wake(uv_async_t *a)
{
    nb_invoker *iv = a->data;
    registry_sync(iv);
    pthread_mutex_lock(&iv->inbox_mu);
    xmsg *m = iv->in_head;
    iv->in_head = iv->in_tail = NULL;
    pthread_mutex_unlock(&iv->inbox_mu);
    while (m) {
        xmsg *next = m->next;
        inv_impl *inv = m->inv;
        switch (m->type) {
        case M_INVOKE:
            /* Counted in flight by its home loop only, until the answer is back there. */
            inv->iv = iv;
            inv->pool = NULL;
            invoke_here(iv, inv, 0);
            break;
        case M_RESULT:
            set_inflight(iv, iv->inflight - 1);
            inv_deliver(inv);
            break;
        case M_GIVEBACK:
            give_back(iv, m->ns, m->name);
            break;
        case M_STEAL:
            steal_waiter(iv, m->ns, m->name, m->from);
            break;
        default:
            break;
        }
        free(m);
        m = next;
    }
    if (atomic_exchange(&iv->poked, 0)) kick_waiting(iv);
    if (!iv->stopping && room_still_wanted(iv->sched)) {
        pool *owner = NULL;
        nb_inst *victim = lru_idle_any(iv, NULL, &owner);
        if (victim && atomic_exchange(&iv->sched->room_wanted, 0))
            release(owner, victim, "making room (caps, another loop)");
    }
}

nb_invoker *nb_invoker_new(const nb_invoker_config *cfg)
{
    nb_invoker *iv = calloc(1, sizeof *iv);
    if (!iv) abort();
    iv->cfg = *cfg;
    iv->sched = cfg->sched;
    iv->index = cfg->index;
    iv->sched->loops[iv->index] = iv;
    iv->gen_seen = 0;
    iv->cfg.max_instances = iv->sched->max_instances;
    iv->cfg.max_memory_mb = iv->sched->max_memory_mb;
    if (iv->cfg.idle_timeout_ms <= 0) iv->cfg.idle_timeout_ms = 300000;
    if (iv->cfg.init_timeout_ms <= 0) iv->cfg.init_timeout_ms = 10000;
    snprintf(iv->code_root, sizeof iv->code_root, "%s/code", cfg->data_dir);
    snprintf(iv->runtimes_dir, sizeof iv->runtimes_dir, "%s/runtimes", cfg->data_dir);
    iv->env = (nb_inst_env){
        .loop = cfg->loop,
        .iloop = nb_inst_loop_new(cfg->loop),
        .runtimes_dir = iv->runtimes_dir,
        .code_root = iv->code_root,
        .logs = cfg->logs,
        .init_timeout_ms = iv->cfg.init_timeout_ms,
    };
    pthread_mutex_init(&iv->inbox_mu, NULL);
    uv_async_init(cfg->loop, &iv->wake, on_wake);
    iv->wake.data = iv;
    uv_unref((uv_handle_t *)&iv->wake);
    uv_timer_init(cfg->loop, &iv->reaper);
    iv->reaper.data = iv;
    uv_timer_start(&iv->reaper, reap_idle, REAP_EVERY_MS, REAP_EVERY_MS);
    uv_unref((uv_handle_t *)&iv->reaper);
    uv_timer_init(cfg->loop, &iv->qtimer);
    iv->qtimer.data = iv;
    uv_unref((uv_handle_t *)&iv->qtimer);
    if (iv->index == 0)
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
    registry_sync(iv);
    fn_entry *e = lookup(iv, ns, name);
    if (!e) return -1;
    int idle_active;
    local_stats(e, out, &idle_active);
    for (int i = 0; i < iv->sched->nloops; i++) {
        if (i == iv->index) continue;
        const loop_slot *sl = &e->sh->slots[i];
        out->starting += atomic_load_explicit(&sl->starting, memory_order_relaxed);
        out->idle += atomic_load_explicit(&sl->idle, memory_order_relaxed);
        out->busy += atomic_load_explicit(&sl->busy, memory_order_relaxed);
        out->draining += atomic_load_explicit(&sl->draining, memory_order_relaxed);
        out->in_flight += atomic_load_explicit(&sl->in_flight, memory_order_relaxed);
        out->queued += atomic_load_explicit(&sl->queued, memory_order_relaxed);
        out->invocations += atomic_load_explicit(&sl->invocations, memory_order_relaxed);
        out->cold_starts += atomic_load_explicit(&sl->cold_starts, memory_order_relaxed);
        out->throttles += atomic_load_explicit(&sl->throttles, memory_order_relaxed);
        out->instance_starts += atomic_load_explicit(&sl->starts, memory_order_relaxed);
    }
    out->last_cold_start_ms = atomic_load(&e->sh->last_cold_start_ms);
    return 0;
}

void nb_sched_foreach(nb_sched *s,
                      void (*fn)(void *ud, const char *ns, const char *name, const nb_fn_stats *st),
                      void *ud)
{
    pthread_mutex_lock(&s->mu);
    for (const fn_shared *f = s->fns; f; f = f->next) {
        nb_fn_stats st = {0};
        for (int i = 0; i < s->nloops; i++) {
            const loop_slot *sl = &f->slots[i];
            st.starting += atomic_load_explicit(&sl->starting, memory_order_relaxed);
            st.idle += atomic_load_explicit(&sl->idle, memory_order_relaxed);
            st.busy += atomic_load_explicit(&sl->busy, memory_order_relaxed);
            st.draining += atomic_load_explicit(&sl->draining, memory_order_relaxed);
            st.in_flight += atomic_load_explicit(&sl->in_flight, memory_order_relaxed);
            st.queued += atomic_load_explicit(&sl->queued, memory_order_relaxed);
            st.invocations += atomic_load_explicit(&sl->invocations, memory_order_relaxed);
            st.cold_starts += atomic_load_explicit(&sl->cold_starts, memory_order_relaxed);
            st.throttles += atomic_load_explicit(&sl->throttles, memory_order_relaxed);
            st.instance_starts += atomic_load_explicit(&sl->starts, memory_order_relaxed);
        }
        st.last_cold_start_ms = atomic_load(&f->last_cold_start_ms);
        fn(ud, f->ns, f->name, &st);
    }
    pthread_mutex_unlock(&s->mu);
}

int nb_sched_near_caps(const nb_sched *s, int64_t memory_mb)
{
    /* A tenth of headroom: enough for synchronous callers' bursts to start instances without
     * evicting anything. */
    int n = atomic_load(&((nb_sched *)s)->instances);
    long long mem = atomic_load(&((nb_sched *)s)->mem_mb);
    return n + 1 > s->max_instances - s->max_instances / 10 ||
           mem + memory_mb > s->max_memory_mb - s->max_memory_mb / 10;
}

nb_sched *nb_invoker_sched(nb_invoker *iv)
{
    return iv->sched;
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
    nb_inst_stop_all(iv->env.iloop);
}

static void free_invoker(uv_handle_t *h)
{
    nb_invoker *iv = h->data;
    if (--iv->closes_left > 0) return;
    while (iv->in_head) {
        xmsg *m = iv->in_head;
        iv->in_head = m->next;
        free(m);
    }
    pthread_mutex_destroy(&iv->inbox_mu);
    free(iv);
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
            sh_unref(e->sh);
            free(e);
        }
    }
    while (iv->orphans) {
        pool *p = iv->orphans;
        iv->orphans = p->next;
        pool_free(p);
    }
    iv->stopping = 1;
    iv->closes_left = 3;
    nb_inst_loop_free(iv->env.iloop);
    uv_close((uv_handle_t *)&iv->reaper, free_invoker);
    uv_close((uv_handle_t *)&iv->qtimer, free_invoker);
    uv_close((uv_handle_t *)&iv->wake, free_invoker);
}
