#include "events/webhook.h"

#include "base/log.h"
#include "base/util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A queue scan also runs this often without any notification: a missed wake-up, or a message
 * made visible by a change nobody announced, waits at most this long. */
#define SCAN_MS 1000

/* Requests under way for one delivery queue (deliverer thread only). */
typedef struct slot {
    char queue[NB_Q_NAME_MAX + 1];
    int inflight;
} slot;

typedef struct req {
    nb_wh *w;
    CURL *easy;
    struct curl_slist *hdrs;
    char queue[NB_Q_NAME_MAX + 1];
    char id[37];
    char receipt[80];
    int receive_count;
    char *body; /* the message's body, owned: curl reads it in place */
    struct req *prev, *next;
} req;

struct nb_wh {
    nb_q *q;
    nb_wh_resolve resolve;
    void *ud;
    CURLM *multi;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int kick; /* a "wh/" queue has visible messages */
    /* Deliverer thread only. */
    slot *slots;
    size_t nslots, cap;
    int inflight;
    req *reqs; /* under way, so that free can end the abandoned ones */
};

int64_t nb_wh_backoff_ms(int receive_count)
{
    int64_t ms = 1000;
    for (int i = 1; i < receive_count && ms < NB_WH_BACKOFF_MAX; i++)
        ms *= 2;
    return ms < NB_WH_BACKOFF_MAX ? ms : NB_WH_BACKOFF_MAX;
}

static slot *slot_of(nb_wh *w, const char *queue, int create)
{
    for (size_t i = 0; i < w->nslots; i++)
        if (strcmp(w->slots[i].queue, queue) == 0) return &w->slots[i];
    if (!create) return NULL;
    /* Slots of queues that have nothing under way are reused: the array stays as small as the
     * number of busy subscriptions. */
    for (size_t i = 0; i < w->nslots; i++) {
        if (w->slots[i].inflight == 0) {
            snprintf(w->slots[i].queue, sizeof w->slots[i].queue, "%s", queue);
            return &w->slots[i];
        }
    }
    if (w->nslots == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        slot *s = realloc(w->slots, cap * sizeof *s);
        if (!s) abort();
        w->slots = s;
        w->cap = cap;
    }
    slot *s = &w->slots[w->nslots++];
    snprintf(s->queue, sizeof s->queue, "%s", queue);
    s->inflight = 0;
    return s;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n; /* the endpoint's answer is not kept: only its status counts */
}

static void req_free(req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (r->w->reqs == r)
        r->w->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    if (r->easy) {
        curl_multi_remove_handle(r->w->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->hdrs);
    free(r->body);
    free(r);
}

static struct curl_slist *header(struct curl_slist *l, const char *name, const char *value)
{
    char line[512];
    snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n) abort();
    return n;
}

/* Starts the POST of message m (its contents taken). */
static void start(nb_wh *w, const char *queue, const nb_wh_target *t, nb_q_msg *m)
{
    req *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->w = w;
    snprintf(r->queue, sizeof r->queue, "%s", queue);
    snprintf(r->id, sizeof r->id, "%s", m->id);
    snprintf(r->receipt, sizeof r->receipt, "%s", m->receipt);
    r->receive_count = m->receive_count;
    r->body = m->body;
    m->body = NULL;
    const char *mid = json_string_value(json_object_get(m->attrs, "message_id"));
    r->hdrs = header(NULL, "Content-Type", "text/plain; charset=UTF-8");
    r->hdrs = header(r->hdrs, "x-amz-sns-message-type", "Notification");
    r->hdrs = header(r->hdrs, "x-amz-sns-message-id", mid ? mid : m->id);
    r->hdrs = header(r->hdrs, "x-amz-sns-topic-arn", t->topic_arn);
    r->hdrs = header(r->hdrs, "x-amz-sns-subscription-arn", t->sub_arn);
    if (t->raw) r->hdrs = header(r->hdrs, "x-amz-sns-rawdelivery", "true");
    r->hdrs = header(r->hdrs, "Expect", ""); /* no 100-continue round trip */
    CURL *e = curl_easy_init();
    if (!e) abort();
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, t->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)m->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "nimbus-sns/" NIMBUS_VERSION);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)NB_WH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)NB_WH_TIMEOUT_MS / 2);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        /* Not sent: it comes back after its visibility timeout like any failed delivery. */
        nb_warn("webhook", "%s: cannot start the request for %s", queue, r->id);
        req_free(r);
        return;
    }
    slot_of(w, queue, 1)->inflight++;
    w->inflight++;
    r->next = w->reqs;
    if (w->reqs) w->reqs->prev = r;
    w->reqs = r;
}

/* A request ended: 2xx deletes the message, anything else shows it again after the backoff. */
static void finish(nb_wh *w, req *r, CURLcode rc)
{
    long status = 0;
    if (rc == CURLE_OK) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    nb_err err = {0};
    if (status >= 200 && status < 300) {
        if (nb_q_delete(w->q, r->queue, r->id, r->receipt, &err) < 0 && err.status != 404)
            nb_warn("webhook", "%s: delete %s: %s (it will be delivered again)", r->queue, r->id,
                    err.msg);
    } else {
        int64_t ms = nb_wh_backoff_ms(r->receive_count);
        if (rc != CURLE_OK)
            nb_info("webhook", "%s: delivery %d of %s failed: %s; again in %lld ms", r->queue,
                    r->receive_count, r->id, curl_easy_strerror(rc), (long long)ms);
        else
            nb_info("webhook", "%s: delivery %d of %s answered %ld; again in %lld ms", r->queue,
                    r->receive_count, r->id, status, (long long)ms);
        if (nb_q_change_visibility(w->q, r->queue, r->id, r->receipt, ms, &err) < 0 &&
            err.status != 404)
            nb_warn("webhook", "%s: %s: %s", r->queue, r->id, err.msg);
    }
    slot *s = slot_of(w, r->queue, 0);
    if (s) s->inflight--;
    w->inflight--;
    req_free(r);
}

/* Takes visible messages from every delivery queue with free slots. */
static void scan(nb_wh *w)
{
    size_t n = 0;
    char **names = nb_q_list(w->q, "wh/", &n);
    for (size_t i = 0; i < n && w->inflight < NB_WH_MAX_INFLIGHT; i++) {
        slot *s = slot_of(w, names[i], 0);
        int room = NB_WH_PER_QUEUE - (s ? s->inflight : 0);
        if (room > NB_WH_MAX_INFLIGHT - w->inflight) room = NB_WH_MAX_INFLIGHT - w->inflight;
        nb_wh_target t;
        if (room <= 0 || !w->resolve(w->ud, names[i], &t)) continue;
        nb_q_msg *m = NULL;
        nb_err err = {0};
        int k = nb_q_receive(w->q, names[i], room, NB_WH_VISIBILITY_MS, &m, &err);
        for (int j = 0; j < k; j++)
            start(w, names[i], &t, &m[j]);
        nb_q_msgs_free(m, k > 0 ? (size_t)k : 0);
    }
    nb_q_names_free(names, n);
}

static void *run(void *arg)
{
    nb_wh *w = arg;
    int64_t next_scan = 0;
    while (!atomic_load(&w->stop)) {
        int64_t now = nb_mono_us() / 1000;
        if (atomic_exchange(&w->kick, 0) || now >= next_scan) {
            scan(w);
            next_scan = now + SCAN_MS;
        }
        int running = 0;
        curl_multi_perform(w->multi, &running);
        CURLMsg *msg;
        int left, done = 0;
        while ((msg = curl_multi_info_read(w->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            req *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            CURLcode rc = msg->data.result;
            finish(w, r, rc);
            done = 1;
        }
        /* A finished request freed a slot: look for more at once. */
        if (done) atomic_store(&w->kick, 1);
        int64_t wait = next_scan - nb_mono_us() / 1000;
        if (atomic_load(&w->kick)) wait = 0;
        curl_multi_poll(w->multi, NULL, 0,
                        (int)(wait < 0         ? 0
                              : wait > SCAN_MS ? SCAN_MS
                                               : wait),
                        NULL);
    }
    return NULL;
}

nb_wh *nb_wh_new(nb_q *q, nb_wh_resolve resolve, void *ud, nb_err *err)
{
    /* Thread-safe from libcurl 7.84 on, and called before the deliverer thread exists. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        nb_err_set(err, 500, NB_E_INTERNAL, "webhooks: curl_global_init failed");
        return NULL;
    }
    nb_wh *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->q = q;
    w->resolve = resolve;
    w->ud = ud;
    w->multi = curl_multi_init();
    if (!w->multi) {
        free(w);
        curl_global_cleanup();
        nb_err_set(err, 500, NB_E_INTERNAL, "webhooks: curl_multi_init failed");
        return NULL;
    }
    curl_multi_setopt(w->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)NB_WH_MAX_INFLIGHT);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        curl_multi_cleanup(w->multi);
        free(w);
        curl_global_cleanup();
        nb_err_set(err, 500, NB_E_INTERNAL, "webhooks: cannot start the deliverer thread");
        return NULL;
    }
    w->started = 1;
    return w;
}

void nb_wh_notify(nb_wh *w, const char *queue)
{
    if (!w || strncmp(queue, "wh/", 3) != 0) return;
    atomic_store(&w->kick, 1);
    curl_multi_wakeup(w->multi);
}

void nb_wh_stop(nb_wh *w)
{
    if (!w || !w->started) return;
    atomic_store(&w->stop, 1);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    w->started = 0;
}

void nb_wh_free(nb_wh *w)
{
    if (!w) return;
    nb_wh_stop(w);
    /* Requests still under way: abandoned (see nb_wh_stop). */
    while (w->reqs)
        req_free(w->reqs);
    curl_multi_cleanup(w->multi);
    free(w->slots);
    free(w);
    curl_global_cleanup();
}
