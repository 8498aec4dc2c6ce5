/* The access log: any thread appends to one pending batch under a short mutex; one writer
 * thread swaps the batch out and commits it to SQLite without holding that mutex; queries
 * use a second connection, so WAL lets them read while the writer writes. */
#include "gateway/alog.h"

#include "base/log.h"
#include "base/util.h"
#include "store/sqlite_util.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_MAX       ((size_t)64 << 20) /* string bytes of one pending batch */
#define ARENA_KEEP      ((size_t)4 << 20)  /* a drained batch keeps at most this much */
#define RECS_KEEP       8192
#define BATCH_WAIT_MS   100  /* how long a record may wait for its commit */
#define RETAIN_EVERY_MS 1000 /* retention queries at most this often, except on flush */
#define IDLE_RETAIN_MS  60000
#define QUERY_MAX       10000
#define USAGE_MAX       10000 /* groups */
#define DEFAULT_RECORDS 1000000
#define DEFAULT_AGE_S   (7 * 86400)

/* The record's strings, in the INSERT's column order. */
enum {
    F_NS,
    F_API,
    F_ROUTE,
    F_METHOD,
    F_PATH,
    F_CONSUMER,
    F_KIND,
    F_RID,
    F_IP,
    F_ERR,
    F_BODY,
    F_N
};

typedef struct pend_rec {
    int64_t time_ms, latency_us, bytes_in, bytes_out;
    int status, cold, has_body;
    uint32_t off[F_N], len[F_N]; /* into the batch's arena */
} pend_rec;

typedef struct batch {
    pend_rec *recs;
    size_t n, cap;
    char *arena;
    size_t used, size;
} batch;

struct nb_alog {
    nb_alog_limits lim;
    sqlite3 *wdb; /* the writer thread's, once started */
    sqlite3_stmt *ins, *first_recent, *del_below, *del_all, *max_id;
    pthread_mutex_t rmu; /* serialises queries on rdb */
    sqlite3 *rdb;

    pthread_t writer;
    pthread_mutex_t mu;  /* guards pending, the sequence numbers and the flags; never held
                            for I/O */
    pthread_cond_t wake; /* the writer waits on it (monotonic clock) */
    pthread_cond_t done; /* flushers wait on it */
    batch pending;
    uint64_t rec_seq;    /* records accepted so far */
    uint64_t done_seq;   /* records committed (or given up on) so far */
    uint64_t flush_want; /* a flusher waits for done_seq to reach this */
    bool stop, exited;
    bool hold; /* tests: the writer leaves pending alone, so it can fill up */

    _Atomic int64_t dropped;

    /* The writer's alone. */
    batch writing;          /* swapped with pending under mu */
    int64_t last_retain_ms; /* 0 makes the writer apply retention at start */
    int64_t drops_logged;
};

static int64_t mono_ms(void)
{
    return nb_mono_us() / 1000;
}

/* ---- recording ---- */

static int batch_reserve(batch *b, size_t bytes)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        if (cap > NB_ALOG_MAX_PENDING) cap = NB_ALOG_MAX_PENDING;
        pend_rec *r = realloc(b->recs, cap * sizeof *r);
        if (!r) return -1;
        b->recs = r;
        b->cap = cap;
    }
    if (b->used + bytes > b->size) {
        size_t size = b->size ? b->size : 64 << 10;
        while (size < b->used + bytes)
            size *= 2;
        if (size > ARENA_MAX) size = ARENA_MAX;
        char *p = realloc(b->arena, size);
        if (!p) return -1;
        b->arena = p;
        b->size = size;
    }
    return 0;
}

static void batch_drain(batch *b)
{
    b->n = 0;
    b->used = 0;
    /* A burst may have grown the batch a lot; do not keep that much forever. */
    if (b->size > ARENA_KEEP) {
        free(b->arena);
        b->arena = NULL;
        b->size = 0;
    }
    if (b->cap > RECS_KEEP) {
        free(b->recs);
        b->recs = NULL;
        b->cap = 0;
    }
}

static void batch_free(batch *b)
{
    free(b->recs);
    free(b->arena);
}

void nb_alog_record(nb_alog *a, const nb_alog_rec *r)
{
    const char *s[F_N] = {r->ns,        r->api,        r->route,         r->method,
                          r->path,      r->consumer,   r->consumer_kind, r->request_id,
                          r->source_ip, r->error_code, r->body};
    size_t len[F_N], total = 0;
    for (int i = 0; i < F_N; i++) {
        if (i == F_BODY)
            len[i] = s[i] ? r->body_len : 0;
        else
            len[i] = s[i] ? strlen(s[i]) : 0;
        total += len[i];
    }
    if (total > ARENA_MAX) { /* also keeps every offset and length within 32 bits */
        atomic_fetch_add(&a->dropped, 1);
        return;
    }

    pthread_mutex_lock(&a->mu);
    batch *b = &a->pending;
    if (b->n >= NB_ALOG_MAX_PENDING || b->used + total > ARENA_MAX || batch_reserve(b, total) < 0) {
        pthread_mutex_unlock(&a->mu);
        atomic_fetch_add(&a->dropped, 1);
        return;
    }
    pend_rec *p = &b->recs[b->n++];
    p->time_ms = r->time_ms;
    p->latency_us = r->latency_us;
    p->bytes_in = r->bytes_in;
    p->bytes_out = r->bytes_out;
    p->status = r->status;
    p->cold = r->cold != 0;
    p->has_body = r->body != NULL;
    for (int i = 0; i < F_N; i++) {
        p->off[i] = (uint32_t)b->used;
        p->len[i] = (uint32_t)len[i];
        if (len[i]) memcpy(b->arena + b->used, s[i], len[i]);
        b->used += len[i];
    }
    a->rec_seq++;
    /* The writer sleeps while nothing is pending, and hurries when half the cap is used. */
    if (b->n == 1 || b->n == NB_ALOG_MAX_PENDING / 2) pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
}

int64_t nb_alog_dropped(const nb_alog *a)
{
    return atomic_load(&((nb_alog *)a)->dropped);
}

/* ---- the writer ---- */

static int wexec(nb_alog *a, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(a->wdb, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    nb_warn("alog", "%s: %s", sql, msg ? msg : sqlite3_errmsg(a->wdb));
    sqlite3_free(msg);
    return -1;
}

static int step_done(nb_alog *a, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
    nb_warn("alog", "%s: %s", sqlite3_sql(st), sqlite3_errmsg(a->wdb));
    return -1;
}

static void commit_batch(nb_alog *a, batch *b)
{
    if (b->n == 0) return;
    if (wexec(a, "BEGIN IMMEDIATE") < 0) goto lost;
    sqlite3_stmt *st = a->ins;
    for (size_t i = 0; i < b->n; i++) {
        const pend_rec *p = &b->recs[i];
        /* Column numbers: time_ms first, then the strings and numbers in table order. */
        static const int col[F_N] = {2, 3, 4, 5, 6, 9, 10, 11, 12, 16, 17};
        sqlite3_bind_int64(st, 1, p->time_ms);
        for (int f = 0; f < F_N; f++) {
            /* A zero-length value still needs a non-NULL pointer, or it is bound as NULL. */
            const char *v = p->len[f] ? b->arena + p->off[f] : "";
            if (f == F_BODY && !p->has_body)
                sqlite3_bind_null(st, col[f]);
            else if (f == F_BODY)
                sqlite3_bind_blob(st, col[f], v, (int)p->len[f], SQLITE_STATIC);
            else
                sqlite3_bind_text(st, col[f], v, (int)p->len[f], SQLITE_STATIC);
        }
        sqlite3_bind_int(st, 7, p->status);
        sqlite3_bind_int64(st, 8, p->latency_us);
        sqlite3_bind_int64(st, 13, p->bytes_in);
        sqlite3_bind_int64(st, 14, p->bytes_out);
        sqlite3_bind_int(st, 15, p->cold);
        if (step_done(a, st) < 0) {
            wexec(a, "ROLLBACK");
            goto lost;
        }
    }
    if (wexec(a, "COMMIT") == 0) return;
    wexec(a, "ROLLBACK");
lost:
    /* The disk is full or the file is broken: the records are gone, and counted as such. */
    atomic_fetch_add(&a->dropped, (int64_t)b->n);
}

/* Deletes by id ranges only: ids grow with arrival, so both limits cut a prefix of the table.
 * The age cut stops at the first recent record, so an old record logged after a recent one
 * (a very slow request) stays until the records before it have gone: never the reverse. */
static void retain(nb_alog *a)
{
    if (wexec(a, "BEGIN IMMEDIATE") < 0) return;
    int ok = 1;
    sqlite3_bind_int64(a->first_recent, 1, nb_now_ms() - a->lim.max_age_s * 1000);
    int rc = sqlite3_step(a->first_recent);
    if (rc == SQLITE_ROW) {
        sqlite3_bind_int64(a->del_below, 1, sqlite3_column_int64(a->first_recent, 0));
        sqlite3_reset(a->first_recent);
        ok = step_done(a, a->del_below) == 0;
    } else {
        sqlite3_reset(a->first_recent);
        ok = rc == SQLITE_DONE && step_done(a, a->del_all) == 0;
    }
    if (ok && sqlite3_step(a->max_id) == SQLITE_ROW &&
        sqlite3_column_type(a->max_id, 0) != SQLITE_NULL) {
        int64_t max = sqlite3_column_int64(a->max_id, 0);
        sqlite3_reset(a->max_id);
        sqlite3_bind_int64(a->del_below, 1, max - a->lim.max_records + 1);
        ok = step_done(a, a->del_below) == 0;
    } else {
        sqlite3_reset(a->max_id);
    }
    wexec(a, ok ? "COMMIT" : "ROLLBACK");
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(c, m, &ts);
}

static void *writer_main(void *arg)
{
    nb_alog *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        /* A batch is committed BATCH_WAIT_MS after its first record, or at once on a flush
         * request, at half the cap, or at close. */
        int64_t deadline = 0;
        while (!a->stop) {
            if (a->hold || (a->pending.n == 0 && a->flush_want <= a->done_seq)) {
                deadline = 0;
                /* Idle: records still age out, through an empty batch, once a minute. */
                int64_t now = mono_ms();
                if (!a->hold && now - a->last_retain_ms >= IDLE_RETAIN_MS) break;
                timed_wait(&a->wake, &a->mu, now + IDLE_RETAIN_MS);
                continue;
            }
            if (a->flush_want > a->done_seq || a->pending.n >= NB_ALOG_MAX_PENDING / 2) break;
            int64_t now = mono_ms();
            if (!deadline) deadline = now + BATCH_WAIT_MS;
            if (now >= deadline) break;
            timed_wait(&a->wake, &a->mu, deadline);
        }
        if (a->stop && a->pending.n == 0) break;
        batch b = a->pending;
        a->pending = a->writing;
        a->writing = b;
        uint64_t seq = a->rec_seq;
        bool flushing = a->flush_want > a->done_seq || a->stop;
        pthread_mutex_unlock(&a->mu);

        commit_batch(a, &a->writing);
        batch_drain(&a->writing);
        int64_t now = mono_ms();
        if (flushing || now - a->last_retain_ms >= RETAIN_EVERY_MS) {
            retain(a);
            a->last_retain_ms = now;
        }
        int64_t dropped = atomic_load(&a->dropped);
        if (dropped != a->drops_logged) {
            nb_warn("alog", "access records dropped (writer behind or database failing) n=%lld",
                    (long long)(dropped - a->drops_logged));
            a->drops_logged = dropped;
        }

        pthread_mutex_lock(&a->mu);
        a->done_seq = seq;
        pthread_cond_broadcast(&a->done);
    }
    a->done_seq = a->rec_seq;
    a->exited = true;
    pthread_cond_broadcast(&a->done);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

void nb_alog_flush(nb_alog *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t target = a->rec_seq;
    if (target > a->flush_want) a->flush_want = target;
    pthread_cond_signal(&a->wake);
    while (a->done_seq < target && !a->exited)
        pthread_cond_wait(&a->done, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

/* ---- open and close ---- */

/* Migration N moves the schema from version N to N+1. Never edit a released entry: append. */
static const char *migrations[] = {
    /* AUTOINCREMENT: an id is never reused even when retention empties the table, so a
     * follower's after_id never skips records. */
    "CREATE TABLE access ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,"
    "  ns TEXT NOT NULL, api TEXT NOT NULL, route TEXT NOT NULL, method TEXT NOT NULL,"
    "  path TEXT NOT NULL, status INTEGER NOT NULL, latency_us INTEGER NOT NULL,"
    "  consumer TEXT NOT NULL, consumer_kind TEXT NOT NULL, request_id TEXT NOT NULL,"
    "  source_ip TEXT NOT NULL, bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL,"
    "  cold INTEGER NOT NULL, error_code TEXT NOT NULL, body BLOB);"
    "CREATE INDEX access_api_id ON access (ns, api, id);"
    "CREATE INDEX access_api_time ON access (ns, api, time_ms);",
};

static int db_fail(sqlite3 *db, nb_err *err, const char *what)
{
    return nb_sql_fail(db, "access log", what, err);
}

static int prepare(nb_alog *a, const char *sql, sqlite3_stmt **st, nb_err *err)
{
    if (sqlite3_prepare_v3(a->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK)
        return 0;
    return db_fail(a->wdb, err, "prepare");
}

static void free_all(nb_alog *a)
{
    sqlite3_finalize(a->ins);
    sqlite3_finalize(a->first_recent);
    sqlite3_finalize(a->del_below);
    sqlite3_finalize(a->del_all);
    sqlite3_finalize(a->max_id);
    sqlite3_close(a->wdb);
    sqlite3_close(a->rdb);
    batch_free(&a->pending);
    batch_free(&a->writing);
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->done);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->rmu);
    free(a);
}

nb_alog *nb_alog_open(const char *db_path, const nb_alog_limits *lim, nb_err *err)
{
    nb_alog *a = calloc(1, sizeof *a);
    if (!a) {
        nb_err_set(err, 500, NB_E_INTERNAL, "access log: out of memory");
        return NULL;
    }
    a->lim.max_records = lim && lim->max_records > 0 ? lim->max_records : DEFAULT_RECORDS;
    a->lim.max_age_s = lim && lim->max_age_s > 0 ? lim->max_age_s : DEFAULT_AGE_S;
    atomic_init(&a->dropped, 0);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->rmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* nb_mono_us's clock */
    pthread_cond_init(&a->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&a->done, NULL);

    if (nb_sql_open(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "access log", &a->wdb,
                    err) < 0)
        goto fail;
    if (sqlite3_exec(a->wdb, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK) {
        db_fail(a->wdb, err, db_path);
        goto fail;
    }
    if (nb_sql_migrate(a->wdb, "access log", migrations, (int)NB_ARRAY_LEN(migrations), err) < 0)
        goto fail;
    if (prepare(a,
                "INSERT INTO access (time_ms, ns, api, route, method, path, status, latency_us,"
                " consumer, consumer_kind, request_id, source_ip, bytes_in, bytes_out, cold,"
                " error_code, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                " ?13, ?14, ?15, ?16, ?17)",
                &a->ins, err) < 0 ||
        prepare(a, "SELECT id FROM access WHERE time_ms >= ?1 ORDER BY id LIMIT 1",
                &a->first_recent, err) < 0 ||
        prepare(a, "DELETE FROM access WHERE id < ?1", &a->del_below, err) < 0 ||
        prepare(a, "DELETE FROM access", &a->del_all, err) < 0 ||
        prepare(a, "SELECT MAX(id) FROM access", &a->max_id, err) < 0)
        goto fail;
    if (nb_sql_open(db_path, SQLITE_OPEN_READWRITE, "access log", &a->rdb, err) < 0) goto fail;
    if (sqlite3_exec(a->rdb, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(a->rdb, err, db_path);
        goto fail;
    }
    if (pthread_create(&a->writer, NULL, writer_main, a) != 0) {
        nb_err_set(err, 500, NB_E_INTERNAL, "access log: cannot start the writer thread");
        goto fail;
    }
    pthread_setname_np(a->writer, "nb-alog");
    return a;
fail:
    free_all(a);
    return NULL;
}

void nb_alog_close(nb_alog *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    a->hold = false;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->writer, NULL);
    free_all(a);
}

/* ---- queries ---- */

/* A text column as a JSON string. Paths and headers come from the network, so bytes that are
 * not UTF-8 become '?' rather than losing the field. */
static json_t *text_json(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    if (!s) return json_string("");
    if (nb_utf8_valid((const char *)s, n)) return json_stringn_nocheck((const char *)s, n);
    char *fixed = malloc(n ? n : 1);
    if (!fixed) abort();
    size_t o = 0;
    for (size_t i = 0, k; i < n; i += k) {
        k = nb_utf8_seq(s + i, n - i);
        if (k) {
            memcpy(fixed + o, s + i, k);
            o += k;
        } else {
            fixed[o++] = '?';
            k = 1;
        }
    }
    json_t *j = json_stringn_nocheck(fixed, o);
    free(fixed);
    return j;
}

static json_t *base64_json(const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out) abort();
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    json_t *j = json_stringn_nocheck(out, o);
    free(out);
    return j;
}

#define QUERY_COLS                                                                                 \
    "id, time_ms, api, route, method, path, status, latency_us, consumer, consumer_kind,"          \
    " request_id, source_ip, bytes_in, bytes_out, cold, error_code, body"

static json_t *row_json(sqlite3_stmt *st)
{
    json_t *o = json_object();
    char time[32];
    nb_time_iso8601(sqlite3_column_int64(st, 1), time, sizeof time);
    json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
    json_object_set_new(o, "time", json_string(time));
    json_object_set_new(o, "api", text_json(st, 2));
    json_object_set_new(o, "route", text_json(st, 3));
    json_object_set_new(o, "method", text_json(st, 4));
    json_object_set_new(o, "path", text_json(st, 5));
    json_object_set_new(o, "status", json_integer(sqlite3_column_int(st, 6)));
    json_object_set_new(o, "latency_ms", json_real((double)sqlite3_column_int64(st, 7) / 1000.0));
    json_object_set_new(o, "consumer", text_json(st, 8));
    json_object_set_new(o, "consumer_kind", text_json(st, 9));
    json_object_set_new(o, "request_id", text_json(st, 10));
    json_object_set_new(o, "source_ip", text_json(st, 11));
    json_object_set_new(o, "bytes_in", json_integer(sqlite3_column_int64(st, 12)));
    json_object_set_new(o, "bytes_out", json_integer(sqlite3_column_int64(st, 13)));
    json_object_set_new(o, "cold_start", json_boolean(sqlite3_column_int(st, 14)));
    json_object_set_new(o, "error_code", text_json(st, 15));
    if (sqlite3_column_type(st, 16) != SQLITE_NULL) {
        const unsigned char *b = sqlite3_column_blob(st, 16);
        size_t n = (size_t)sqlite3_column_bytes(st, 16);
        if (!b) b = (const unsigned char *)"";
        if (nb_utf8_valid((const char *)b, n)) {
            json_object_set_new(o, "body", json_stringn_nocheck((const char *)b, n));
        } else {
            json_object_set_new(o, "body", base64_json(b, n));
            json_object_set_new(o, "body_base64", json_true());
        }
    }
    return o;
}

static int check_filter(const nb_alog_filter *f, nb_err *err)
{
    if (!f || !f->ns) return nb_err_set(err, 400, NB_E_INVALID_VALUE, "a namespace is required");
    if (f->status_class < 0 || f->status_class > 5)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "status class must be 1xx..5xx");
    return 0;
}

/* The conditions of f, as SQL with ?1 ns, ?2 api, ?3 since_ms. */
static void where_common(char *sql, size_t size, const nb_alog_filter *f)
{
    size_t n = strlen(sql);
    snprintf(sql + n, size - n, " WHERE ns = ?1%s%s", f->api ? " AND api = ?2" : "",
             f->since_ms > 0 ? " AND time_ms >= ?3" : "");
}

static void bind_common(sqlite3_stmt *st, const nb_alog_filter *f)
{
    sqlite3_bind_text(st, 1, f->ns, -1, SQLITE_STATIC);
    if (f->api) sqlite3_bind_text(st, 2, f->api, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, f->since_ms);
}

json_t *nb_alog_query(nb_alog *a, const nb_alog_filter *f, int64_t *last_id, nb_err *err)
{
    if (check_filter(f, err) < 0) return NULL;
    int limit = f->limit <= 0 ? 100 : f->limit > QUERY_MAX ? QUERY_MAX : f->limit;
    char sql[768] = "SELECT " QUERY_COLS " FROM access";
    where_common(sql, sizeof sql, f);
    size_t n = strlen(sql);
    /* Newest first so LIMIT keeps the last records; the array is reversed below. */
    snprintf(sql + n, sizeof sql - n, "%s%s%s ORDER BY id DESC LIMIT ?8",
             f->status ? " AND status = ?4" : "",
             !f->status && f->status_class ? " AND status BETWEEN ?5 AND ?6" : "",
             f->after_id > 0 ? " AND id > ?7" : "");

    json_t **rows = malloc((size_t)limit * sizeof *rows);
    if (!rows) abort();
    size_t count = 0;
    int64_t max_id = f->after_id;
    pthread_mutex_lock(&a->rmu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->rdb, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_common(st, f);
        sqlite3_bind_int(st, 4, f->status);
        sqlite3_bind_int(st, 5, f->status_class * 100);
        sqlite3_bind_int(st, 6, f->status_class * 100 + 99);
        sqlite3_bind_int64(st, 7, f->after_id);
        sqlite3_bind_int(st, 8, limit);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (count == (size_t)limit) { /* LIMIT makes this unreachable; rows is sized */
                rc = SQLITE_DONE;
                break;
            }
            int64_t id = sqlite3_column_int64(st, 0);
            if (id > max_id) max_id = id;
            rows[count++] = row_json(st);
        }
    }
    if (rc != SQLITE_DONE) db_fail(a->rdb, err, "query");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&a->rmu);

    json_t *arr = NULL;
    if (rc == SQLITE_DONE) {
        arr = json_array();
        for (size_t i = count; i > 0; i--)
            json_array_append_new(arr, rows[i - 1]);
        if (last_id) *last_id = max_id;
    } else {
        for (size_t i = 0; i < count; i++)
            json_decref(rows[i]);
    }
    free(rows);
    return arr;
}

json_t *nb_alog_usage(nb_alog *a, const nb_alog_filter *f, const char *by, nb_err *err)
{
    if (check_filter(f, err) < 0) return NULL;
    static const struct {
        const char *by, *expr;
    } groups[] = {
        {"key", "consumer"},  {"route", "route"},
        {"status", "status"}, {"day", "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')"},
        {"api", "api"},
    };
    const char *expr = NULL;
    for (size_t i = 0; i < NB_ARRAY_LEN(groups) && by; i++)
        if (strcmp(by, groups[i].by) == 0) expr = groups[i].expr;
    if (!expr) {
        nb_err_set(err, 400, NB_E_INVALID_VALUE,
                   "usage is grouped by key, route, status, day or api");
        return NULL;
    }

    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT %s AS g, COUNT(*) AS n, SUM(status BETWEEN 400 AND 499), SUM(status >= 500),"
             " SUM(bytes_in), SUM(bytes_out), AVG(latency_us), MAX(latency_us) FROM access",
             expr);
    where_common(sql, sizeof sql, f);
    size_t n = strlen(sql);
    snprintf(sql + n, sizeof sql - n, " GROUP BY g ORDER BY n DESC, g LIMIT %d", USAGE_MAX);

    json_t *arr = json_array();
    pthread_mutex_lock(&a->rmu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->rdb, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_common(st, f);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            json_t *o = json_object();
            json_object_set_new(o, by,
                                strcmp(by, "status") == 0
                                    ? json_integer(sqlite3_column_int64(st, 0))
                                    : text_json(st, 0));
            json_object_set_new(o, "requests", json_integer(sqlite3_column_int64(st, 1)));
            json_object_set_new(o, "errors_4xx", json_integer(sqlite3_column_int64(st, 2)));
            json_object_set_new(o, "errors_5xx", json_integer(sqlite3_column_int64(st, 3)));
            json_object_set_new(o, "bytes_in", json_integer(sqlite3_column_int64(st, 4)));
            json_object_set_new(o, "bytes_out", json_integer(sqlite3_column_int64(st, 5)));
            json_object_set_new(o, "latency_ms_avg",
                                json_real(sqlite3_column_double(st, 6) / 1000.0));
            json_object_set_new(o, "latency_ms_max",
                                json_real((double)sqlite3_column_int64(st, 7) / 1000.0));
            json_array_append_new(arr, o);
        }
    }
    if (rc != SQLITE_DONE) {
        db_fail(a->rdb, err, "usage");
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&a->rmu);
    return arr;
}
