/* nb_cli__: plumbing shared by the command files of src/cli (not used outside it).
 *
 * A command goes: nb_cli__begin() (parse flags, answer --help, check the positional count),
 * nb_cli__client_open() (locate the daemon, one curl handle reused for every request), then
 * requests through nb_cli__call_json() or nb_cli__request(), and nb_cli__fail() to print the
 * one-line error. A client is single-threaded and owns its curl handle. */
#ifndef NB_CLI_INTERNAL_H
#define NB_CLI_INTERNAL_H

#include "cli/cli.h"

#include "base/util.h"

#include <curl/curl.h>
#include <jansson.h>

/* What a command is, for its --help and its argument checks. */
typedef struct nb_cli__cmd {
    const char *name;
    const char *synopsis;    /* after "usage: nimbus NAME " */
    const char *description; /* a few lines, may be NULL */
    const nb_cli_opt *opts;
    size_t nopts;
    int min_pos, max_pos; /* positional argument count bounds */
} nb_cli__cmd;

#define NB_CLI__CONTINUE (-1)

/* Parses argv for cmd. Returns NB_CLI__CONTINUE to go on, or the exit status to return at
 * once: 0 after printing --help, 2 after printing a usage error. `a` must be freed with
 * nb_cli_args_free() in every case. */
int nb_cli__begin(const nb_cli__cmd *cmd, int argc, char **argv, nb_cli_args *a);

/* Prints "nimbus: <cmd>: <message> (see 'nimbus <cmd> --help')" and returns 2. */
int nb_cli__usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "nimbus: <err message>" and returns 1. */
int nb_cli__fail(const nb_err *err);

typedef struct nb_cli__client {
    CURL *curl;
    nb_cli_conn conn;
    int verbose;
    const char *header; /* one more request header line ("Name: value") or NULL */
    /* Show upload progress on stderr (a label such as "uploading app.zip", or NULL for none):
     * for large request bodies, so a slow deploy is visibly moving. */
    const char *progress;
    int64_t progress_shown_us;
    char errbuf[CURL_ERROR_SIZE];
} nb_cli__client;

/* Resolves the connection from the command's flags, then g's, then the environment. 0 or -1. */
int nb_cli__client_open(nb_cli__client *c, const nb_cli_globals *g, const nb_cli_args *a,
                        nb_err *err);
void nb_cli__client_close(nb_cli__client *c);

/* Called once per complete body line (newline stripped) of a streamed 2xx response.
 * Return 0 to go on, -1 to stop the transfer. */
typedef int (*nb_cli__line_cb)(void *ud, const char *line, size_t len);

typedef struct nb_cli__resp {
    long status;
    nb_buf body; /* whole body (error bodies always land here, even when streaming) */
    char request_id[128];
    char function_error[64];
    char executed_version[32];
    /* Streaming: set on_line before the request to get 2xx bodies line by line. */
    nb_cli__line_cb on_line;
    void *ud;
    nb_buf line;       /* the partial line, capped at NB_CLI_LOG_LINE_MAX */
    int line_too_long; /* dropping the rest of an over-long line */
    int stopped;       /* on_line asked to stop */
} nb_cli__resp;

/* body_max caps the buffered body; 0 means the default (64 MiB). */
void nb_cli__resp_init(nb_cli__resp *r, size_t body_max);
void nb_cli__resp_free(nb_cli__resp *r);

/* One HTTP request to base URL + path. body may be NULL for none. Returns 0 once a response
 * arrived, whatever its status; -1 with err filled when the daemon could not be reached or the
 * transfer broke. */
int nb_cli__request(nb_cli__client *c, const char *method, const char *path, const void *body,
                    size_t len, const char *content_type, nb_cli__resp *r, nb_err *err);
/* For a response with status >= 400: fills err with "<message> (<code>)" from the API's error
 * object (or the bare status when the body is not one) and returns -1; else 0. */
int nb_cli__check(const nb_cli__client *c, const nb_cli__resp *r, nb_err *err);
/* Request + check + parse the body as JSON into *out (caller decrefs). 0 or -1. */
int nb_cli__call_json(nb_cli__client *c, const char *method, const char *path, const void *body,
                      size_t len, const char *content_type, json_t **out, nb_err *err);

/* The scaling flags of `deploy` and `config`, in both option tables. */
#define NB_CLI_SCALING_OPTS                                                                        \
    {"max-concurrency", 0, "N", "instances at once, 0 disables, 'none' unreserved (default)"},     \
        {"min-instances", 0, "N", "instances kept started, even idle (default 0)"},                \
        {"idle-timeout", 0, "S", "seconds before an idle instance stops, or 'default' (300)"},     \
        {"max-queue", 0, "N", "invocations that may wait for an instance (default 1000)"},         \
        {"queue-timeout-ms", 0, "N", "longest wait for an instance before 429 (default 10000)"},   \
        {"max-retry-attempts", 0, "N", "async: retries after a function error, 0..2 (default 2)"}, \
        {"max-event-age", 0, "S", "async: seconds an event may wait and retry (default 21600)"},   \
        {"retry-delay-ms", 0, "N", "async: delay before the first retry (default 60000)"},         \
        {"async-share", 0, "PCT", "async: % of the concurrency events may use (default 80)"},      \
        {"on-success", 0, "T",                                                                     \
         "async: success records to function:, queue: or topic:NAME, or none"},                    \
        {"on-failure", 0, "T",                                                                     \
         "async: failure records to function:, queue: or topic:NAME, or none"},                    \
        {"dead-letter", 0, "T", "async: failed events to queue:NAME, or none"},                    \
    {                                                                                              \
        "service", 0, "S", "the service the function belongs to, or none"                          \
    }

/* Adds the scaling flags given in a to out (API field names). 0, or 2 after printing a usage
 * error for cmdname. */
int nb_cli__scaling_flags(const nb_cli_args *a, const char *cmdname, json_t *out);

/* Output helpers for stdout. */
void nb_cli__print_json(const json_t *j);
void nb_cli__write(const char *s, size_t len);
/* Integer field or -1. */
int64_t nb_cli__int(const json_t *obj, const char *key);
/* String field or "" (never NULL). */
const char *nb_cli__str(const json_t *obj, const char *key);

/* ---- grouped commands: `nimbus GROUP SUB ...` (group.c; cmd_gateway.c, cmd_queue.c) ----
 *
 * A group is a table of subs; each sub is an nb_cli__cmd named "GROUP SUB" with its own
 * --help and a run function that gets an nb_cli__ctx: the parsed arguments and a client
 * opened on the first nb_cli__call(), so a sub that validates everything first has sent
 * nothing when it returns 2. */

#define NB_CLI__NAME_RULE "names match [A-Za-z0-9_-]{1,64}"

typedef struct nb_cli__ctx {
    const nb_cli_globals *g;
    const char *cmd; /* "api create", for messages */
    nb_cli_args a;
    nb_cli__client c;
    int open;
    long status; /* of the last answer */
} nb_cli__ctx;

typedef struct nb_cli__sub {
    const char *name;
    const char *summary;
    const nb_cli__cmd *cmd;
    int (*run)(nb_cli__ctx *x);
} nb_cli__sub;

typedef struct nb_cli__group {
    const char *name;
    const char *description;
    const nb_cli__sub *subs;
    size_t nsubs;
} nb_cli__group;

/* A sub's nb_cli__cmd: NB_CLI__SUBCMD(var, "group sub", synopsis, description, opts, min, max). */
#define NB_CLI__SUBCMD(var, cmdname, syn, desc, table, minp, maxp)                                 \
    static const nb_cli__cmd var = {                                                               \
        .name = cmdname,                                                                           \
        .synopsis = syn,                                                                           \
        .description = desc,                                                                       \
        .opts = table,                                                                             \
        .nopts = NB_ARRAY_LEN(table),                                                              \
        .min_pos = minp,                                                                           \
        .max_pos = maxp,                                                                           \
    }

/* Runs `nimbus GROUP SUB ...` (argv[0] is GROUP): the group's help, or the sub. */
int nb_cli__run_group(const nb_cli__group *gr, const nb_cli_globals *g, int argc, char **argv);
/* Prints "nimbus: out of memory" and returns 1. */
int nb_cli__oom(void);
/* One request with an optional JSON body, the answer parsed into *out (caller decrefs); the
 * status lands in x->status. 0, or 1 after printing the error. */
int nb_cli__call(nb_cli__ctx *x, const char *method, const nb_buf *path, const json_t *body,
                 json_t **out);
/* nb_cli__call() on /v1/<coll>[/<pos[0]>]<suffix>, pos[0] (if any) checked as a `what` name. */
int nb_cli__simple(nb_cli__ctx *x, const char *method, const char *coll, const char *what,
                   const char *suffix, json_t **out);
/* --json was given. */
int nb_cli__json_out(const nb_cli__ctx *x);
/* A positional or flag value that must be an object name. 0, or 2 after the usage line. */
int nb_cli__check_name(const nb_cli__ctx *x, const char *what, const char *s);
/* Renders and frees t, or prints o as "key: value" lines. 0 or 1. */
int nb_cli__print_table(nb_cli_table *t);
int nb_cli__print_object(const json_t *o, const char *const *order);
/* Table cells: "-" for missing or empty, no blanks inside (so awk keeps the columns); a
 * number with its unit; a string array as "a,b,c". */
void nb_cli__cell(char *buf, size_t size, const char *s);
void nb_cli__cell_num(char *buf, size_t size, const json_t *v, const char *unit);
void nb_cli__cell_list(char *buf, size_t size, const json_t *arr);
/* The answer's array `key` as JSON (--json) or a table of up to 8 columns built by row(). */
int nb_cli__list_answer(const nb_cli__ctx *x, const json_t *answer, const char *key, size_t ncols,
                        const char *const *header, void (*row)(const json_t *o, char cells[][256]));
/* "deleted <what> <name>" (or the answer with --json); decrefs answer. 0. */
int nb_cli__deleted(const nb_cli__ctx *x, json_t *answer, const char *what, const char *name);
/* Appends all of stdin to out (whose cap is the limit). 0, or 2 after a usage error naming
 * `what` for cmd. */
int nb_cli__read_stdin(const char *cmd, const char *what, nb_buf *out);

/* `nimbus events put` (cmd_rule.c), a sub of the events group (cmd_queue.c). */
extern const nb_cli__cmd nb_cli__events_put_cmd;
int nb_cli__events_put(nb_cli__ctx *x);

#endif
