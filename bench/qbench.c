/* qbench: durable sends/s of nb_q with many concurrent senders, each waiting for its
 * acknowledgement before the next send (like that many clients), then the receive + delete
 * rate. Usage: qbench [senders=64] [seconds=3] [body bytes=200] [dir]. */
#include "events/queue.h"

#include "base/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nb_q *q;
static size_t body_len = 200;
static _Atomic bool stop;
static _Atomic int64_t acked, failed, received, deleted;

typedef struct sender {
    pthread_t t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    int64_t lat_sum_us, lat_max_us;
} sender;

static void on_sent(void *ud, int status, const char *msg, char (*ids)[37], size_t n)
{
    sender *s = ud;
    pthread_mutex_lock(&s->mu);
    s->status = status;
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *send_main(void *arg)
{
    sender *s = arg;
    char *body = malloc(body_len);
    memset(body, 'x', body_len);
    while (!atomic_load(&stop)) {
        nb_q_out o = {.body = body, .body_len = body_len};
        nb_err err = {0};
        s->done = false;
        int64_t t0 = nb_mono_us();
        if (nb_q_send(q, "bench", &o, 1, on_sent, s, &err) < 0) {
            fprintf(stderr, "send: %s\n", err.msg);
            atomic_fetch_add(&failed, 1);
            break;
        }
        pthread_mutex_lock(&s->mu);
        while (!s->done)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        int64_t lat = nb_mono_us() - t0;
        s->lat_sum_us += lat;
        if (lat > s->lat_max_us) s->lat_max_us = lat;
        atomic_fetch_add(s->status == 0 ? &acked : &failed, 1);
    }
    free(body);
    return NULL;
}

static void *recv_main(void *arg)
{
    (void)arg;
    for (;;) {
        nb_q_msg *m;
        nb_err err = {0};
        int n = nb_q_receive(q, "bench", 10, 30000, &m, &err);
        if (n <= 0) break;
        atomic_fetch_add(&received, n);
        for (int i = 0; i < n; i++)
            if (nb_q_delete(q, "bench", m[i].id, m[i].receipt, &err) == 0)
                atomic_fetch_add(&deleted, 1);
        nb_q_msgs_free(m, (size_t)n);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int nsend = argc > 1 ? atoi(argv[1]) : 64;
    int secs = argc > 2 ? atoi(argv[2]) : 3;
    if (argc > 3) body_len = (size_t)atol(argv[3]);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/qbench-XXXXXX", argc > 4 ? argv[4] : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[300];
    snprintf(path, sizeof path, "%s/queue.db", dir);
    nb_err err = {0};
    q = nb_q_open(path, NULL, NULL, &err);
    if (!q || nb_q_create(q, "bench", NULL, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }

    sender *s = calloc((size_t)nsend, sizeof *s);
    int64_t t0 = nb_mono_us();
    for (int i = 0; i < nsend; i++) {
        pthread_mutex_init(&s[i].mu, NULL);
        pthread_cond_init(&s[i].cv, NULL);
        pthread_create(&s[i].t, NULL, send_main, &s[i]);
    }
    struct timespec ts = {secs, 0};
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    int64_t lat_sum = 0, lat_max = 0;
    for (int i = 0; i < nsend; i++) {
        pthread_join(s[i].t, NULL);
        lat_sum += s[i].lat_sum_us;
        if (s[i].lat_max_us > lat_max) lat_max = s[i].lat_max_us;
    }
    double el = (double)(nb_mono_us() - t0) / 1e6;
    int64_t n = atomic_load(&acked);
    printf("durable sends: %lld in %.2f s = %.0f/s (%d senders, %zu-byte bodies, failed %lld);"
           " ack latency avg %.2f ms max %.2f ms\n",
           (long long)n, el, (double)n / el, nsend, body_len, (long long)atomic_load(&failed),
           n ? (double)lat_sum / (double)n / 1000.0 : 0.0, (double)lat_max / 1000.0);

    int nrecv = 4;
    pthread_t r[4];
    t0 = nb_mono_us();
    for (int i = 0; i < nrecv; i++)
        pthread_create(&r[i], NULL, recv_main, NULL);
    for (int i = 0; i < nrecv; i++)
        pthread_join(r[i], NULL);
    el = (double)(nb_mono_us() - t0) / 1e6;
    printf("receive + delete: %lld received, %lld deleted in %.2f s = %.0f/s (%d consumers,"
           " batches of 10)\n",
           (long long)atomic_load(&received), (long long)atomic_load(&deleted), el,
           (double)atomic_load(&deleted) / el, nrecv);
    int64_t t1 = nb_mono_us();
    nb_q_close(q);
    double cl = (double)(nb_mono_us() - t1) / 1e6;
    printf("close (commits the receives and deletes): %.2f s; receive + delete until on disk:"
           " %.0f/s\n",
           cl, (double)atomic_load(&deleted) / (el + cl));
    nb_rm_rf(dir);
    free(s);
    return 0;
}
