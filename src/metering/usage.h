/* nb_use: metering. Every invocation that ends gives one record (docs/internals/metering.md);
 * records become usage (per function per minute) and cost (a price sheet).
 *
 * Recording encodes the record into a bounded in-memory batch under a short mutex and
 * returns: no allocation, no I/O. A writer thread swaps the batch out once a second (at once
 * when it is half full, or on a flush) and commits it to its own SQLite database
 * (DATA/usage.db) in one transaction: the per-minute rollup (kept rollup_days), summed in
 * memory first, and the raw records as one blob (a bounded window: max_age_s and
 * max_records). A full batch drops the record and counts it (nb_use_dropped), never delays
 * the invocation.
 *
 * Money is integer: prices are held in femto-dollars (1e-15 USD) per unit and a group's cost
 * is rounded once, to micro-dollars; a total is the sum of its rows' micro-dollars, so the
 * figures always add up.
 *
 * Threads: nb_use_record and nb_use_flush from any thread; nb_use_query from any thread (its
 * own read connection under a mutex). nb_use_open/close from one thread, around every other
 * call. Ownership: the nb_use is the daemon's; records are copied. */
#ifndef NB_USE_H
#define NB_USE_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Records pending at most (per buffer; the writer owns the other one while it commits). */
#define NB_USE_MAX_PENDING 8192

typedef struct nb_use nb_use;

/* What started an invocation. */
typedef enum nb_use_trigger {
    NB_TRIG_HTTP,     /* the admin API's invoke */
    NB_TRIG_API,      /* a gateway route */
    NB_TRIG_ASYNC,    /* an async event (admin API or a function's invoke_async) */
    NB_TRIG_QUEUE,    /* a queue subscription's batch */
    NB_TRIG_TOPIC,    /* a topic's function subscription */
    NB_TRIG_SCHEDULE, /* a schedule's firing */
    NB_TRIG_EVENT,    /* an event bus rule */
    NB_TRIG_CALL,     /* a running function's synchronous invoke */
    NB_TRIG_N
} nb_use_trigger;

typedef enum nb_use_outcome {
    NB_USE_SUCCESS,
    NB_USE_ERROR, /* error_type says which */
    NB_USE_TIMEOUT,
    NB_USE_OOM,
    NB_USE_THROTTLED,
    NB_USE_OUTCOME_N
} nb_use_outcome;

const char *nb_use_trigger_name(int t);
const char *nb_use_outcome_name(int o);

/* One record. kept_ms > 0 makes it a provisioned-concurrency sample instead of an invocation:
 * memory_mb x kept_ms were kept warm by min_instances (only ns, fn, start_ms are read else). */
typedef struct nb_use_rec {
    int64_t start_ms;      /* epoch ms the invocation started (or was throttled) */
    int64_t duration_us;   /* run time; 0 when it never ran */
    int64_t billed_ms;     /* nb_use_billed_ms(duration_us), 0 when it never ran */
    int64_t init_us;       /* init duration when cold, else 0 */
    int64_t cpu_us;        /* the cgroup's CPU time during the invocation; -1 unknown */
    int64_t max_memory_mb; /* the instance's cgroup peak; 0 unknown */
    int64_t version;
    int64_t kept_ms;
    int memory_mb;
    int cold;
    int trigger; /* nb_use_trigger */
    int outcome; /* nb_use_outcome */
    char request_id[40];
    char ns[65];
    char fn[65];
    char caller[96];     /* key/client name, calling function, schedule or rule; "" none */
    char error_type[64]; /* "" on success */
} nb_use_rec;

/* Lambda's billed duration: µs rounded up to the ms, at least 1. */
int64_t nb_use_billed_ms(int64_t duration_us);

/* Prices in femto-dollars per unit. */
typedef struct nb_use_prices {
    int64_t request_f;         /* per request */
    int64_t gb_second_f;       /* per GB-second of billed duration x memory */
    int64_t provisioned_gbs_f; /* per GB-second kept warm by min_instances */
    int64_t cpu_ms_f;          /* per CPU-ms */
} nb_use_prices;

/* Lambda x86 us-east-1: $0.20 per 1M requests, $0.0000166667 per GB-s, provisioned
 * concurrency $0.0000041667 per GB-s; CPU-ms 0. */
void nb_use_prices_default(nb_use_prices *p);
/* Reads {"request_per_million":0.2, "gb_second":..., "provisioned_gb_second":..., "cpu_ms":...}
 * (every key optional, the rest stays as it was; unknown keys refused) from a JSON text. */
int nb_use_prices_parse(nb_use_prices *p, const char *json, size_t len, nb_err *err);

/* The sums of a group. */
typedef struct nb_use_sums {
    int64_t requests, errors, throttles, cold_starts;
    int64_t billed_ms, duration_us, cpu_us;
    int64_t mb_ms;      /* sum of billed_ms x memory_mb: GB-s = mb_ms / 1024000 */
    int64_t kept_mb_ms; /* provisioned: memory_mb x ms kept */
} nb_use_sums;

/* Adds r to s (a provisioned sample adds only kept_mb_ms). Throttled invocations count as
 * throttles, not requests (they are not charged). */
void nb_use_sums_add(nb_use_sums *s, const nb_use_rec *r);
/* Cost of s in micro-dollars, rounded half up once. */
int64_t nb_use_cost_micro(const nb_use_sums *s, const nb_use_prices *p);

typedef struct nb_use_config {
    int64_t max_records;  /* raw window: default 1000000 */
    int64_t max_age_s;    /* raw window: default 86400 */
    int64_t rollup_days;  /* default 400 */
    int64_t flush_ms;     /* writer period: default 1000 */
    size_t max_pending;   /* default NB_USE_MAX_PENDING (tests make it small) */
    nb_use_prices prices; /* all 0: the defaults */
} nb_use_config;

nb_use *nb_use_open(const char *db_path, const nb_use_config *cfg, nb_err *err);
/* Commits what is pending and stops the writer. NULL is fine. */
void nb_use_close(nb_use *u);
/* Copies r. Never blocks on I/O, never allocates. NULL u: nothing. */
void nb_use_record(nb_use *u, const nb_use_rec *r);
/* Waits until every record recorded before the call is committed. */
void nb_use_flush(nb_use *u);
int64_t nb_use_dropped(const nb_use *u);
const nb_use_prices *nb_use_prices_of(const nb_use *u);

typedef struct nb_use_filter {
    int64_t from_ms, to_ms; /* [from, to); 0: open */
    const char *ns;         /* NULL: every namespace */
    const char *by;         /* "function", "namespace", "key" or "day" */
} nb_use_filter;

/* Usage grouped by f->by from the rollup (whole minutes): a JSON array of rows {<by>...,
 * requests, errors, throttles, cold_starts, billed_ms, duration_ms, gb_seconds, cpu_ms,
 * provisioned_gb_seconds, cost_usd, cost_micro_usd}, sorted by cost then requests descending,
 * the last row {"total":true, ...} the sum of the others. */
json_t *nb_use_query(nb_use *u, const nb_use_filter *f, nb_err *err);

/* The function's latest invocation records from the raw window, newest first:
 * {"invocations":[{request_id, start_ms, version, trigger, caller, duration_ms, billed_ms,
 * memory_mb, max_memory_mb, cpu_ms, init_ms, cold, outcome, error_type}]}. limit 1..500.
 * Committed records only (the writer's period behind). Scans at most the newest 64 batches. */
json_t *nb_use_recent(nb_use *u, const char *ns, const char *fn, int limit, nb_err *err);

/* The raw window's blob, which is also how a batch is held while it fills: "NBU1", a u32
 * count, then per record eight i64 (start_ms, duration_us, billed_ms, init_us, cpu_us,
 * max_memory_mb, version, kept_ms), an i32 memory_mb, three bytes (cold, trigger, outcome) and
 * five strings (request_id, ns, fn, caller, error_type), each a length byte and its bytes;
 * every integer little-endian. */
#define NB_USE_BLOB_MAGIC  "NBU1"
#define NB_USE_BLOB_HEADER 8
#define NB_USE_REC_FIXED   (8 * 8 + 4 + 3 + 5)
#define NB_USE_REC_MAX     (NB_USE_REC_FIXED + 39 + 64 + 64 + 95 + 63)
#define NB_USE_BLOB_MAX(n) (NB_USE_BLOB_HEADER + (size_t)(n)*NB_USE_REC_MAX)
/* Writes n records to out (NB_USE_BLOB_MAX(n) bytes); returns the length. */
size_t nb_use_encode(const nb_use_rec *recs, size_t n, uint8_t *out);
/* Calls cb for each record of a blob, in order; cb returning non-zero stops (returns 1).
 * -1: the blob is malformed (cb may have seen the records before the fault). */
typedef int (*nb_use_decode_cb)(const nb_use_rec *r, void *ud);
int nb_use_decode(const uint8_t *blob, size_t len, nb_use_decode_cb cb, void *ud);

#endif
