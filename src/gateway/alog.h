/* nb_alog: the gateway's access records and response logs, and the usage views made of them.
 *
 * Every request through the gateway gives one record. Recording copies the record into a
 * bounded in-memory batch and returns: it never waits for I/O (a writer thread commits
 * batches to its own SQLite database, DATA/gateway.db, in one transaction each). If the writer
 * falls so far behind that the batch is full (NB_ALOG_MAX_PENDING records), records are
 * dropped and counted (nb_alog_dropped), never the request. Retention: records older than
 * max_age_s, and the oldest beyond max_records, are deleted by the writer.
 *
 * Threads: nb_alog_record from any thread; queries from any thread (they open their own
 * read connection per call, or share one under a mutex). */
#ifndef NB_ALOG_H
#define NB_ALOG_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define NB_ALOG_MAX_PENDING 65536

typedef struct nb_alog nb_alog;

typedef struct nb_alog_limits {
    int64_t max_records; /* default 1000000 */
    int64_t max_age_s;   /* default 7 days */
} nb_alog_limits;

typedef struct nb_alog_rec {
    int64_t time_ms; /* epoch ms of arrival */
    const char *ns;
    const char *api;   /* "" when no API matched */
    const char *route; /* route key "GET /items/{id}", "" when none */
    const char *method;
    const char *path; /* raw path with query */
    int status;
    int64_t latency_us;
    const char *consumer;      /* key id, client id or JWT subject; "" anonymous */
    const char *consumer_kind; /* "key", "client", "jwt" or "" */
    const char *request_id;
    const char *source_ip;
    int64_t bytes_in, bytes_out;
    int cold;               /* the invocation had a cold start */
    const char *error_code; /* gateway error code ("quota_exceeded") or "" */
    const char *body;       /* response body to log (already truncated), NULL: none */
    size_t body_len;
} nb_alog_rec;

nb_alog *nb_alog_open(const char *db_path, const nb_alog_limits *lim, nb_err *err);
/* Flushes what is pending and stops the writer. */
void nb_alog_close(nb_alog *a);
/* Copies r. Never blocks on I/O. */
void nb_alog_record(nb_alog *a, const nb_alog_rec *r);
/* Waits until everything recorded before the call is committed (tests, shutdown). */
void nb_alog_flush(nb_alog *a);
int64_t nb_alog_dropped(const nb_alog *a);

typedef struct nb_alog_filter {
    const char *ns;
    const char *api;  /* NULL: every API of ns */
    int64_t since_ms; /* 0: all */
    int status_class; /* 0 any; 2..5 for "2xx".."5xx" */
    int status;       /* 0 any; exact status */
    int64_t after_id; /* records with id > after_id (follow) */
    int limit;        /* max rows, newest last; <= 0: 100; at most 10000 */
} nb_alog_filter;

/* The records matching f, oldest first, as a JSON array of objects (id, time, api, route,
 * method, path, status, latency_ms, consumer, consumer_kind, request_id, source_ip, bytes_in,
 * bytes_out, cold_start, error_code, body (only when logged)). *last_id: the highest id
 * returned (or f->after_id). The last `limit` matching records are returned when there are
 * more. */
json_t *nb_alog_query(nb_alog *a, const nb_alog_filter *f, int64_t *last_id, nb_err *err);
/* Usage grouped by "key" (consumer), "route", "status", "day" or "api": a JSON array of
 * {"<by>":..., "requests":N, "errors_4xx":N, "errors_5xx":N, "bytes_in":N, "bytes_out":N,
 *  "latency_ms_avg":X, "latency_ms_max":X}, sorted by requests descending (the first 10000
 * groups). f's status, after_id and limit are ignored. */
json_t *nb_alog_usage(nb_alog *a, const nb_alog_filter *f, const char *by, nb_err *err);

#endif
