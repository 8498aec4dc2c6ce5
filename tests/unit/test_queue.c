/* nb_q: queue configs, send/receive/delete/visibility, delays, dead-letter moves, redrive,
 * peek, stats, retention, reopening, a failing disk (through the writer's fail_commits switch,
 * hence the included .c), and crashes: a child sending from several threads is SIGKILLed and
 * every send it saw acknowledged must be in the store afterwards. */
#include "events/queue.c"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

static char dir[] = "/tmp/nb-queue-XXXXXX";

static const char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static _Atomic int notified;

static void on_notify(void *ud, const char *queue)
{
    (void)ud;
    (void)queue;
    atomic_fetch_add(&notified, 1);
}

static nb_q *open_q(const char *name)
{
    nb_err err = {0};
    nb_q *q = nb_q_open(db_path(name), on_notify, NULL, &err);
    if (!q) fprintf(stderr, "open: %s\n", err.msg);
    CHECK(q);
    return q;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A send that waits for its acknowledgement. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char ids[16][37];
    size_t n;
} waiter;

static void on_sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    w->n = n;
    for (size_t i = 0; i < n && i < 16; i++)
        memcpy(w->ids[i], ids[i], 37);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Returns the callback's status, or -1 when refused at once (err filled). */
static int send_many(nb_q *q, const char *queue, const nb_q_out *out, size_t n, waiter *w,
                     nb_err *err)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = nb_q_send(q, queue, out, n, on_sent, w, err);
    if (rc == 0) {
        pthread_mutex_lock(&w->mu);
        while (!w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
        rc = w->status;
    }
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return rc;
}

static int send1(nb_q *q, const char *queue, const char *body, int64_t delay_ms, char id[37])
{
    nb_q_out o = {.body = body, .body_len = strlen(body), .delay_ms = delay_ms};
    waiter w;
    nb_err err = {0};
    int rc = send_many(q, queue, &o, 1, &w, &err);
    if (rc == 0 && id) memcpy(id, w.ids[0], 37);
    return rc;
}

static nb_q_config cfg_of(int64_t vis, int64_t ret, int max_receives, const char *dlq)
{
    nb_q_config c = {
        .visibility_timeout_ms = vis, .retention_ms = ret, .max_receives = max_receives};
    snprintf(c.dead_letter, sizeof c.dead_letter, "%s", dlq ? dlq : "");
    return c;
}

static void check_err(int rc, const nb_err *err, int status, const char *code)
{
    CHECK(rc == -1);
    if (err->status != status) fprintf(stderr, "status %d: %s\n", err->status, err->msg);
    CHECK(err->status == status);
    CHECK_STR(err->code, code);
}

static nb_q_stats stats(nb_q *q, const char *queue)
{
    nb_q_stats s;
    nb_err err = {0};
    CHECK(nb_q_get_stats(q, queue, &s, &err) == 0);
    return s;
}

static void test_queues(void)
{
    nb_q *q = open_q("queues.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "q/default/a", NULL, &err) == 0);
    CHECK(nb_q_create(q, "q/default/a", NULL, &err) == 0); /* idempotent */
    nb_q_config c = cfg_of(1000, 0, 0, NULL);
    check_err(nb_q_create(q, "q/default/a", &c, &err), &err, 409, NB_E_CONFLICT);
    CHECK(nb_q_ensure(q, "q/default/a", &c, &err) == 0); /* there: its config stays */
    CHECK(nb_q_ensure(q, "e", &c, &err) == 0 && nb_q_exists(q, "e"));
    nb_q_config got;
    CHECK(nb_q_get_config(q, "e", &got, &err) == 0 && got.visibility_timeout_ms == 1000);
    CHECK(nb_q_delete_queue(q, "e", &err) == 0);
    CHECK(nb_q_get_config(q, "q/default/a", &got, &err) == 0);
    CHECK(got.visibility_timeout_ms == 30000 && got.retention_ms == 4 * 86400000LL);

    c = cfg_of(-1, 0, 0, NULL);
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(12 * 3600000LL + 1, 0, 0, NULL);
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(0, 59999, 0, NULL);
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(0, 14 * 86400000LL + 1, 0, NULL);
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(0, 60000, 1001, NULL);
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(0, 60000, 3, "b");
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    c = cfg_of(0, 60000, 3, "nope");
    check_err(nb_q_create(q, "b", &c, &err), &err, 400, NB_E_INVALID_VALUE);
    check_err(nb_q_create(q, "", NULL, &err), &err, 400, NB_E_INVALID_NAME);
    check_err(nb_q_create(q, "a b", NULL, &err), &err, 400, NB_E_INVALID_NAME);
    CHECK(!nb_q_exists(q, "b"));

    c = cfg_of(0, 60000, 3, "q/default/a");
    CHECK(nb_q_create(q, "b", &c, &err) == 0);
    CHECK(nb_q_create(q, "q/default/c", NULL, &err) == 0);
    check_err(nb_q_update(q, "zz", &c, &err), &err, 404, NB_E_NOT_FOUND);
    c = cfg_of(5000, 120000, 0, NULL);
    CHECK(nb_q_update(q, "q/default/c", &c, &err) == 0);
    CHECK(nb_q_get_config(q, "q/default/c", &got, &err) == 0);
    CHECK(got.visibility_timeout_ms == 5000 && got.retention_ms == 120000);

    size_t n;
    char **names = nb_q_list(q, "q/default/", &n);
    CHECK(n == 2);
    CHECK_STR(names[0], "q/default/a");
    CHECK_STR(names[1], "q/default/c");
    nb_q_names_free(names, n);
    names = nb_q_list(q, "", &n);
    CHECK(n == 3);
    CHECK_STR(names[0], "b");
    nb_q_names_free(names, n);

    CHECK(nb_q_delete_queue(q, "q/default/c", &err) == 0);
    CHECK(!nb_q_exists(q, "q/default/c"));
    check_err(nb_q_delete_queue(q, "q/default/c", &err), &err, 404, NB_E_NOT_FOUND);
    check_err(nb_q_get_config(q, "q/default/c", &got, &err), &err, 404, NB_E_NOT_FOUND);
    nb_q_close(q);

    /* The configs are durable; the deleted queue stays deleted. */
    q = open_q("queues.db");
    CHECK(nb_q_exists(q, "q/default/a") && nb_q_exists(q, "b") && !nb_q_exists(q, "q/default/c"));
    CHECK(nb_q_get_config(q, "b", &got, &err) == 0);
    CHECK(got.max_receives == 3);
    CHECK_STR(got.dead_letter, "q/default/a");
    nb_q_close(q);
    printf("queues: ok\n");
}

static void test_messages(void)
{
    nb_q *q = open_q("msgs.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "m", NULL, &err) == 0);
    check_err(nb_q_send(q, "nope", &(nb_q_out){.body = "x", .body_len = 1}, 1, on_sent, NULL, &err),
              &err, 404, NB_E_NOT_FOUND);

    int before = atomic_load(&notified);
    nb_q_out outs[3] = {{.body = "one", .body_len = 3},
                        {.body = "two", .body_len = 3},
                        {.body = "three", .body_len = 5}};
    waiter w;
    CHECK(send_many(q, "m", outs, 3, &w, &err) == 0);
    CHECK(w.n == 3 && strlen(w.ids[0]) == 36 && strcmp(w.ids[0], w.ids[1]) != 0);
    CHECK(atomic_load(&notified) > before);
    char id4[37];
    CHECK(send1(q, "m", "four", 0, id4) == 0);

    nb_q_msg *m;
    int n = nb_q_receive(q, "m", 2, 150, &m, &err);
    CHECK(n == 2);
    CHECK(m[0].body_len == 3 && memcmp(m[0].body, "one", 3) == 0);
    CHECK_STR(m[1].body, "two");
    CHECK_STR(m[0].id, w.ids[0]);
    CHECK(m[0].receive_count == 1 && m[0].first_receive_ms > 0 && m[0].receipt[0]);
    CHECK(strcmp(m[0].receipt, m[1].receipt) != 0);
    nb_q_msg first = m[0];
    first.body = NULL;
    nb_q_msgs_free(m, (size_t)n);

    nb_q_stats s = stats(q, "m");
    CHECK(s.visible == 2 && s.inflight == 2 && s.delayed == 0 && s.sent == 4 && s.received == 2);
    n = nb_q_receive(q, "m", 10, 150, &m, &err);
    CHECK(n == 2);
    CHECK_STR(m[0].body, "three");
    CHECK_STR(m[1].body, "four");
    nb_q_msgs_free(m, (size_t)n);
    CHECK(nb_q_receive(q, "m", 10, 150, &m, &err) == 0);
    CHECK(nb_q_next_visible_ms(q, "m") > 0 && nb_q_next_visible_ms(q, "m") <= 150);
    CHECK(nb_q_next_visible_ms(q, "nope") == -1);

    /* Not deleted in time: visible again, oldest first, counted twice. */
    sleep_ms(200);
    n = nb_q_receive(q, "m", 1, 5000, &m, &err);
    CHECK(n == 1);
    CHECK_STR(m[0].id, first.id);
    CHECK(m[0].receive_count == 2 && m[0].first_receive_ms == first.first_receive_ms);
    check_err(nb_q_delete(q, "m", first.id, first.receipt, &err), &err, 410, "receipt_expired");
    check_err(nb_q_change_visibility(q, "m", first.id, first.receipt, 0, &err), &err, 410,
              "receipt_expired");
    check_err(nb_q_delete(q, "m", "no-such-id", m[0].receipt, &err), &err, 404, NB_E_NOT_FOUND);
    CHECK(nb_q_delete(q, "m", m[0].id, m[0].receipt, &err) == 0);
    check_err(nb_q_delete(q, "m", m[0].id, m[0].receipt, &err), &err, 404, NB_E_NOT_FOUND);
    nb_q_msgs_free(m, 1);

    /* change_visibility: 0 makes it visible at once; more hides it longer. */
    n = nb_q_receive(q, "m", 1, 5000, &m, &err);
    CHECK(n == 1);
    CHECK_STR(m[0].body, "two");
    CHECK(nb_q_change_visibility(q, "m", m[0].id, m[0].receipt, 0, &err) == 0);
    check_err(nb_q_change_visibility(q, "m", m[0].id, m[0].receipt, -1, &err), &err, 400,
              NB_E_INVALID_VALUE);
    nb_q_msgs_free(m, 1);
    n = nb_q_receive(q, "m", 1, 5000, &m, &err);
    CHECK(n == 1);
    CHECK_STR(m[0].body, "two");
    CHECK(m[0].receive_count == 3);
    CHECK(nb_q_change_visibility(q, "m", m[0].id, m[0].receipt, 100, &err) == 0);
    int64_t nv = nb_q_next_visible_ms(q, "m");
    CHECK(nv >= 0 && nv <= 100);
    nb_q_msgs_free(m, 1);
    sleep_ms(150);
    n = nb_q_receive(q, "m", 1, 5000, &m, &err);
    CHECK(n == 1);
    CHECK_STR(m[0].body, "two");
    nb_q_msgs_free(m, 1);

    s = stats(q, "m");
    CHECK(s.visible == 2 && s.inflight == 1 && s.deleted == 1 && s.oldest_ms >= 0);

    /* Delay: invisible first, counted as delayed, then receivable. */
    CHECK(nb_q_create(q, "d", NULL, &err) == 0);
    CHECK(send1(q, "d", "later", 150, NULL) == 0);
    s = stats(q, "d");
    CHECK(s.delayed == 1 && s.visible == 0 && s.inflight == 0);
    CHECK(nb_q_receive(q, "d", 1, 0, &m, &err) == 0);
    nv = nb_q_next_visible_ms(q, "d");
    CHECK(nv > 0 && nv <= 150);
    sleep_ms(200);
    CHECK(nb_q_next_visible_ms(q, "d") == 0);
    CHECK(nb_q_receive(q, "d", 1, 0, &m, &err) == 1);
    CHECK_STR(m[0].body, "later");
    nb_q_msgs_free(m, 1);

    /* Attributes, size and shape checks. */
    json_t *attrs = json_pack("{ss}", "kind", "order");
    nb_q_out o = {.body = "a", .body_len = 1, .attrs = attrs};
    CHECK(send_many(q, "d", &o, 1, &w, &err) == 0);
    json_decref(attrs);
    CHECK(nb_q_receive(q, "d", 1, 0, &m, &err) == 1);
    CHECK(m[0].attrs && json_is_object(m[0].attrs));
    CHECK_STR(json_string_value(json_object_get(m[0].attrs, "kind")), "order");
    nb_q_msgs_free(m, 1);
    attrs = json_pack("{si}", "n", 1);
    o.attrs = attrs;
    check_err(nb_q_send(q, "d", &o, 1, on_sent, NULL, &err), &err, 400, NB_E_INVALID_VALUE);
    json_decref(attrs);
    char *big = calloc(1, NB_Q_MAX_BODY + 1);
    o = (nb_q_out){.body = big, .body_len = NB_Q_MAX_BODY + 1};
    check_err(nb_q_send(q, "d", &o, 1, on_sent, NULL, &err), &err, 413, NB_E_TOO_LARGE);
    o.body_len = NB_Q_MAX_BODY;
    CHECK(send_many(q, "d", &o, 1, &w, &err) == 0);
    free(big);

    /* An explicit id already in the queue (a repeated move) adds nothing. */
    CHECK(nb_q_create(q, "ids", NULL, &err) == 0);
    int64_t old_ms = nb_now_ms() - 1000;
    o = (nb_q_out){.body = "x", .body_len = 1, .id = "fixed-id", .sent_ms = old_ms};
    CHECK(send_many(q, "ids", &o, 1, &w, &err) == 0);
    CHECK_STR(w.ids[0], "fixed-id");
    CHECK(send_many(q, "ids", &o, 1, &w, &err) == 0);
    s = stats(q, "ids");
    CHECK(s.visible == 1);
    CHECK(nb_q_peek(q, "ids", 10, &m, &err) == 1);
    CHECK(m[0].sent_ms == old_ms);
    nb_q_msgs_free(m, 1);

    /* Deleting a queue deletes its messages. */
    CHECK(nb_q_delete_queue(q, "ids", &err) == 0);
    check_err(nb_q_receive(q, "ids", 1, 0, &m, &err), &err, 404, NB_E_NOT_FOUND);
    nb_q_close(q);
    printf("messages: ok\n");
}

static void test_dead_letter_move_peek(void)
{
    nb_q *q = open_q("dlq.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "dlq", NULL, &err) == 0);
    nb_q_config c = cfg_of(30, 0, 2, "dlq");
    CHECK(nb_q_create(q, "main", &c, &err) == 0);
    char id[37];
    CHECK(send1(q, "main", "poison", 0, id) == 0);
    nb_q_msg *m;
    CHECK(nb_q_receive(q, "main", 1, 0, &m, &err) == 1);
    int64_t sent = m[0].sent_ms;
    nb_q_msgs_free(m, 1);
    sleep_ms(50);
    CHECK(nb_q_receive(q, "main", 1, 0, &m, &err) == 1);
    CHECK(m[0].receive_count == 2);
    nb_q_msgs_free(m, 1);
    sleep_ms(50);
    /* Received max_receives times and not deleted: the next receive moves it. */
    int before = atomic_load(&notified);
    CHECK(nb_q_receive(q, "main", 1, 0, &m, &err) == 0);
    CHECK(atomic_load(&notified) > before);
    nb_q_stats s = stats(q, "main");
    CHECK(s.dead_lettered == 1 && s.visible == 0 && s.inflight == 0);
    CHECK(nb_q_receive(q, "dlq", 1, 0, &m, &err) == 1);
    CHECK_STR(m[0].id, id);
    CHECK_STR(m[0].body, "poison");
    CHECK(m[0].sent_ms == sent && m[0].receive_count == 1);
    CHECK(nb_q_delete(q, "dlq", m[0].id, m[0].receipt, &err) == 0);
    nb_q_msgs_free(m, 1);

    /* Without a dead-letter queue, max_receives does nothing. */
    c = cfg_of(30, 0, 1, NULL);
    CHECK(nb_q_create(q, "nodlq", &c, &err) == 0);
    CHECK(send1(q, "nodlq", "x", 0, NULL) == 0);
    for (int i = 1; i <= 3; i++) {
        CHECK(nb_q_receive(q, "nodlq", 1, 0, &m, &err) == 1);
        CHECK(m[0].receive_count == i);
        nb_q_msgs_free(m, 1);
        sleep_ms(40);
    }

    /* Redrive: everything moves, ids and send times kept; peek shows oldest first. */
    CHECK(nb_q_create(q, "a", NULL, &err) == 0);
    CHECK(nb_q_create(q, "b", NULL, &err) == 0);
    char ida[37], idb[37];
    CHECK(send1(q, "a", "first", 0, ida) == 0);
    sleep_ms(2);
    CHECK(send1(q, "a", "second", 0, idb) == 0);
    CHECK(nb_q_receive(q, "a", 1, 5000, &m, &err) == 1); /* in flight moves too */
    nb_q_msgs_free(m, 1);
    CHECK(nb_q_peek(q, "a", 10, &m, &err) == 2);
    CHECK_STR(m[0].id, ida);
    CHECK(m[0].receive_count == 1 && m[0].receipt[0] == 0);
    CHECK_STR(m[1].body, "second");
    nb_q_msgs_free(m, 2);
    CHECK(nb_q_peek(q, "a", 1, &m, &err) == 1);
    nb_q_msgs_free(m, 1);
    CHECK(nb_q_move_all(q, "a", "b", &err) == 2);
    CHECK(stats(q, "a").visible == 0 && stats(q, "a").inflight == 0);
    check_err((int)nb_q_move_all(q, "a", "a", &err), &err, 400, NB_E_INVALID_VALUE);
    check_err((int)nb_q_move_all(q, "a", "zz", &err), &err, 404, NB_E_NOT_FOUND);
    CHECK(nb_q_receive(q, "b", 10, 0, &m, &err) == 2);
    CHECK_STR(m[0].id, ida);
    CHECK_STR(m[1].id, idb);
    CHECK(m[0].receive_count == 1);
    nb_q_msgs_free(m, 2);
    nb_q_close(q);
    printf("dead letter, move, peek: ok\n");
}

static void test_retention(void)
{
    nb_q *q = open_q("ret.db");
    nb_err err = {0};
    nb_q_config c = cfg_of(0, 60000, 0, NULL);
    CHECK(nb_q_create(q, "r", &c, &err) == 0);
    nb_q_out o = {.body = "old", .body_len = 3, .sent_ms = nb_now_ms() - 61000};
    waiter w;
    CHECK(send_many(q, "r", &o, 1, &w, &err) == 0);
    CHECK(send1(q, "r", "new", 0, NULL) == 0);
    sleep_ms(3 * TICK_MS);
    nb_q_stats s = stats(q, "r");
    CHECK(s.expired == 1 && s.visible == 1);
    nb_q_msg *m;
    CHECK(nb_q_receive(q, "r", 10, 0, &m, &err) == 1);
    CHECK_STR(m[0].body, "new");
    nb_q_msgs_free(m, 1);
    nb_q_close(q);
    q = open_q("ret.db"); /* the drop was written */
    CHECK(stats(q, "r").visible == 1);
    nb_q_close(q);
    printf("retention: ok\n");
}

static void test_reopen(void)
{
    nb_q *q = open_q("reopen.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "x", NULL, &err) == 0);
    char ids[5][37];
    for (int i = 0; i < 5; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        CHECK(send1(q, "x", body, 0, ids[i]) == 0);
    }
    nb_q_msg *m;
    CHECK(nb_q_receive(q, "x", 2, 300, &m, &err) == 2);
    CHECK(nb_q_delete(q, "x", m[0].id, m[0].receipt, &err) == 0);
    char receipt[80];
    snprintf(receipt, sizeof receipt, "%s", m[1].receipt);
    nb_q_msgs_free(m, 2);
    nb_q_close(q);

    q = open_q("reopen.db");
    nb_q_stats s = stats(q, "x");
    CHECK(s.visible == 3 && s.inflight == 1);
    /* The latest receipt still holds; in flight comes back when its timeout is over. */
    CHECK(nb_q_change_visibility(q, "x", ids[1], receipt, 100, &err) == 0);
    sleep_ms(150);
    CHECK(nb_q_receive(q, "x", 10, 0, &m, &err) == 4);
    CHECK_STR(m[0].id, ids[1]);
    CHECK(m[0].receive_count == 2);
    CHECK_STR(m[3].body, "m4");
    nb_q_msgs_free(m, 4);
    nb_q_close(q);
    printf("reopen: ok\n");
}

static void test_disk_failure(void)
{
    nb_q *q = open_q("fail.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "f", NULL, &err) == 0);
    char keep[37];
    CHECK(send1(q, "f", "kept", 0, keep) == 0);
    atomic_store(&q->fail_commits, 1);
    CHECK(send1(q, "f", "lost", 0, NULL) == 503);
    CHECK(send1(q, "f", "refused", 0, NULL) == -1);
    nb_q_out o = {.body = "r", .body_len = 1};
    check_err(nb_q_send(q, "f", &o, 1, on_sent, NULL, &err), &err, 503, NB_E_UNAVAILABLE);
    /* Receive and delete while failed: kept in memory, written by the next good commit. */
    nb_q_msg *m;
    CHECK(nb_q_receive(q, "f", 10, 0, &m, &err) == 1);
    CHECK_STR(m[0].body, "kept");
    CHECK(nb_q_delete(q, "f", m[0].id, m[0].receipt, &err) == 0);
    nb_q_msgs_free(m, 1);
    int64_t t0 = mono_ms();
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool failed = q->failed;
        pthread_mutex_unlock(&q->mu);
        if (!failed) break;
        CHECK(mono_ms() - t0 < 3000);
        sleep_ms(20);
    }
    CHECK(send1(q, "f", "again", 0, NULL) == 0);
    nb_q_stats s = stats(q, "f");
    CHECK(s.visible == 1 && s.sent == 2);
    nb_q_close(q);
    q = open_q("fail.db");
    CHECK(nb_q_peek(q, "f", 10, &m, &err) == 1);
    CHECK_STR(m[0].body, "again");
    nb_q_msgs_free(m, 1);
    nb_q_close(q);
    printf("disk failure: ok\n");
}

/* Senders and consumers at once: every message is delivered and deleted, the counters agree. */
#define CONC_SENDERS   4
#define CONC_CONSUMERS 3
#define CONC_EACH      2000

static nb_q *conc_q;
static _Atomic int64_t conc_deleted;

static void *conc_send(void *arg)
{
    (void)arg;
    for (int i = 0; i < CONC_EACH; i += 4) {
        nb_q_out o[4];
        for (int k = 0; k < 4; k++)
            o[k] = (nb_q_out){.body = "payload", .body_len = 7, .delay_ms = k == 3 ? 20 : 0};
        waiter w;
        nb_err err = {0};
        CHECK(send_many(conc_q, "c", o, 4, &w, &err) == 0);
    }
    return NULL;
}

static void *conc_consume(void *arg)
{
    (void)arg;
    int64_t total = (int64_t)CONC_SENDERS * CONC_EACH, t0 = mono_ms();
    while (atomic_load(&conc_deleted) < total) {
        CHECK(mono_ms() - t0 < 10000);
        nb_q_msg *m;
        nb_err err = {0};
        int n = nb_q_receive(conc_q, "c", 10, 2000, &m, &err);
        CHECK(n >= 0);
        if (n == 0) {
            sleep_ms(1);
            continue;
        }
        for (int i = 0; i < n; i++) {
            /* Every third one goes back once, to be received again. */
            if (m[i].receive_count == 1 && m[i].id[0] % 3 == 0) {
                CHECK(nb_q_change_visibility(conc_q, "c", m[i].id, m[i].receipt, 0, &err) == 0);
                continue;
            }
            CHECK(nb_q_delete(conc_q, "c", m[i].id, m[i].receipt, &err) == 0);
            atomic_fetch_add(&conc_deleted, 1);
        }
        nb_q_msgs_free(m, (size_t)n);
    }
    return NULL;
}

static void test_concurrent(void)
{
    conc_q = open_q("conc.db");
    nb_err err = {0};
    CHECK(nb_q_create(conc_q, "c", NULL, &err) == 0);
    pthread_t t[CONC_SENDERS + CONC_CONSUMERS];
    for (int i = 0; i < CONC_SENDERS + CONC_CONSUMERS; i++)
        pthread_create(&t[i], NULL, i < CONC_SENDERS ? conc_send : conc_consume, NULL);
    for (int i = 0; i < CONC_SENDERS + CONC_CONSUMERS; i++)
        pthread_join(t[i], NULL);
    nb_q_stats s = stats(conc_q, "c");
    int64_t total = (int64_t)CONC_SENDERS * CONC_EACH;
    CHECK(s.sent == total && s.deleted == total && s.visible == 0 && s.inflight == 0 &&
          s.delayed == 0 && s.received > total);
    nb_q_close(conc_q);
    conc_q = open_q("conc.db");
    s = stats(conc_q, "c");
    CHECK(s.visible == 0 && s.inflight == 0 && s.delayed == 0);
    nb_q_close(conc_q);
    printf("concurrent: %lld sent, received and deleted\n", (long long)total);
}

/* A queue that emptied gives its index memory back. */
static void test_trim(void)
{
    nb_q *q = open_q("trim.db");
    nb_err err = {0};
    CHECK(nb_q_create(q, "t", NULL, &err) == 0);
    nb_q_out o[100];
    for (int i = 0; i < 100; i++)
        o[i] = (nb_q_out){.body = "x", .body_len = 1};
    for (int i = 0; i < 50; i++) {
        waiter w;
        CHECK(send_many(q, "t", o, 100, &w, &err) == 0);
    }
    int n, total = 0;
    nb_q_msg *m;
    while ((n = nb_q_receive(q, "t", 1000, 0, &m, &err)) > 0) {
        for (int i = 0; i < n; i++)
            CHECK(nb_q_delete(q, "t", m[i].id, m[i].receipt, &err) == 0);
        nb_q_msgs_free(m, (size_t)n);
        total += n;
    }
    CHECK(total == 5000);
    pthread_mutex_lock(&q->mu);
    qqueue *qq = find_queue(q, "t", NULL);
    CHECK(qq->vis.cap >= 4096 && qq->ids.cap >= 8192);
    pthread_mutex_unlock(&q->mu);
    sleep_ms(4 * TICK_MS);
    pthread_mutex_lock(&q->mu);
    CHECK(qq->vis.cap < 4096 && qq->inv.cap < 4096 && qq->ids.cap < 8192);
    pthread_mutex_unlock(&q->mu);
    nb_q_close(q);
    printf("trim: ok\n");
}

/* ---- crashes ---- */

#define CRASH_THREADS 8

typedef struct crash_sender {
    nb_q *q;
    int fd;
} crash_sender;

typedef struct crash_waiter {
    waiter w; /* first: on_sent takes the same pointer */
    crash_sender *cs;
} crash_waiter;

static void crash_sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    crash_waiter *cw = ud;
    if (status == 0) {
        char line[37];
        memcpy(line, ids[0], 36);
        line[36] = '\n';
        /* One write under PIPE_BUF: the parent never sees half an id. */
        if (write(cw->cs->fd, line, 37) != 37) _exit(3);
    }
    on_sent(&cw->w, status, msg, ids, n);
}

static void *crash_thread(void *arg)
{
    crash_waiter cw = {.cs = arg};
    for (uint64_t i = 0;; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "crash message %llu", (unsigned long long)i);
        nb_q_out o = {.body = body, .body_len = (size_t)len};
        memset(&cw.w, 0, sizeof cw.w);
        pthread_mutex_init(&cw.w.mu, NULL);
        pthread_cond_init(&cw.w.cv, NULL);
        nb_err err = {0};
        if (nb_q_send(cw.cs->q, "crash", &o, 1, crash_sent, &cw, &err) < 0) _exit(4);
        pthread_mutex_lock(&cw.w.mu);
        while (!cw.w.done)
            pthread_cond_wait(&cw.w.cv, &cw.w.mu);
        pthread_mutex_unlock(&cw.w.mu);
        pthread_mutex_destroy(&cw.w.mu);
        pthread_cond_destroy(&cw.w.cv);
    }
    return NULL;
}

static void test_crash(void)
{
    size_t cap = 1 << 16, nacked = 0;
    char(*acked)[37] = malloc(cap * sizeof *acked);
    CHECK(acked);
    srand((unsigned)getpid());
    /* The queue exists before the first child: one killed before its create (a loaded machine)
     * would otherwise leave nothing to check. */
    nb_q *q0 = open_q("crash.db");
    nb_err err0 = {0};
    CHECK(nb_q_create(q0, "crash", NULL, &err0) == 0);
    nb_q_close(q0);
    int kills = 5;
    for (int k = 0; k < kills; k++) {
        int p[2];
        CHECK(pipe(p) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            nb_err err = {0};
            nb_q *q = nb_q_open(db_path("crash.db"), NULL, NULL, &err);
            if (!q || nb_q_create(q, "crash", NULL, &err) < 0) _exit(2);
            static crash_sender cs;
            cs.q = q;
            cs.fd = p[1];
            pthread_t t[CRASH_THREADS];
            for (int i = 0; i < CRASH_THREADS; i++)
                pthread_create(&t[i], NULL, crash_thread, &cs);
            for (;;)
                pause();
        }
        close(p[1]);
        int64_t deadline = mono_ms() + 50 + rand() % 250, got_before = (int64_t)nacked;
        bool killed = false;
        char buf[37 * 256];
        size_t have = 0;
        for (;;) {
            int64_t left = deadline - mono_ms();
            if (!killed && left <= 0) {
                kill(pid, SIGKILL);
                killed = true;
            }
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, killed ? 1000 : (int)left) <= 0) continue;
            ssize_t r = read(p[0], buf + have, sizeof buf - have);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            have += (size_t)r;
            size_t off = 0;
            for (; have - off >= 37; off += 37) {
                CHECK(buf[off + 36] == '\n');
                if (nacked == cap) {
                    cap *= 2;
                    acked = realloc(acked, cap * sizeof *acked);
                    CHECK(acked);
                }
                memcpy(acked[nacked], buf + off, 36);
                acked[nacked++][36] = 0;
            }
            memmove(buf, buf + off, have - off);
            have -= off;
        }
        close(p[0]);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CHECK(have == 0);

        /* Every send the child saw acknowledged is there, in this and earlier lives. */
        nb_q *q = open_q("crash.db");
        pthread_mutex_lock(&q->mu);
        qqueue *qq = find_queue(q, "crash", NULL);
        CHECK(qq);
        for (size_t i = 0; i < nacked; i++) {
            if (!hash_find(&qq->ids, acked[i])) fprintf(stderr, "lost %s\n", acked[i]);
            CHECK(hash_find(&qq->ids, acked[i]));
        }
        int64_t held = qq->nmsgs;
        pthread_mutex_unlock(&q->mu);
        nb_q_close(q);
        printf("crash %d: killed after %lld acknowledged sends; store holds %lld, all %zu "
               "acknowledged present\n",
               k + 1, (long long)((int64_t)nacked - got_before), (long long)held, nacked);
    }
    CHECK(nacked > 0);
    free(acked);
}

/* The byte cap: a store of 1 MiB takes one message of 600 KiB, refuses a second ("full"), and
 * takes it once the first is deleted; reopening counts what was loaded. */
static void test_byte_cap(void)
{
    setenv("NIMBUS_QUEUE_MAX_MB", "1", 1);
    nb_q *q = open_q("bytes.db");
    unsetenv("NIMBUS_QUEUE_MAX_MB");
    nb_err err = {0};
    CHECK(nb_q_create(q, "b", NULL, &err) == 0);
    static char big[600 << 10];
    memset(big, 'b', sizeof big - 1);
    nb_q_out o = {.body = big, .body_len = sizeof big - 1};
    waiter w;
    CHECK(send_many(q, "b", &o, 1, &w, &err) == 0);
    check_err(send_many(q, "b", &o, 1, &w, &err), &err, 503, "full");
    nb_q_msg *m;
    CHECK(nb_q_receive(q, "b", 1, 0, &m, &err) == 1);
    CHECK(nb_q_delete(q, "b", m[0].id, m[0].receipt, &err) == 0);
    nb_q_msgs_free(m, 1);
    CHECK(send_many(q, "b", &o, 1, &w, &err) == 0);
    nb_q_close(q);
    setenv("NIMBUS_QUEUE_MAX_MB", "1", 1);
    q = open_q("bytes.db");
    unsetenv("NIMBUS_QUEUE_MAX_MB");
    check_err(send_many(q, "b", &o, 1, &w, &err), &err, 503, "full");
    nb_q_close(q);
}

int main(void)
{
    CHECK(mkdtemp(dir));
    test_byte_cap();
    test_queues();
    test_messages();
    test_dead_letter_move_peek();
    test_retention();
    test_reopen();
    test_disk_failure();
    test_concurrent();
    test_trim();
    test_crash();
    nb_rm_rf(dir);
    printf("all ok\n");
    return 0;
}
