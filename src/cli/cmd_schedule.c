/* nimbus schedule: schedules that invoke functions asynchronously (EventBridge Scheduler's
 * expressions) through the admin API. Grouped like cmd_queue.c; the daemon checks expressions
 * and time zones (the CLI checks names and the simple flags before any request). */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli_opt add_opts[] = {
    {"payload", 0, "JSON", "the event the function receives (default {})"},
    {"timezone", 0, "TZ", "the zone cron() and at() are read in, e.g. Europe/Berlin (UTC)"},
    {"start", 0, "T", "first possible firing, UTC: 2026-11-23T10:00:00Z"},
    {"end", 0, "T", "last possible firing, UTC"},
    {"catchup", 0, "P", "after downtime: one (default) firing, none, or all missed ones"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(schedule_add_cmd, "schedule add",
               "NAME EXPR FUNCTION [--payload JSON] [--timezone TZ] [--start T] [--end T]\n"
               "       [--catchup one|none|all] [options]",
               "Creates (or replaces) the schedule NAME: FUNCTION is invoked asynchronously at\n"
               "each firing of EXPR, one of rate(N seconds|minutes|hours|days),\n"
               "cron(min hour day-of-month month day-of-week year) or at(yyyy-mm-ddThh:mm:ss).",
               add_opts, 3, 3);
NB_CLI__SUBCMD(schedule_ls_cmd, "schedule ls", "[options]",
               "Lists the schedules with their next firing (UTC).", json_opts, 0, 0);
NB_CLI__SUBCMD(schedule_get_cmd, "schedule get", "NAME [options]", "Shows a schedule.", json_opts,
               1, 1);
NB_CLI__SUBCMD(schedule_pause_cmd, "schedule pause", "NAME [options]",
               "Stops a schedule's firings until it is resumed.", json_opts, 1, 1);
NB_CLI__SUBCMD(schedule_resume_cmd, "schedule resume", "NAME [options]",
               "Starts a paused schedule again (from now: what it missed is not made up).",
               json_opts, 1, 1);
NB_CLI__SUBCMD(schedule_rm_cmd, "schedule rm", "NAME [options]", "Deletes a schedule.", json_opts,
               1, 1);

static int print_schedule(const nb_cli__ctx *x, json_t *answer)
{
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
        return NB_CLI_OK;
    }
    static const char *const order[] = {"name",  "expression", "function", "timezone",
                                        "state", "next_fire",  "payload",  "start",
                                        "end",   "catchup",    NULL};
    return nb_cli__print_object(answer, order);
}

static int schedule_add(nb_cli__ctx *x)
{
    int rc = nb_cli__check_name(x, "schedule", x->a.pos[0]);
    if (!rc) rc = nb_cli__check_name(x, "function", x->a.pos[2]);
    if (rc) return rc;
    json_t *body = json_pack("{s:s, s:s}", "expression", x->a.pos[1], "function", x->a.pos[2]);
    const char *p = nb_cli_args_get(&x->a, "payload");
    if (p) {
        json_t *pj = json_loads(p, JSON_DECODE_ANY, NULL);
        if (!pj) {
            json_decref(body);
            return nb_cli__usage(x->cmd, "--payload must be JSON, not '%s'", p);
        }
        json_object_set_new(body, "payload", pj);
    }
    static const char *const texts[][2] = {
        {"timezone", "timezone"}, {"start", "start"}, {"end", "end"}, {"catchup", "catchup"}};
    for (size_t i = 0; i < NB_ARRAY_LEN(texts); i++) {
        const char *v = nb_cli_args_get(&x->a, texts[i][0]);
        if (v) json_object_set_new(body, texts[i][1], json_string(v));
    }
    const char *cu = nb_cli_args_get(&x->a, "catchup");
    if (cu && strcmp(cu, "one") && strcmp(cu, "none") && strcmp(cu, "all")) {
        json_decref(body);
        return nb_cli__usage(x->cmd, "--catchup must be one, none or all, not '%s'", cu);
    }
    json_t *answer;
    nb_buf path;
    nb_buf_init(&path, 4096);
    rc = nb_cli_obj_path(&path, "schedules", x->a.pos[0], "") < 0
             ? nb_cli__oom()
             : nb_cli__call(x, "PUT", &path, body, &answer);
    json_decref(body);
    nb_buf_free(&path);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s schedule %s: %s -> %s, next firing %s\n",
               x->status == 201 ? "created" : "updated", x->a.pos[0], x->a.pos[1], x->a.pos[2],
               *nb_cli__str(answer, "next_fire") ? nb_cli__str(answer, "next_fire") : "soon");
    json_decref(answer);
    return NB_CLI_OK;
}

static void schedule_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "expression"));
    nb_cli__cell(c[2], 256, nb_cli__str(o, "function"));
    nb_cli__cell(c[3], 256, nb_cli__str(o, "timezone"));
    nb_cli__cell(c[4], 256, nb_cli__str(o, "state"));
    nb_cli__cell(c[5], 256, nb_cli__str(o, "next_fire"));
}

static int schedule_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "schedules", "schedule", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "EXPRESSION", "FUNCTION",
                                         "ZONE", "STATE",      "NEXT_FIRE"};
    rc = nb_cli__list_answer(x, answer, "schedules", NB_ARRAY_LEN(header), header, schedule_row);
    json_decref(answer);
    return rc;
}

/* get, pause, resume: one request, the schedule printed. */
static int schedule_one(nb_cli__ctx *x, const char *method, const char *suffix)
{
    json_t *answer;
    int rc = nb_cli__simple(x, method, "schedules", "schedule", suffix, &answer);
    if (rc) return rc;
    rc = print_schedule(x, answer);
    json_decref(answer);
    return rc;
}

static int schedule_get(nb_cli__ctx *x)
{
    return schedule_one(x, "GET", NULL);
}

static int schedule_pause(nb_cli__ctx *x)
{
    return schedule_one(x, "POST", "/pause");
}

static int schedule_resume(nb_cli__ctx *x)
{
    return schedule_one(x, "POST", "/resume");
}

static int schedule_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "schedules", "schedule", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "schedule", x->a.pos[0]);
}

static const nb_cli__sub schedule_subs[] = {
    {"add", "create or replace a schedule", &schedule_add_cmd, schedule_add},
    {"ls", "list schedules with their next firing", &schedule_ls_cmd, schedule_ls},
    {"get", "show a schedule", &schedule_get_cmd, schedule_get},
    {"pause", "stop a schedule's firings", &schedule_pause_cmd, schedule_pause},
    {"resume", "start a paused schedule again", &schedule_resume_cmd, schedule_resume},
    {"rm", "delete a schedule", &schedule_rm_cmd, schedule_rm},
};

static const nb_cli__group schedule_group = {
    "schedule",
    "Schedules: functions invoked asynchronously at rate(), cron() or at() times, in a time\n"
    "zone.",
    schedule_subs, NB_ARRAY_LEN(schedule_subs)};

int nb_cli_schedule(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&schedule_group, g, argc, argv);
}
