/* nb_fan over a real queue store and a libuv loop: copies land in every target and the source
 * message goes; a planner that asks for a later try keeps the message; a missing target drops
 * its copy only; a repeated forwarding (a crash between the copies and the delete) adds no
 * duplicates while the copies wait; copy ids are stable and distinct. */
#include "events/fan.h"

#include "check.h"

#include <stdatomic.h>
#include <unistd.h>

static char dir[] = "/tmp/nb-fan-XXXXXX";
static _Atomic(nb_fan *) fan;
static uv_loop_t loop;

static void on_notify(void *ud, const char *queue)
{
    (void)ud;
    nb_fan_notify(atomic_load(&fan), queue);
}

typedef struct plan_ud {
    int calls;
    int refuse; /* answer -1 this many times */
} plan_ud;

/* Two copies per message: to "a" (body upper-cased marker) and "b"; "gone" too when the body
 * says so. */
static int planner(void *ud, const char *queue, const nb_q_msg *m, nb_fan_plan *plan)
{
    plan_ud *p = ud;
    p->calls++;
    CHECK(strncmp(queue, "t/", 2) == 0);
    if (p->refuse > 0) {
        p->refuse--;
        return -1;
    }
    json_t *attrs = json_pack("{s:s}", "from", queue);
    CHECK(nb_fan_plan_add(plan, "a", m->body, m->body_len, attrs, 0) == 0);
    CHECK(nb_fan_plan_add(plan, "b", "copy", 4, NULL, 0) == 0);
    if (strcmp(m->body, "also-gone") == 0)
        CHECK(nb_fan_plan_add(plan, "gone", "x", 1, NULL, 0) == 0);
    if (strcmp(m->body, "too-big") == 0) {
        static char big[NB_Q_MAX_BODY + 10];
        memset(big, 'x', sizeof big);
        CHECK(nb_fan_plan_add(plan, "b", big, sizeof big, NULL, 0) == 0);
    }
    json_decref(attrs);
    return 0;
}

static int empty_planner(void *ud, const char *queue, const nb_q_msg *m, nb_fan_plan *plan)
{
    (void)ud;
    (void)queue;
    (void)m;
    (void)plan;
    return 0;
}

static void sent_cb(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    (void)msg;
    (void)ids;
    (void)n;
    atomic_store((_Atomic int *)ud, status == 0 ? 1 : -1);
}

static void send_one(nb_q *q, const char *queue, const char *body)
{
    _Atomic int done = 0;
    nb_q_out out = {.body = body, .body_len = strlen(body)};
    nb_err err = {0};
    CHECK(nb_q_send(q, queue, &out, 1, sent_cb, &done, &err) == 0);
    while (!atomic_load(&done))
        usleep(1000);
    CHECK(atomic_load(&done) == 1);
}

static int64_t depth(nb_q *q, const char *queue)
{
    nb_q_stats st;
    nb_err err = {0};
    CHECK(nb_q_get_stats(q, queue, &st, &err) == 0);
    return st.visible + st.inflight + st.delayed;
}

/* Runs the loop until cond holds (or 5 s pass: a failure). */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        for (int i_ = 0; i_ < 5000 && !(cond); i_++) {                                             \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
            usleep(1000);                                                                          \
        }                                                                                          \
        CHECK(cond);                                                                               \
    } while (0)

int main(void)
{
    CHECK(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/events.db", dir);
    nb_err err = {0};
    nb_q *q = nb_q_open(path, on_notify, NULL, &err);
    CHECK(q);
    for (const char *n = "t/x\0a\0b\0"; *n; n += strlen(n) + 1)
        CHECK(nb_q_create(q, n, NULL, &err) == 0);
    uv_loop_init(&loop);

    /* Copy ids: stable, distinct per queue and per index, UUID-shaped. */
    char id1[37], id2[37], id3[37], id4[37];
    nb_fan_copy_id("m1", "a", 0, id1);
    nb_fan_copy_id("m1", "a", 0, id2);
    nb_fan_copy_id("m1", "b", 0, id3);
    nb_fan_copy_id("m1", "a", 1, id4);
    CHECK_STR(id1, id2);
    CHECK(strcmp(id1, id3) != 0 && strcmp(id1, id4) != 0);
    CHECK(strlen(id1) == 36 && id1[8] == '-' && id1[14] == '5');

    /* A message sent before the fan exists is picked up when its source registers. */
    send_one(q, "t/x", "early");
    nb_fan *f = nb_fan_new(&loop, q);
    plan_ud pu = {0};
    nb_fan_source(f, "t/", planner, &pu);
    atomic_store(&fan, f);
    RUN_UNTIL(depth(q, "a") == 1 && depth(q, "b") == 1 && depth(q, "t/x") == 0);

    for (int i = 0; i < 20; i++)
        send_one(q, "t/x", "m");
    RUN_UNTIL(depth(q, "a") == 21 && depth(q, "b") == 21 && depth(q, "t/x") == 0);
    CHECK(nb_fan_inflight(f) == 0);

    /* The copy to "a" kept the body and got the attributes. */
    nb_q_msg *m = NULL;
    int n = nb_q_receive(q, "a", 1, 0, &m, &err);
    CHECK(n == 1);
    CHECK_STR(m[0].body, "early");
    CHECK_STR(json_string_value(json_object_get(m[0].attrs, "from")), "t/x");
    nb_q_msgs_free(m, 1);

    /* A missing target: the others get their copies and the message still goes. */
    send_one(q, "t/x", "also-gone");
    RUN_UNTIL(depth(q, "a") == 22 && depth(q, "t/x") == 0);

    /* A copy refused for good (too big): the others land, the message is parked with its
     * attributes, where it came from and where it was going. */
    CHECK(nb_q_create(q, "failed/fan", NULL, &err) == 0 || nb_q_exists(q, "failed/fan"));
    send_one(q, "t/x", "too-big");
    RUN_UNTIL(depth(q, "a") == 23 && depth(q, "t/x") == 0 && depth(q, "failed/fan") == 1);
    nb_q_msg *pm = NULL;
    CHECK(nb_q_receive(q, "failed/fan", 1, 0, &pm, &err) == 1);
    CHECK_STR(pm[0].body, "too-big");
    CHECK_STR(json_string_value(json_object_get(pm[0].attrs, "fan_source")), "t/x");
    CHECK_STR(json_string_value(json_object_get(pm[0].attrs, "fan_target")), "b");
    nb_q_msgs_free(pm, 1);

    /* The planner asks for a later try: the message stays, invisible until the retry. */
    pu.refuse = 1;
    int calls = pu.calls;
    send_one(q, "t/x", "later");
    RUN_UNTIL(pu.calls == calls + 1);
    CHECK(depth(q, "t/x") == 1);
    CHECK(depth(q, "a") == 23);

    /* Thousands of queues whose messages plan nothing, all dirty at once (a restart's backlog):
     * settled without recursing once per message. */
    for (int i = 0; i < 3000; i++) {
        char qn[32];
        snprintf(qn, sizeof qn, "e/%d", i);
        CHECK(nb_q_create(q, qn, NULL, &err) == 0);
        send_one(q, qn, "nothing");
    }
    nb_fan_source(f, "e/", empty_planner, NULL);
    RUN_UNTIL(nb_fan_inflight(f) == 0 && depth(q, "e/2999") == 0 && depth(q, "e/0") == 0);

    /* The same message forwarded twice (as after a crash before its delete): the copies are
     * deduplicated by their derived ids. */
    char cid[37];
    nb_fan_copy_id("same-source", "b", 1, cid);
    nb_q_out o = {.body = "copy", .body_len = 4, .id = cid};
    int64_t before = depth(q, "b");
    _Atomic int done = 0;
    CHECK(nb_q_send(q, "b", &o, 1, sent_cb, &done, &err) == 0);
    while (!atomic_load(&done))
        usleep(1000);
    done = 0;
    CHECK(nb_q_send(q, "b", &o, 1, sent_cb, &done, &err) == 0);
    while (!atomic_load(&done))
        usleep(1000);
    CHECK(depth(q, "b") == before + 1);

    nb_fan_stop(f);
    atomic_store(&fan, NULL);
    nb_q_close(q);
    nb_fan_free(f);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    printf("ok\n");
    return 0;
}
