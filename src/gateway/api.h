/* nb_api: the admin API (docs/api.md): routes, authentication and the handlers that turn
 * requests into store, bundle, invoker and logs calls.
 *
 * The route table in api.c is the single declaration of what the server serves; `nimbus serve
 * --routes` prints it and a test checks it against docs/api.md.
 *
 * Threads: one nb_api per loop (its invoker, logs and followers), used on that loop's thread.
 * They share the store (nb_store_locked) and admin_mu, which serialises the requests that
 * change state (code upload, deploy, scaling, delete), so the store's order of versions is the
 * order in which every loop sees them. Invokes never take it. The context is owned by the
 * daemon and outlives every request. */
#ifndef NB_API_H
#define NB_API_H

#include "events/async.h"
#include "events/bus.h"
#include "events/queue.h"
#include "events/schedules.h"
#include "events/topics.h"
#include "gateway/alog.h"
#include "gateway/gw.h"
#include "invoke/invoke.h"
#include "logs/logs.h"
#include "store/store.h"

#include <h2o.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>

typedef struct nb_api_follower nb_api_follower;

typedef struct nb_api {
    const char *data_dir;
    char token[80];
    char blob_root[PATH_MAX];
    char code_root[PATH_MAX];
    nb_store *store;
    nb_invoker *invoker;
    nb_logs *logs;
    nb_api_follower *followers;
    pthread_mutex_t *admin_mu; /* shared by every loop's nb_api */
    nb_gw *gw;                 /* the API gateway's config (shared) */
    nb_alog *alog;             /* the gateway's access records (shared) */
    struct nb_use *use;        /* metering: usage and cost (shared) */
    nb_q *q;                   /* durable queues (shared) */
    nb_async *async;           /* the dispatcher (loop 0's; any loop may read its stats) */
    nb_async_port *port;       /* this loop's mailbox: durable sends answer through it */
    nb_schd *schd;             /* the scheduler (loop 0's; any loop may ask next firings) */
    nb_topics *topics;         /* topics' fan-out (loop 0's; any loop may ask it to reload) */
    nb_bus *bus;               /* the event bus: rules (reloaded on change), platform events */
    struct nb_met *metrics;    /* GET /metrics (shared; NULL: 404) */
    int metrics_public;        /* serve --metrics-public: /metrics needs no token */
    int draining;
} nb_api;

/* The nb_http handler. */
int nb_api_handle(void *api, h2o_req_t *req, const char *request_id);
/* Ends every open log stream (shutdown). */
void nb_api_end_streams(nb_api *api);
void nb_api_print_routes(FILE *f);

#endif
