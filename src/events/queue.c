/* nb_q: the memory state is authoritative while running; SQLite is its durable shadow, kept up
 * to date by one writer thread that commits every pending change in one transaction (group
 * commit). See docs/internals/queue.md for the model and what a crash can cause. */
#include "events/queue.h"

#include "base/log.h"
#include "base/util.h"
#include "store/sqlite_util.h"

#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#define TICK_MS        100 /* visibility expiry and retention are noticed this often */
#define RETRY_MS       200 /* a failed store tries a commit again this often */
#define PENDING_MAX    ((size_t)4 * NB_Q_MAX_MESSAGES) /* changes waiting for a commit */
#define KEEP_CHANGES   65536 /* a drained batch keeps at most this many slots */
#define SEND_MAX       10000 /* messages in one nb_q_send */
#define RECEIVE_MAX    1000
#define VISIBILITY_MAX ((int64_t)12 * 3600 * 1000)
#define RETENTION_MIN  ((int64_t)60 * 1000)
#define RETENTION_MAX  ((int64_t)14 * 86400 * 1000)
#define RETENTION_DEF  ((int64_t)4 * 86400 * 1000)
#define VISIBILITY_DEF 30000
#define MAX_RECEIVES   1000
#define ID_MAX         36

enum { ST_PENDING, ST_VISIBLE, ST_INVISIBLE, ST_GONE };

struct qqueue;

/* One message. Its body and attributes never change after the send, which is what lets the
 * writer read them without the mutex while a change holds a reference. */
typedef struct qmsg {
    struct qqueue *queue; /* current queue while not ST_GONE */
    int64_t sent_ms, visible_at, first_receive_ms;
    uint64_t seq;   /* arrival order: ties of the heaps' keys */
    uint64_t nonce; /* of the latest receive's receipt */
    int32_t receive_count;
    int32_t refs;  /* 1 while in a queue + 1 per pending change */
    uint32_t hpos; /* index in the heap of its state */
    uint32_t body_len, attrs_len;
    uint8_t state;
    uint8_t inflight; /* invisible because received (else: delayed by its send) */
    uint8_t has_attrs;
    uint32_t upd_at, upd_gen; /* its latest OP_UPD: index + 1 in pending of generation gen */
    char id[ID_MAX + 1];
    char data[]; /* body, NUL, attributes JSON, NUL */
} qmsg;

/* What a message holds in memory, for the store's byte cap. */
static int64_t msg_bytes(const qmsg *m)
{
    return (int64_t)sizeof *m + m->body_len + m->attrs_len + 2;
}

typedef struct mheap {
    qmsg **a;
    uint32_t n, cap;
    bool by_visible; /* key: visible_at (invisible ones) or sent_ms (visible: oldest first) */
} mheap;

/* Open addressing, linear probing, backward-shift deletion: no tombstones to clean up. */
typedef struct mhash {
    qmsg **slots;
    uint32_t n, cap; /* cap: 0 or a power of two */
} mhash;

typedef struct qqueue {
    char name[NB_Q_NAME_MAX + 1];
    nb_q_config cfg;
    mheap vis, inv;
    mhash ids;
    int64_t nmsgs; /* including sends not yet committed */
    int64_t ninflight, ndelayed;
    int64_t sent, received, deleted, dead_lettered, expired;
    int refs; /* 1 while listed + 1 per change, send or notification holding it */
    bool dead, mark;
} qqueue;

/* OP_SENT: a send's message, made receivable once committed. OP_SKIP: an update that a later
 * change of the same batch makes pointless (it keeps its references until the batch ends). */
enum { OP_NONE, OP_SENT, OP_PUT, OP_UPD, OP_DEL, OP_QPUT, OP_QDEL, OP_SKIP };

/* A change for the next commit; it holds references on its queue and message, and a copy of
 * the values that may change after it was made. */
typedef struct change {
    uint8_t op;
    int32_t receive_count;
    qqueue *queue;
    qmsg *msg;
    char *text; /* OP_QPUT: the config JSON (owned) */
    int64_t visible_at, first_receive_ms;
    uint64_t nonce;
} change;

typedef struct sendrec {
    nb_q_sent_cb cb;
    void *ud;
    qqueue *queue;
    size_t n;
    char (*ids)[37]; /* n > 1 (owned); one id lives in id1, so a single send allocates nothing */
    char id1[37];
    int status;
} sendrec;

typedef struct batch {
    change *ch;
    size_t n, cap;
    sendrec *sends;
    size_t ns, scap;
} batch;

struct nb_q {
    pthread_mutex_t mu; /* guards everything below up to the writer's part; never held for I/O */
    pthread_cond_t wake;
    nb_q_notify_cb notify;
    void *notify_ud;
    qqueue **queues; /* sorted by name */
    size_t nq, qcap;
    int64_t total; /* messages over all queues, pending sends included */
    int64_t bytes; /* their bodies and attributes: the memory they hold */
    int64_t max_bytes;
    uint64_t seq, rng;
    uint32_t gen; /* changes when pending's indices do (swap, requeue) */
    batch pending;
    bool failed; /* the last commit failed: sends are refused until one succeeds */
    bool stop;
    _Atomic int fail_commits; /* tests: the next n commits fail */

    /* The writer's alone. */
    pthread_t writer;
    bool started;
    sqlite3 *db;
    sqlite3_stmt *put, *upd, *del, *qput, *qdel, *qdelm, *probe;
    batch writing;
    qqueue **notes;
    size_t nnotes, notecap;
};

static int64_t mono_ms(void)
{
    return nb_mono_us() / 1000;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) abort(); /* only small bookkeeping arrays come here; their size is capped */
    return p;
}

/* ---- heaps ---- */

static bool before(const mheap *h, const qmsg *x, const qmsg *y)
{
    int64_t kx = h->by_visible ? x->visible_at : x->sent_ms;
    int64_t ky = h->by_visible ? y->visible_at : y->sent_ms;
    return kx != ky ? kx < ky : x->seq < y->seq;
}

static void heap_set(mheap *h, uint32_t i, qmsg *m)
{
    h->a[i] = m;
    m->hpos = i;
}

static void sift_up(mheap *h, uint32_t i)
{
    qmsg *m = h->a[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!before(h, m, h->a[p])) break;
        heap_set(h, i, h->a[p]);
        i = p;
    }
    heap_set(h, i, m);
}

static void sift_down(mheap *h, uint32_t i)
{
    qmsg *m = h->a[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(h, h->a[c + 1], h->a[c])) c++;
        if (!before(h, h->a[c], m)) break;
        heap_set(h, i, h->a[c]);
        i = c;
    }
    heap_set(h, i, m);
}

/* Capacity is reserved when a message joins its queue, so a push never allocates. */
static void heap_push(mheap *h, qmsg *m)
{
    h->a[h->n] = m;
    m->hpos = h->n++;
    sift_up(h, m->hpos);
}

static void heap_remove(mheap *h, uint32_t i)
{
    qmsg *last = h->a[--h->n];
    if (i == h->n) return;
    heap_set(h, i, last);
    sift_up(h, i);
    sift_down(h, last->hpos);
}

static int heap_reserve(mheap *h, size_t want)
{
    if (want <= h->cap) return 0;
    size_t cap = h->cap ? h->cap : 16;
    while (cap < want)
        cap *= 2;
    qmsg **a = realloc(h->a, cap * sizeof *a);
    if (!a) return -1;
    h->a = a;
    h->cap = (uint32_t)cap;
    return 0;
}

/* ---- the id hash ---- */

static uint32_t id_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static qmsg *hash_find(const mhash *h, const char *id)
{
    if (!h->cap) return NULL;
    for (uint32_t i = id_hash(id) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        qmsg *m = h->slots[i];
        if (!m) return NULL;
        if (strcmp(m->id, id) == 0) return m;
    }
}

static void hash_put(mhash *h, qmsg *m)
{
    uint32_t i = id_hash(m->id) & (h->cap - 1);
    while (h->slots[i])
        i = (i + 1) & (h->cap - 1);
    h->slots[i] = m;
    h->n++;
}

static void hash_del(mhash *h, const qmsg *m)
{
    uint32_t mask = h->cap - 1, i = id_hash(m->id) & mask;
    while (h->slots[i] != m)
        i = (i + 1) & mask;
    /* Backward shift: pull later entries of the run into the hole when their home allows. */
    for (uint32_t j = (i + 1) & mask; h->slots[j]; j = (j + 1) & mask) {
        uint32_t home = id_hash(h->slots[j]->id) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            h->slots[i] = h->slots[j];
            i = j;
        }
    }
    h->slots[i] = NULL;
    h->n--;
}

static int hash_rebuild(mhash *h, size_t cap)
{
    qmsg **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    mhash old = *h;
    h->slots = slots;
    h->cap = (uint32_t)cap;
    h->n = 0;
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.slots[i]) hash_put(h, old.slots[i]);
    free(old.slots);
    return 0;
}

static int hash_reserve(mhash *h, size_t want)
{
    if (want * 10 <= (size_t)h->cap * 7) return 0; /* load factor 0.7 */
    size_t cap = h->cap ? h->cap : 16;
    while (want * 10 > cap * 7)
        cap *= 2;
    return hash_rebuild(h, cap);
}

/* ---- queues and messages (all under mu) ---- */

static int queue_reserve(qqueue *qq, size_t extra)
{
    size_t want = (size_t)qq->nmsgs + extra;
    return heap_reserve(&qq->vis, want) < 0 || heap_reserve(&qq->inv, want) < 0 ||
                   hash_reserve(&qq->ids, want) < 0
               ? -1
               : 0;
}

/* A queue that once held many messages gives the memory back once it holds few. */
static void queue_trim(qqueue *qq)
{
    mheap *hs[2] = {&qq->vis, &qq->inv};
    for (int i = 0; i < 2; i++) {
        mheap *h = hs[i];
        if (h->cap >= 4096 && (size_t)qq->nmsgs * 4 < h->cap) {
            qmsg **a = realloc(h->a, (h->cap / 2) * sizeof *a);
            if (a) {
                h->a = a;
                h->cap /= 2;
            }
        }
    }
    if (qq->ids.cap >= 8192 && (size_t)qq->nmsgs * 8 < qq->ids.cap)
        hash_rebuild(&qq->ids, qq->ids.cap / 2);
}

static void queue_free(qqueue *qq)
{
    free(qq->vis.a);
    free(qq->inv.a);
    free(qq->ids.slots);
    free(qq);
}

static void qref(qqueue *qq)
{
    qq->refs++;
}

static void qunref(qqueue *qq)
{
    if (--qq->refs == 0) queue_free(qq);
}

static void msg_unref(qmsg *m)
{
    if (--m->refs == 0) free(m);
}

static void unlink_heap(qqueue *qq, qmsg *m)
{
    if (m->state == ST_VISIBLE) {
        heap_remove(&qq->vis, m->hpos);
    } else if (m->state == ST_INVISIBLE) {
        heap_remove(&qq->inv, m->hpos);
        if (m->inflight)
            qq->ninflight--;
        else
            qq->ndelayed--;
    }
}

static void make_visible(qqueue *qq, qmsg *m)
{
    unlink_heap(qq, m);
    m->state = ST_VISIBLE;
    m->inflight = 0;
    heap_push(&qq->vis, m);
}

static void make_invisible(qqueue *qq, qmsg *m, int64_t until, bool inflight)
{
    unlink_heap(qq, m);
    m->state = ST_INVISIBLE;
    m->visible_at = until;
    m->inflight = inflight;
    if (inflight)
        qq->ninflight++;
    else
        qq->ndelayed++;
    heap_push(&qq->inv, m);
}

/* Takes m out of its queue for good; the queue's reference on it goes. */
static void msg_gone(nb_q *q, qqueue *qq, qmsg *m)
{
    unlink_heap(qq, m);
    hash_del(&qq->ids, m);
    m->state = ST_GONE;
    qq->nmsgs--;
    q->total--;
    q->bytes -= msg_bytes(m);
    msg_unref(m);
}

static qqueue *find_queue(nb_q *q, const char *name, size_t *pos)
{
    size_t lo = 0, hi = q->nq;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(q->queues[mid]->name, name);
        if (c == 0) {
            if (pos) *pos = mid;
            return q->queues[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos) *pos = lo;
    return NULL;
}

static int batch_reserve(batch *b, size_t changes, size_t sends)
{
    if (b->n + changes > PENDING_MAX || b->ns + sends > PENDING_MAX) return -1;
    if (b->n + changes > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + changes)
            cap *= 2;
        change *ch = realloc(b->ch, cap * sizeof *ch);
        if (!ch) return -1;
        b->ch = ch;
        b->cap = cap;
    }
    if (b->ns + sends > b->scap) {
        size_t cap = b->scap ? b->scap : 64;
        while (cap < b->ns + sends)
            cap *= 2;
        sendrec *s = realloc(b->sends, cap * sizeof *s);
        if (!s) return -1;
        b->sends = s;
        b->scap = cap;
    }
    return 0;
}

/* Receive then delete is the common life of a message: its update need not reach the disk when
 * the delete (or a newer update) goes in the same transaction. */
static void coalesce(nb_q *q, change *c)
{
    qmsg *m = c->msg;
    if (m->upd_at && m->upd_gen == q->gen && m->upd_at - 1 < q->pending.n - 1) {
        change *old = &q->pending.ch[m->upd_at - 1];
        if (old->msg == m && old->op == OP_UPD && old->queue == c->queue) old->op = OP_SKIP;
    }
    m->upd_at = c->op == OP_UPD ? (uint32_t)q->pending.n : 0;
    m->upd_gen = q->gen;
}

/* Appends a change; the caller reserved room. */
static void add_change(nb_q *q, int op, qqueue *qq, qmsg *m)
{
    change *c = &q->pending.ch[q->pending.n++];
    memset(c, 0, sizeof *c);
    c->op = (uint8_t)op;
    c->queue = qq;
    qref(qq);
    if (m) {
        c->msg = m;
        m->refs++;
        c->visible_at = m->visible_at;
        c->first_receive_ms = m->first_receive_ms;
        c->receive_count = m->receive_count;
        c->nonce = m->nonce;
        if (op == OP_UPD || op == OP_DEL) coalesce(q, c);
    }
    if (q->pending.n == 1) pthread_cond_signal(&q->wake);
}

static bool expired(const qqueue *qq, const qmsg *m, int64_t now)
{
    return m->sent_ms + qq->cfg.retention_ms <= now;
}

static void expire(nb_q *q, qqueue *qq, qmsg *m)
{
    add_change(q, OP_DEL, qq, m);
    msg_gone(q, qq, m);
    qq->expired++;
}

/* Invisible messages whose time came become visible; expired ones at the front of the visible
 * heap go. In-flight messages past retention go once they are visible again, not before: the
 * cost of finding them earlier would be a third index. Returns whether some became visible. */
static bool promote(nb_q *q, qqueue *qq, int64_t now)
{
    bool became = false;
    while (qq->inv.n && qq->inv.a[0]->visible_at <= now) {
        make_visible(qq, qq->inv.a[0]);
        became = true;
    }
    while (qq->vis.n && expired(qq, qq->vis.a[0], now) && batch_reserve(&q->pending, 1, 0) == 0)
        expire(q, qq, qq->vis.a[0]);
    return became && qq->vis.n;
}

/* Moves m from its queue to `to` as a fresh message with the same id, body and send time. If
 * `to` already holds that id (a repeated move), the copy there wins and m just goes. The caller
 * reserved two changes. */
static int move_msg(nb_q *q, qqueue *from, qqueue *to, qmsg *m, int64_t now, int fresh)
{
    if (hash_find(&to->ids, m->id)) {
        add_change(q, OP_DEL, from, m);
        msg_gone(q, from, m);
        return 0;
    }
    if (queue_reserve(to, 1) < 0) return -1;
    add_change(q, OP_DEL, from, m);
    unlink_heap(from, m);
    hash_del(&from->ids, m);
    from->nmsgs--;
    m->state = ST_PENDING; /* out of every heap for the moment */
    m->queue = to;
    m->receive_count = 0;
    m->first_receive_ms = 0;
    m->nonce = 0;
    m->visible_at = now;
    if (fresh) m->sent_ms = now;
    hash_put(&to->ids, m);
    to->nmsgs++;
    make_visible(to, m);
    add_change(q, OP_PUT, to, m);
    return 0;
}

static uint64_t next_rand(nb_q *q)
{
    /* splitmix64: receipts only need to differ between receives and be hard to guess from
     * one another; the seed comes from the kernel. */
    uint64_t z = (q->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void format_receipt(const qmsg *m, char out[80])
{
    snprintf(out, 80, "%s:%d:%016" PRIx64, m->id, (int)m->receive_count, m->nonce);
}

/* ---- config ---- */

static int check_name(const char *name, nb_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > NB_Q_NAME_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_NAME, "queue name must be 1..%d characters",
                          NB_Q_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] <= ' ' || name[i] == 0x7f)
            return nb_err_set(err, 400, NB_E_INVALID_NAME,
                              "queue name has a space or control character");
    return 0;
}

static void config_defaults(nb_q_config *c)
{
    memset(c, 0, sizeof *c);
    c->visibility_timeout_ms = VISIBILITY_DEF;
    c->retention_ms = RETENTION_DEF;
}

/* in NULL: the defaults; retention 0: the default (0 is never valid). Under mu: the dead-letter
 * queue must exist. */
static int config_check(nb_q *q, const char *name, const nb_q_config *in, nb_q_config *out,
                        nb_err *err)
{
    if (!in) {
        config_defaults(out);
        return 0;
    }
    *out = *in;
    out->dead_letter[NB_Q_NAME_MAX] = 0;
    if (out->retention_ms == 0) out->retention_ms = RETENTION_DEF;
    if (out->visibility_timeout_ms < 0 || out->visibility_timeout_ms > VISIBILITY_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "visibility timeout must be 0 .. 12 hours (in ms)");
    if (out->retention_ms < RETENTION_MIN || out->retention_ms > RETENTION_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "retention must be 60 seconds .. 14 days (in ms)");
    if (out->max_receives < 0 || out->max_receives > MAX_RECEIVES)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "max receives must be 0 .. %d",
                          MAX_RECEIVES);
    if (out->dead_letter[0]) {
        if (strcmp(out->dead_letter, name) == 0)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "a queue cannot be its own dead-letter queue");
        if (!find_queue(q, out->dead_letter, NULL))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "dead-letter queue %s does not exist",
                              out->dead_letter);
    }
    return 0;
}

static bool config_eq(const nb_q_config *a, const nb_q_config *b)
{
    return a->visibility_timeout_ms == b->visibility_timeout_ms &&
           a->retention_ms == b->retention_ms && a->max_receives == b->max_receives &&
           strcmp(a->dead_letter, b->dead_letter) == 0;
}

static char *config_text(const nb_q_config *c)
{
    json_t *j =
        json_pack("{sIsIsiss}", "visibility_timeout_ms", (json_int_t)c->visibility_timeout_ms,
                  "retention_ms", (json_int_t)c->retention_ms, "max_receives", c->max_receives,
                  "dead_letter", c->dead_letter);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text) abort();
    return text;
}

static void config_parse(const char *text, nb_q_config *c)
{
    config_defaults(c);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    if (!j) return;
    json_t *v;
    if ((v = json_object_get(j, "visibility_timeout_ms")) && json_is_integer(v))
        c->visibility_timeout_ms = json_integer_value(v);
    if ((v = json_object_get(j, "retention_ms")) && json_is_integer(v))
        c->retention_ms = json_integer_value(v);
    if ((v = json_object_get(j, "max_receives")) && json_is_integer(v))
        c->max_receives = (int)json_integer_value(v);
    if ((v = json_object_get(j, "dead_letter")) && json_is_string(v))
        snprintf(c->dead_letter, sizeof c->dead_letter, "%s", json_string_value(v));
    json_decref(j);
}

/* ---- the writer ---- */

static int wexec(nb_q *q, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    nb_warn("queue", "%s: %s", sql, msg ? msg : sqlite3_errmsg(q->db));
    sqlite3_free(msg);
    return -1;
}

static int step(nb_q *q, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_DONE) return 0;
    nb_warn("queue", "%s: %s", sqlite3_sql(st), sqlite3_errmsg(q->db));
    return -1;
}

static int write_change(nb_q *q, const change *c)
{
    const char *qn = c->queue->name;
    switch (c->op) {
    case OP_SENT:
    case OP_PUT: {
        const qmsg *m = c->msg;
        sqlite3_stmt *st = q->put;
        sqlite3_bind_text(st, 1, qn, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m->id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, m->data, (int)m->body_len, SQLITE_STATIC);
        if (m->has_attrs)
            sqlite3_bind_text(st, 4, m->data + m->body_len + 1, (int)m->attrs_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, m->sent_ms);
        sqlite3_bind_int64(st, 6, c->visible_at);
        sqlite3_bind_int(st, 7, c->receive_count);
        sqlite3_bind_int64(st, 8, c->first_receive_ms);
        sqlite3_bind_int64(st, 9, (int64_t)c->nonce);
        return step(q, st);
    }
    case OP_UPD:
        sqlite3_bind_text(q->upd, 1, qn, -1, SQLITE_STATIC);
        sqlite3_bind_text(q->upd, 2, c->msg->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q->upd, 3, c->visible_at);
        sqlite3_bind_int(q->upd, 4, c->receive_count);
        sqlite3_bind_int64(q->upd, 5, c->first_receive_ms);
        sqlite3_bind_int64(q->upd, 6, (int64_t)c->nonce);
        return step(q, q->upd);
    case OP_DEL:
        sqlite3_bind_text(q->del, 1, qn, -1, SQLITE_STATIC);
        sqlite3_bind_text(q->del, 2, c->msg->id, -1, SQLITE_STATIC);
        return step(q, q->del);
    case OP_QPUT:
        sqlite3_bind_text(q->qput, 1, qn, -1, SQLITE_STATIC);
        sqlite3_bind_text(q->qput, 2, c->text, -1, SQLITE_STATIC);
        return step(q, q->qput);
    case OP_QDEL:
        sqlite3_bind_text(q->qdel, 1, qn, -1, SQLITE_STATIC);
        if (step(q, q->qdel) < 0) return -1;
        sqlite3_bind_text(q->qdelm, 1, qn, -1, SQLITE_STATIC);
        return step(q, q->qdelm);
    }
    return 0;
}

/* One transaction for the whole batch; an empty batch writes a probe row, so a failed store
 * finds out whether the disk works again. 0 only once COMMIT returned SQLITE_OK. */
static int commit_batch(nb_q *q, const batch *b)
{
    int n = atomic_load(&q->fail_commits);
    while (n > 0 && !atomic_compare_exchange_weak(&q->fail_commits, &n, n - 1))
        ;
    if (n > 0) return -1;
    if (wexec(q, "BEGIN IMMEDIATE") < 0) return -1;
    for (size_t i = 0; i < b->n; i++) {
        if (write_change(q, &b->ch[i]) < 0) goto fail;
    }
    if (b->n == 0) {
        sqlite3_bind_int64(q->probe, 1, nb_now_ms());
        if (step(q, q->probe) < 0) goto fail;
    }
    if (wexec(q, "COMMIT") == 0) return 0;
fail:
    wexec(q, "ROLLBACK");
    return -1;
}

static void note(nb_q *q, qqueue *qq)
{
    if (qq->mark) return;
    if (q->nnotes == q->notecap) {
        q->notecap = q->notecap ? q->notecap * 2 : 16;
        q->notes = xrealloc(q->notes, q->notecap * sizeof *q->notes);
    }
    qq->mark = true;
    qref(qq);
    q->notes[q->nnotes++] = qq;
}

/* Outside mu: the notify callback may take its own locks. */
static void run_notes(nb_q *q)
{
    for (size_t i = 0; i < q->nnotes; i++)
        if (q->notify) q->notify(q->notify_ud, q->notes[i]->name);
}

static void drop_notes(nb_q *q)
{
    for (size_t i = 0; i < q->nnotes; i++) {
        q->notes[i]->mark = false;
        qunref(q->notes[i]);
    }
    q->nnotes = 0;
}

static void tick(nb_q *q)
{
    int64_t now = nb_now_ms();
    for (size_t i = 0; i < q->nq; i++) {
        if (promote(q, q->queues[i], now)) note(q, q->queues[i]);
        queue_trim(q->queues[i]);
    }
}

/* After the commit, under mu: the batch's sends become visible (or are taken back). */
static void finish_batch(nb_q *q, batch *b, bool ok)
{
    int64_t now = nb_now_ms();
    size_t keep = 0;
    for (size_t i = 0; i < b->n; i++) {
        change *c = &b->ch[i];
        if (c->op == OP_SENT) {
            qmsg *m = c->msg;
            if (m->state != ST_PENDING) continue; /* its queue was deleted meanwhile */
            if (!ok) {
                msg_gone(q, c->queue, m);
                c->queue->sent--;
            } else if (m->visible_at <= now) {
                make_visible(c->queue, m);
                note(q, c->queue);
            } else {
                make_invisible(c->queue, m, m->visible_at, false);
            }
        } else if (!ok && !q->stop && c->op != OP_SKIP) {
            /* Receives, deletes and queue changes were applied in memory already: they go
             * again with the next commit, before anything newer. */
            b->ch[keep++] = *c;
            c->op = OP_NONE;
        }
    }
    if (keep) {
        q->gen++;
        if (q->pending.n + keep > q->pending.cap) {
            q->pending.cap = q->pending.n + keep;
            q->pending.ch = xrealloc(q->pending.ch, q->pending.cap * sizeof(change));
        }
        memmove(q->pending.ch + keep, q->pending.ch, q->pending.n * sizeof(change));
        memcpy(q->pending.ch, b->ch, keep * sizeof(change));
        q->pending.n += keep;
        for (size_t i = 0; i < keep; i++)
            b->ch[i].op = OP_NONE;
    }
    for (size_t i = 0; i < b->ns; i++)
        b->sends[i].status = !ok ? 503 : b->sends[i].queue->dead ? 404 : 0;
    if (ok && q->failed) nb_info("queue", "the store commits again");
    if (!ok && !q->failed) nb_error("queue", "commit failed: sends are refused until one succeeds");
    q->failed = !ok;
}

static void release_batch(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        change *c = &b->ch[i];
        if (c->op == OP_NONE) continue;
        if (c->msg) msg_unref(c->msg);
        qunref(c->queue);
        free(c->text);
    }
    for (size_t i = 0; i < b->ns; i++) {
        qunref(b->sends[i].queue);
        if (b->sends[i].n > 1) free(b->sends[i].ids);
    }
    b->n = 0;
    b->ns = 0;
    /* A burst may have grown the arrays a lot; do not keep that much forever. */
    if (b->cap > KEEP_CHANGES) {
        free(b->ch);
        b->ch = NULL;
        b->cap = 0;
    }
    if (b->scap > KEEP_CHANGES) {
        free(b->sends);
        b->sends = NULL;
        b->scap = 0;
    }
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(c, m, &ts);
}

static void *writer_main(void *arg)
{
    nb_q *q = arg;
    int64_t next_tick = mono_ms() + TICK_MS, next_retry = 0;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        /* No deliberate delay: whatever arrived during the previous commit is the next batch,
         * which is what makes one fsync cover many sends under load. A failed store waits
         * RETRY_MS between attempts instead of spinning on a broken disk. */
        int64_t now;
        bool work;
        for (;;) {
            now = mono_ms();
            bool has = q->pending.n || q->pending.ns;
            work = q->stop || (has && !q->failed) || (q->failed && now >= next_retry);
            if (work || now >= next_tick) break;
            timed_wait(&q->wake, &q->mu,
                       q->failed && next_retry < next_tick ? next_retry : next_tick);
        }
        if (now >= next_tick) {
            tick(q);
            next_tick = now + TICK_MS;
        }
        if (q->stop && !q->pending.n && !q->pending.ns) break;
        if (!work) {
            pthread_mutex_unlock(&q->mu);
            run_notes(q);
            pthread_mutex_lock(&q->mu);
            drop_notes(q);
            continue;
        }
        q->gen++;
        batch b = q->pending;
        q->pending = q->writing;
        q->writing = b;
        pthread_mutex_unlock(&q->mu);

        run_notes(q);
        bool ok = commit_batch(q, &q->writing) == 0;

        pthread_mutex_lock(&q->mu);
        drop_notes(q);
        finish_batch(q, &q->writing, ok);
        if (!ok) next_retry = mono_ms() + RETRY_MS;
        pthread_mutex_unlock(&q->mu);

        for (size_t i = 0; i < q->writing.ns; i++) {
            sendrec *s = &q->writing.sends[i];
            const char *msg = s->status == 0     ? "ok"
                              : s->status == 404 ? "the queue was deleted"
                                                 : "unavailable: the queue store cannot write";
            s->cb(s->ud, s->status, msg, s->n == 1 ? &s->id1 : s->ids, s->n);
        }
        run_notes(q);

        pthread_mutex_lock(&q->mu);
        drop_notes(q);
        release_batch(&q->writing);
    }
    pthread_mutex_unlock(&q->mu);
    run_notes(q);
    pthread_mutex_lock(&q->mu);
    drop_notes(q);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- open and close ---- */

/* Migration N moves the schema from version N to N+1. Never edit a released entry: append. */
static const char *migrations[] = {
    "CREATE TABLE queues (name TEXT PRIMARY KEY, config TEXT NOT NULL);"
    "CREATE TABLE messages ("
    "  queue TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, attrs TEXT,"
    "  sent_ms INTEGER NOT NULL, visible_at_ms INTEGER NOT NULL,"
    "  receive_count INTEGER NOT NULL, first_receive_ms INTEGER NOT NULL,"
    "  receipt INTEGER NOT NULL, PRIMARY KEY (queue, id));"
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER);",
};

static int db_fail(nb_q *q, nb_err *err, const char *what)
{
    return nb_sql_fail(q->db, "queue store", what, err);
}

static int prepare(nb_q *q, const char *sql, sqlite3_stmt **st, nb_err *err)
{
    if (sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK)
        return 0;
    return db_fail(q, err, "prepare");
}

static qqueue *queue_new(const char *name, const nb_q_config *cfg)
{
    qqueue *qq = calloc(1, sizeof *qq);
    if (!qq) abort();
    snprintf(qq->name, sizeof qq->name, "%s", name);
    qq->cfg = *cfg;
    qq->inv.by_visible = true;
    qq->refs = 1;
    return qq;
}

static void queue_insert(nb_q *q, qqueue *qq, size_t pos)
{
    if (q->nq == q->qcap) {
        q->qcap = q->qcap ? q->qcap * 2 : 16;
        q->queues = xrealloc(q->queues, q->qcap * sizeof *q->queues);
    }
    memmove(q->queues + pos + 1, q->queues + pos, (q->nq - pos) * sizeof *q->queues);
    q->queues[pos] = qq;
    q->nq++;
}

static qmsg *msg_alloc(const char *body, size_t body_len, const char *attrs, size_t attrs_len)
{
    qmsg *m = malloc(sizeof *m + body_len + attrs_len + 2);
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    if (body_len) memcpy(m->data, body, body_len);
    m->data[body_len] = 0;
    if (attrs) memcpy(m->data + body_len + 1, attrs, attrs_len);
    m->data[body_len + 1 + attrs_len] = 0;
    m->body_len = (uint32_t)body_len;
    m->attrs_len = (uint32_t)attrs_len;
    m->has_attrs = attrs != NULL;
    m->refs = 1;
    return m;
}

static int load(nb_q *q, nb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, "SELECT name, config FROM queues ORDER BY name", -1, &st, NULL) !=
        SQLITE_OK)
        return db_fail(q, err, "load queues");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name || strlen(name) > NB_Q_NAME_MAX) continue;
        nb_q_config cfg;
        config_parse((const char *)sqlite3_column_text(st, 1), &cfg);
        size_t pos;
        if (!find_queue(q, name, &pos)) queue_insert(q, queue_new(name, &cfg), pos);
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(q->db,
                           "SELECT queue, id, body, attrs, sent_ms, visible_at_ms, receive_count,"
                           " first_receive_ms, receipt FROM messages ORDER BY sent_ms",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(q, err, "load messages");
    int64_t now = nb_now_ms(), orphans = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        qqueue *qq = find_queue(q, (const char *)sqlite3_column_text(st, 0), NULL);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        if (!qq || !id || strlen(id) > ID_MAX || hash_find(&qq->ids, id)) {
            orphans++;
            continue;
        }
        const char *body = sqlite3_column_blob(st, 2);
        size_t body_len = (size_t)sqlite3_column_bytes(st, 2);
        const char *attrs = (const char *)sqlite3_column_text(st, 3);
        size_t attrs_len = attrs ? (size_t)sqlite3_column_bytes(st, 3) : 0;
        qmsg *m = msg_alloc(body, body_len, attrs, attrs_len);
        if (!m || queue_reserve(qq, 1) < 0) {
            free(m);
            sqlite3_finalize(st);
            return nb_err_set(err, 500, NB_E_INTERNAL, "queue store: out of memory loading");
        }
        snprintf(m->id, sizeof m->id, "%s", id);
        m->queue = qq;
        m->sent_ms = sqlite3_column_int64(st, 4);
        m->visible_at = sqlite3_column_int64(st, 5);
        m->receive_count = sqlite3_column_int(st, 6);
        m->first_receive_ms = sqlite3_column_int64(st, 7);
        m->nonce = (uint64_t)sqlite3_column_int64(st, 8);
        m->seq = ++q->seq;
        m->state = ST_PENDING;
        hash_put(&qq->ids, m);
        qq->nmsgs++;
        q->total++;
        q->bytes += msg_bytes(m);
        /* In flight when the store closed (or crashed): visible again once its timeout is
         * over, like any unanswered receive. */
        if (m->visible_at <= now)
            make_visible(qq, m);
        else
            make_invisible(qq, m, m->visible_at, m->receive_count > 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_fail(q, err, "load messages");
    if (orphans)
        nb_warn("queue", "ignored stored messages of unknown queues n=%lld", (long long)orphans);
    return 0;
}

static void free_all(nb_q *q)
{
    sqlite3_finalize(q->put);
    sqlite3_finalize(q->upd);
    sqlite3_finalize(q->del);
    sqlite3_finalize(q->qput);
    sqlite3_finalize(q->qdel);
    sqlite3_finalize(q->qdelm);
    sqlite3_finalize(q->probe);
    sqlite3_close(q->db);
    /* The writer is gone and its batches released: each message has its queue's reference
     * only. */
    for (size_t i = 0; i < q->nq; i++) {
        qqueue *qq = q->queues[i];
        for (uint32_t s = 0; s < qq->ids.cap; s++)
            free(qq->ids.slots[s]);
        queue_free(qq);
    }
    free(q->queues);
    free(q->pending.ch);
    free(q->pending.sends);
    free(q->writing.ch);
    free(q->writing.sends);
    free(q->notes);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

nb_q *nb_q_open(const char *path, nb_q_notify_cb notify, void *notify_ud, nb_err *err)
{
    nb_q *q = calloc(1, sizeof *q);
    if (!q) {
        nb_err_set(err, 500, NB_E_INTERNAL, "queue store: out of memory");
        return NULL;
    }
    q->notify = notify;
    q->notify_ud = notify_ud;
    /* Every message lives in memory: an eighth of it at most (at least 256 MiB), so a runaway
     * producer gets "full" instead of taking the host's memory. */
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    q->max_bytes = pages > 0 && psize > 0 ? (int64_t)pages * psize / 8 : 0;
    if (q->max_bytes < NB_Q_MIN_MAX_BYTES) q->max_bytes = NB_Q_MIN_MAX_BYTES;
    const char *mb = getenv("NIMBUS_QUEUE_MAX_MB");
    if (mb && atoll(mb) > 0) q->max_bytes = (int64_t)atoll(mb) << 20;
    atomic_init(&q->fail_commits, 0);
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* nb_mono_us's clock */
    pthread_cond_init(&q->wake, &ca);
    pthread_condattr_destroy(&ca);
    char seed[17];
    nb_random_hex(seed, 8);
    q->rng = strtoull(seed, NULL, 16);

    /* NOMUTEX: the connection is used by one thread at a time (open, then the writer). */
    if (sqlite3_open_v2(path, &q->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        db_fail(q, err, path);
        goto fail;
    }
    sqlite3_busy_timeout(q->db, 5000);
    /* FULL: a commit is on disk when it returns, which is what a send's acknowledgement
     * promises. EXCLUSIVE: a second process opening the same store fails instead of writing
     * behind this one's memory state. */
    if (sqlite3_exec(q->db,
                     "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL;"
                     " PRAGMA synchronous = FULL",
                     NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(q, err, path);
        goto fail;
    }
    if (nb_sql_migrate(q->db, "queue store", migrations, (int)NB_ARRAY_LEN(migrations), err) < 0)
        goto fail;
    if (prepare(q,
                "INSERT OR REPLACE INTO messages (queue, id, body, attrs, sent_ms, visible_at_ms,"
                " receive_count, first_receive_ms, receipt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                " ?8, ?9)",
                &q->put, err) < 0 ||
        prepare(q,
                "UPDATE messages SET visible_at_ms = ?3, receive_count = ?4, first_receive_ms = ?5,"
                " receipt = ?6 WHERE queue = ?1 AND id = ?2",
                &q->upd, err) < 0 ||
        prepare(q, "DELETE FROM messages WHERE queue = ?1 AND id = ?2", &q->del, err) < 0 ||
        prepare(q, "INSERT OR REPLACE INTO queues (name, config) VALUES (?1, ?2)", &q->qput, err) <
            0 ||
        prepare(q, "DELETE FROM queues WHERE name = ?1", &q->qdel, err) < 0 ||
        prepare(q, "DELETE FROM messages WHERE queue = ?1", &q->qdelm, err) < 0 ||
        prepare(q, "INSERT OR REPLACE INTO meta (k, v) VALUES ('probe', ?1)", &q->probe, err) < 0)
        goto fail;
    if (load(q, err) < 0) goto fail;
    if (pthread_create(&q->writer, NULL, writer_main, q) != 0) {
        nb_err_set(err, 500, NB_E_INTERNAL, "queue store: cannot start the writer thread");
        goto fail;
    }
    q->started = true;
    pthread_setname_np(q->writer, "nb-queue");
    return q;
fail:
    free_all(q);
    return NULL;
}

void nb_q_close(nb_q *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
    if (q->started) pthread_join(q->writer, NULL);
    free_all(q);
}

/* ---- queues ---- */

/* Under mu: room for the queue change. */
static int queue_change(nb_q *q, int op, qqueue *qq, nb_err *err)
{
    if (batch_reserve(&q->pending, 1, 0) < 0)
        return nb_err_set(err, 503, NB_E_UNAVAILABLE, "queue store: too many pending changes");
    add_change(q, op, qq, NULL);
    if (op == OP_QPUT) q->pending.ch[q->pending.n - 1].text = config_text(&qq->cfg);
    return 0;
}

/* any_config: an existing queue is fine whatever its config (nb_q_ensure). */
static int create(nb_q *q, const char *name, const nb_q_config *cfg, bool any_config, nb_err *err)
{
    if (check_name(name, err) < 0) return -1;
    nb_q_config c;
    size_t pos;
    pthread_mutex_lock(&q->mu);
    int rc = config_check(q, name, cfg, &c, err);
    qqueue *qq = rc == 0 ? find_queue(q, name, &pos) : NULL;
    if (rc == 0 && qq) {
        if (!any_config && !config_eq(&qq->cfg, &c))
            rc = nb_err_set(err, 409, NB_E_CONFLICT, "queue %s exists with another config", name);
    } else if (rc == 0) {
        qq = queue_new(name, &c);
        rc = queue_change(q, OP_QPUT, qq, err);
        if (rc == 0)
            queue_insert(q, qq, pos);
        else
            queue_free(qq);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int nb_q_create(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err)
{
    return create(q, name, cfg, false, err);
}

int nb_q_ensure(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err)
{
    return create(q, name, cfg, true, err);
}

int nb_q_update(nb_q *q, const char *name, const nb_q_config *cfg, nb_err *err)
{
    nb_q_config c;
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, name, NULL);
    int rc = !qq ? nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", name)
                 : config_check(q, name, cfg, &c, err);
    if (rc == 0 && !config_eq(&qq->cfg, &c)) {
        nb_q_config old = qq->cfg;
        qq->cfg = c;
        rc = queue_change(q, OP_QPUT, qq, err);
        if (rc < 0) qq->cfg = old;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int nb_q_delete_queue(nb_q *q, const char *name, nb_err *err)
{
    size_t pos;
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, name, &pos);
    int rc = !qq ? nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", name)
                 : queue_change(q, OP_QDEL, qq, err);
    if (rc == 0) {
        q->nq--;
        memmove(q->queues + pos, q->queues + pos + 1, (q->nq - pos) * sizeof *q->queues);
        qq->dead = true;
        for (uint32_t s = 0; s < qq->ids.cap; s++) {
            qmsg *m = qq->ids.slots[s];
            if (!m) continue;
            unlink_heap(qq, m);
            m->state = ST_GONE;
            q->total--;
            q->bytes -= msg_bytes(m);
            msg_unref(m);
        }
        free(qq->ids.slots);
        memset(&qq->ids, 0, sizeof qq->ids);
        qq->vis.n = qq->inv.n = 0;
        qq->nmsgs = 0;
        qunref(qq);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int nb_q_exists(nb_q *q, const char *name)
{
    pthread_mutex_lock(&q->mu);
    int found = name && find_queue(q, name, NULL) != NULL;
    pthread_mutex_unlock(&q->mu);
    return found;
}

char **nb_q_list(nb_q *q, const char *prefix, size_t *n)
{
    size_t plen = prefix ? strlen(prefix) : 0, k = 0;
    pthread_mutex_lock(&q->mu);
    char **names = xrealloc(NULL, (q->nq ? q->nq : 1) * sizeof *names);
    for (size_t i = 0; i < q->nq; i++) {
        if (plen && strncmp(q->queues[i]->name, prefix, plen) != 0) continue;
        names[k] = strdup(q->queues[i]->name);
        if (!names[k]) abort();
        k++;
    }
    pthread_mutex_unlock(&q->mu);
    *n = k;
    return names;
}

void nb_q_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

int nb_q_get_config(nb_q *q, const char *name, nb_q_config *out, nb_err *err)
{
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, name, NULL);
    if (qq) *out = qq->cfg;
    pthread_mutex_unlock(&q->mu);
    return qq ? 0 : nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", name);
}

/* ---- messages ---- */

static void free_built(qmsg **built, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(built[i]);
    free(built);
}

static int build_msg(const nb_q_out *o, int64_t now, qmsg **out, nb_err *err)
{
    if (!o->body && o->body_len)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a message body is missing");
    if (o->delay_ms < 0 || o->delay_ms > VISIBILITY_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "delay must be 0 .. 12 hours (in ms)");
    if (o->id && (!o->id[0] || strlen(o->id) > ID_MAX))
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a message id is 1..%d characters", ID_MAX);
    char *attrs = NULL;
    size_t attrs_len = 0;
    if (o->attrs) {
        const char *k;
        json_t *v;
        if (!json_is_object(o->attrs))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "attributes must be an object");
        json_object_foreach((json_t *)o->attrs, k, v)
        {
            if (!json_is_string(v))
                return nb_err_set(err, 400, NB_E_INVALID_VALUE, "attribute %s is not a string", k);
        }
        attrs = json_dumps(o->attrs, JSON_COMPACT | JSON_SORT_KEYS);
        if (!attrs) return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
        attrs_len = strlen(attrs);
    }
    if (o->body_len > NB_Q_MAX_BODY || o->body_len + attrs_len > NB_Q_MAX_BODY) {
        free(attrs);
        return nb_err_set(err, 413, NB_E_TOO_LARGE, "a message is over %u bytes with attributes",
                          NB_Q_MAX_BODY);
    }
    qmsg *m = msg_alloc(o->body, o->body_len, attrs, attrs_len);
    free(attrs);
    if (!m) return nb_err_set(err, 503, NB_E_UNAVAILABLE, "out of memory");
    if (o->id)
        snprintf(m->id, sizeof m->id, "%s", o->id);
    else
        nb_uuid4(m->id);
    m->sent_ms = o->sent_ms ? o->sent_ms : now;
    m->visible_at = now + o->delay_ms;
    m->state = ST_PENDING;
    *out = m;
    return 0;
}

int nb_q_send(nb_q *q, const char *queue, const nb_q_out *msgs, size_t n, nb_q_sent_cb cb, void *ud,
              nb_err *err)
{
    if (n == 0 || n > SEND_MAX || !msgs || !cb)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a send carries 1..%d messages", SEND_MAX);
    /* Built before taking the mutex: copying bodies is the expensive part of a send. */
    int64_t now = nb_now_ms();
    qmsg *one, **built = n == 1 ? &one : malloc(n * sizeof *built);
    if (!built) return nb_err_set(err, 503, NB_E_UNAVAILABLE, "out of memory");
    size_t nb = 0;
    for (; nb < n; nb++)
        if (build_msg(&msgs[nb], now, &built[nb], err) < 0) goto refuse;
    char(*ids)[37] = NULL;
    if (n > 1 && !(ids = malloc(n * sizeof *ids))) {
        nb_err_set(err, 503, NB_E_UNAVAILABLE, "out of memory");
        goto refuse;
    }

    size_t send_bytes = 0;
    for (size_t i = 0; i < n; i++)
        send_bytes += (size_t)msg_bytes(built[i]);
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, queue, NULL);
    int rc = 0;
    if (q->stop)
        rc = nb_err_set(err, 503, NB_E_UNAVAILABLE, "the queue store is closing");
    else if (q->failed)
        rc = nb_err_set(err, 503, NB_E_UNAVAILABLE, "the queue store cannot write");
    else if (!qq)
        rc = nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", queue);
    else if (q->total + (int64_t)n > NB_Q_MAX_MESSAGES)
        rc = nb_err_set(err, 503, "full", "the queue store holds %d messages", NB_Q_MAX_MESSAGES);
    else if (q->bytes + (int64_t)send_bytes > q->max_bytes)
        rc = nb_err_set(err, 503, "full", "the queue store holds %lld MiB of messages",
                        (long long)(q->max_bytes >> 20));
    else if (batch_reserve(&q->pending, n, 1) < 0 || queue_reserve(qq, n) < 0)
        rc = nb_err_set(err, 503, "full", "the queue store has too many pending changes");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        qmsg *old = hash_find(&qq->ids, built[i]->id);
        if (old && old->state == ST_PENDING)
            rc = nb_err_set(err, 503, NB_E_UNAVAILABLE,
                            "a send of message %s is not committed yet; retry", built[i]->id);
    }
    if (rc < 0) {
        pthread_mutex_unlock(&q->mu);
        free(ids);
        goto refuse;
    }
    sendrec *s = &q->pending.sends[q->pending.ns++];
    s->cb = cb;
    s->ud = ud;
    s->queue = qq;
    qref(qq);
    s->n = n;
    s->ids = ids;
    s->status = 0;
    for (size_t i = 0; i < n; i++) {
        qmsg *m = built[i];
        memcpy(n == 1 ? s->id1 : ids[i], m->id, 37);
        /* The id is there already (a move repeated after a crash): that copy stands, and this
         * send is acknowledged with the next commit all the same. */
        if (hash_find(&qq->ids, m->id)) {
            free(m);
            continue;
        }
        m->queue = qq;
        m->seq = ++q->seq;
        hash_put(&qq->ids, m);
        qq->nmsgs++;
        qq->sent++;
        q->total++;
        q->bytes += msg_bytes(m);
        add_change(q, OP_SENT, qq, m);
    }
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
    if (n > 1) free(built);
    return 0;
refuse:
    if (n == 1)
        free(nb ? one : NULL);
    else
        free_built(built, nb);
    return -1;
}

/* Under mu: a copy for the caller. The attributes' JSON text travels after the body's NUL
 * (an empty string when there are none) and is parsed outside the mutex. */
static void copy_out(const qmsg *m, nb_q_msg *o)
{
    memset(o, 0, sizeof *o);
    memcpy(o->id, m->id, sizeof o->id);
    size_t size = m->body_len + m->attrs_len + 2;
    o->body = malloc(size);
    if (!o->body) abort();
    memcpy(o->body, m->data, size);
    o->body_len = m->body_len;
    o->receive_count = m->receive_count;
    o->sent_ms = m->sent_ms;
    o->first_receive_ms = m->first_receive_ms;
}

static void parse_attrs(nb_q_msg *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *text = out[i].body + out[i].body_len + 1;
        if (*text) out[i].attrs = json_loads(text, 0, NULL);
    }
}

int nb_q_receive(nb_q *q, const char *queue, int max, int64_t visibility_ms, nb_q_msg **out,
                 nb_err *err)
{
    *out = NULL;
    if (max < 0) max = 0;
    if (max > RECEIVE_MAX) max = RECEIVE_MAX;
    if (visibility_ms > VISIBILITY_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "visibility timeout must be 0 .. 12 hours (in ms)");
    nb_q_msg *res = NULL;
    int count = 0;
    qqueue *dlq_note = NULL;
    int64_t now = nb_now_ms();
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, queue, NULL);
    int rc = 0;
    if (!qq)
        rc = nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", queue);
    else if (batch_reserve(&q->pending, 2, 0) < 0)
        rc = nb_err_set(err, 503, NB_E_UNAVAILABLE, "queue store: too many pending changes");
    if (rc < 0) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    int64_t vis = visibility_ms > 0 ? visibility_ms : qq->cfg.visibility_timeout_ms;
    promote(q, qq, now);
    qqueue *dlq = NULL;
    if (qq->cfg.max_receives > 0 && qq->cfg.dead_letter[0])
        dlq = find_queue(q, qq->cfg.dead_letter, NULL);
    /* Each turn makes at most two changes (a dead-letter move). */
    while (count < max && qq->vis.n && batch_reserve(&q->pending, 2, 0) == 0) {
        qmsg *m = qq->vis.a[0];
        if (expired(qq, m, now)) {
            expire(q, qq, m);
            continue;
        }
        if (dlq && m->receive_count >= qq->cfg.max_receives &&
            move_msg(q, qq, dlq, m, now, 0) == 0) {
            qq->dead_lettered++;
            dlq_note = dlq;
            continue;
        }
        if (!res) res = xrealloc(NULL, (size_t)max * sizeof *res);
        m->receive_count++;
        if (!m->first_receive_ms) m->first_receive_ms = now;
        m->nonce = next_rand(q);
        make_invisible(qq, m, now + vis, true);
        qq->received++;
        add_change(q, OP_UPD, qq, m);
        copy_out(m, &res[count]);
        format_receipt(m, res[count].receipt);
        count++;
    }
    if (dlq_note) qref(dlq_note);
    pthread_mutex_unlock(&q->mu);
    parse_attrs(res, (size_t)count);
    if (dlq_note) {
        if (q->notify) q->notify(q->notify_ud, dlq_note->name);
        pthread_mutex_lock(&q->mu);
        qunref(dlq_note);
        pthread_mutex_unlock(&q->mu);
    }
    *out = res;
    return count;
}

void nb_q_msgs_free(nb_q_msg *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        free(m[i].body);
        json_decref(m[i].attrs);
    }
    free(m);
}

/* Under mu: the message a receipt names, or an error. */
static qmsg *by_receipt(nb_q *q, const char *queue, const char *id, const char *receipt,
                        qqueue **qq_out, nb_err *err)
{
    qqueue *qq = find_queue(q, queue, NULL);
    if (!qq) {
        nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", queue);
        return NULL;
    }
    qmsg *m = id ? hash_find(&qq->ids, id) : NULL;
    if (!m || m->state == ST_PENDING) {
        nb_err_set(err, 404, NB_E_NOT_FOUND, "no message %s in queue %s", id ? id : "", queue);
        return NULL;
    }
    char want[80];
    format_receipt(m, want);
    if (!receipt || m->receive_count == 0 || strcmp(receipt, want) != 0) {
        nb_err_set(err, 410, "receipt_expired",
                   "the receipt is not the latest receive's of message %s", id);
        return NULL;
    }
    if (batch_reserve(&q->pending, 1, 0) < 0) {
        nb_err_set(err, 503, NB_E_UNAVAILABLE, "queue store: too many pending changes");
        return NULL;
    }
    *qq_out = qq;
    return m;
}

int nb_q_delete(nb_q *q, const char *queue, const char *id, const char *receipt, nb_err *err)
{
    qqueue *qq;
    pthread_mutex_lock(&q->mu);
    qmsg *m = by_receipt(q, queue, id, receipt, &qq, err);
    if (m) {
        add_change(q, OP_DEL, qq, m);
        msg_gone(q, qq, m);
        qq->deleted++;
    }
    pthread_mutex_unlock(&q->mu);
    return m ? 0 : -1;
}

int nb_q_change_visibility(nb_q *q, const char *queue, const char *id, const char *receipt,
                           int64_t ms, nb_err *err)
{
    if (ms < 0 || ms > VISIBILITY_MAX)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                          "visibility timeout must be 0 .. 12 hours (in ms)");
    qqueue *qq, *noted = NULL;
    pthread_mutex_lock(&q->mu);
    qmsg *m = by_receipt(q, queue, id, receipt, &qq, err);
    if (m) {
        int64_t now = nb_now_ms();
        if (ms == 0) {
            m->visible_at = now;
            make_visible(qq, m);
            noted = qq;
            qref(qq);
        } else {
            make_invisible(qq, m, now + ms, true);
        }
        add_change(q, OP_UPD, qq, m);
    }
    pthread_mutex_unlock(&q->mu);
    if (noted) {
        if (q->notify) q->notify(q->notify_ud, noted->name);
        pthread_mutex_lock(&q->mu);
        qunref(noted);
        pthread_mutex_unlock(&q->mu);
    }
    return m ? 0 : -1;
}

/* Under mu: the committed messages of qq (the heaps hold exactly those). */
static qmsg **collect(qqueue *qq, size_t *n)
{
    *n = qq->vis.n + qq->inv.n;
    qmsg **all = xrealloc(NULL, (*n ? *n : 1) * sizeof *all);
    memcpy(all, qq->vis.a, qq->vis.n * sizeof *all);
    if (qq->inv.n) memcpy(all + qq->vis.n, qq->inv.a, qq->inv.n * sizeof *all);
    return all;
}

static int64_t move_all(nb_q *q, const char *from, const char *to, int fresh, nb_err *err)
{
    int64_t moved = 0;
    pthread_mutex_lock(&q->mu);
    qqueue *src = find_queue(q, from, NULL), *dst = find_queue(q, to, NULL);
    if (!src || !dst) {
        pthread_mutex_unlock(&q->mu);
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", !src ? from : to);
    }
    if (src == dst) {
        pthread_mutex_unlock(&q->mu);
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a queue cannot be moved to itself");
    }
    size_t n;
    qmsg **all = collect(src, &n);
    int64_t now = nb_now_ms();
    int rc = 0;
    if (batch_reserve(&q->pending, 2 * n, 0) < 0 || queue_reserve(dst, n) < 0)
        rc = nb_err_set(err, 503, NB_E_UNAVAILABLE, "queue store: too many pending changes");
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (move_msg(q, src, dst, all[i], now, fresh) == 0) moved++;
    if (moved) qref(dst);
    pthread_mutex_unlock(&q->mu);
    free(all);
    if (rc < 0) return -1;
    if (moved) {
        if (q->notify) q->notify(q->notify_ud, dst->name);
        pthread_mutex_lock(&q->mu);
        qunref(dst);
        pthread_mutex_unlock(&q->mu);
    }
    return moved;
}

int64_t nb_q_move_all(nb_q *q, const char *from, const char *to, nb_err *err)
{
    return move_all(q, from, to, 0, err);
}

int64_t nb_q_move_all_fresh(nb_q *q, const char *from, const char *to, nb_err *err)
{
    return move_all(q, from, to, 1, err);
}

static int by_age(const void *a, const void *b)
{
    const qmsg *x = *(const qmsg *const *)a, *y = *(const qmsg *const *)b;
    if (x->sent_ms != y->sent_ms) return x->sent_ms < y->sent_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int nb_q_peek(nb_q *q, const char *queue, int max, nb_q_msg **out, nb_err *err)
{
    *out = NULL;
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, queue, NULL);
    if (!qq) {
        pthread_mutex_unlock(&q->mu);
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", queue);
    }
    size_t n;
    qmsg **all = collect(qq, &n);
    qsort(all, n, sizeof *all, by_age);
    if (max < 0) max = 0;
    if (n > (size_t)max) n = (size_t)max;
    nb_q_msg *res = n ? xrealloc(NULL, n * sizeof *res) : NULL;
    for (size_t i = 0; i < n; i++)
        copy_out(all[i], &res[i]);
    pthread_mutex_unlock(&q->mu);
    free(all);
    parse_attrs(res, n);
    *out = res;
    return (int)n;
}

int nb_q_get_stats(nb_q *q, const char *queue, nb_q_stats *out, nb_err *err)
{
    memset(out, 0, sizeof *out);
    int64_t now = nb_now_ms();
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, queue, NULL);
    if (!qq) {
        pthread_mutex_unlock(&q->mu);
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "no queue %s", queue);
    }
    promote(q, qq, now);
    out->visible = qq->vis.n;
    out->inflight = qq->ninflight;
    out->delayed = qq->ndelayed;
    int64_t oldest = qq->vis.n ? qq->vis.a[0]->sent_ms : INT64_MAX;
    for (uint32_t i = 0; i < qq->inv.n; i++)
        if (qq->inv.a[i]->sent_ms < oldest) oldest = qq->inv.a[i]->sent_ms;
    out->oldest_ms = oldest == INT64_MAX ? 0 : now > oldest ? now - oldest : 0;
    out->sent = qq->sent;
    out->received = qq->received;
    out->deleted = qq->deleted;
    out->dead_lettered = qq->dead_lettered;
    out->expired = qq->expired;
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int64_t nb_q_next_visible_ms(nb_q *q, const char *queue)
{
    int64_t now = nb_now_ms(), ms = -1;
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, queue, NULL);
    if (qq && qq->vis.n)
        ms = 0;
    else if (qq && qq->inv.n)
        ms = qq->inv.a[0]->visible_at > now ? qq->inv.a[0]->visible_at - now : 0;
    pthread_mutex_unlock(&q->mu);
    return ms;
}

int64_t nb_q_release_inflight(nb_q *q, const char *prefix)
{
    int64_t n = 0;
    size_t pl = strlen(prefix);
    int64_t now = nb_now_ms();
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->nq; i++) {
        qqueue *qq = q->queues[i];
        if (strncmp(qq->name, prefix, pl) != 0 || qq->ninflight == 0) continue;
        size_t cnt;
        qmsg **all = collect(qq, &cnt);
        for (size_t k = 0; k < cnt; k++) {
            qmsg *m = all[k];
            if (m->state != ST_INVISIBLE || !m->inflight) continue;
            if (batch_reserve(&q->pending, 1, 0) < 0) break; /* the rest time out as usual */
            m->visible_at = now;
            make_visible(qq, m);
            add_change(q, OP_UPD, qq, m);
            n++;
        }
        free(all);
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}
