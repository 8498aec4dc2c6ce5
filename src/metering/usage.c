/* Metering: any thread encodes its record into one pending buffer under a short mutex, already
 * in the raw window's blob format; one writer thread swaps the buffers and commits the
 * swapped-out one to SQLite without holding that mutex (the access log's design,
 * src/gateway/alog.c): the blob as it is, and the rollup summed from it. Queries use a second
 * connection, so WAL lets them read while the writer writes. */
#include "metering/usage.h"

#include "base/log.h"
#include "base/util.h"
#include "store/sqlite_util.h"

#include <endian.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RECORDS  1000000
#define DEFAULT_AGE_S    86400
#define DEFAULT_DAYS     400
#define DEFAULT_FLUSH_MS 1000
#define RETAIN_EVERY_MS  10000
#define GROUPS_MAX       10000
#define MB_MS_PER_GBS    1024000 /* MB x ms in one GB-second */
#define FEMTO_PER_MICRO  1000000000LL

static const char *const trigger_names[NB_TRIG_N] = {"http",  "api",      "async", "queue",
                                                     "topic", "schedule", "event", "call"};
static const char *const outcome_names[NB_USE_OUTCOME_N] = {"success", "error", "timeout", "oom",
                                                            "throttled"};

const char *nb_use_trigger_name(int t)
{
    return t >= 0 && t < NB_TRIG_N ? trigger_names[t] : "unknown";
}

const char *nb_use_outcome_name(int o)
{
    return o >= 0 && o < NB_USE_OUTCOME_N ? outcome_names[o] : "unknown";
}

int64_t nb_use_billed_ms(int64_t duration_us)
{
    if (duration_us <= 1000) return 1;
    return (duration_us + 999) / 1000;
}

/* ---- prices ---- */

void nb_use_prices_default(nb_use_prices *p)
{
    p->request_f = 200000000;          /* $0.20 / 1e6 = 2e-7 $ */
    p->gb_second_f = 16666700000;      /* $0.0000166667 */
    p->provisioned_gbs_f = 4166700000; /* $0.0000041667 */
    p->cpu_ms_f = 0;
}

/* A price in dollars per `per` units as femto-dollars per unit. Doubles carry 15 significant
 * digits, more than any price sheet: rounding once here is exact for them. */
static int price_of(json_t *v, double per, int64_t *out)
{
    if (!json_is_number(v)) return -1;
    double d = json_number_value(v);
    if (!(d >= 0) || d > 1e6) return -1;
    *out = (int64_t)llround(d * 1e15 / per);
    return 0;
}

int nb_use_prices_parse(nb_use_prices *p, const char *text, size_t len, nb_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        return nb_err_set(err, 400, NB_E_INVALID_JSON, "price sheet: %s",
                          j ? "not an object" : je.text);
    }
    nb_use_prices n = *p;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        int rc;
        if (strcmp(k, "request_per_million") == 0)
            rc = price_of(v, 1e6, &n.request_f);
        else if (strcmp(k, "gb_second") == 0)
            rc = price_of(v, 1, &n.gb_second_f);
        else if (strcmp(k, "provisioned_gb_second") == 0)
            rc = price_of(v, 1, &n.provisioned_gbs_f);
        else if (strcmp(k, "cpu_ms") == 0)
            rc = price_of(v, 1, &n.cpu_ms_f);
        else {
            nb_err_set(err, 400, NB_E_UNKNOWN_FIELD,
                       "price sheet: unknown key '%s' (request_per_million, gb_second, "
                       "provisioned_gb_second, cpu_ms)",
                       k);
            json_decref(j);
            return -1;
        }
        if (rc < 0) {
            nb_err_set(err, 400, NB_E_INVALID_VALUE,
                       "price sheet: '%s' must be a number of dollars, 0..1000000", k);
            json_decref(j);
            return -1;
        }
    }
    json_decref(j);
    *p = n;
    return 0;
}

void nb_use_sums_add(nb_use_sums *s, const nb_use_rec *r)
{
    if (r->kept_ms > 0) {
        s->kept_mb_ms += r->kept_ms * r->memory_mb;
        return;
    }
    if (r->outcome == NB_USE_THROTTLED) {
        s->throttles++;
        return;
    }
    s->requests++;
    s->errors += r->outcome != NB_USE_SUCCESS;
    s->cold_starts += r->cold != 0;
    s->billed_ms += r->billed_ms;
    s->duration_us += r->duration_us;
    s->cpu_us += r->cpu_us > 0 ? r->cpu_us : 0;
    s->mb_ms += r->billed_ms * r->memory_mb;
}

int64_t nb_use_cost_micro(const nb_use_sums *s, const nb_use_prices *p)
{
    /* 128 bits: a year of a 10 GB function is 3e14 MB-ms, times 1.7e10 f$ per GB-s. */
    __int128 f = (__int128)s->requests * p->request_f;
    f += (__int128)s->mb_ms * p->gb_second_f / MB_MS_PER_GBS;
    f += (__int128)s->kept_mb_ms * p->provisioned_gbs_f / MB_MS_PER_GBS;
    f += (__int128)s->cpu_us * p->cpu_ms_f / 1000;
    return (int64_t)((f + FEMTO_PER_MICRO / 2) / FEMTO_PER_MICRO);
}

/* ---- the raw window: each batch's records as one blob ---- */

/* Little-endian, whatever the host: the file outlives the binary that wrote it. memcpy and
 * htole: one store each on the invocation's path. */
static uint8_t *put64(uint8_t *p, int64_t v)
{
    uint64_t le = htole64((uint64_t)v);
    memcpy(p, &le, 8);
    return p + 8;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    uint32_t le = htole32(v);
    memcpy(p, &le, 4);
    return p + 4;
}

static int64_t get64(const uint8_t *p)
{
    uint64_t le;
    memcpy(&le, p, 8);
    return (int64_t)le64toh(le);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t le;
    memcpy(&le, p, 4);
    return le32toh(le);
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t size)
{
    size_t n = strnlen(s, size - 1);
    *p++ = (uint8_t)n;
    memcpy(p, s, n);
    return p + n;
}

_Static_assert(NB_USE_REC_MAX == NB_USE_REC_FIXED + sizeof(((nb_use_rec *)0)->request_id) - 1 +
                                     sizeof(((nb_use_rec *)0)->ns) - 1 +
                                     sizeof(((nb_use_rec *)0)->fn) - 1 +
                                     sizeof(((nb_use_rec *)0)->caller) - 1 +
                                     sizeof(((nb_use_rec *)0)->error_type) - 1,
               "NB_USE_REC_MAX is the longest encoding of a record");

/* One record at p (at most NB_USE_REC_MAX bytes); returns its end. */
static uint8_t *encode_one(const nb_use_rec *r, uint8_t *p)
{
    p = put64(p, r->start_ms);
    p = put64(p, r->duration_us);
    p = put64(p, r->billed_ms);
    p = put64(p, r->init_us);
    p = put64(p, r->cpu_us);
    p = put64(p, r->max_memory_mb);
    p = put64(p, r->version);
    p = put64(p, r->kept_ms);
    p = put32(p, (uint32_t)r->memory_mb);
    *p++ = (uint8_t)r->cold;
    *p++ = (uint8_t)r->trigger;
    *p++ = (uint8_t)r->outcome;
    p = put_str(p, r->request_id, sizeof r->request_id);
    p = put_str(p, r->ns, sizeof r->ns);
    p = put_str(p, r->fn, sizeof r->fn);
    p = put_str(p, r->caller, sizeof r->caller);
    return put_str(p, r->error_type, sizeof r->error_type);
}

static void put_header(uint8_t *blob, size_t n)
{
    memcpy(blob, NB_USE_BLOB_MAGIC, 4);
    put32(blob + 4, (uint32_t)n);
}

size_t nb_use_encode(const nb_use_rec *recs, size_t n, uint8_t *out)
{
    put_header(out, n);
    uint8_t *p = out + NB_USE_BLOB_HEADER;
    for (size_t i = 0; i < n; i++)
        p = encode_one(&recs[i], p);
    return (size_t)(p - out);
}

static const uint8_t *get_str(const uint8_t *p, const uint8_t *end, char *dst, size_t size)
{
    if (p >= end || *p >= size || (size_t)(end - p - 1) < *p) return NULL;
    size_t n = *p++;
    memcpy(dst, p, n);
    dst[n] = 0;
    return p + n;
}

int nb_use_decode(const uint8_t *blob, size_t len, nb_use_decode_cb cb, void *ud)
{
    if (len < NB_USE_BLOB_HEADER || memcmp(blob, NB_USE_BLOB_MAGIC, 4) != 0) return -1;
    uint32_t n = get32(blob + 4);
    const uint8_t *p = blob + NB_USE_BLOB_HEADER, *end = blob + len;
    for (uint32_t i = 0; i < n; i++) {
        nb_use_rec r = {0};
        if ((size_t)(end - p) < NB_USE_REC_FIXED) return -1;
        int64_t *v[] = {&r.start_ms, &r.duration_us,   &r.billed_ms, &r.init_us,
                        &r.cpu_us,   &r.max_memory_mb, &r.version,   &r.kept_ms};
        for (size_t k = 0; k < NB_ARRAY_LEN(v); k++, p += 8)
            *v[k] = get64(p);
        r.memory_mb = (int)(int32_t)get32(p);
        r.cold = p[4];
        r.trigger = p[5];
        r.outcome = p[6];
        p += 7;
        if (!(p = get_str(p, end, r.request_id, sizeof r.request_id)) ||
            !(p = get_str(p, end, r.ns, sizeof r.ns)) ||
            !(p = get_str(p, end, r.fn, sizeof r.fn)) ||
            !(p = get_str(p, end, r.caller, sizeof r.caller)) ||
            !(p = get_str(p, end, r.error_type, sizeof r.error_type)))
            return -1;
        if (cb && cb(&r, ud) != 0) return 1;
    }
    return p == end ? 0 : -1;
}

/* ---- recording ---- */

struct nb_use {
    nb_use_config cfg;
    sqlite3 *wdb; /* the writer thread's, once started */
    sqlite3_stmt *ins, *upsert, *del_old, *del_over, *del_rollup;
    /* The writer's scratch, allocated once: a batch's rollup table. */
    struct rollup_slot *slots;
    size_t nslots;
    pthread_mutex_t rmu; /* serialises queries on rdb */
    sqlite3 *rdb;

    pthread_t writer;
    pthread_mutex_t mu;  /* guards pending, the sequence numbers and the flags; never held
                            for I/O */
    pthread_cond_t wake; /* the writer waits on it (monotonic clock) */
    pthread_cond_t done; /* flushers wait on it */
    uint8_t *pending;    /* the batch, already encoded as its raw_batch blob (header filled in
                            at the swap); cap_bytes, allocated once */
    size_t npending;     /* records in it, at most max_pending */
    size_t pending_len;  /* bytes used, the header's included */
    size_t cap_bytes;    /* room for max_pending records of the longest encoding */
    uint64_t rec_seq, done_seq, flush_want;
    bool stop, exited;
    bool hold; /* tests: the writer leaves pending alone, so it can fill up */
    _Atomic int64_t dropped;

    /* The writer's alone. */
    uint8_t *writing; /* swapped with pending under mu */
    nb_use_rec *recs; /* the batch decoded, max_pending: the rollup's keys point into it */
    size_t nrecs;
    int64_t last_retain_ms, drops_logged;
};

void nb_use_record(nb_use *u, const nb_use_rec *r)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    if (u->npending >= u->cfg.max_pending) {
        pthread_mutex_unlock(&u->mu);
        atomic_fetch_add(&u->dropped, 1);
        return;
    }
    /* Encoded where the batch's blob will be: about 130 bytes, two or three cache lines, where
     * copying the struct wrote seven. */
    u->pending_len = (size_t)(encode_one(r, u->pending + u->pending_len) - u->pending);
    u->npending++;
    u->rec_seq++;
    /* Half full: commit now rather than at the second, so a burst does not fill it. */
    if (u->npending == u->cfg.max_pending / 2) pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->mu);
}

int64_t nb_use_dropped(const nb_use *u)
{
    return atomic_load(&((nb_use *)u)->dropped);
}

const nb_use_prices *nb_use_prices_of(const nb_use *u)
{
    return &u->cfg.prices;
}

/* ---- the writer ---- */

static int wexec(nb_use *u, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(u->wdb, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    nb_warn("usage", "%s: %s", sql, msg ? msg : sqlite3_errmsg(u->wdb));
    sqlite3_free(msg);
    return -1;
}

static int step_done(nb_use *u, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
    nb_warn("usage", "%s: %s", sqlite3_sql(st), sqlite3_errmsg(u->wdb));
    return -1;
}

/* One rollup row of a batch: the sums of its records sharing minute, namespace, function and
 * caller. A batch has few distinct keys however many records, so summing here first leaves
 * the database one upsert per key instead of one per record. */
struct rollup_slot {
    uint64_t hash; /* 0: empty */
    int64_t minute_ms;
    const nb_use_rec *key; /* the first record of the key: its strings */
    nb_use_sums s;
};
typedef struct rollup_slot rollup_slot;

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL; /* a separator: ("ab","c") is not ("a","bc") */
}

static bool same_key(const rollup_slot *x, int64_t minute, const nb_use_rec *r)
{
    return x->minute_ms == minute && strcmp(x->key->ns, r->ns) == 0 &&
           strcmp(x->key->fn, r->fn) == 0 && strcmp(x->key->caller, r->caller) == 0;
}

/* Sums the batch into the first *nslots of u->slots: a power of two at least twice n, so the
 * table is never full (u->slots holds 2 x max_pending). Returns the keys used. */
static size_t sum_batch(nb_use *u, const nb_use_rec *recs, size_t n, size_t *nslots)
{
    size_t size = 2, used = 0;
    while (size < 2 * n)
        size *= 2;
    size_t mask = size - 1;
    *nslots = size;
    memset(u->slots, 0, size * sizeof *u->slots);
    for (size_t i = 0; i < n; i++) {
        const nb_use_rec *r = &recs[i];
        int64_t minute = r->start_ms / 60000 * 60000;
        uint64_t h =
            fnv(fnv(fnv(0xcbf29ce484222325ULL ^ (uint64_t)minute, r->ns), r->fn), r->caller) | 1;
        size_t j = h & mask;
        while (u->slots[j].hash && (u->slots[j].hash != h || !same_key(&u->slots[j], minute, r)))
            j = (j + 1) & mask;
        rollup_slot *x = &u->slots[j];
        if (!x->hash) {
            x->hash = h;
            x->minute_ms = minute;
            x->key = r;
            used++;
        }
        nb_use_sums_add(&x->s, r);
    }
    return used;
}

static int upsert_rollup(nb_use *u, const rollup_slot *x)
{
    sqlite3_stmt *st = u->upsert;
    sqlite3_bind_int64(st, 1, x->minute_ms);
    sqlite3_bind_text(st, 2, x->key->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, x->key->fn, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, x->key->caller, -1, SQLITE_STATIC);
    const nb_use_sums *s = &x->s;
    int64_t v[] = {s->requests,    s->errors, s->throttles, s->cold_starts, s->billed_ms,
                   s->duration_us, s->mb_ms,  s->cpu_us,    s->kept_mb_ms};
    for (size_t i = 0; i < NB_ARRAY_LEN(v); i++)
        sqlite3_bind_int64(st, 5 + (int)i, v[i]);
    return step_done(u, st);
}

/* The batch as one raw_batch row: its blob as it was recorded. */
static int insert_raw(nb_use *u, const uint8_t *blob, size_t len, const nb_use_rec *recs, size_t n)
{
    int64_t first = INT64_MAX, last = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].start_ms < first) first = recs[i].start_ms;
        if (recs[i].start_ms > last) last = recs[i].start_ms;
    }
    sqlite3_stmt *st = u->ins;
    sqlite3_bind_int64(st, 1, first);
    sqlite3_bind_int64(st, 2, last);
    sqlite3_bind_int64(st, 3, (int64_t)n);
    sqlite3_bind_blob(st, 4, blob, (int)len, SQLITE_STATIC);
    return step_done(u, st);
}

static int decoded(const nb_use_rec *r, void *ud)
{
    nb_use *u = ud;
    u->recs[u->nrecs++] = *r;
    return 0;
}

static void commit_batch(nb_use *u, const uint8_t *blob, size_t len, size_t n)
{
    if (n == 0) return;
    u->nrecs = 0;
    if (nb_use_decode(blob, len, decoded, u) != 0 || u->nrecs != n) {
        nb_warn("usage", "a batch of %zu records does not decode: dropped", n); /* a bug */
        goto lost;
    }
    const nb_use_rec *recs = u->recs;
    size_t nslots;
    size_t keys = sum_batch(u, recs, n, &nslots);
    if (wexec(u, "BEGIN IMMEDIATE") < 0) goto lost;
    for (size_t j = 0; keys && j < nslots; j++) {
        if (!u->slots[j].hash) continue;
        keys--;
        if (upsert_rollup(u, &u->slots[j]) < 0) goto rollback;
    }
    if (insert_raw(u, blob, len, recs, n) < 0) goto rollback;
    if (wexec(u, "COMMIT") == 0) return;
rollback:
    wexec(u, "ROLLBACK");
lost:
    /* The disk is full or the file is broken: the records are gone, and counted as such. */
    atomic_fetch_add(&u->dropped, (int64_t)n);
}

static void retain(nb_use *u)
{
    if (wexec(u, "BEGIN IMMEDIATE") < 0) return;
    int64_t now = nb_now_ms();
    sqlite3_bind_int64(u->del_old, 1, now - u->cfg.max_age_s * 1000);
    sqlite3_bind_int64(u->del_over, 1, u->cfg.max_records);
    sqlite3_bind_int64(u->del_rollup, 1, now - u->cfg.rollup_days * 86400000);
    int ok = step_done(u, u->del_old) == 0 && step_done(u, u->del_over) == 0 &&
             step_done(u, u->del_rollup) == 0;
    wexec(u, ok ? "COMMIT" : "ROLLBACK");
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(c, m, &ts);
}

static void *writer_main(void *arg)
{
    nb_use *u = arg;
    pthread_mutex_lock(&u->mu);
    int64_t next = nb_mono_us() / 1000 + u->cfg.flush_ms;
    for (;;) {
        /* Once a period; sooner for a flush, half a batch, or close. */
        while (!u->stop) {
            int64_t now = nb_mono_us() / 1000;
            if (!u->hold && (u->flush_want > u->done_seq || u->npending >= u->cfg.max_pending / 2 ||
                             now >= next))
                break;
            timed_wait(&u->wake, &u->mu, u->hold ? now + 1000 : next);
        }
        next = nb_mono_us() / 1000 + u->cfg.flush_ms;
        uint8_t *b = u->pending;
        size_t n = u->npending, len = u->pending_len;
        put_header(b, n);
        u->pending = u->writing;
        u->writing = b;
        u->npending = 0;
        u->pending_len = NB_USE_BLOB_HEADER;
        uint64_t seq = u->rec_seq;
        bool stopping = u->stop;
        pthread_mutex_unlock(&u->mu);

        commit_batch(u, u->writing, len, n);
        int64_t now = nb_mono_us() / 1000;
        if (now - u->last_retain_ms >= RETAIN_EVERY_MS) {
            retain(u);
            u->last_retain_ms = now;
        }
        int64_t dropped = atomic_load(&u->dropped);
        if (dropped != u->drops_logged) {
            nb_warn("usage", "usage records dropped (writer behind or database failing) n=%lld",
                    (long long)(dropped - u->drops_logged));
            u->drops_logged = dropped;
        }

        pthread_mutex_lock(&u->mu);
        u->done_seq = seq;
        pthread_cond_broadcast(&u->done);
        if (stopping && u->npending == 0) break;
    }
    u->exited = true;
    pthread_cond_broadcast(&u->done);
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

void nb_use_flush(nb_use *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    uint64_t target = u->rec_seq;
    if (target > u->flush_want) u->flush_want = target;
    pthread_cond_signal(&u->wake);
    while (u->done_seq < target && !u->exited)
        pthread_cond_wait(&u->done, &u->mu);
    pthread_mutex_unlock(&u->mu);
}

/* ---- open and close ---- */

/* Migration N moves the schema from version N to N+1. Never edit a released entry: append. */
static const char *migrations[] = {
    "CREATE TABLE raw ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, start_ms INTEGER NOT NULL,"
    "  request_id TEXT NOT NULL, ns TEXT NOT NULL, fn TEXT NOT NULL, version INTEGER NOT NULL,"
    "  trigger TEXT NOT NULL, caller TEXT NOT NULL, duration_us INTEGER NOT NULL,"
    "  billed_ms INTEGER NOT NULL, memory_mb INTEGER NOT NULL, max_memory_mb INTEGER NOT NULL,"
    "  cpu_us INTEGER NOT NULL, init_us INTEGER NOT NULL, cold INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL, error_type TEXT NOT NULL);"
    "CREATE INDEX raw_start ON raw (start_ms);"
    "CREATE TABLE minute ("
    "  minute_ms INTEGER NOT NULL, ns TEXT NOT NULL, fn TEXT NOT NULL, caller TEXT NOT NULL,"
    "  requests INTEGER NOT NULL, errors INTEGER NOT NULL, throttles INTEGER NOT NULL,"
    "  cold_starts INTEGER NOT NULL, billed_ms INTEGER NOT NULL, duration_us INTEGER NOT NULL,"
    "  mb_ms INTEGER NOT NULL, cpu_us INTEGER NOT NULL, kept_mb_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (minute_ms, ns, fn, caller)) WITHOUT ROWID;",
    /* A row per record cost the writer more than the invocation it metered: the raw window
     * became a blob per batch (nb_use_encode). The old window is dropped, rollups stay. */
    "DROP TABLE raw;"
    "CREATE TABLE raw_batch (id INTEGER PRIMARY KEY AUTOINCREMENT, first_ms INTEGER NOT NULL,"
    "  last_ms INTEGER NOT NULL, n INTEGER NOT NULL, recs BLOB NOT NULL);"
    "CREATE INDEX raw_batch_last ON raw_batch (last_ms);",
};

static int db_fail(sqlite3 *db, nb_err *err, const char *what)
{
    return nb_sql_fail(db, "usage", what, err);
}

static int prepare(nb_use *u, const char *sql, sqlite3_stmt **st, nb_err *err)
{
    if (sqlite3_prepare_v3(u->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK)
        return 0;
    return db_fail(u->wdb, err, "prepare");
}

static void free_all(nb_use *u)
{
    sqlite3_finalize(u->ins);
    sqlite3_finalize(u->upsert);
    sqlite3_finalize(u->del_old);
    sqlite3_finalize(u->del_over);
    sqlite3_finalize(u->del_rollup);
    sqlite3_close(u->wdb);
    sqlite3_close(u->rdb);
    free(u->pending);
    free(u->writing);
    free(u->slots);
    free(u->recs);
    pthread_cond_destroy(&u->wake);
    pthread_cond_destroy(&u->done);
    pthread_mutex_destroy(&u->mu);
    pthread_mutex_destroy(&u->rmu);
    free(u);
}

nb_use *nb_use_open(const char *db_path, const nb_use_config *cfg, nb_err *err)
{
    nb_use *u = calloc(1, sizeof *u);
    if (!u) {
        nb_err_set(err, 500, NB_E_INTERNAL, "usage: out of memory");
        return NULL;
    }
    if (cfg) u->cfg = *cfg;
    if (u->cfg.max_records <= 0) u->cfg.max_records = DEFAULT_RECORDS;
    if (u->cfg.max_age_s <= 0) u->cfg.max_age_s = DEFAULT_AGE_S;
    if (u->cfg.rollup_days <= 0) u->cfg.rollup_days = DEFAULT_DAYS;
    if (u->cfg.flush_ms <= 0) u->cfg.flush_ms = DEFAULT_FLUSH_MS;
    if (u->cfg.max_pending < 2 || u->cfg.max_pending > NB_USE_MAX_PENDING)
        u->cfg.max_pending = NB_USE_MAX_PENDING;
    const nb_use_prices *p = &u->cfg.prices;
    if (!p->request_f && !p->gb_second_f && !p->provisioned_gbs_f && !p->cpu_ms_f)
        nb_use_prices_default(&u->cfg.prices);
    atomic_init(&u->dropped, 0);
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->rmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* nb_mono_us's clock */
    pthread_cond_init(&u->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&u->done, NULL);
    /* Both buffers up front: recording never allocates. */
    u->cap_bytes = NB_USE_BLOB_MAX(u->cfg.max_pending);
    u->pending = malloc(u->cap_bytes);
    u->writing = malloc(u->cap_bytes);
    u->pending_len = NB_USE_BLOB_HEADER;
    u->recs = calloc(u->cfg.max_pending, sizeof *u->recs);
    for (u->nslots = 1; u->nslots < 2 * u->cfg.max_pending; u->nslots *= 2)
        ;
    u->slots = calloc(u->nslots, sizeof *u->slots);
    if (!u->pending || !u->writing || !u->slots || !u->recs) {
        nb_err_set(err, 500, NB_E_INTERNAL, "usage: out of memory");
        goto fail;
    }

    if (nb_sql_open(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "usage", &u->wdb, err) < 0)
        goto fail;
    if (sqlite3_exec(u->wdb, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK) {
        db_fail(u->wdb, err, db_path);
        goto fail;
    }
    if (nb_sql_migrate(u->wdb, "usage", migrations, (int)NB_ARRAY_LEN(migrations), err) < 0)
        goto fail;
    if (prepare(u, "INSERT INTO raw_batch (first_ms, last_ms, n, recs) VALUES (?1, ?2, ?3, ?4)",
                &u->ins, err) < 0 ||
        prepare(u,
                "INSERT INTO minute (minute_ms, ns, fn, caller, requests, errors, throttles,"
                " cold_starts, billed_ms, duration_us, mb_ms, cpu_us, kept_mb_ms) VALUES (?1,"
                " ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO UPDATE SET"
                " requests = requests + excluded.requests, errors = errors + excluded.errors,"
                " throttles = throttles + excluded.throttles,"
                " cold_starts = cold_starts + excluded.cold_starts,"
                " billed_ms = billed_ms + excluded.billed_ms,"
                " duration_us = duration_us + excluded.duration_us,"
                " mb_ms = mb_ms + excluded.mb_ms, cpu_us = cpu_us + excluded.cpu_us,"
                " kept_mb_ms = kept_mb_ms + excluded.kept_mb_ms",
                &u->upsert, err) < 0 ||
        prepare(u, "DELETE FROM raw_batch WHERE last_ms < ?1", &u->del_old, err) < 0 ||
        /* Whole batches beyond the newest max_records records. */
        prepare(u,
                "DELETE FROM raw_batch WHERE id < (SELECT id FROM (SELECT id, SUM(n) OVER"
                " (ORDER BY id DESC) AS c FROM raw_batch) WHERE c >= ?1 ORDER BY id DESC"
                " LIMIT 1)",
                &u->del_over, err) < 0 ||
        prepare(u, "DELETE FROM minute WHERE minute_ms < ?1", &u->del_rollup, err) < 0)
        goto fail;
    if (nb_sql_open(db_path, SQLITE_OPEN_READWRITE, "usage", &u->rdb, err) < 0) goto fail;
    if (sqlite3_exec(u->rdb, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(u->rdb, err, db_path);
        goto fail;
    }
    if (pthread_create(&u->writer, NULL, writer_main, u) != 0) {
        nb_err_set(err, 500, NB_E_INTERNAL, "usage: cannot start the writer thread");
        goto fail;
    }
    pthread_setname_np(u->writer, "nb-usage");
    return u;
fail:
    free_all(u);
    return NULL;
}

void nb_use_close(nb_use *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    u->stop = true;
    u->hold = false;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->writer, NULL);
    free_all(u);
}

/* ---- queries ---- */

typedef struct group {
    char key[200];
    char ns[65]; /* by function: the function's namespace */
    nb_use_sums s;
    int64_t cost;
} group;

static int by_cost(const void *a, const void *b)
{
    const group *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? 1 : -1;
    if (x->s.requests != y->s.requests) return x->s.requests < y->s.requests ? 1 : -1;
    return strcmp(x->key, y->key);
}

static json_t *sums_json(const nb_use_sums *s, int64_t cost)
{
    json_t *o = json_object();
    json_object_set_new(o, "requests", json_integer(s->requests));
    json_object_set_new(o, "errors", json_integer(s->errors));
    json_object_set_new(o, "throttles", json_integer(s->throttles));
    json_object_set_new(o, "cold_starts", json_integer(s->cold_starts));
    json_object_set_new(o, "billed_ms", json_integer(s->billed_ms));
    json_object_set_new(o, "duration_ms", json_real((double)s->duration_us / 1000.0));
    json_object_set_new(o, "gb_seconds", json_real((double)s->mb_ms / MB_MS_PER_GBS));
    json_object_set_new(o, "cpu_ms", json_real((double)s->cpu_us / 1000.0));
    json_object_set_new(o, "provisioned_gb_seconds",
                        json_real((double)s->kept_mb_ms / MB_MS_PER_GBS));
    json_object_set_new(o, "cost_micro_usd", json_integer(cost));
    json_object_set_new(o, "cost_usd", json_real((double)cost / 1e6));
    return o;
}

json_t *nb_use_query(nb_use *u, const nb_use_filter *f, nb_err *err)
{
    const char *by = f->by ? f->by : "function";
    const char *keycol;
    if (strcmp(by, "function") == 0)
        keycol = "fn";
    else if (strcmp(by, "namespace") == 0)
        keycol = "ns";
    else if (strcmp(by, "key") == 0)
        keycol = "caller";
    else if (strcmp(by, "day") == 0)
        keycol = "strftime('%Y-%m-%d', minute_ms / 1000, 'unixepoch')";
    else {
        nb_err_set(err, 400, NB_E_INVALID_VALUE, "by must be function, namespace, key or day");
        return NULL;
    }
    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT %s, ns, SUM(requests), SUM(errors), SUM(throttles), SUM(cold_starts),"
             " SUM(billed_ms), SUM(duration_us), SUM(mb_ms), SUM(cpu_us), SUM(kept_mb_ms)"
             " FROM minute WHERE minute_ms >= ?1 AND minute_ms < ?2 AND (?3 IS NULL OR ns = ?3)"
             " GROUP BY %s%s LIMIT %d",
             keycol, keycol, strcmp(by, "function") == 0 ? ", ns" : "", GROUPS_MAX);
    group *g = calloc(GROUPS_MAX, sizeof *g);
    if (!g) abort();
    size_t n = 0;
    pthread_mutex_lock(&u->rmu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(u->rdb, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        /* Whole minutes: a range starts at its minute, so "since 1h" includes the minute the
         * hour began in. */
        sqlite3_bind_int64(st, 1, f->from_ms > 0 ? f->from_ms / 60000 * 60000 : 0);
        sqlite3_bind_int64(st, 2, f->to_ms > 0 ? f->to_ms : INT64_MAX);
        if (f->ns)
            sqlite3_bind_text(st, 3, f->ns, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 3);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < GROUPS_MAX) {
            group *x = &g[n++];
            const unsigned char *k = sqlite3_column_text(st, 0);
            const unsigned char *ns = sqlite3_column_text(st, 1);
            snprintf(x->key, sizeof x->key, "%s", k ? (const char *)k : "");
            snprintf(x->ns, sizeof x->ns, "%s", ns ? (const char *)ns : "");
            int64_t *v[] = {&x->s.requests,    &x->s.errors,    &x->s.throttles,
                            &x->s.cold_starts, &x->s.billed_ms, &x->s.duration_us,
                            &x->s.mb_ms,       &x->s.cpu_us,    &x->s.kept_mb_ms};
            for (size_t i = 0; i < NB_ARRAY_LEN(v); i++)
                *v[i] = sqlite3_column_int64(st, 2 + (int)i);
            x->cost = nb_use_cost_micro(&x->s, &u->cfg.prices);
        }
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        db_fail(u->rdb, err, "query");
        sqlite3_finalize(st);
        pthread_mutex_unlock(&u->rmu);
        free(g);
        return NULL;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&u->rmu);

    qsort(g, n, sizeof *g, by_cost);
    json_t *rows = json_array();
    nb_use_sums tot = {0};
    int64_t tot_cost = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = sums_json(&g[i].s, g[i].cost);
        json_object_set_new(o, by, json_string(g[i].key));
        if (strcmp(by, "function") == 0) json_object_set_new(o, "namespace", json_string(g[i].ns));
        json_array_append_new(rows, o);
        int64_t *a[] = {&tot.requests,    &tot.errors,    &tot.throttles,
                        &tot.cold_starts, &tot.billed_ms, &tot.duration_us,
                        &tot.mb_ms,       &tot.cpu_us,    &tot.kept_mb_ms};
        const int64_t *b[] = {&g[i].s.requests,    &g[i].s.errors,    &g[i].s.throttles,
                              &g[i].s.cold_starts, &g[i].s.billed_ms, &g[i].s.duration_us,
                              &g[i].s.mb_ms,       &g[i].s.cpu_us,    &g[i].s.kept_mb_ms};
        for (size_t k = 0; k < NB_ARRAY_LEN(a); k++)
            *a[k] += *b[k];
        tot_cost += g[i].cost; /* the rows' rounded figures: the total is exactly their sum */
    }
    json_t *t = sums_json(&tot, tot_cost);
    json_object_set_new(t, by, json_string("TOTAL"));
    json_object_set_new(t, "total", json_true());
    json_array_append_new(rows, t);
    free(g);
    return rows;
}

/* ---- recent invocations ---- */

typedef struct recent {
    const char *ns, *fn;
    nb_use_rec *found; /* this batch's matches, oldest first */
    size_t n, cap;
} recent;

static int recent_match(const nb_use_rec *r, void *ud)
{
    recent *x = ud;
    if (r->kept_ms > 0 || strcmp(r->fn, x->fn) != 0 || strcmp(r->ns, x->ns) != 0) return 0;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        nb_use_rec *f = realloc(x->found, cap * sizeof *f);
        if (!f) abort();
        x->found = f;
        x->cap = cap;
    }
    x->found[x->n++] = *r;
    return 0;
}

static json_t *rec_json(const nb_use_rec *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "request_id", json_string(r->request_id));
    json_object_set_new(o, "start_ms", json_integer(r->start_ms));
    json_object_set_new(o, "version", json_integer(r->version));
    json_object_set_new(o, "trigger", json_string(nb_use_trigger_name(r->trigger)));
    json_object_set_new(o, "caller", json_string(r->caller));
    json_object_set_new(o, "duration_ms", json_real((double)r->duration_us / 1000.0));
    json_object_set_new(o, "billed_ms", json_integer(r->billed_ms));
    json_object_set_new(o, "memory_mb", json_integer(r->memory_mb));
    json_object_set_new(o, "max_memory_mb", json_integer(r->max_memory_mb));
    json_object_set_new(o, "cpu_ms",
                        r->cpu_us >= 0 ? json_real((double)r->cpu_us / 1000.0) : json_null());
    json_object_set_new(o, "init_ms", json_real((double)r->init_us / 1000.0));
    json_object_set_new(o, "cold", json_boolean(r->cold));
    json_object_set_new(o, "outcome", json_string(nb_use_outcome_name(r->outcome)));
    json_object_set_new(o, "error_type", json_string(r->error_type));
    return o;
}

json_t *nb_use_recent(nb_use *u, const char *ns, const char *fn, int limit, nb_err *err)
{
    if (limit < 1 || limit > 500) {
        nb_err_set(err, 400, NB_E_INVALID_VALUE, "limit must be 1..500");
        return NULL;
    }
    json_t *list = json_array();
    recent x = {.ns = ns, .fn = fn};
    pthread_mutex_lock(&u->rmu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(u->rdb, "SELECT recs FROM raw_batch ORDER BY id DESC LIMIT 64", -1,
                                &st, NULL);
    while (rc == SQLITE_OK && (int)json_array_size(list) < limit) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) break;
        if (step != SQLITE_ROW) {
            rc = step;
            break;
        }
        x.n = 0;
        /* A damaged blob gives what decoded before the damage; the rest of the window stays
         * readable. */
        nb_use_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), recent_match,
                      &x);
        for (size_t i = x.n; i-- > 0 && (int)json_array_size(list) < limit;)
            json_array_append_new(list, rec_json(&x.found[i]));
    }
    if (rc != SQLITE_OK) {
        db_fail(u->rdb, err, "recent invocations");
        json_decref(list);
        list = NULL;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&u->rmu);
    free(x.found);
    if (!list) return NULL;
    json_t *o = json_object();
    json_object_set_new(o, "invocations", list);
    return o;
}
