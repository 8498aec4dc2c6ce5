#include "logs/logs.h"

#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NB_LOGS_PENDING_MAX (1u << 20)

typedef struct log_file {
    char key[2 * 65 + 2]; /* "ns/fn" */
    int fd;
    size_t size;    /* on disk plus pending */
    nb_buf pending; /* records not yet written: one write(2) per loop turn, not per line */
    int64_t used;   /* LRU clock */
} log_file;

/* A follower. Lives in the hub (any loop's records reach it) and is delivered to on the loop
 * of the nb_logs it subscribed through. */
struct nb_logs_sub {
    char key[2 * 65 + 2];
    nb_logs_cb cb;
    void *ud;
    nb_logs *owner;
    nb_buf pending; /* records waiting for the owner's loop; guarded by hub_mu */
    nb_logs_sub *next;
};

struct nb_logs {
    char dir[PATH_MAX];
    size_t cap;
    /* Guards files and rec. Taken by this loop for every append and flush (uncontended), and
     * by a reader on another loop that flushes this loop's pending records before reading. */
    pthread_mutex_t mu;
    log_file files[NB_LOGS_OPEN_FDS];
    int64_t clock;
    unsigned rot_seen; /* rotations seen: another loop's rotation means reopening */
    nb_buf rec;      /* the record being appended, reused: this runs several times per invocation */
    uv_async_t wake; /* records for this loop's followers */
    int has_wake;
    nb_logs *next_all;
};

/* Process-wide: every nb_logs (readers flush them all), the followers, and rotations (one at
 * a time, so two loops never both rotate a file). The hub's mutex is only taken while someone
 * follows: hub_subs is checked first. */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER; /* all_logs; never held with l->mu */
static nb_logs *all_logs;
static pthread_mutex_t hub_mu = PTHREAD_MUTEX_INITIALIZER; /* after l->mu when both */
static nb_logs_sub *hub;
static atomic_int hub_subs;
static pthread_mutex_t rot_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint rotations;

nb_logs *nb_logs_new(const char *dir, size_t cap)
{
    nb_logs *l = calloc(1, sizeof *l);
    if (!l) abort();
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    l->cap = cap ? cap : NB_LOGS_DEFAULT_CAP;
    nb_buf_init(&l->rec, 8 * NB_LOGS_LINE_MAX);
    pthread_mutex_init(&l->mu, NULL);
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        l->files[i].fd = -1;
        nb_buf_init(&l->files[i].pending, NB_LOGS_PENDING_MAX);
    }
    l->rot_seen = atomic_load(&rotations);
    pthread_mutex_lock(&all_mu);
    l->next_all = all_logs;
    all_logs = l;
    pthread_mutex_unlock(&all_mu);
    return l;
}

static void deliver_pending(uv_async_t *a)
{
    nb_logs *l = a->data;
    /* Swapped out under the hub's mutex, handed to the callbacks without it (they may
     * unsubscribe). One sub at a time: a callback may free the sub it is called for. */
    for (;;) {
        nb_buf got = {0};
        nb_logs_sub *found = NULL;
        pthread_mutex_lock(&hub_mu);
        for (nb_logs_sub *s = hub; s; s = s->next) {
            if (s->owner == l && s->pending.len) {
                found = s;
                got = s->pending;
                nb_buf_init(&s->pending, got.max);
                break;
            }
        }
        pthread_mutex_unlock(&hub_mu);
        if (!found) return;
        found->cb(found->ud, got.data, got.len);
        nb_buf_free(&got);
    }
}

void nb_logs_attach(nb_logs *l, uv_loop_t *loop)
{
    uv_async_init(loop, &l->wake, deliver_pending);
    l->wake.data = l;
    uv_unref((uv_handle_t *)&l->wake);
    l->has_wake = 1;
}

void nb_logs_detach(nb_logs *l)
{
    if (l->has_wake) uv_close((uv_handle_t *)&l->wake, NULL);
    l->has_wake = 0;
}

static void flush_file(log_file *f)
{
    size_t off = 0;
    while (f->fd >= 0 && off < f->pending.len) {
        ssize_t w = write(f->fd, f->pending.data + off, f->pending.len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            nb_warn("logs", "write %s: %s", f->key, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    nb_buf_reset(&f->pending);
    /* Other loops append to the same file: the size that decides rotation is the file's,
     * taken once per batch, not the sum of this loop's own writes. */
    struct stat st;
    if (f->fd >= 0 && fstat(f->fd, &st) == 0) f->size = (size_t)st.st_size;
}

static void flush_locked(nb_logs *l)
{
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++)
        if (l->files[i].pending.len) flush_file(&l->files[i]);
}

void nb_logs_flush(nb_logs *l)
{
    pthread_mutex_lock(&l->mu);
    flush_locked(l);
    pthread_mutex_unlock(&l->mu);
}

/* Every loop's pending records on disk: what a reader must see. */
static void flush_all(void)
{
    pthread_mutex_lock(&all_mu);
    for (nb_logs *l = all_logs; l; l = l->next_all)
        nb_logs_flush(l);
    pthread_mutex_unlock(&all_mu);
}

void nb_logs_free(nb_logs *l)
{
    if (!l) return;
    pthread_mutex_lock(&all_mu);
    for (nb_logs **p = &all_logs; *p; p = &(*p)->next_all) {
        if (*p == l) {
            *p = l->next_all;
            break;
        }
    }
    pthread_mutex_unlock(&all_mu);
    nb_logs_flush(l);
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        if (l->files[i].fd >= 0) close(l->files[i].fd);
        nb_buf_free(&l->files[i].pending);
    }
    nb_buf_free(&l->rec);
    pthread_mutex_lock(&hub_mu);
    for (nb_logs_sub **p = &hub; *p;) {
        nb_logs_sub *sub = *p;
        if (sub->owner == l) {
            *p = sub->next;
            nb_buf_free(&sub->pending);
            free(sub);
            atomic_fetch_sub(&hub_subs, 1);
        } else {
            p = &sub->next;
        }
    }
    pthread_mutex_unlock(&hub_mu);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void path_of(const nb_logs *l, const char *key, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.log%s", l->dir, key, suffix);
}

/* Another loop rotated a file: this loop's fds may point at the predecessor now. Rotations
 * are rare, so every fd is closed and reopened on demand. */
static void check_rotations(nb_logs *l)
{
    unsigned r = atomic_load_explicit(&rotations, memory_order_acquire);
    if (r == l->rot_seen) return;
    l->rot_seen = r;
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        if (l->files[i].fd < 0) continue;
        flush_file(&l->files[i]);
        close(l->files[i].fd);
        l->files[i].fd = -1;
    }
}

static log_file *open_file(nb_logs *l, const char *ns, const char *key)
{
    check_rotations(l);
    log_file *victim = &l->files[0];
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        log_file *f = &l->files[i];
        if (f->fd >= 0 && strcmp(f->key, key) == 0) {
            f->used = ++l->clock;
            return f;
        }
        if (f->fd < 0 || f->used < victim->used) victim = f;
    }
    flush_file(victim);
    if (victim->fd >= 0) close(victim->fd);
    victim->fd = -1;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", l->dir, ns);
    if (nb_mkdir_p(path, 0700) < 0) return NULL;
    path_of(l, key, "", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return NULL;
    struct stat st;
    victim->size = fstat(fd, &st) == 0 ? (size_t)st.st_size : 0;
    victim->fd = fd;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->used = ++l->clock;
    return victim;
}

/* Several loops append to the same file, each with its own fd and its own idea of the size:
 * the size is re-read from the file before rotating, under a process-wide mutex, so only one
 * loop rotates and the others reopen (check_rotations). */
static void rotate(nb_logs *l, log_file *f, size_t adding)
{
    char cur[PATH_MAX], old[PATH_MAX];
    path_of(l, f->key, "", cur, sizeof cur);
    path_of(l, f->key, ".1", old, sizeof old);
    flush_file(f);
    pthread_mutex_lock(&rot_mu);
    struct stat st;
    if (stat(cur, &st) == 0 && (size_t)st.st_size + adding <= l->cap / 2) {
        /* Another loop rotated it already: write to the new file. */
        f->size = (size_t)st.st_size;
        close(f->fd);
        f->fd = open(cur, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        pthread_mutex_unlock(&rot_mu);
        return;
    }
    if (rename(cur, old) < 0) nb_warn("logs", "rotate %s: %s", cur, strerror(errno));
    close(f->fd);
    int fd = open(cur, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    f->fd = fd;
    f->size = 0;
    atomic_fetch_add_explicit(&rotations, 1, memory_order_release);
    l->rot_seen++; /* this loop's other fds are unaffected by its own rotation of f */
    pthread_mutex_unlock(&rot_mu);
}

/* JSON string body of text: escapes, and bytes that are not UTF-8 become '?' (function output
 * need not be UTF-8, the API's JSON must be). Hand-written because this runs for every line a
 * function prints and for every START/END/REPORT; jansson's object building cost several
 * microseconds per record. */
static void append_json_string(nb_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            size_t run = i;
            while (run < n && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 &&
                   s[run] != '"' && s[run] != '\\')
                run++;
            nb_buf_append(b, s + i, run - i);
            i = run;
            continue;
        }
        if (c < 0x80) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '"' || c == '\\') {
                esc[1] = (char)c;
                nb_buf_append(b, esc, 2);
            } else if (c == '\n') {
                nb_buf_append(b, "\\n", 2);
            } else if (c == '\t') {
                nb_buf_append(b, "\\t", 2);
            } else {
                nb_buf_append(b, esc, 6);
            }
            i++;
            continue;
        }
        /* Validate one UTF-8 sequence (no overlongs, no surrogates, <= U+10FFFF). */
        size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
        if (c > 0xf4) len = 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) ok = 0;
        if (ok && len == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0)) ok = 0;
        }
        if (ok && len == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90)) ok = 0;
        }
        if (ok) {
            nb_buf_append(b, s + i, len);
            i += len;
        } else {
            nb_buf_append(b, "?", 1);
            i++;
        }
    }
}

void nb_logs_format(nb_buf *b, const nb_log_line *line, int64_t ts)
{
    size_t len = line->len < NB_LOGS_LINE_MAX ? line->len : NB_LOGS_LINE_MAX;
    nb_buf_appendf(b, "{\"ts\":%lld,\"version\":%lld", (long long)ts, (long long)line->version);
    if (line->instance) {
        nb_buf_append(b, ",\"instance\":\"", 13);
        append_json_string(b, line->instance, strlen(line->instance));
        nb_buf_append(b, "\"", 1);
    }
    if (line->request_id && line->request_id[0]) {
        nb_buf_append(b, ",\"request_id\":\"", 15);
        append_json_string(b, line->request_id, strlen(line->request_id));
        nb_buf_append(b, "\"", 1);
    }
    nb_buf_appendf(b, ",\"stream\":\"%s\",\"line\":\"", line->stream);
    append_json_string(b, line->text, len);
    nb_buf_append(b, "\"", 1);
    if (line->report_json) nb_buf_appendf(b, ",\"report\":%s", line->report_json);
    nb_buf_append(b, "}\n", 2);
}

void nb_logs_append(nb_logs *l, const nb_log_line *line)
{
    char key[sizeof((nb_logs_sub *)0)->key];
    snprintf(key, sizeof key, "%s/%s", line->ns, line->fn);
    pthread_mutex_lock(&l->mu);
    nb_buf *rec = &l->rec;
    nb_buf_reset(rec);
    nb_logs_format(rec, line, nb_now_ms());
    if (!rec->len) {
        pthread_mutex_unlock(&l->mu);
        return;
    }
    log_file *f = open_file(l, line->ns, key);
    if (f && f->fd >= 0) {
        if (f->size + rec->len > l->cap / 2) {
            /* The size this loop knows counts only its own writes: look at the file. */
            struct stat st;
            flush_file(f);
            if (fstat(f->fd, &st) == 0) f->size = (size_t)st.st_size;
            if (f->size + rec->len > l->cap / 2) rotate(l, f, rec->len);
        }
        if (f->pending.len + rec->len > f->pending.max) flush_file(f);
        if (nb_buf_append(&f->pending, rec->data, rec->len) == 0) f->size += rec->len;
    }
    if (atomic_load_explicit(&hub_subs, memory_order_relaxed) > 0) {
        /* Someone follows some function: hand the record to its followers' loops. */
        pthread_mutex_lock(&hub_mu);
        for (nb_logs_sub *sub = hub; sub; sub = sub->next) {
            if (strcmp(sub->key, key) != 0) continue;
            /* A follower that cannot keep up loses the oldest undelivered records. */
            if (nb_buf_append(&sub->pending, rec->data, rec->len) < 0) {
                nb_buf_reset(&sub->pending);
                nb_buf_append(&sub->pending, rec->data, rec->len);
            }
            if (sub->owner->has_wake) uv_async_send(&sub->owner->wake);
        }
        pthread_mutex_unlock(&hub_mu);
    }
    pthread_mutex_unlock(&l->mu);
}

/* Collects matching lines of one file into a ring of the newest `limit` records. */
typedef struct ring {
    char **items;
    size_t limit, count, head;
} ring;

static void ring_push(ring *r, char *item)
{
    if (r->count < r->limit) {
        r->items[(r->head + r->count++) % r->limit] = item;
    } else {
        free(r->items[r->head]);
        r->items[r->head] = item;
        r->head = (r->head + 1) % r->limit;
    }
}

static void scan(const char *path, int64_t since, ring *r)
{
    FILE *f = fopen(path, "re");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (since > 0) {
            const char *ts = strstr(line, "\"ts\":");
            if (!ts || strtoll(ts + 5, NULL, 10) < since) continue;
        }
        ring_push(r, strndup(line, (size_t)n));
    }
    free(line);
    fclose(f);
}

int nb_logs_read(nb_logs *l, const char *ns, const char *fn, int64_t since_ms, size_t limit,
                 nb_buf *out, nb_err *err)
{
    char key[sizeof((nb_logs_sub *)0)->key], path[PATH_MAX];
    snprintf(key, sizeof key, "%s/%s", ns, fn);
    if (limit == 0) return 0;
    (void)l;
    flush_all();
    ring r = {calloc(limit, sizeof(char *)), limit, 0, 0};
    if (!r.items) return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
    path_of(l, key, ".1", path, sizeof path);
    scan(path, since_ms, &r);
    path_of(l, key, "", path, sizeof path);
    scan(path, since_ms, &r);
    int rc = 0;
    for (size_t i = 0; i < r.count; i++) {
        char *item = r.items[(r.head + i) % r.limit];
        if (rc == 0 && nb_buf_append(out, item, strlen(item)) < 0)
            rc = nb_err_set(err, 413, NB_E_TOO_LARGE, "log output too large; use a smaller limit");
        free(item);
    }
    free(r.items);
    return rc;
}

void nb_logs_forget(nb_logs *l, const char *ns, const char *fn)
{
    char key[sizeof((nb_logs_sub *)0)->key];
    snprintf(key, sizeof key, "%s/%s", ns, fn);
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        if (l->files[i].fd >= 0 && strcmp(l->files[i].key, key) == 0) {
            nb_buf_reset(&l->files[i].pending);
            close(l->files[i].fd);
            l->files[i].fd = -1;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

nb_logs_sub *nb_logs_subscribe(nb_logs *l, const char *ns, const char *fn, nb_logs_cb cb, void *ud)
{
    nb_logs_sub *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->key, sizeof s->key, "%s/%s", ns, fn);
    s->cb = cb;
    s->ud = ud;
    s->owner = l;
    nb_buf_init(&s->pending, NB_LOGS_FOLLOW_MAX);
    pthread_mutex_lock(&hub_mu);
    s->next = hub;
    hub = s;
    atomic_fetch_add(&hub_subs, 1);
    pthread_mutex_unlock(&hub_mu);
    return s;
}

void nb_logs_unsubscribe(nb_logs *l, nb_logs_sub *s)
{
    (void)l;
    pthread_mutex_lock(&hub_mu);
    for (nb_logs_sub **p = &hub; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            nb_buf_free(&s->pending);
            free(s);
            atomic_fetch_sub(&hub_subs, 1);
            break;
        }
    }
    pthread_mutex_unlock(&hub_mu);
}

void nb_logs_remove(nb_logs *l, const char *ns, const char *fn)
{
    char key[sizeof((nb_logs_sub *)0)->key], path[PATH_MAX];
    snprintf(key, sizeof key, "%s/%s", ns, fn);
    nb_logs_forget(l, ns, fn);
    path_of(l, key, "", path, sizeof path);
    unlink(path);
    path_of(l, key, ".1", path, sizeof path);
    unlink(path);
}
