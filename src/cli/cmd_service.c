/* nimbus service: functions grouped by their `service` setting, shown with everything that
 * triggers them (routes, schedules, subscriptions, rules) and deleted together. Membership is
 * set with `deploy --service S` or `config --service S`. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(service_ls_cmd, "service ls", "[options]",
               "Lists the services of the namespace with their functions.", json_opts, 0, 0);
NB_CLI__SUBCMD(service_get_cmd, "service get", "NAME [options]",
               "Shows a service: its functions, and the routes, schedules, queue and topic\n"
               "subscriptions and rules that invoke them.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(service_rm_cmd, "service rm", "NAME [options]",
               "Deletes a service: its routes, schedules, subscriptions and rules, then its\n"
               "functions.",
               json_opts, 1, 1);

static void service_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    char fns[256] = "";
    size_t i, used = 0;
    json_t *v;
    json_array_foreach(json_object_get(o, "functions"), i, v)
    {
        int n = snprintf(fns + used, sizeof fns - used, "%s%s", i ? "," : "",
                         json_string_value(v) ? json_string_value(v) : "");
        if (n < 0 || (size_t)n >= sizeof fns - used) break;
        used += (size_t)n;
    }
    nb_cli__cell(c[1], 256, fns);
}

static int service_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "services", "service", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "FUNCTIONS"};
    rc = nb_cli__list_answer(x, answer, "services", NB_ARRAY_LEN(header), header, service_row);
    json_decref(answer);
    return rc;
}

/* One line per part: "  KIND  what -> function". */
static void print_parts(const json_t *answer, const char *key, const char *title,
                        const char *const *fields)
{
    const json_t *arr = json_object_get(answer, key);
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        printf("  %-20s", title);
        for (const char *const *f = fields; *f; f++) {
            const char *v = nb_cli__str(o, *f);
            if (*v) printf(" %s", v);
        }
        putchar('\n');
    }
}

static int service_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "services", "service", NULL, &answer);
    if (rc) return rc;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
        json_decref(answer);
        return NB_CLI_OK;
    }
    printf("service %s\n", nb_cli__str(answer, "name"));
    static const char *const fn_fields[] = {"name", "runtime", NULL};
    static const char *const route_fields[] = {"api", "method", "path", "function", NULL};
    static const char *const sched_fields[] = {"name", "expression", "function", "next_fire", NULL};
    static const char *const sub_fields[] = {"queue", "function", NULL};
    static const char *const tsub_fields[] = {"topic", "target", NULL};
    static const char *const rule_fields[] = {"name", "target", NULL};
    print_parts(answer, "functions", "function", fn_fields);
    print_parts(answer, "routes", "route", route_fields);
    print_parts(answer, "schedules", "schedule", sched_fields);
    print_parts(answer, "subscriptions", "queue subscription", sub_fields);
    print_parts(answer, "topic_subscriptions", "topic subscription", tsub_fields);
    print_parts(answer, "rules", "rule", rule_fields);
    json_decref(answer);
    return NB_CLI_OK;
}

static int service_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "services", "service", NULL, &answer);
    if (rc) return rc;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
    } else {
        printf("deleted service %s: %zu functions, %lld routes, %lld schedules, %lld "
               "subscriptions, %lld topic subscriptions, %lld rules\n",
               x->a.pos[0], json_array_size(json_object_get(answer, "functions")),
               (long long)nb_cli__int(answer, "routes"),
               (long long)nb_cli__int(answer, "schedules"),
               (long long)nb_cli__int(answer, "subscriptions"),
               (long long)nb_cli__int(answer, "topic_subscriptions"),
               (long long)nb_cli__int(answer, "rules"));
    }
    json_decref(answer);
    return NB_CLI_OK;
}

static const nb_cli__sub service_subs[] = {
    {"ls", "list services", &service_ls_cmd, service_ls},
    {"get", "show a service and what triggers its functions", &service_get_cmd, service_get},
    {"rm", "delete a service and everything in it", &service_rm_cmd, service_rm},
};

static const nb_cli__group service_group = {
    "service",
    "Services: functions grouped by their service setting (deploy/config --service), with\n"
    "their routes, schedules, subscriptions and rules.",
    service_subs, NB_ARRAY_LEN(service_subs)};

int nb_cli_service(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&service_group, g, argc, argv);
}
