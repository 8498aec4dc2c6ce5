#include "events/fan.h"

#include "base/log.h"
#include "events/async.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Source messages being forwarded at once, over every source: bounds the memory held by
 * copies waiting for their commit. */
#define MAX_INFLIGHT 512
#define BATCH        32
/* A forwarding waits for one commit; a minute covers a slow disk, and a crash brings the
 * message back at the next start anyway (nb_fan_source releases it). */
#define FORWARD_VISIBILITY_MS 60000
#define FAILED_QUEUE          "failed/fan"

struct nb_fan_plan {
    nb_q_out *v;
    char (*queues)[NB_Q_NAME_MAX + 1];
    size_t n, cap;
};

typedef struct source {
    char prefix[32];
    nb_fan_planner fn;
    void *ud;
    struct source *next;
} source;

/* A queue with messages to take. */
typedef struct dirty {
    char name[NB_Q_NAME_MAX + 1];
    struct dirty *next;
} dirty;

/* One source message being forwarded. */
typedef struct fwd {
    nb_fan *f;
    char queue[NB_Q_NAME_MAX + 1];
    char id[37];
    char receipt[80];
    int pending;   /* sends not yet answered */
    int transient; /* a send refused for a reason that may pass */
} fwd;

typedef struct sent {
    fwd *w;
    int status;
} sent;

struct nb_fan {
    uv_loop_t *loop;
    nb_q *q;
    nb_async_port *port;
    uv_async_t wake;
    source *sources;
    pthread_mutex_t mu; /* dirty list */
    dirty *dirty;
    atomic_int inflight;
    int stopped;
};

int nb_fan_plan_add(nb_fan_plan *p, const char *queue, const char *body, size_t len,
                    const json_t *attrs, int64_t delay_ms)
{
    if (p->n >= NB_FAN_MAX_COPIES || strlen(queue) > NB_Q_NAME_MAX) return -1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        nb_q_out *v = realloc(p->v, cap * sizeof *v);
        char(*qs)[NB_Q_NAME_MAX + 1] = v ? realloc(p->queues, cap * sizeof *qs) : NULL;
        if (!v || !qs) abort();
        p->v = v;
        p->queues = qs;
        p->cap = cap;
    }
    char *b = malloc(len + 1);
    if (!b) abort();
    memcpy(b, body, len);
    b[len] = 0;
    snprintf(p->queues[p->n], NB_Q_NAME_MAX + 1, "%s", queue);
    p->v[p->n++] = (nb_q_out){.body = b,
                              .body_len = len,
                              .attrs = attrs ? json_deep_copy(attrs) : NULL,
                              .delay_ms = delay_ms};
    return 0;
}

static void plan_clear(nb_fan_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free((char *)p->v[i].body);
        json_decref((json_t *)p->v[i].attrs);
    }
    free(p->v);
    free(p->queues);
    memset(p, 0, sizeof *p);
}

void nb_fan_copy_id(const char *src_id, const char *queue, unsigned index, char out[37])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char in[NB_Q_NAME_MAX + 64];
    int n = snprintf(in, sizeof in, "%s\n%s\n%u", src_id, queue, index);
    SHA256((const unsigned char *)in, (size_t)n, md);
    /* A version-5-like UUID (name-based): looks like every other message id. */
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[md[i] >> 4];
        *o++ = hex[md[i] & 15];
    }
    *o = 0;
}

static const source *source_of(const nb_fan *f, const char *queue)
{
    for (const source *s = f->sources; s; s = s->next)
        if (strncmp(queue, s->prefix, strlen(s->prefix)) == 0) return s;
    return NULL;
}

static void mark_dirty(nb_fan *f, const char *queue)
{
    pthread_mutex_lock(&f->mu);
    for (dirty *d = f->dirty; d; d = d->next) {
        if (strcmp(d->name, queue) == 0) {
            pthread_mutex_unlock(&f->mu);
            return;
        }
    }
    dirty *d = malloc(sizeof *d);
    if (!d) abort();
    snprintf(d->name, sizeof d->name, "%s", queue);
    d->next = f->dirty;
    f->dirty = d;
    pthread_mutex_unlock(&f->mu);
}

static void pump(nb_fan *f);

/* Every copy answered: the source message ends, or waits for another try. repump: take more
 * messages now (an answer from the writer); never from inside pump's own loop, where a run of
 * messages that plan nothing would otherwise recurse once per message. */
static void settle(fwd *w, int repump)
{
    nb_fan *f = w->f;
    nb_err err = {0};
    if (w->transient) {
        /* Copies that landed carry derived ids: the next try does not duplicate them. */
        nb_q_change_visibility(f->q, w->queue, w->id, w->receipt, NB_FAN_RETRY_MS, &err);
    } else if (nb_q_delete(f->q, w->queue, w->id, w->receipt, &err) < 0 && err.status != 404) {
        nb_warn("fan", "%s: message %s not deleted: %s", w->queue, w->id, err.msg);
    }
    free(w);
    atomic_fetch_sub(&f->inflight, 1);
    if (repump) pump(f);
}

static void on_sent_loop(void *ud)
{
    sent *s = ud;
    fwd *w = s->w;
    if (s->status != 0 && s->status != 404) w->transient = 1;
    free(s);
    if (--w->pending == 0) settle(w, 1);
}

/* Writer thread. */
static void on_sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    (void)ids;
    (void)n;
    fwd *w = ud;
    if (status != 0)
        nb_warn("fan", "%s: a copy of %s was refused (%d): %s", w->queue, w->id, status,
                msg ? msg : "");
    sent *s = malloc(sizeof *s);
    if (!s) abort();
    s->w = w;
    s->status = status;
    nb_async_post(w->f->port, on_sent_loop, s);
}

/* A copy of m for the failure queue, with its own attributes kept (a redrive needs them) and
 * where it came from, where it was going and why it is here. */
static void park(nb_fan_plan *p, const char *queue, const nb_q_msg *m, const char *target,
                 const char *why)
{
    json_t *attrs = m->attrs ? json_deep_copy(m->attrs) : json_object();
    json_object_set_new(attrs, "fan_source", json_string(queue));
    if (*target) json_object_set_new(attrs, "fan_target", json_string(target));
    json_object_set_new(attrs, "fan_error", json_string(why));
    nb_fan_plan_add(p, FAILED_QUEUE, m->body, m->body_len, attrs, 0);
    json_decref(attrs);
}

static void forward(nb_fan *f, const source *src, const char *queue, const nb_q_msg *m)
{
    fwd *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->f = f;
    snprintf(w->queue, sizeof w->queue, "%s", queue);
    snprintf(w->id, sizeof w->id, "%s", m->id);
    snprintf(w->receipt, sizeof w->receipt, "%s", m->receipt);
    atomic_fetch_add(&f->inflight, 1);
    nb_fan_plan plan = {0};
    int rc;
    if (m->receive_count > NB_FAN_MAX_RECEIVES) {
        /* Forwarding it keeps failing: park it where an operator can see it. */
        nb_warn("fan", "%s: message %s failed %d forwardings; moved to %s", queue, m->id,
                m->receive_count - 1, FAILED_QUEUE);
        park(&plan, queue, m, "", "forwarding kept failing");
        rc = 0;
    } else {
        rc = src->fn(src->ud, queue, m, &plan);
    }
    if (rc < 0) {
        w->transient = 1;
        plan_clear(&plan);
        settle(w, 0);
        return;
    }
    /* Counted before any send: an answer may come back before the last one is made. */
    w->pending = (int)plan.n + 1;
    for (size_t i = 0; i < plan.n; i++) {
        char id[37];
        nb_fan_copy_id(m->id, plan.queues[i], (unsigned)i, id);
        plan.v[i].id = id;
        nb_err err = {0};
        if (nb_q_send(f->q, plan.queues[i], &plan.v[i], 1, on_sent, w, &err) < 0) {
            if (err.status == 404) {
                nb_warn("fan", "%s: target %s is gone; its copy of %s is dropped", queue,
                        plan.queues[i], m->id);
            } else if (err.status == 400 || err.status == 413) {
                /* This copy can never be taken (too big once wrapped, say): trying again would
                 * repeat the others. The message is parked for an operator instead. */
                nb_warn("fan",
                        "%s: the copy of %s for %s is refused for good (%s); the message "
                        "goes to %s",
                        queue, m->id, plan.queues[i], err.msg, FAILED_QUEUE);
                nb_fan_plan one = {0};
                park(&one, queue, m, plan.queues[i], err.msg);
                char pid[37];
                nb_fan_copy_id(m->id, FAILED_QUEUE, (unsigned)i, pid);
                one.v[0].id = pid;
                nb_err e2 = {0};
                w->pending++;
                if (nb_q_send(f->q, FAILED_QUEUE, &one.v[0], 1, on_sent, w, &e2) < 0) {
                    w->pending--;
                    w->transient = 1;
                }
                plan_clear(&one);
            } else {
                w->transient = 1;
                nb_warn("fan", "%s: a copy of %s to %s was refused: %s", queue, m->id,
                        plan.queues[i], err.msg);
            }
            w->pending--;
        }
    }
    plan_clear(&plan);
    if (--w->pending == 0) settle(w, 0);
}

/* Takes messages from the dirty queues while there is room. */
static void pump(nb_fan *f)
{
    while (!f->stopped && atomic_load(&f->inflight) < MAX_INFLIGHT) {
        pthread_mutex_lock(&f->mu);
        dirty *d = f->dirty;
        if (d) f->dirty = d->next;
        pthread_mutex_unlock(&f->mu);
        if (!d) return;
        const source *src = source_of(f, d->name);
        int room = MAX_INFLIGHT - atomic_load(&f->inflight);
        int want = room < BATCH ? room : BATCH;
        nb_q_msg *m = NULL;
        nb_err err = {0};
        int n = src ? nb_q_receive(f->q, d->name, want, FORWARD_VISIBILITY_MS, &m, &err) : 0;
        for (int i = 0; i < n; i++)
            forward(f, src, d->name, &m[i]);
        nb_q_msgs_free(m, n > 0 ? (size_t)n : 0);
        /* A full batch: there may be more; look again after the others had their turn. */
        if (n == want) mark_dirty(f, d->name);
        free(d);
    }
}

static void on_wake(uv_async_t *a)
{
    pump(a->data);
}

nb_fan *nb_fan_new(uv_loop_t *loop, nb_q *q)
{
    nb_fan *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->loop = loop;
    f->q = q;
    f->port = nb_async_port_new(loop);
    pthread_mutex_init(&f->mu, NULL);
    uv_async_init(loop, &f->wake, on_wake);
    f->wake.data = f;
    nb_err err = {0};
    nb_q_config cfg = {.retention_ms = 14 * 86400000LL};
    if (nb_q_ensure(q, FAILED_QUEUE, &cfg, &err) < 0)
        nb_warn("fan", "cannot create %s: %s", FAILED_QUEUE, err.msg);
    return f;
}

void nb_fan_source(nb_fan *f, const char *prefix, nb_fan_planner fn, void *ud)
{
    source *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    s->fn = fn;
    s->ud = ud;
    s->next = f->sources;
    f->sources = s;
    /* nb_fan is these queues' only consumer: what a previous process had taken is ours. */
    nb_q_release_inflight(f->q, prefix);
    size_t n = 0;
    char **names = nb_q_list(f->q, prefix, &n);
    for (size_t i = 0; i < n; i++)
        mark_dirty(f, names[i]);
    nb_q_names_free(names, n);
    if (n) uv_async_send(&f->wake);
}

void nb_fan_notify(nb_fan *f, const char *queue)
{
    if (!f || !source_of(f, queue)) return;
    mark_dirty(f, queue);
    uv_async_send(&f->wake);
}

void nb_fan_stop(nb_fan *f)
{
    if (f) f->stopped = 1;
}

int nb_fan_inflight(const nb_fan *f)
{
    return f ? atomic_load(&f->inflight) : 0;
}

static void wake_closed(uv_handle_t *h)
{
    nb_fan *f = h->data;
    for (source *s = f->sources; s;) {
        source *next = s->next;
        free(s);
        s = next;
    }
    for (dirty *d = f->dirty; d;) {
        dirty *next = d->next;
        free(d);
        d = next;
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void nb_fan_free(nb_fan *f)
{
    if (!f) return;
    /* Answers still posted are dropped with the port; their messages stay taken and come back
     * at the next start (nb_fan_source releases them). */
    nb_async_port_free(f->port);
    uv_close((uv_handle_t *)&f->wake, wake_closed);
}
