#include "logs/logs.h"

#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct log_file {
    char key[2 * 65 + 2]; /* "ns/fn" */
    int fd;
    size_t size;
    int64_t used; /* LRU clock */
} log_file;

struct nb_logs_sub {
    char key[2 * 65 + 2];
    nb_logs_cb cb;
    void *ud;
    nb_logs_sub *next;
};

struct nb_logs {
    char dir[PATH_MAX];
    size_t cap;
    log_file files[NB_LOGS_OPEN_FDS];
    int64_t clock;
    nb_logs_sub *subs;
};

nb_logs *nb_logs_new(const char *dir, size_t cap)
{
    nb_logs *l = calloc(1, sizeof *l);
    if (!l) abort();
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    l->cap = cap ? cap : NB_LOGS_DEFAULT_CAP;
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) l->files[i].fd = -1;
    return l;
}

void nb_logs_free(nb_logs *l)
{
    if (!l) return;
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++)
        if (l->files[i].fd >= 0) close(l->files[i].fd);
    while (l->subs) {
        nb_logs_sub *n = l->subs->next;
        free(l->subs);
        l->subs = n;
    }
    free(l);
}

static void path_of(const nb_logs *l, const char *key, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.log%s", l->dir, key, suffix);
}

static log_file *open_file(nb_logs *l, const char *ns, const char *key)
{
    log_file *victim = &l->files[0];
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        log_file *f = &l->files[i];
        if (f->fd >= 0 && strcmp(f->key, key) == 0) {
            f->used = ++l->clock;
            return f;
        }
        if (f->fd < 0 || f->used < victim->used) victim = f;
    }
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

static void rotate(nb_logs *l, log_file *f)
{
    char cur[PATH_MAX], old[PATH_MAX];
    path_of(l, f->key, "", cur, sizeof cur);
    path_of(l, f->key, ".1", old, sizeof old);
    if (rename(cur, old) < 0) nb_warn("logs", "rotate %s: %s", cur, strerror(errno));
    close(f->fd);
    int fd = open(cur, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0600);
    f->fd = fd;
    f->size = 0;
}

void nb_logs_append(nb_logs *l, const nb_log_line *line)
{
    char key[sizeof((nb_logs_sub *)0)->key];
    snprintf(key, sizeof key, "%s/%s", line->ns, line->fn);
    size_t len = line->len < NB_LOGS_LINE_MAX ? line->len : NB_LOGS_LINE_MAX;
    json_t *rec = json_object();
    json_object_set_new(rec, "ts", json_integer(nb_now_ms()));
    json_object_set_new(rec, "version", json_integer(line->version));
    if (line->instance) json_object_set_new(rec, "instance", json_string(line->instance));
    if (line->request_id && line->request_id[0])
        json_object_set_new(rec, "request_id", json_string(line->request_id));
    json_object_set_new(rec, "stream", json_string(line->stream));
    /* Function output need not be UTF-8; jansson would refuse it, so map bad bytes to '?'. */
    json_t *text = json_stringn(line->text, len);
    if (!text) {
        char *copy = malloc(len + 1);
        if (!copy) abort();
        for (size_t i = 0; i < len; i++)
            copy[i] = (unsigned char)line->text[i] < 0x80 ? line->text[i] : '?';
        text = json_stringn(copy, len);
        free(copy);
    }
    json_object_set_new(rec, "line", text ? text : json_string(""));
    char *s = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(rec);
    if (!s) return;
    size_t n = strlen(s);
    s[n] = '\n';
    log_file *f = open_file(l, line->ns, key);
    if (f && f->fd >= 0) {
        if (f->size + n + 1 > l->cap / 2) rotate(l, f);
        if (f->fd >= 0) {
            ssize_t w = write(f->fd, s, n + 1);
            if (w > 0) f->size += (size_t)w;
        }
    }
    for (nb_logs_sub *sub = l->subs; sub; sub = sub->next)
        if (strcmp(sub->key, key) == 0) sub->cb(sub->ud, s, n + 1);
    free(s);
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

nb_logs_sub *nb_logs_subscribe(nb_logs *l, const char *ns, const char *fn, nb_logs_cb cb, void *ud)
{
    nb_logs_sub *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->key, sizeof s->key, "%s/%s", ns, fn);
    s->cb = cb;
    s->ud = ud;
    s->next = l->subs;
    l->subs = s;
    return s;
}

void nb_logs_unsubscribe(nb_logs *l, nb_logs_sub *s)
{
    for (nb_logs_sub **p = &l->subs; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            free(s);
            return;
        }
    }
}

void nb_logs_remove(nb_logs *l, const char *ns, const char *fn)
{
    char key[sizeof((nb_logs_sub *)0)->key], path[PATH_MAX];
    snprintf(key, sizeof key, "%s/%s", ns, fn);
    for (int i = 0; i < NB_LOGS_OPEN_FDS; i++) {
        if (l->files[i].fd >= 0 && strcmp(l->files[i].key, key) == 0) {
            close(l->files[i].fd);
            l->files[i].fd = -1;
        }
    }
    path_of(l, key, "", path, sizeof path);
    unlink(path);
    path_of(l, key, ".1", path, sizeof path);
    unlink(path);
}
