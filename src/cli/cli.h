/* nb_cli: the `nimbus` command line, a client of the admin API (docs/api.md).
 *
 * Each nb_cli_<command>() runs one subcommand. argv[0] is the command's name and the rest its
 * arguments; `g` holds the connection flags given before the command (`nimbus --url U ls`),
 * which the same flags after the command override. A command returns the process exit status:
 *
 *   0  success
 *   1  the operation failed: the daemon answered an error, could not be reached, or the
 *      invoked function raised (its error body still goes to stdout)
 *   2  bad command-line input; nothing was sent to the daemon
 *
 * Results go to stdout; every diagnostic is one line "nimbus: ..." on stderr. Commands are
 * meant to run once per process on the main thread: they use stdio and libcurl's global state.
 *
 * The helpers after the commands hold the logic the unit test (tests/unit/test_cli.c) checks:
 * option parsing, numbers and durations, K=V, URL building, formatting, locating the daemon,
 * packing a directory. They never print. Strings they return live in the caller's nb_buf (or
 * a struct the caller frees with the matching _free); strings taken from argv are borrowed and
 * must outlive the struct that points at them. Design notes: docs/internals/cli.md. */
#ifndef NB_CLI_H
#define NB_CLI_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

#ifndef NIMBUS_VERSION
#define NIMBUS_VERSION "0.0.0-dev"
#endif

/* Exit statuses, see above. */
#define NB_CLI_OK     0
#define NB_CLI_FAILED 1
#define NB_CLI_USAGE  2

/* Limits from docs/api.md, checked before anything is uploaded so a deploy that cannot
 * succeed fails fast. The daemon stays the authority; keep these in step with the doc. */
#define NB_CLI_MEMORY_MIN        128
#define NB_CLI_MEMORY_MAX        10240
#define NB_CLI_TIMEOUT_MIN       1
#define NB_CLI_TIMEOUT_MAX       900
#define NB_CLI_EPHEMERAL_MIN     512
#define NB_CLI_EPHEMERAL_MAX     10240
#define NB_CLI_CONCURRENCY_MAX   10000
#define NB_CLI_MIN_INSTANCES_MAX 1000
#define NB_CLI_IDLE_TIMEOUT_MAX  86400
#define NB_CLI_QUEUE_MAX         100000
#define NB_CLI_QUEUE_TIMEOUT_MAX 900000
#define NB_CLI_CODE_MAX          (64u << 20) /* POST /v1/code body */
#define NB_CLI_EVENT_MAX         (6u << 20)  /* invoke body */
#define NB_CLI_ASYNC_EVENT_MAX   (1u << 20)  /* invoke --async body */
#define NB_CLI_MESSAGE_MAX       (1u << 20)  /* a queue message, body and attributes */
#define NB_CLI_LOG_LINE_MAX      (1u << 20)  /* one NDJSON log line while streaming */

/* Connection flags given before the command; NULL/0 when absent. */
typedef struct nb_cli_globals {
    const char *url;
    const char *token;
    const char *data;
    int verbose;
} nb_cli_globals;

/* ---- commands (one exit status each, see above) ---- */

int nb_cli_deploy(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_invoke(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_ls(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_get(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_rm(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_versions(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_config(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_logs(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_version(const nb_cli_globals *g, int argc, char **argv);
/* Usage and cost from metering (cmd_usage.c). */
int nb_cli_usage(const nb_cli_globals *g, int argc, char **argv);
/* The API gateway's objects (cmd_gateway.c): `nimbus api|route|plan|key|client SUB ...`. */
int nb_cli_api(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_route(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_plan(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_key(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_client(const nb_cli_globals *g, int argc, char **argv);
/* Queues and failed async events (cmd_queue.c): `nimbus queue|events SUB ...`. */
int nb_cli_queue(const nb_cli_globals *g, int argc, char **argv);
/* Schedules (cmd_schedule.c): `nimbus schedule SUB ...`. */
int nb_cli_schedule(const nb_cli_globals *g, int argc, char **argv);
/* Topics (cmd_topic.c): `nimbus topic SUB ...`. */
int nb_cli_topic(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_service(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_top(const nb_cli_globals *g, int argc, char **argv);
int nb_cli_events(const nb_cli_globals *g, int argc, char **argv);
/* The event bus's rules (cmd_rule.c): `nimbus rule SUB ...`; `nimbus events put` is there too. */
int nb_cli_rule(const nb_cli_globals *g, int argc, char **argv);

/* ---- option parsing ---- */

/* One option of a command. Options are long (`--name value`, `--name=value`), optionally with
 * a one-letter short form (`-x value`); `-h`/`--help` is always known and needs no entry. */
typedef struct nb_cli_opt {
    const char *name;    /* without the leading "--" */
    char short_name;     /* 0: none */
    const char *metavar; /* NULL: a flag that takes no value; else the value's name in help */
    const char *help;    /* one line */
} nb_cli_opt;

/* The flags every client command accepts; put at the end of each command's table. */
#define NB_CLI_COMMON_OPTS                                                                         \
    {"url", 0, "URL", "daemon URL (env NIMBUS_URL; default from DATA/listen)"},                    \
        {"token", 0, "TOKEN", "admin token (env NIMBUS_TOKEN; default DATA/admin.token)"},         \
        {"data", 0, "DIR", "data dir of the daemon (env NIMBUS_DATA; default ./nimbus-data)"},     \
    {                                                                                              \
        "verbose", 'v', NULL, "print request ids and other details on stderr"                      \
    }

/* Stop at the first positional argument and leave the rest unparsed (main() uses this for the
 * flags before the command name). */
#define NB_CLI_ARGS_STOP_AT_POSITIONAL 1

typedef struct nb_cli_optval {
    size_t opt;        /* index into the table */
    const char *value; /* borrowed from argv; "" for flags */
} nb_cli_optval;

typedef struct nb_cli_args {
    const nb_cli_opt *opts;
    size_t nopts;
    int help;         /* -h or --help was seen (parsing stopped there) */
    int next;         /* index in argv of the first argument not consumed */
    const char **pos; /* positional arguments in order; array owned, strings borrowed */
    int npos;
    nb_cli_optval *items; /* every option occurrence in order (owned array) */
    int nitems;
} nb_cli_args;

/* Parses argv[1..argc) (argv[0], the command name, is skipped). "--" ends the options and a
 * lone "-" is a positional. Stops early at -h/--help with a->help set, so help wins over
 * anything after it. Returns 0, or -1 with err's message naming the bad flag (unknown flag,
 * missing value, value given to a flag). Free with nb_cli_args_free() either way. */
int nb_cli_args_parse(nb_cli_args *a, const nb_cli_opt *opts, size_t nopts, int argc, char **argv,
                      int flags, nb_err *err);
void nb_cli_args_free(nb_cli_args *a);
/* The value of the last occurrence of option `name` ("" for a flag), or NULL if not given.
 * `name` must be in the table (abort() otherwise: a programming error). */
const char *nb_cli_args_get(const nb_cli_args *a, const char *name);
int nb_cli_args_has(const nb_cli_args *a, const char *name);
/* Prints "usage: nimbus <command> <synopsis>", the description and the option table. */
void nb_cli_args_help(const nb_cli_opt *opts, size_t nopts, const char *command,
                      const char *synopsis, const char *description, nb_buf *out);

/* ---- values ---- */

/* A decimal integer in [min, max], digits only (no sign, spaces or suffix). 0 or -1. */
int nb_cli_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
/* A duration as one or more <digits><unit> with unit ms, s, m, h or d ("10m", "1h30m") into
 * milliseconds. 0, or -1 when malformed or over ~292 million years. */
int nb_cli_parse_duration_ms(const char *s, int64_t *out);
/* A --since value: digits only are Unix epoch milliseconds; a duration means that long before
 * now_ms (clamped at 0). 0 or -1. */
int nb_cli_parse_since(const char *s, int64_t now_ms, int64_t *out);
/* "KEY=VALUE" for --env: KEY matches [A-Za-z_][A-Za-z0-9_]*, VALUE may be empty. Sets
 * *key_len (the value starts at s + *key_len + 1). 0 or -1. */
int nb_cli_parse_env(const char *s, size_t *key_len);

/* "KEY=VALUE" for a queue message's --attr: KEY is 1..256 printable bytes without blanks,
 * VALUE may be empty (and hold '='). Sets *key_len as nb_cli_parse_env() does. 0 or -1. */
int nb_cli_parse_attr(const char *s, size_t *key_len);

/* A gateway object name (API, plan, key, client): [A-Za-z0-9_-]{1,64}. 1 or 0. */
int nb_cli_valid_name(const char *s);
/* A route method: an HTTP token (RFC 9110 tchar, 1..31 bytes) or ANY. 1 or 0. */
int nb_cli_valid_method(const char *s);
/* A decimal number in [min, max]: digits with an optional fraction ("2", "0.5"), no sign,
 * exponent or spaces. 0 or -1. */
int nb_cli_parse_real(const char *s, double min, double max, double *out);
/* A plan quota "N/day" or "N/month", N in 1..10^15. *period is "day" or "month" (static).
 * 0 or -1. */
int nb_cli_parse_quota(const char *s, int64_t *limit, const char **period);
/* Appends the items of a comma-separated list to the JSON array arr as strings, blanks around
 * items trimmed. -1 (arr possibly half-filled) when an item is empty ("a,,b", "", "a,"). The
 * json_t is jansson's; declared opaque here so this header does not pull jansson in. */
struct json_t;
int nb_cli_split_list(const char *s, struct json_t *arr);
/* One `topic publish` attribute flag into attrs as {"Type","Value"}: flag "attr" K=V (a
 * String, V not empty), "attr-number" K=N (a Number: N in JSON's number syntax) or "attr-list"
 * K=A,B (a String.Array of the comma-separated items). 0 or -1. (cmd_topic.c) */
int nb_cli_topic_attr(const char *flag, const char *kv, struct json_t *attrs);

/* ---- URLs ---- */

/* Appends s percent-encoded for one path segment or query value: everything but
 * [A-Za-z0-9._~-] becomes %XX. -1 if the buffer's cap is hit. */
int nb_cli_escape(nb_buf *out, const char *s);
/* "/v1/functions/<escaped name><suffix>" into out (reset first). suffix may be "" or NULL. */
int nb_cli_fn_path(nb_buf *out, const char *name, const char *suffix);
/* "/v1/<collection>/<escaped name><suffix>" into out (reset first); name NULL gives the
 * collection "/v1/<collection>". suffix may be "" or NULL. */
int nb_cli_obj_path(nb_buf *out, const char *collection, const char *name, const char *suffix);
/* The logs route with its query: since < 0 and limit <= 0 are left out. */
int nb_cli_logs_path(nb_buf *out, const char *name, int64_t since_ms, int follow, int64_t limit);
/* A daemon listen address as written to DATA/listen or NIMBUS_LISTEN ("host:port",
 * "[v6]:port", ":port", "port", or a full http(s):// URL) into a base URL without a trailing
 * slash. Wildcard hosts (empty, 0.0.0.0, ::) become the loopback address. 0 or -1. */
int nb_cli_listen_url(const char *listen, nb_buf *out);

/* ---- where the daemon is ---- */

typedef struct nb_cli_conn {
    char *url;                /* base URL, no trailing slash (malloc'd) */
    char *token;              /* NULL when none was found (malloc'd) */
    char *data;               /* the data dir consulted (malloc'd) */
    const char *url_source;   /* static text for messages: "--url", "NIMBUS_URL", ... */
    const char *token_source; /* same, or NULL */
} nb_cli_conn;

/* Finds the daemon's URL and token. URL: url_flag, env NIMBUS_URL, DATA/listen, env
 * NIMBUS_LISTEN, http://127.0.0.1:8080. Token: token_flag, env NIMBUS_TOKEN, DATA/admin.token
 * (whitespace trimmed), else none. DATA: data_flag, env NIMBUS_DATA, ./nimbus-data. Missing
 * or unreadable files just fall through. -1 only when out of memory. Free with
 * nb_cli_conn_free(). */
int nb_cli_conn_resolve(nb_cli_conn *c, const char *url_flag, const char *token_flag,
                        const char *data_flag);
void nb_cli_conn_free(nb_cli_conn *c);

/* ---- formatting ---- */

/* One NDJSON log record (docs/api.md, logs route) as a human line, newline included:
 *   2026-11-23T10:00:00.123Z [v2 i-3 <request_id>] line
 * stderr lines carry " stderr" inside the brackets; missing fields print as "-". Appends to
 * out. -1 if the text is not a JSON object (the caller then prints it raw). */
int nb_cli_format_log(nb_buf *out, const char *json, size_t len);

/* One gateway access record (docs/api.md, API logs) as a human line, newline included:
 *   2026-11-23T10:00:00.123Z 200 GET /items/7 12ms key:alice /items/{id} <request_id> [cold]
 * the route shown as its path pattern, "-" for missing fields, the gateway's error code (if
 * any) last. `time` may be an ISO string or epoch ms. -1 if rec is not an object. */
int nb_cli_format_access(nb_buf *out, const struct json_t *rec);

/* A function's stats.async object (docs/api.md) as one line without newline:
 *   queued=3 in_flight=1 oldest=12s retries=2 failed=0
 * oldest in whole seconds, "-" for a missing field. Appends to out. -1 if async is not an
 * object or the buffer is full. */
int nb_cli_format_async(nb_buf *out, const struct json_t *async);

/* A text table: columns padded to their widest cell, two spaces apart, no trailing blanks. */
typedef struct nb_cli_table {
    size_t ncols;
    size_t nrows;   /* including the header */
    char **cells;   /* nrows * ncols, owned */
    size_t *widths; /* ncols */
} nb_cli_table;

int nb_cli_table_init(nb_cli_table *t, size_t ncols, const char *const *header);
/* Copies ncols cells (NULL prints as ""). 0 or -1 (out of memory). */
int nb_cli_table_add(nb_cli_table *t, const char *const *cells);
int nb_cli_table_render(const nb_cli_table *t, nb_buf *out);
void nb_cli_table_free(nb_cli_table *t);

/* "key: value" lines for a JSON object, keys aligned. Keys in `order` (NULL-terminated; may
 * be NULL) come first when present, then the rest in object order. Strings print raw, null as
 * "", anything else as compact JSON. -1 if obj is not an object or the buffer is full. */
int nb_cli_format_object(nb_buf *out, const struct json_t *obj, const char *const *order);

/* ---- code bundles ---- */

/* Packs the tree at dir into a gzip-compressed pax tar in out (whose cap bounds the size).
 * Entries are relative to dir, sorted by name, directories before their contents; symlinks are
 * stored as links (never followed); regular files keep whether they are executable (mode 0755
 * or 0644; dirs 0755); owner, group and times are zeroed so the same tree always packs to the
 * same bytes and redeploying it is a no-op. Anything else (fifo, socket, device) is an error.
 * 0, or -1 with err filled. */
int nb_cli_pack_dir(const char *dir, nb_buf *out, nb_err *err);

#endif
