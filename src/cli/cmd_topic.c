/* nimbus topic: SNS-style topics through the admin API (namespace default): create, publish
 * with attributes, and subscriptions of functions, queues and webhooks with filter policies.
 * Grouped like cmd_queue.c; names, attributes, targets and the filter's JSON are checked before
 * the first request, the filter policy's meaning and the URL by the daemon. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_MAX (256u << 10) /* the daemon's cap on a topic message */

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

/* A number as SNS's Number attributes hold it: JSON's number syntax, nothing around it. */
static int number_text(const char *s)
{
    size_t n = strlen(s);
    /* jansson would also take blanks around the number. */
    if (!n || !(*s == '-' || (*s >= '0' && *s <= '9')) || s[n - 1] < '0' || s[n - 1] > '9')
        return 0;
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
    int ok = json_is_number(j);
    json_decref(j);
    return ok;
}

int nb_cli_topic_attr(const char *flag, const char *kv, struct json_t *attrs)
{
    size_t klen;
    if (nb_cli_parse_attr(kv, &klen) < 0 || klen > 256) return -1;
    char key[257];
    memcpy(key, kv, klen);
    key[klen] = 0;
    const char *v = kv + klen + 1;
    json_t *a;
    if (strcmp(flag, "attr") == 0) {
        if (!*v) return -1;
        a = json_pack("{s:s, s:s}", "Type", "String", "Value", v);
    } else if (strcmp(flag, "attr-number") == 0) {
        if (!number_text(v)) return -1;
        a = json_pack("{s:s, s:s}", "Type", "Number", "Value", v);
    } else if (strcmp(flag, "attr-list") == 0) {
        json_t *arr = json_array();
        char *text = NULL;
        if (nb_cli_split_list(v, arr) == 0) text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        if (!text) return -1;
        a = json_pack("{s:s, s:s}", "Type", "String.Array", "Value", text);
        free(text);
    } else {
        return -1;
    }
    if (!a) return -1; /* a value that is not UTF-8 */
    json_object_set_new(attrs, key, a);
    return 0;
}

/* ---------- create, ls, get, rm ---------- */

static const nb_cli_opt create_opts[] = {
    {"display-name", 0, "S", "a display name, at most 100 bytes"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(topic_create_cmd, "topic create", "T [--display-name S] [options]",
               "Creates the topic T (again with the same settings: nothing changes).", create_opts,
               1, 1);
NB_CLI__SUBCMD(topic_ls_cmd, "topic ls", "[options]",
               "Lists the topics with their subscription counts and the messages waiting to be\n"
               "fanned out.",
               json_opts, 0, 0);
NB_CLI__SUBCMD(topic_get_cmd, "topic get", "T [options]", "Shows a topic.", json_opts, 1, 1);
NB_CLI__SUBCMD(topic_rm_cmd, "topic rm", "T [options]",
               "Deletes a topic, its subscriptions and the messages they have not received yet.",
               json_opts, 1, 1);

static int print_topic(const nb_cli__ctx *x, const json_t *t)
{
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(t);
        return NB_CLI_OK;
    }
    json_t *o = json_object();
    static const char *const keys[] = {"name", "display_name", "arn", "subscriptions",
                                       "created_at"};
    for (size_t i = 0; i < NB_ARRAY_LEN(keys); i++)
        if (json_object_get(t, keys[i])) json_object_set(o, keys[i], json_object_get(t, keys[i]));
    const json_t *st = json_object_get(t, "stats");
    json_object_set_new(o, "waiting",
                        json_integer(nb_cli__int(st, "visible") + nb_cli__int(st, "in_flight") +
                                     nb_cli__int(st, "delayed")));
    json_object_set_new(o, "published", json_integer(nb_cli__int(st, "sent")));
    int rc = nb_cli__print_object(o, NULL);
    json_decref(o);
    return rc;
}

static int topic_create(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "topic", x->a.pos[0]);
    if (rc) return rc;
    json_t *body = json_pack("{s:s}", "name", x->a.pos[0]), *answer = NULL;
    const char *dn = nb_cli_args_get(&x->a, "display-name");
    if (dn && strlen(dn) > 100) {
        json_decref(body);
        return nb_cli__usage(x->cmd, "--display-name is at most 100 bytes");
    }
    if (dn) json_object_set_new(body, "display_name", json_string(dn));
    nb_buf path;
    nb_buf_init(&path, 4096);
    rc = nb_cli_obj_path(&path, "topics", NULL, NULL) < 0
             ? nb_cli__oom()
             : nb_cli__call(x, "POST", &path, body, &answer);
    json_decref(body);
    nb_buf_free(&path);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s topic %s (%s)\n", x->status == 201 ? "created" : "exists:", x->a.pos[0],
               nb_cli__str(answer, "arn"));
    json_decref(answer);
    return NB_CLI_OK;
}

static void topic_row(const json_t *o, char c[][256])
{
    const json_t *st = json_object_get(o, "stats");
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell_num(c[1], 256, json_object_get(o, "subscriptions"), "");
    snprintf(c[2], 256, "%lld",
             (long long)(nb_cli__int(st, "visible") + nb_cli__int(st, "in_flight") +
                         nb_cli__int(st, "delayed")));
    nb_cli__cell_num(c[3], 256, json_object_get(st, "sent"), "");
    nb_cli__cell(c[4], 256, nb_cli__str(o, "display_name"));
}

static int topic_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "topics", "topic", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "SUBSCRIPTIONS", "WAITING", "PUBLISHED",
                                         "DISPLAY_NAME"};
    rc = nb_cli__list_answer(x, answer, "topics", NB_ARRAY_LEN(header), header, topic_row);
    json_decref(answer);
    return rc;
}

static int topic_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "topics", "topic", NULL, &answer);
    if (rc) return rc;
    rc = print_topic(x, answer);
    json_decref(answer);
    return rc;
}

static int topic_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "topics", "topic", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "topic", x->a.pos[0]);
}

/* ---------- publish ---------- */

static const nb_cli_opt publish_opts[] = {
    {"attr", 0, "K=V", "a String attribute (repeatable)"},
    {"attr-number", 0, "K=N", "a Number attribute, N such as 12 or -2.5e3 (repeatable)"},
    {"attr-list", 0, "K=A,B", "a String.Array attribute of the comma-separated items"},
    {"subject", 0, "S", "the message's subject, 1..100 printable ASCII characters"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(topic_publish_cmd, "topic publish",
               "T MESSAGE|- [--attr K=V]... [--attr-number K=N]... [--attr-list K=A,B]...\n"
               "       [--subject S] [options]",
               "Publishes MESSAGE (or - for standard input; UTF-8 text up to 256 KiB) to every\n"
               "subscription of T whose filter policy matches its attributes (at most 10), and\n"
               "prints its message id once it is stored. --attr values are always Strings;\n"
               "numeric filters (\"numeric\", number literals) match --attr-number ones.",
               publish_opts, 2, 2);

static int topic_publish(nb_cli__ctx *x)
{
    json_t *body = json_object(), *attrs = json_object(), *answer = NULL;
    nb_buf path, msg;
    nb_buf_init(&path, 4096);
    nb_buf_init(&msg, MESSAGE_MAX + 1);
    const char *text = x->a.pos[1];
    int rc = nb_cli__check_name(x, "topic", x->a.pos[0]);
    if (rc) goto out;
    for (int i = 0; i < x->a.nitems; i++) {
        const char *flag = x->a.opts[x->a.items[i].opt].name;
        if (strncmp(flag, "attr", 4) != 0) continue;
        if (nb_cli_topic_attr(flag, x->a.items[i].value, attrs) < 0) {
            rc = nb_cli__usage(x->cmd,
                               "--%s wants K=%s (K 1..256 bytes, no blanks; a non-empty value), "
                               "not '%s'",
                               flag,
                               strcmp(flag, "attr-number") == 0 ? "N (a number)"
                               : strcmp(flag, "attr-list") == 0 ? "A,B"
                                                                : "V",
                               x->a.items[i].value);
            goto out;
        }
    }
    if (json_object_size(attrs) > 10) {
        rc = nb_cli__usage(x->cmd, "a message has at most 10 attributes");
        goto out;
    }
    if (strcmp(text, "-") == 0) {
        if ((rc = nb_cli__read_stdin(x->cmd, "message", &msg))) goto out;
        if (nb_buf_append(&msg, "", 1) < 0 || memchr(msg.data, 0, msg.len - 1)) {
            rc = nb_cli__usage(x->cmd, "the message on stdin is over 256 KiB or not text");
            goto out;
        }
        text = msg.data;
    }
    if (!*text || strlen(text) > MESSAGE_MAX) {
        rc = nb_cli__usage(x->cmd, "a message is 1 byte to 256 KiB");
        goto out;
    }
    json_t *m = json_string(text);
    if (!m) {
        rc = nb_cli__usage(x->cmd, "the message must be UTF-8 text");
        goto out;
    }
    json_object_set_new(body, "message", m);
    if (json_object_size(attrs)) json_object_set(body, "attributes", attrs);
    const char *subject = nb_cli_args_get(&x->a, "subject");
    if (subject) json_object_set_new(body, "subject", json_string(subject));
    if (nb_cli_obj_path(&path, "topics", x->a.pos[0], "/publish") < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "POST", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s\n", nb_cli__str(answer, "messageId"));
out:
    json_decref(body);
    json_decref(attrs);
    json_decref(answer);
    nb_buf_free(&path);
    nb_buf_free(&msg);
    return rc;
}

/* ---------- subscribe, unsubscribe, subscriptions ---------- */

static const nb_cli_opt subscribe_opts[] = {
    {"filter", 0, "JSON", "an SNS filter policy over the message attributes"},
    {"raw", 0, NULL, "queue and webhook targets get the bare message, not SNS's JSON"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(topic_subscribe_cmd, "topic subscribe",
               "T function:NAME|queue:NAME|webhook:URL [--filter JSON] [--raw] [options]",
               "Subscribes a target to T. A function gets SNS's Lambda event (its async retries\n"
               "and destinations apply), a queue SNS's notification JSON, a webhook a POST of it\n"
               "(retried with backoff, then kept in its failure queue). --filter is a policy such\n"
               "as '{\"color\":[\"red\"],\"size\":[{\"numeric\":[\">\",10]}]}'. Prints the id.",
               subscribe_opts, 2, 2);
NB_CLI__SUBCMD(topic_unsubscribe_cmd, "topic unsubscribe", "T ID [options]",
               "Deletes the subscription ID of T (and a webhook's undelivered messages).",
               json_opts, 2, 2);
NB_CLI__SUBCMD(topic_subscriptions_cmd, "topic subscriptions", "T [options]",
               "Lists T's subscriptions: id, target, raw, filter, and a webhook's deliveries.",
               json_opts, 1, 1);

static int topic_subscribe(nb_cli__ctx *x)
{
    const char *target = x->a.pos[1], *filter = nb_cli_args_get(&x->a, "filter");
    int rc = nb_cli__check_name(x, "topic", x->a.pos[0]);
    if (rc) return rc;
    if (strncmp(target, "function:", 9) && strncmp(target, "queue:", 6) &&
        strncmp(target, "webhook:", 8))
        return nb_cli__usage(x->cmd,
                             "the target is function:NAME, queue:NAME or webhook:URL, not "
                             "'%s'",
                             target);
    if (strncmp(target, "webhook:", 8) &&
        (rc = nb_cli__check_name(x, "target", strchr(target, ':') + 1)))
        return rc;
    json_t *body = json_pack("{s:s}", "target", target), *answer = NULL;
    if (filter) {
        json_t *f = json_loads(filter, 0, NULL);
        if (!json_is_object(f)) {
            json_decref(f);
            json_decref(body);
            return nb_cli__usage(x->cmd, "--filter must be a JSON object, not '%s'", filter);
        }
        json_object_set_new(body, "filter", f);
    }
    if (nb_cli_args_has(&x->a, "raw")) json_object_set_new(body, "raw", json_true());
    nb_buf path;
    nb_buf_init(&path, 4096);
    rc = nb_cli_obj_path(&path, "topics", x->a.pos[0], "/subscriptions") < 0
             ? nb_cli__oom()
             : nb_cli__call(x, "POST", &path, body, &answer);
    json_decref(body);
    nb_buf_free(&path);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s %s to topic %s: %s\n", x->status == 201 ? "subscribed" : "already subscribed",
               target, x->a.pos[0], nb_cli__str(answer, "id"));
    json_decref(answer);
    return NB_CLI_OK;
}

static int topic_unsubscribe(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "topic", x->a.pos[0]);
    if (rc || (rc = nb_cli__check_name(x, "subscription id", x->a.pos[1]))) return rc;
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if (nb_cli_obj_path(&path, "topics", x->a.pos[0], "/subscriptions/") < 0 ||
        nb_cli_escape(&path, x->a.pos[1]) < 0)
        rc = nb_cli__oom();
    else
        rc = nb_cli__call(x, "DELETE", &path, NULL, &answer);
    nb_buf_free(&path);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("unsubscribed %s from topic %s\n", x->a.pos[1], x->a.pos[0]);
    json_decref(answer);
    return NB_CLI_OK;
}

static void sub_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "id"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "target"));
    nb_cli__cell(c[2], 256, json_is_true(json_object_get(o, "raw")) ? "raw" : "sns");
    char *f = json_is_object(json_object_get(o, "filter"))
                  ? json_dumps(json_object_get(o, "filter"), JSON_COMPACT)
                  : NULL;
    nb_cli__cell(c[3], 256, f);
    free(f);
    const json_t *d = json_object_get(o, "delivery");
    if (d)
        snprintf(c[4], 256, "pending=%lld,delivered=%lld,failed=%lld",
                 (long long)nb_cli__int(d, "pending"), (long long)nb_cli__int(d, "delivered"),
                 (long long)nb_cli__int(d, "failed"));
    else
        nb_cli__cell(c[4], 256, NULL);
}

static int topic_subscriptions(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "topics", "topic", "/subscriptions", &answer);
    if (rc) return rc;
    static const char *const header[] = {"ID", "TARGET", "FORMAT", "FILTER", "DELIVERY"};
    rc = nb_cli__list_answer(x, answer, "subscriptions", NB_ARRAY_LEN(header), header, sub_row);
    json_decref(answer);
    return rc;
}

static const nb_cli__sub topic_subs[] = {
    {"create", "create a topic", &topic_create_cmd, topic_create},
    {"ls", "list topics", &topic_ls_cmd, topic_ls},
    {"get", "show a topic", &topic_get_cmd, topic_get},
    {"rm", "delete a topic and its subscriptions", &topic_rm_cmd, topic_rm},
    {"publish", "publish a message", &topic_publish_cmd, topic_publish},
    {"subscribe", "subscribe a function, queue or webhook", &topic_subscribe_cmd, topic_subscribe},
    {"unsubscribe", "delete a subscription", &topic_unsubscribe_cmd, topic_unsubscribe},
    {"subscriptions", "list a topic's subscriptions", &topic_subscriptions_cmd,
     topic_subscriptions},
};

static const nb_cli__group topic_group = {
    "topic",
    "Topics: messages published once, delivered to every subscribed function, queue or\n"
    "webhook whose filter policy matches (SNS's model).",
    topic_subs, NB_ARRAY_LEN(topic_subs)};

int nb_cli_topic(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&topic_group, g, argc, argv);
}
