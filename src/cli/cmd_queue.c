/* nimbus queue, events: durable queues and a function's failed async events through the admin
 * API (namespace default). Grouped like cmd_gateway.c (`nimbus GROUP SUB ...`, plumbing in
 * group.c); everything typed is checked against the API's ranges before the first request. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

#define VISIBILITY_MAX   43200
#define RETENTION_MIN    60
#define RETENTION_MAX    1209600
#define MAX_RECEIVES_MAX 1000
#define DELAY_MAX        900
#define RECEIVE_MAX      100
#define BATCH_SIZE_MAX   100
#define BATCH_WINDOW_MAX 300000
#define SUB_CONC_MAX     1000
#define FAILED_LIMIT_MAX 10000
#define RECEIPT_MAX      127 /* the daemon's receipt buffer */

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

/* A numeric flag in [min, max] set as field in body when given. 0, or 2 after the usage. */
static int int_flag(const nb_cli__ctx *x, const char *flag, int64_t min, int64_t max,
                    const char *unit, json_t *body, const char *field)
{
    const char *v = nb_cli_args_get(&x->a, flag);
    if (!v) return 0;
    int64_t n;
    if (nb_cli_parse_int(v, min, max, &n) < 0)
        return nb_cli__usage(x->cmd, "--%s must be %s from %lld to %lld, not '%s'", flag, unit,
                             (long long)min, (long long)max, v);
    json_object_set_new(body, field, json_integer(n));
    return 0;
}

/* The queue name in pos[0] and the path /v1/queues/Q<suffix>. 0, 1 or 2. */
static int queue_path(const nb_cli__ctx *x, nb_buf *path, const char *suffix)
{
    int rc = nb_cli__check_name(x, "queue", x->a.pos[0]);
    if (rc) return rc;
    return nb_cli_obj_path(path, "queues", x->a.pos[0], suffix) < 0 ? nb_cli__oom() : 0;
}

/* ---------- nimbus queue create, update, ls, get, stats, rm ---------- */

#define QUEUE_OPTS                                                                                 \
    {"visibility-timeout", 0, "S", "seconds a received message stays hidden, 0..43200 (30)"},      \
        {"retention", 0, "S", "seconds a message is kept, 60..1209600 (345600, 4 days)"},          \
        {"max-receives", 0, "N", "receives before a message goes to --dead-letter, 0..1000 (0)"},  \
        {"dead-letter", 0, "Q", "the dead-letter queue, or none"},                                 \
    {                                                                                              \
        "json", 0, NULL, "print the daemon's JSON instead of text"                                 \
    }

static const nb_cli_opt queue_put_opts[] = {
    QUEUE_OPTS,
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(queue_create_cmd, "queue create",
               "Q [--visibility-timeout S] [--retention S] [--max-receives N --dead-letter Q2]\n"
               "       [options]",
               "Creates the queue Q (or updates it when it exists). A message received more than\n"
               "--max-receives times moves to the --dead-letter queue, which must exist.",
               queue_put_opts, 1, 1);
NB_CLI__SUBCMD(queue_update_cmd, "queue update", "Q [the flags of 'queue create'] [options]",
               "Changes the settings given and keeps the others; --dead-letter none removes the\n"
               "dead-letter queue.",
               queue_put_opts, 1, 1);
NB_CLI__SUBCMD(queue_ls_cmd, "queue ls", "[options]",
               "Lists the queues with their depth: visible, in flight (received, not deleted)\n"
               "and delayed messages, and the age of the oldest in seconds.",
               json_opts, 0, 0);
NB_CLI__SUBCMD(queue_get_cmd, "queue get", "Q [options]", "Shows a queue's settings and counters.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(queue_stats_cmd, "queue stats", "Q [options]",
               "Shows a queue's settings and counters (the same as 'queue get').", json_opts, 1, 1);
NB_CLI__SUBCMD(queue_rm_cmd, "queue rm", "Q [options]", "Deletes a queue and its messages.",
               json_opts, 1, 1);

/* The flags of create/update into body. 0, or 2 after the usage. */
static int queue_body(const nb_cli__ctx *x, int update, json_t *body)
{
    int rc;
    if ((rc = int_flag(x, "visibility-timeout", 0, VISIBILITY_MAX, "seconds", body,
                       "visibility_timeout_s")) ||
        (rc = int_flag(x, "retention", RETENTION_MIN, RETENTION_MAX, "seconds", body,
                       "retention_s")) ||
        (rc = int_flag(x, "max-receives", 0, MAX_RECEIVES_MAX, "a number", body, "max_receives")))
        return rc;
    const char *dl = nb_cli_args_get(&x->a, "dead-letter");
    if (dl && update && strcmp(dl, "none") == 0) {
        json_object_set_new(body, "dead_letter", json_null());
    } else if (dl) {
        if ((rc = nb_cli__check_name(x, "dead-letter queue", dl))) return rc;
        if (strcmp(dl, x->a.pos[0]) == 0)
            return nb_cli__usage(x->cmd, "a queue cannot be its own dead-letter queue");
        json_object_set_new(body, "dead_letter", json_string(dl));
    }
    /* On update the daemon keeps the current dead-letter queue when none is given. */
    int64_t mr = nb_cli__int(body, "max_receives");
    if (mr > 0 && !update && !dl)
        return nb_cli__usage(x->cmd, "--max-receives needs --dead-letter Q");
    if (mr > 0 && json_is_null(json_object_get(body, "dead_letter")))
        return nb_cli__usage(x->cmd, "--max-receives needs a dead-letter queue, not none");
    if (update && json_object_size(body) == 0)
        return nb_cli__usage(x->cmd, "nothing to change: give at least one flag");
    return 0;
}

/* A queue object (docs/api.md) flattened to "key: value" lines. */
static int print_queue(const json_t *q)
{
    json_t *o = json_object(), *st = json_object_get(q, "stats");
    static const char *const cfg[] = {"name", "visibility_timeout_s", "retention_s",
                                      "max_receives"};
    for (size_t i = 0; i < NB_ARRAY_LEN(cfg); i++)
        if (json_object_get(q, cfg[i])) json_object_set(o, cfg[i], json_object_get(q, cfg[i]));
    const char *dl = json_string_value(json_object_get(q, "dead_letter"));
    json_object_set_new(o, "dead_letter", json_string(dl ? dl : "-"));
    static const char *const counters[] = {"visible",  "in_flight", "delayed",       "sent",
                                           "received", "deleted",   "dead_lettered", "expired"};
    for (size_t i = 0; i < NB_ARRAY_LEN(counters); i++) {
        json_object_set_new(o, counters[i], json_integer(nb_cli__int(st, counters[i])));
        if (i == 2) {
            char buf[64];
            int64_t ms = nb_cli__int(st, "oldest_ms");
            if (ms < 0)
                snprintf(buf, sizeof buf, "-");
            else
                snprintf(buf, sizeof buf, "%llds", (long long)(ms / 1000));
            json_object_set_new(o, "oldest", json_string(buf));
        }
    }
    int rc = nb_cli__print_object(o, NULL);
    json_decref(o);
    return rc;
}

static int queue_put(nb_cli__ctx *x, int update)
{
    json_t *body = json_object(), *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = queue_path(x, &path, NULL);
    if (rc || (rc = queue_body(x, update, body))) goto out;
    /* GET first so update never creates: the daemon's PUT does both. */
    if (update && (rc = nb_cli__call(x, "GET", &path, NULL, &answer))) goto out;
    json_decref(answer);
    answer = NULL;
    if ((rc = nb_cli__call(x, "PUT", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
    } else {
        printf("%s queue %s\n", x->status == 201 ? "created" : "updated", x->a.pos[0]);
        rc = print_queue(answer);
    }
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int queue_create(nb_cli__ctx *x)
{
    return queue_put(x, 0);
}

static int queue_update(nb_cli__ctx *x)
{
    return queue_put(x, 1);
}

static void queue_row(const json_t *o, char c[][256])
{
    const json_t *st = json_object_get(o, "stats");
    int64_t ms = nb_cli__int(st, "oldest_ms");
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell_num(c[1], 256, json_object_get(st, "visible"), "");
    nb_cli__cell_num(c[2], 256, json_object_get(st, "in_flight"), "");
    nb_cli__cell_num(c[3], 256, json_object_get(st, "delayed"), "");
    if (ms < 0)
        nb_cli__cell(c[4], 256, NULL);
    else
        snprintf(c[4], 256, "%lld", (long long)(ms / 1000));
    nb_cli__cell(c[5], 256, nb_cli__str(o, "dead_letter"));
}

static int queue_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "queues", "queue", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME",    "VISIBLE",  "IN_FLIGHT",
                                         "DELAYED", "OLDEST_S", "DLQ"};
    rc = nb_cli__list_answer(x, answer, "queues", NB_ARRAY_LEN(header), header, queue_row);
    json_decref(answer);
    return rc;
}

static int queue_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "queues", "queue", NULL, &answer);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        rc = print_queue(answer);
    json_decref(answer);
    return rc;
}

static int queue_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "queues", "queue", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "queue", x->a.pos[0]);
}

/* ---------- nimbus queue send, receive, delete ---------- */

static const nb_cli_opt send_opts[] = {
    {"attr", 0, "K=V", "a string attribute (repeatable)"},
    {"delay", 0, "S", "seconds before the message becomes visible, 0..900 (0)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt receive_opts[] = {
    {"max", 0, "N", "messages to receive at most, 1..100 (1)"},
    {"visibility-timeout", 0, "S", "seconds they stay hidden, 0..43200 (the queue's)"},
    {"json", 0, NULL, "print one JSON message per line"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(queue_send_cmd, "queue send", "Q BODY|- [--attr K=V]... [--delay S] [options]",
               "Sends one message (BODY, or - for standard input; up to 1 MiB with its\n"
               "attributes) and prints its id once it is stored.",
               send_opts, 2, 2);
NB_CLI__SUBCMD(queue_receive_cmd, "queue receive", "Q [--max N] [--visibility-timeout S] [options]",
               "Receives up to --max visible messages and hides them for the visibility timeout.\n"
               "Delete each one with its receipt once handled ('queue delete'), or it comes back.\n"
               "Prints each message's id, receipt, receive count, attributes and body.",
               receive_opts, 1, 1);
NB_CLI__SUBCMD(queue_delete_cmd, "queue delete", "Q ID RECEIPT [options]",
               "Deletes a received message: ID and RECEIPT from 'queue receive'.", json_opts, 3, 3);

static int queue_send(nb_cli__ctx *x)
{
    json_t *body = json_object(), *attrs = json_object(), *answer = NULL;
    nb_buf path, msg;
    nb_buf_init(&path, 4096);
    nb_buf_init(&msg, NB_CLI_MESSAGE_MAX);
    const char *text = x->a.pos[1];
    size_t attr_bytes = 0;
    int rc = queue_path(x, &path, "/messages");
    if (rc || (rc = int_flag(x, "delay", 0, DELAY_MAX, "seconds", body, "delay_s"))) goto out;
    for (int i = 0; i < x->a.nitems; i++) {
        if (strcmp(x->a.opts[x->a.items[i].opt].name, "attr") != 0) continue;
        const char *kv = x->a.items[i].value;
        size_t klen;
        if (nb_cli_parse_attr(kv, &klen) < 0) {
            rc =
                nb_cli__usage(x->cmd, "--attr wants K=V (K 1..256 bytes, no blanks), not '%s'", kv);
            goto out;
        }
        char key[257];
        memcpy(key, kv, klen);
        key[klen] = 0;
        json_object_set_new(attrs, key, json_string(kv + klen + 1));
        attr_bytes += strlen(kv);
    }
    if (strcmp(text, "-") == 0) {
        if ((rc = nb_cli__read_stdin(x->cmd, "message", &msg))) goto out;
        if (nb_buf_append(&msg, "", 1) < 0 || memchr(msg.data, 0, msg.len - 1)) {
            rc = nb_cli__usage(x->cmd, "the message on stdin is over the limit or not text");
            goto out;
        }
        text = msg.data;
    }
    if (strlen(text) + attr_bytes > NB_CLI_MESSAGE_MAX) {
        rc = nb_cli__usage(x->cmd, "a message with its attributes is at most %u bytes",
                           NB_CLI_MESSAGE_MAX);
        goto out;
    }
    json_t *b = json_string(text);
    if (!b) {
        rc = nb_cli__usage(x->cmd, "the message body must be UTF-8 text");
        goto out;
    }
    json_object_set_new(body, "body", b);
    if (json_object_size(attrs)) json_object_set(body, "attributes", attrs);
    if ((rc = nb_cli__call(x, "POST", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s\n", json_string_value(json_array_get(json_object_get(answer, "ids"), 0)) ?: "-");
out:
    json_decref(body);
    json_decref(attrs);
    json_decref(answer);
    nb_buf_free(&path);
    nb_buf_free(&msg);
    return rc;
}

static int queue_receive(nb_cli__ctx *x)
{
    json_t *body = json_object(), *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = queue_path(x, &path, "/receive");
    if (rc || (rc = int_flag(x, "max", 1, RECEIVE_MAX, "a number", body, "max")) ||
        (rc = int_flag(x, "visibility-timeout", 0, VISIBILITY_MAX, "seconds", body,
                       "visibility_timeout_s")) ||
        (rc = nb_cli__call(x, "POST", &path, body, &answer)))
        goto out;
    json_t *msgs = json_object_get(answer, "messages"), *m;
    size_t i;
    json_array_foreach(msgs, i, m)
    {
        if (nb_cli__json_out(x)) {
            char *line = json_dumps(m, JSON_COMPACT);
            if (line) printf("%s\n", line);
            free(line);
            continue;
        }
        if (i > 0) putchar('\n');
        json_t *o = json_object();
        json_object_set(o, "id", json_object_get(m, "id"));
        json_object_set(o, "receipt", json_object_get(m, "receipt"));
        json_object_set(o, "receive_count", json_object_get(m, "receive_count"));
        json_object_set(o, "sent_at", json_object_get(m, "sent_at"));
        json_t *attrs = json_object_get(m, "attributes");
        if (json_object_size(attrs)) json_object_set(o, "attributes", attrs);
        json_object_set(o, "body", json_object_get(m, "body"));
        rc = nb_cli__print_object(o, NULL);
        json_decref(o);
        if (rc) break;
    }
    if (!nb_cli__json_out(x) && json_array_size(msgs) == 0) printf("no messages\n");
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int queue_delete(nb_cli__ctx *x)
{
    const char *id = x->a.pos[1], *receipt = x->a.pos[2];
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = queue_path(x, &path, "/messages/");
    if (rc) goto out;
    if (!nb_cli_valid_name(id)) {
        rc = nb_cli__usage(x->cmd, "invalid message id '%s' (ids come from 'queue receive')", id);
        goto out;
    }
    if (!*receipt || strlen(receipt) > RECEIPT_MAX) {
        rc = nb_cli__usage(x->cmd, "invalid receipt (1..%d bytes from 'queue receive')",
                           RECEIPT_MAX);
        goto out;
    }
    if (nb_cli_escape(&path, id) < 0 || nb_buf_appendf(&path, "?receipt=") < 0 ||
        nb_cli_escape(&path, receipt) < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "DELETE", &path, NULL, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("deleted message %s\n", id);
out:
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

/* ---------- nimbus queue subscribe, unsubscribe ---------- */

static const nb_cli_opt subscribe_opts[] = {
    {"batch-size", 0, "N", "messages per invocation at most, 1..100 (10)"},
    {"batch-window-ms", 0, "N", "wait this long to fill a batch, 0..300000 (0)"},
    {"max-concurrency", 0, "N", "invocations at once for this queue, 1..1000 (5)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(queue_subscribe_cmd, "queue subscribe",
               "Q FUNCTION [--batch-size N] [--batch-window-ms N] [--max-concurrency N]\n"
               "       [options]",
               "Invokes FUNCTION with batches of Q's messages (an SQS-style event of Records),\n"
               "deleting them when it succeeds. Subscribing again changes the settings.",
               subscribe_opts, 2, 2);
NB_CLI__SUBCMD(queue_unsubscribe_cmd, "queue unsubscribe", "Q FUNCTION [options]",
               "Stops invoking FUNCTION with Q's messages.", json_opts, 2, 2);

static int queue_sub_path(const nb_cli__ctx *x, nb_buf *path)
{
    int rc = queue_path(x, path, "/subscriptions/");
    if (rc || (rc = nb_cli__check_name(x, "function", x->a.pos[1]))) return rc;
    return nb_cli_escape(path, x->a.pos[1]) < 0 ? nb_cli__oom() : 0;
}

static int queue_subscribe(nb_cli__ctx *x)
{
    json_t *body = json_object(), *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = queue_sub_path(x, &path);
    if (rc || (rc = int_flag(x, "batch-size", 1, BATCH_SIZE_MAX, "a number", body, "batch_size")) ||
        (rc = int_flag(x, "batch-window-ms", 0, BATCH_WINDOW_MAX, "milliseconds", body,
                       "batch_window_ms")) ||
        (rc = int_flag(x, "max-concurrency", 1, SUB_CONC_MAX, "a number", body,
                       "max_concurrency")) ||
        (rc = nb_cli__call(x, "PUT", &path, body, &answer)))
        goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s %s to queue %s: batch size %lld, window %lld ms, max concurrency %lld\n",
               x->status == 201 ? "subscribed" : "updated subscription of", x->a.pos[1],
               x->a.pos[0], (long long)nb_cli__int(answer, "batch_size"),
               (long long)nb_cli__int(answer, "batch_window_ms"),
               (long long)nb_cli__int(answer, "max_concurrency"));
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int queue_unsubscribe(nb_cli__ctx *x)
{
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = queue_sub_path(x, &path);
    if (rc || (rc = nb_cli__call(x, "DELETE", &path, NULL, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("unsubscribed %s from queue %s\n", x->a.pos[1], x->a.pos[0]);
out:
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static const nb_cli__sub queue_subs[] = {
    {"create", "create a queue (or update it)", &queue_create_cmd, queue_create},
    {"update", "change a queue's settings", &queue_update_cmd, queue_update},
    {"ls", "list the queues and their depth", &queue_ls_cmd, queue_ls},
    {"get", "show a queue's settings and counters", &queue_get_cmd, queue_get},
    {"stats", "the same as get", &queue_stats_cmd, queue_get},
    {"rm", "delete a queue and its messages", &queue_rm_cmd, queue_rm},
    {"send", "send a message", &queue_send_cmd, queue_send},
    {"receive", "receive messages (hidden until deleted or timed out)", &queue_receive_cmd,
     queue_receive},
    {"delete", "delete a received message", &queue_delete_cmd, queue_delete},
    {"subscribe", "invoke a function with a queue's messages", &queue_subscribe_cmd,
     queue_subscribe},
    {"unsubscribe", "stop a subscription", &queue_unsubscribe_cmd, queue_unsubscribe},
};

static const nb_cli__group queue_group = {
    "queue",
    "Durable message queues: send, receive and delete messages, or subscribe a function\n"
    "to them.",
    queue_subs, NB_ARRAY_LEN(queue_subs)};

int nb_cli_queue(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&queue_group, g, argc, argv);
}

/* ---------- nimbus events failed, redrive ---------- */

static const nb_cli_opt failed_opts[] = {
    {"limit", 0, "N", "records to show at most, 1..10000 (100)"},
    {"json", 0, NULL, "print the records as JSON"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(events_failed_cmd, "events failed", "FUNCTION [--limit N] [options]",
               "Lists the function's async events that failed (retries exhausted or too old) and\n"
               "had no on-failure destination or dead-letter queue to go to. --json prints the\n"
               "whole invocation records, their payloads included.",
               failed_opts, 1, 1);
NB_CLI__SUBCMD(events_redrive_cmd, "events redrive", "FUNCTION [options]",
               "Sends the function's failed events again, as new async invocations.", json_opts, 1,
               1);

static void failed_row(const json_t *o, char c[][256])
{
    const json_t *rc = json_object_get(o, "requestContext");
    const char *id = nb_cli__str(rc, "requestId");
    nb_cli__cell(c[0], 256, *id ? id : nb_cli__str(o, "id"));
    nb_cli__cell(c[1], 256, nb_cli__str(rc, "condition"));
    nb_cli__cell_num(c[2], 256, json_object_get(rc, "approximateInvokeCount"), "");
    nb_cli__cell(c[3], 256, nb_cli__str(o, "timestamp"));
}

static int events_failed(nb_cli__ctx *x)
{
    const char *limit = nb_cli_args_get(&x->a, "limit");
    int64_t n = 0;
    if (limit && nb_cli_parse_int(limit, 1, FAILED_LIMIT_MAX, &n) < 0)
        return nb_cli__usage(x->cmd, "--limit must be a number from 1 to %d, not '%s'",
                             FAILED_LIMIT_MAX, limit);
    int rc = nb_cli__check_name(x, "function", x->a.pos[0]);
    if (rc) return rc;
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if (nb_cli_fn_path(&path, x->a.pos[0], "/events/failed") < 0 ||
        (limit && nb_buf_appendf(&path, "?limit=%lld", (long long)n) < 0)) {
        rc = nb_cli__oom();
    } else if ((rc = nb_cli__call(x, "GET", &path, NULL, &answer)) == 0) {
        static const char *const header[] = {"REQUEST_ID", "CONDITION", "ATTEMPTS", "TIMESTAMP"};
        rc = nb_cli__list_answer(x, answer, "failed", NB_ARRAY_LEN(header), header, failed_row);
    }
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int events_redrive(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "function", x->a.pos[0]);
    if (rc) return rc;
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if (nb_cli_fn_path(&path, x->a.pos[0], "/events/redrive") < 0) {
        rc = nb_cli__oom();
    } else if ((rc = nb_cli__call(x, "POST", &path, NULL, &answer)) == 0) {
        int64_t n = nb_cli__int(answer, "redriven");
        if (nb_cli__json_out(x))
            nb_cli__print_json(answer);
        else
            printf("%lld event%s sent again\n", (long long)(n < 0 ? 0 : n), n == 1 ? "" : "s");
    }
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static const nb_cli__sub events_subs[] = {
    {"failed", "list a function's failed async events", &events_failed_cmd, events_failed},
    {"redrive", "send a function's failed events again", &events_redrive_cmd, events_redrive},
    {"put", "send a CloudEvent to the event bus", &nb_cli__events_put_cmd, nb_cli__events_put},
};

static const nb_cli__group events_group = {
    "events",
    "A function's async events ('nimbus invoke --async') that failed; CloudEvents sent to the\n"
    "event bus, where rules ('nimbus rule') route them.",
    events_subs, NB_ARRAY_LEN(events_subs)};

int nb_cli_events(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&events_group, g, argc, argv);
}
