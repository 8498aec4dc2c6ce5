#include "events/schedules.h"

#include "base/log.h"
#include "base/util.h"
#include "events/async.h"
#include "events/bus.h"
#include "events/cron.h"
#include "events/tz.h"
#include "function/function.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CATCHUP_ONE, CATCHUP_NONE, CATCHUP_ALL };

typedef struct sched_ent {
    char ns[NB_NAME_MAX + 1], name[NB_NAME_MAX + 1], fn[NB_NAME_MAX + 1];
    char *def; /* the stored body: an entry is rebuilt only when it changed */
    char *payload;
    nb_cron expr;
    nb_tz *tz;
    int64_t start, end, created;
    int catchup, paused;
    int64_t next; /* Unix seconds; -1: none */
    int64_t last; /* the last firing made durable; 0: never */
    int firing;   /* sends under way */
    int seen;
    struct sched_ent *hnext; /* the index's chain */
} sched_ent;

/* The index by namespace and name: a firing's answer, a single schedule's change and the API's
 * next-fire lookups find their entry without a scan (10,000 schedules are ordinary). */
#define HBUCKETS 16384

/* A schedule changed by the admin API, to reload alone. */
typedef struct change {
    char ns[NB_NAME_MAX + 1], name[NB_NAME_MAX + 1];
    struct change *next;
} change;

struct nb_schd {
    uv_loop_t *loop;
    nb_q *q;
    nb_store *store;
    nb_async_port *port;
    uv_timer_t timer;
    uv_async_t wake;
    pthread_mutex_t mu; /* ents (read by nb_schd_next_fire on any thread), reload */
    sched_ent **ents;
    size_t n, cap;
    sched_ent *hash[HBUCKETS];
    /* Last firings not yet in the store: "NS/NAME" -> Unix seconds, written once a second in
     * one commit (a sync per firing would stall the loop: 50 firings a second on one disk). */
    json_t *unsaved;
    uv_timer_t save_timer;
    change *changes; /* under mu */
    int reload, stopping, loaded, closing;
    nb_bus *bus; /* firings as platform events; may be NULL */
};

/* ---------- the admin side ---------- */

/* "2026-11-23T10:00:00Z" or a Unix time in seconds. */
static int parse_time(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out >= 0 ? 0 : -1;
    }
    const char *s = json_string_value(v);
    struct tm tm = {0};
    char z = 0;
    if (!s ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &z) != 7 ||
        z != 'Z' || strlen(s) != 20)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

json_t *nb_schd_admin(const json_t *in, const json_t *cur, int64_t now_s, nb_err *err)
{
    static const char *const fields[] = {"expression", "function", "payload", "timezone", "start",
                                         "end",        "catchup",  "state",   NULL};
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    const char *k;
    json_t *v;
    json_t *o = cur ? json_deep_copy(cur) : json_pack("{s:I}", "created_s", (json_int_t)now_s);
    json_object_foreach((json_t *)in, k, v)
    {
        if (strcmp(k, "payload") == 0) {
            /* Kept as the JSON text the function receives. */
            char *text = json_is_null(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            json_object_set_new(o, k, text ? json_string(text) : json_null());
            free(text);
        } else if (strcmp(k, "start") == 0 || strcmp(k, "end") == 0) {
            int64_t t;
            if (!json_is_null(v) && parse_time(v, &t) < 0) {
                nb_err_set(err, 400, NB_E_INVALID_VALUE,
                           "%s must be a UTC time such as 2026-11-23T10:00:00Z, or null", k);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, json_is_null(v) ? json_null() : json_integer(t));
        } else {
            json_object_set(o, k, v);
        }
    }
    if (!json_object_get(o, "timezone")) json_object_set_new(o, "timezone", json_string("UTC"));
    if (!json_object_get(o, "catchup")) json_object_set_new(o, "catchup", json_string("one"));
    if (!json_object_get(o, "state")) json_object_set_new(o, "state", json_string("enabled"));
    const char *expr = json_string_value(json_object_get(o, "expression"));
    const char *fn = json_string_value(json_object_get(o, "function"));
    const char *tzn = json_string_value(json_object_get(o, "timezone"));
    const char *cu = json_string_value(json_object_get(o, "catchup"));
    const char *st = json_string_value(json_object_get(o, "state"));
    const char *payload = json_string_value(json_object_get(o, "payload"));
    nb_cron c;
    nb_tz *tz = NULL;
    int rc = 0;
    if (!expr)
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE,
                        "expression is required: rate(...), cron(...) or at(...)");
    else if (nb_cron_parse(&c, expr, err) < 0)
        rc = -1;
    else if (!fn || !nb_fn_valid_name(fn))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "function must be a function name");
    else if (!tzn || !(tz = nb_tz_load(tzn, err)))
        rc = tzn ? nb_err_prefix(err, "timezone")
                 : nb_err_set(err, 400, NB_E_INVALID_VALUE, "timezone must be a zone name");
    else if (!cu || (strcmp(cu, "one") && strcmp(cu, "none") && strcmp(cu, "all")))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "catchup must be one, none or all");
    else if (!st || (strcmp(st, "enabled") && strcmp(st, "paused")))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "state must be enabled or paused");
    else if (payload && strlen(payload) > (256u << 10))
        rc = nb_err_set(err, 400, NB_E_INVALID_VALUE, "payload is over 256 KiB");
    nb_tz_free(tz);
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---------- the scheduler ---------- */

static void ent_free(sched_ent *e)
{
    if (!e) return;
    free(e->def);
    free(e->payload);
    nb_tz_free(e->tz);
    free(e);
}

static int64_t next_after(const sched_ent *e, int64_t after)
{
    if (e->paused) return -1;
    return nb_cron_next(&e->expr, e->tz, after, e->start, e->end);
}

static unsigned hkey(const char *ns, const char *name)
{
    uint32_t h = 2166136261u;
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h & (HBUCKETS - 1);
}

static void index_add(nb_schd *s, sched_ent *e)
{
    unsigned k = hkey(e->ns, e->name);
    e->hnext = s->hash[k];
    s->hash[k] = e;
}

static void index_del(nb_schd *s, sched_ent *e)
{
    for (sched_ent **p = &s->hash[hkey(e->ns, e->name)]; *p; p = &(*p)->hnext) {
        if (*p == e) {
            *p = e->hnext;
            return;
        }
    }
}

static sched_ent *find_ent(nb_schd *s, const char *ns, const char *name)
{
    for (sched_ent *e = s->hash[hkey(ns, name)]; e; e = e->hnext)
        if (strcmp(e->ns, ns) == 0 && strcmp(e->name, name) == 0) return e;
    return NULL;
}

typedef struct fired {
    nb_schd *s;
    char ns[NB_NAME_MAX + 1], name[NB_NAME_MAX + 1];
    int64_t t;
    int ok;
    char msg_id[37]; /* the firing's message: the event's id */
} fired;

/* Writes the last firings recorded since the previous save. A crash before it repeats those
 * firings at the next start (catch-up from the older record): at least once, as the queue. */
static void save_firings_now(nb_schd *s)
{
    size_t n = json_object_size(s->unsaved);
    if (!n) return;
    nb_obj *objs = calloc(n, sizeof *objs);
    if (!objs) abort();
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(s->unsaved, key, v)
    {
        snprintf(objs[i].ns, sizeof objs[i].ns, "_system");
        snprintf(objs[i].kind, sizeof objs[i].kind, "schedule_fired");
        snprintf(objs[i].name, sizeof objs[i].name, "%s", key);
        char body[64];
        snprintf(body, sizeof body, "{\"last\":%lld}", (long long)json_integer_value(v));
        objs[i].body = strdup(body);
        if (!objs[i].body) abort();
        i++;
    }
    nb_err err = {0};
    if (s->store->ops->obj_upsert_many(s->store, objs, n, &err) < 0)
        nb_warn("schedule", "record %zu firings: %s (tried again)", n, err.msg);
    else
        json_object_clear(s->unsaved);
    for (i = 0; i < n; i++)
        free(objs[i].body);
    free(objs);
}

static void save_firings(uv_timer_t *t)
{
    nb_schd *s = t->data;
    save_firings_now(s);
    if (json_object_size(s->unsaved)) uv_timer_start(&s->save_timer, save_firings, 1000, 0);
}

/* The firing as a platform event, when the namespace has rules. Caller holds s->mu (e is
 * read). */
static void fired_event(nb_schd *s, const sched_ent *e, const fired *f)
{
    if (nb_bus_enabled_rules(s->bus, f->ns) == 0) return;
    char source[2 * NB_NAME_MAX + 32], when[32];
    snprintf(source, sizeof source, "nimbus://%s/schedules/%s", f->ns, f->name);
    nb_time_iso8601(f->t * 1000, when, sizeof when);
    json_t *payload = json_loads(e->payload ? e->payload : "{}", JSON_DECODE_ANY, NULL);
    json_t *data = json_pack("{s:s, s:s, s:s, s:o}", "schedule", f->name, "function", e->fn,
                             "scheduledTime", when, "payload", payload ? payload : json_null());
    nb_bus_platform_event(s->bus, f->ns, "nimbus.schedule.fired", source, NULL,
                          f->msg_id[0] ? f->msg_id : NULL, data, 0);
    json_decref(data);
}

/* On the loop: a firing is durable (or was refused). */
static void fired_on_loop(void *ud)
{
    fired *f = ud;
    nb_schd *s = f->s;
    pthread_mutex_lock(&s->mu);
    sched_ent *e = find_ent(s, f->ns, f->name);
    if (e) e->firing--;
    if (e && f->ok && f->t > e->last) e->last = f->t;
    if (e && f->ok) fired_event(s, e, f);
    if (e && !f->ok && (e->next < 0 || e->next > f->t)) e->next = f->t; /* again, shortly */
    pthread_mutex_unlock(&s->mu);
    /* A schedule deleted meanwhile keeps no record (one made again under its name would start
     * from it). */
    if (f->ok && e) {
        char key[2 * NB_NAME_MAX + 2];
        snprintf(key, sizeof key, "%s/%s", f->ns, f->name);
        json_t *prev = json_object_get(s->unsaved, key);
        if (!prev || json_integer_value(prev) < f->t)
            json_object_set_new(s->unsaved, key, json_integer(f->t));
        if (!uv_is_active((uv_handle_t *)&s->save_timer))
            uv_timer_start(&s->save_timer, save_firings, 1000, 0);
    }
    free(f);
}

static void fired_cb(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    fired *f = ud;
    f->ok = status == 0;
    if (status == 0 && n > 0) snprintf(f->msg_id, sizeof f->msg_id, "%s", ids[0]);
    if (status != 0)
        nb_warn("schedule", "%s/%s: firing refused (%s), tried again", f->ns, f->name,
                msg ? msg : "");
    nb_async_post(f->s->port, fired_on_loop, f);
}

/* Sends one firing of e for scheduled time t. Caller holds s->mu. */
static void fire(nb_schd *s, sched_ent *e, int64_t t)
{
    char q[NB_Q_NAME_MAX + 1], when[32];
    nb_async_fn_queue(e->ns, e->fn, q, sizeof q);
    nb_err err = {0};
    if (nb_async_ensure_queue(s->q, q, &err) < 0) {
        nb_warn("schedule", "%s/%s: %s", e->ns, e->name, err.msg);
        return;
    }
    nb_time_iso8601(t * 1000, when, sizeof when);
    json_t *attrs = json_pack("{s:s, s:s}", "schedule", e->name, "scheduled_time", when);
    const char *body = e->payload ? e->payload : "{}";
    nb_q_out out = {body, strlen(body), attrs, 0, NULL, 0};
    fired *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->s = s;
    snprintf(f->ns, sizeof f->ns, "%s", e->ns);
    snprintf(f->name, sizeof f->name, "%s", e->name);
    f->t = t;
    e->firing++;
    if (nb_q_send(s->q, q, &out, 1, fired_cb, f, &err) < 0) {
        nb_warn("schedule", "%s/%s: firing refused: %s", e->ns, e->name, err.msg);
        e->firing--;
        free(f);
    }
    json_decref(attrs);
}

/* After downtime (or a stalled loop): the firings missed before now, by the policy. */
static void catch_up(nb_schd *s, sched_ent *e, int64_t now)
{
    if (e->next < 0 || e->next > now) return;
    if (e->catchup == CATCHUP_ONE) {
        fire(s, e, e->next);
    } else if (e->catchup == CATCHUP_ALL) {
        int64_t t = e->next;
        for (int i = 0; t >= 0 && t <= now && i < NB_SCHD_CATCHUP_MAX; i++) {
            fire(s, e, t);
            t = next_after(e, t);
        }
    }
    e->next = next_after(e, now);
}

static void arm(nb_schd *s);

static sched_ent *build_ent(const nb_obj *o, nb_err *err)
{
    json_t *j = json_loads(o->body, 0, NULL);
    if (!j) return NULL;
    sched_ent *e = calloc(1, sizeof *e);
    if (!e) abort();
    snprintf(e->ns, sizeof e->ns, "%s", o->ns);
    snprintf(e->name, sizeof e->name, "%s", o->name);
    snprintf(e->fn, sizeof e->fn, "%s", json_string_value(json_object_get(j, "function")) ?: "");
    e->def = strdup(o->body);
    const char *p = json_string_value(json_object_get(j, "payload"));
    e->payload = p ? strdup(p) : NULL;
    const char *cu = json_string_value(json_object_get(j, "catchup")) ?: "one";
    e->catchup = strcmp(cu, "none") == 0  ? CATCHUP_NONE
                 : strcmp(cu, "all") == 0 ? CATCHUP_ALL
                                          : CATCHUP_ONE;
    e->paused = strcmp(json_string_value(json_object_get(j, "state")) ?: "", "paused") == 0;
    json_t *st = json_object_get(j, "start"), *en = json_object_get(j, "end");
    e->start = json_is_integer(st) ? json_integer_value(st)
                                   : json_integer_value(json_object_get(j, "created_s"));
    e->end = json_is_integer(en) ? json_integer_value(en) : NB_CRON_NO_END;
    e->created = json_integer_value(json_object_get(j, "created_s"));
    int ok =
        e->def &&
        nb_cron_parse(&e->expr, json_string_value(json_object_get(j, "expression")) ?: "", err) ==
            0 &&
        (e->tz = nb_tz_load(json_string_value(json_object_get(j, "timezone")) ?: "UTC", err)) !=
            NULL;
    json_decref(j);
    if (!ok) {
        ent_free(e);
        return NULL;
    }
    return e;
}

/* A stored schedule made an entry; the firing state of the entry it replaces carries over. At
 * start (first) it resumes after its last firing (or its creation if it never fired), catching
 * up what it missed while the daemon was down; one created or changed while running starts from
 * now. Caller holds s->mu. */
static sched_ent *entry_of(nb_schd *s, const nb_obj *o, const sched_ent *old, int first,
                           int64_t last, int64_t now)
{
    nb_err err = {0};
    sched_ent *e = build_ent(o, &err);
    if (!e) {
        nb_warn("schedule", "%s/%s skipped: %s", o->ns, o->name, err.msg);
        return NULL;
    }
    if (old) {
        e->last = old->last;
        e->firing = old->firing;
    }
    if (last > 0) e->last = last;
    /* A record older than the schedule (one of the same name, deleted) does not count. */
    int64_t base = e->last > e->created ? e->last : e->created;
    if (first && base > 0 && base < now) {
        e->next = next_after(e, base);
        catch_up(s, e, now);
    } else {
        e->next = next_after(e, now - 1);
    }
    return e;
}

static void load(nb_schd *s)
{
    nb_obj *objs = NULL, *fired_objs = NULL;
    size_t n = 0, nf = 0;
    nb_err err = {0};
    if (s->store->ops->obj_list(s->store, NULL, "schedule", NULL, &objs, &n, &err) < 0) {
        nb_warn("schedule", "read schedules: %s", err.msg);
        return;
    }
    int first = !s->loaded;
    if (first && s->store->ops->obj_list(s->store, "_system", "schedule_fired", NULL, &fired_objs,
                                         &nf, &err) < 0)
        nb_warn("schedule", "read firings: %s", err.msg);
    /* Last firings by schedule, through a temporary index of their own. */
    json_t *lasts = json_object();
    for (size_t f = 0; f < nf; f++) {
        json_t *fj = json_loads(fired_objs[f].body, 0, NULL);
        json_object_set_new(lasts, fired_objs[f].name,
                            json_integer(json_integer_value(json_object_get(fj, "last"))));
        json_decref(fj);
    }
    int64_t now = nb_now_ms() / 1000;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        s->ents[i]->seen = 0;
    sched_ent **ents = calloc(n + 1, sizeof *ents);
    if (!ents) abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].ns, "_system") == 0) continue;
        sched_ent *old = find_ent(s, objs[i].ns, objs[i].name);
        if (old && strcmp(old->def, objs[i].body) == 0) {
            old->seen = 1;
            ents[k++] = old;
            continue;
        }
        char key[2 * NB_NAME_MAX + 2];
        snprintf(key, sizeof key, "%s/%s", objs[i].ns, objs[i].name);
        sched_ent *e =
            entry_of(s, &objs[i], old, first, json_integer_value(json_object_get(lasts, key)), now);
        if (!e) continue;
        e->seen = 1;
        ents[k++] = e;
    }
    for (size_t i = 0; i < s->n; i++)
        if (!s->ents[i]->seen) ent_free(s->ents[i]);
    free(s->ents);
    s->ents = ents;
    s->n = k;
    s->cap = n + 1;
    memset(s->hash, 0, sizeof s->hash);
    for (size_t i = 0; i < k; i++)
        index_add(s, ents[i]);
    s->loaded = 1;
    pthread_mutex_unlock(&s->mu);
    json_decref(lasts);
    nb_obj_free_list(objs, n);
    nb_obj_free_list(fired_objs, nf);
    arm(s);
}

/* One schedule changed: only it is read again. -1 when the store could not say (the caller
 * falls back to a full load). */
static int load_one(nb_schd *s, const char *ns, const char *name)
{
    nb_obj o = {0};
    nb_err err = {0};
    int rc = s->store->ops->obj_get(s->store, ns, "schedule", name, &o, &err);
    if (rc < 0) return -1;
    int64_t now = nb_now_ms() / 1000;
    pthread_mutex_lock(&s->mu);
    sched_ent *old = find_ent(s, ns, name);
    size_t at = s->n;
    for (size_t i = 0; old && i < s->n; i++)
        if (s->ents[i] == old) at = i;
    if (rc == 0 || (old && strcmp(old->def, o.body) != 0) || !old) {
        sched_ent *e = rc == 1 ? entry_of(s, &o, old, 0, 0, now) : NULL;
        if (old) {
            index_del(s, old);
            ent_free(old);
            s->ents[at] = s->ents[--s->n];
        }
        if (!e) {
            char key[2 * NB_NAME_MAX + 2];
            snprintf(key, sizeof key, "%s/%s", ns, name);
            json_object_del(s->unsaved, key);
        }
        if (e) {
            if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                s->ents = realloc(s->ents, s->cap * sizeof *s->ents);
                if (!s->ents) abort();
            }
            s->ents[s->n++] = e;
            index_add(s, e);
        }
    }
    pthread_mutex_unlock(&s->mu);
    nb_obj_clear(&o);
    arm(s);
    return 0;
}

static void on_timer(uv_timer_t *t);

/* The timer for the earliest next firing. */
static void arm(nb_schd *s)
{
    if (s->stopping) return;
    int64_t earliest = -1;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        if (s->ents[i]->next >= 0 && (earliest < 0 || s->ents[i]->next < earliest))
            earliest = s->ents[i]->next;
    pthread_mutex_unlock(&s->mu);
    uv_timer_stop(&s->timer);
    if (earliest < 0) return;
    int64_t delay = earliest * 1000 - nb_now_ms();
    /* A firing that could not be made durable is tried again in a second, not in a loop. */
    uv_timer_start(&s->timer, on_timer, (uint64_t)(delay < 0 ? 0 : delay), 0);
}

static void on_timer(uv_timer_t *t)
{
    nb_schd *s = t->data;
    if (s->stopping) return;
    int64_t now_ms = nb_now_ms(), now = now_ms / 1000;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        sched_ent *e = s->ents[i];
        if (e->next < 0 || e->next * 1000 > now_ms) continue;
        int64_t due = e->next;
        fire(s, e, due);
        /* From the schedule, not from now: no drift. Behind by more than a period (a stalled
         * loop), the firing just made stands for the ones missed meanwhile. */
        e->next = next_after(e, due);
        if (e->next >= 0 && e->next < now) e->next = next_after(e, now - 1);
    }
    pthread_mutex_unlock(&s->mu);
    arm(s);
}

static void on_wake(uv_async_t *w)
{
    nb_schd *s = w->data;
    pthread_mutex_lock(&s->mu);
    int reload = s->reload;
    s->reload = 0;
    change *ch = s->changes;
    s->changes = NULL;
    pthread_mutex_unlock(&s->mu);
    for (change *c = ch; c; c = c->next)
        if (!reload && !s->stopping && load_one(s, c->ns, c->name) < 0) reload = 1;
    while (ch) {
        change *next = ch->next;
        free(ch);
        ch = next;
    }
    if (reload && !s->stopping) load(s);
}

nb_schd *nb_schd_new(uv_loop_t *loop, nb_q *q, nb_store *store)
{
    nb_schd *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->loop = loop;
    s->q = q;
    s->store = store;
    pthread_mutex_init(&s->mu, NULL);
    s->port = nb_async_port_new(loop);
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->unsaved = json_object();
    uv_timer_init(loop, &s->save_timer);
    s->save_timer.data = s;
    uv_async_init(loop, &s->wake, on_wake);
    s->wake.data = s;
    load(s);
    return s;
}

void nb_schd_set_bus(nb_schd *s, nb_bus *bus)
{
    if (s) s->bus = bus;
}

void nb_schd_reload(nb_schd *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->reload = 1;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->wake);
}

void nb_schd_changed(nb_schd *s, const char *ns, const char *name)
{
    if (!s) return;
    change *c = calloc(1, sizeof *c);
    if (!c) abort();
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    snprintf(c->name, sizeof c->name, "%s", name);
    pthread_mutex_lock(&s->mu);
    c->next = s->changes;
    s->changes = c;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->wake);
}

void nb_schd_stop(nb_schd *s)
{
    if (!s) return;
    s->stopping = 1;
    uv_timer_stop(&s->timer);
}

static void closed(uv_handle_t *h)
{
    nb_schd *s = h->data;
    if (--s->closing > 0) return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void nb_schd_free(nb_schd *s)
{
    if (!s) return;
    nb_async_port_free(s->port);
    for (change *c = s->changes; c;) {
        change *next = c->next;
        free(c);
        c = next;
    }
    for (size_t i = 0; i < s->n; i++)
        ent_free(s->ents[i]);
    free(s->ents);
    s->ents = NULL;
    s->n = 0;
    save_firings_now(s);
    json_decref(s->unsaved);
    s->unsaved = NULL;
    s->closing = 3;
    uv_close((uv_handle_t *)&s->save_timer, closed);
    uv_close((uv_handle_t *)&s->timer, closed);
    uv_close((uv_handle_t *)&s->wake, closed);
}

int64_t nb_schd_next_fire(nb_schd *s, const char *ns, const char *name)
{
    if (!s) return -1;
    pthread_mutex_lock(&s->mu);
    sched_ent *e = find_ent(s, ns, name);
    int64_t next = e ? e->next : -1;
    pthread_mutex_unlock(&s->mu);
    return next;
}
