/* nimbus rule, events put: the event bus's rules (EventBridge patterns routing CloudEvents to
 * function:, queue: or topic: targets) and sending an event to the bus, through the admin API
 * (namespace default). Grouped like cmd_schedule.c; the CLI checks names, the target's syntax
 * and that --match is a JSON object, the daemon compiles the pattern and checks the target
 * exists. */
#include "cli/internal.h"

#include "base/util.h"
#include "events/bus.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli_opt add_opts[] = {
    {"match", 0, "JSON", "the event pattern, e.g. '{\"type\":[\"order.created\"]}' (required)"},
    {"description", 0, "D", "what the rule is for"},
    {"disabled", 0, NULL, "create it disabled (it routes nothing until enabled)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli_opt update_opts[] = {
    {"match", 0, "JSON", "a new event pattern"},
    {"target", 0, "T", "a new target: function:NAME, queue:NAME or topic:NAME"},
    {"description", 0, "D", "a new description"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli_opt test_opts[] = {
    {"event", 0, "JSON", "the sample event, structured form (required)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(rule_add_cmd, "rule add",
               "NAME --match JSON TARGET [--description D] [--disabled] [options]",
               "Creates the rule NAME: every event on the bus matching the pattern (EventBridge's\n"
               "syntax, over the whole CloudEvent: type, source, subject, extensions, data.x.y)\n"
               "is sent to TARGET, written function:NAME, queue:NAME or topic:NAME.",
               add_opts, 2, 2);
NB_CLI__SUBCMD(rule_update_cmd, "rule update",
               "NAME [--match JSON] [--target T] [--description D] [options]",
               "Changes the rule's pattern, target or description; the rest stays.", update_opts, 1,
               1);
NB_CLI__SUBCMD(rule_ls_cmd, "rule ls", "[options]",
               "Lists the rules: name, target, enabled, pattern.", json_opts, 0, 0);
NB_CLI__SUBCMD(rule_get_cmd, "rule get", "NAME [options]", "Shows a rule.", json_opts, 1, 1);
NB_CLI__SUBCMD(rule_enable_cmd, "rule enable", "NAME [options]",
               "Enables a rule: matching events are routed again.", json_opts, 1, 1);
NB_CLI__SUBCMD(rule_disable_cmd, "rule disable", "NAME [options]",
               "Disables a rule: it routes nothing until enabled.", json_opts, 1, 1);
NB_CLI__SUBCMD(rule_test_cmd, "rule test", "NAME --event JSON [options]",
               "Says whether the rule's pattern matches a sample event (nothing is sent).",
               test_opts, 1, 1);
NB_CLI__SUBCMD(rule_rm_cmd, "rule rm", "NAME [options]", "Deletes a rule.", json_opts, 1, 1);

/* A JSON object flag, duplicate keys refused (the pattern compiler would refuse them too, with
 * a less direct message). NULL after printing the usage (*rc = 2). */
static json_t *object_flag(const nb_cli__ctx *x, const char *flag, int *rc)
{
    const char *v = nb_cli_args_get(&x->a, flag);
    json_error_t je;
    json_t *j = v ? json_loads(v, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        *rc = nb_cli__usage(x->cmd, "--%s must be a JSON object%s%s", flag, j || !v ? "" : ": ",
                            j || !v ? "" : je.text);
        return NULL;
    }
    return j;
}

static int check_target(const nb_cli__ctx *x, const char *target)
{
    nb_err err = {0};
    if (nb_rule_target_check(target, &err) == 0) return 0;
    return nb_cli__usage(x->cmd, "'%s': %s", target, err.msg);
}

static int print_rule(const nb_cli__ctx *x, json_t *answer)
{
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
        return NB_CLI_OK;
    }
    static const char *const order[] = {"name", "target", "enabled", "match", "description", NULL};
    return nb_cli__print_object(answer, order);
}

/* One request on /v1/rules[/NAME]<suffix> with body; the rule printed, or `done` written. */
static int rule_call(nb_cli__ctx *x, const char *method, const char *name, const char *suffix,
                     const json_t *body, const char *done)
{
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    int rc = (name ? nb_cli_obj_path(&path, "rules", name, suffix)
                   : nb_buf_appendf(&path, "/v1/rules")) < 0
                 ? nb_cli__oom()
                 : nb_cli__call(x, method, &path, body, &answer);
    nb_buf_free(&path);
    if (rc) return rc;
    if (done && !nb_cli__json_out(x)) {
        char *m = json_dumps(json_object_get(answer, "match"), JSON_COMPACT);
        printf("%s rule %s: %s -> %s%s\n", done, nb_cli__str(answer, "name"), m ? m : "",
               nb_cli__str(answer, "target"),
               json_is_false(json_object_get(answer, "enabled")) ? " (disabled)" : "");
        free(m);
    } else {
        rc = print_rule(x, answer);
    }
    json_decref(answer);
    return rc;
}

static int rule_add(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "rule", x->a.pos[0]);
    if (!rc) rc = check_target(x, x->a.pos[1]);
    if (rc) return rc;
    if (!nb_cli_args_get(&x->a, "match"))
        return nb_cli__usage(x->cmd, "--match JSON is required (the event pattern)");
    json_t *match = object_flag(x, "match", &rc);
    if (!match) return rc;
    json_t *body = json_pack("{s:s, s:o, s:s, s:b}", "name", x->a.pos[0], "match", match, "target",
                             x->a.pos[1], "enabled", !nb_cli_args_has(&x->a, "disabled"));
    const char *d = nb_cli_args_get(&x->a, "description");
    if (d) json_object_set_new(body, "description", json_string(d));
    rc = rule_call(x, "POST", NULL, "", body, "created");
    json_decref(body);
    return rc;
}

static int rule_update(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "rule", x->a.pos[0]);
    if (rc) return rc;
    json_t *body = json_object();
    if (nb_cli_args_get(&x->a, "match")) {
        json_t *m = object_flag(x, "match", &rc);
        if (!m) {
            json_decref(body);
            return rc;
        }
        json_object_set_new(body, "match", m);
    }
    const char *t = nb_cli_args_get(&x->a, "target");
    if (t && (rc = check_target(x, t))) {
        json_decref(body);
        return rc;
    }
    if (t) json_object_set_new(body, "target", json_string(t));
    const char *d = nb_cli_args_get(&x->a, "description");
    if (d) json_object_set_new(body, "description", json_string(d));
    if (json_object_size(body) == 0) {
        json_decref(body);
        return nb_cli__usage(x->cmd, "nothing to change: give --match, --target or --description");
    }
    rc = rule_call(x, "PATCH", x->a.pos[0], "", body, "updated");
    json_decref(body);
    return rc;
}

static void rule_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "target"));
    nb_cli__cell(c[2], 256, json_is_true(json_object_get(o, "enabled")) ? "yes" : "no");
    char *m = json_dumps(json_object_get(o, "match"), JSON_COMPACT);
    nb_cli__cell(c[3], 256, m);
    free(m);
}

static int rule_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "rules", "rule", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "TARGET", "ENABLED", "PATTERN"};
    rc = nb_cli__list_answer(x, answer, "rules", NB_ARRAY_LEN(header), header, rule_row);
    json_decref(answer);
    return rc;
}

static int rule_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "rules", "rule", NULL, &answer);
    if (rc) return rc;
    rc = print_rule(x, answer);
    json_decref(answer);
    return rc;
}

static int rule_enabled(nb_cli__ctx *x, int on)
{
    int rc = nb_cli__check_name(x, "rule", x->a.pos[0]);
    if (rc) return rc;
    json_t *body = json_pack("{s:b}", "enabled", on);
    rc = rule_call(x, "PATCH", x->a.pos[0], "", body, on ? "enabled" : "disabled");
    json_decref(body);
    return rc;
}

static int rule_enable(nb_cli__ctx *x)
{
    return rule_enabled(x, 1);
}

static int rule_disable(nb_cli__ctx *x)
{
    return rule_enabled(x, 0);
}

static int rule_test(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "rule", x->a.pos[0]);
    if (rc) return rc;
    if (!nb_cli_args_get(&x->a, "event"))
        return nb_cli__usage(x->cmd, "--event JSON is required (the sample event)");
    json_t *ev = object_flag(x, "event", &rc);
    if (!ev) return rc;
    json_t *body = json_pack("{s:o}", "event", ev);
    json_t *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    rc = nb_cli_obj_path(&path, "rules", x->a.pos[0], "/test") < 0
             ? nb_cli__oom()
             : nb_cli__call(x, "POST", &path, body, &answer);
    nb_buf_free(&path);
    json_decref(body);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s\n", json_is_true(json_object_get(answer, "matched")) ? "matched" : "no match");
    json_decref(answer);
    return NB_CLI_OK;
}

static int rule_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "rules", "rule", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "rule", x->a.pos[0]);
}

static const nb_cli__sub rule_subs[] = {
    {"add", "create a rule: a pattern and a target", &rule_add_cmd, rule_add},
    {"update", "change a rule's pattern, target or description", &rule_update_cmd, rule_update},
    {"ls", "list rules", &rule_ls_cmd, rule_ls},
    {"get", "show a rule", &rule_get_cmd, rule_get},
    {"enable", "route matching events again", &rule_enable_cmd, rule_enable},
    {"disable", "stop routing matching events", &rule_disable_cmd, rule_disable},
    {"test", "match a sample event against a rule", &rule_test_cmd, rule_test},
    {"rm", "delete a rule", &rule_rm_cmd, rule_rm},
};

static const nb_cli__group rule_group = {
    "rule",
    "The event bus's rules: CloudEvents (POST /v1/events, 'nimbus events put', and the\n"
    "platform's own) matching a pattern go to a function, queue or topic.",
    rule_subs, NB_ARRAY_LEN(rule_subs)};

int nb_cli_rule(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&rule_group, g, argc, argv);
}

/* ---------- nimbus events put ---------- */

static const nb_cli_opt put_opts[] = {
    {"type", 0, "T", "the event's type, e.g. order.created (required)"},
    {"source", 0, "S", "the event's source, a URI-reference, e.g. shop/web (required)"},
    {"subject", 0, "X", "the event's subject"},
    {"id", 0, "ID", "the event's id (default: a new UUID)"},
    /* Not --data: that is every command's data directory. */
    {"payload", 0, "JSON", "the event's data, any JSON value (sent as application/json)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

const nb_cli__cmd nb_cli__events_put_cmd = {
    .name = "events put",
    .synopsis = "--type T --source S [--subject X] [--id ID] [--payload JSON] [options]",
    .description =
        "Sends one CloudEvent (structured mode, specversion 1.0, time now) to the event\n"
        "bus; it is durable when this returns, and the rules route it.",
    .opts = put_opts,
    .nopts = NB_ARRAY_LEN(put_opts),
    .min_pos = 0,
    .max_pos = 0,
};

int nb_cli__events_put(nb_cli__ctx *x)
{
    const char *type = nb_cli_args_get(&x->a, "type");
    const char *source = nb_cli_args_get(&x->a, "source");
    const char *data = nb_cli_args_get(&x->a, "payload");
    if (!type || !*type || !source || !*source)
        return nb_cli__usage(x->cmd, "--type and --source are required");
    json_t *d = NULL;
    if (data && !(d = json_loads(data, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL)))
        return nb_cli__usage(x->cmd, "--payload must be JSON, not '%s'", data);
    char id[37], now[32];
    nb_uuid4(id);
    nb_time_iso8601(nb_now_ms(), now, sizeof now);
    const char *given = nb_cli_args_get(&x->a, "id");
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "specversion", "1.0", "id",
                           given ? given : id, "source", source, "type", type, "time", now);
    const char *subject = nb_cli_args_get(&x->a, "subject");
    if (subject) json_object_set_new(ev, "subject", json_string(subject));
    if (d) {
        json_object_set_new(ev, "datacontenttype", json_string("application/json"));
        json_object_set_new(ev, "data", d);
    }
    char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!text) return nb_cli__usage(x->cmd, "the attributes must be UTF-8 text");
    nb_err err = {0};
    int rc = 0;
    if (!x->open) {
        if (nb_cli__client_open(&x->c, x->g, &x->a, &err) < 0) rc = nb_cli__fail(&err);
        x->open = rc == 0;
    }
    json_t *answer = NULL;
    if (rc == 0 && nb_cli__call_json(&x->c, "POST", "/v1/events", text, strlen(text),
                                     "application/cloudevents+json", &answer, &err) < 0)
        rc = nb_cli__fail(&err);
    free(text);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("event %s accepted\n",
               json_string_value(json_array_get(json_object_get(answer, "ids"), 0)) ?: "?");
    json_decref(answer);
    return NB_CLI_OK;
}
