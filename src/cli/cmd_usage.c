/* nimbus usage: requests, billed time, GB-seconds, CPU and cost per function, namespace, key
 * or day, from the daemon's metering (GET /v1/usage, docs/internals/metering.md). */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt opts[] = {
    {"since", 0, "DUR", "the last DUR (90s, 30m, 24h, 7d; default 24h)"},
    {"from", 0, "T", "from T: epoch ms or UTC YYYY-MM-DD[THH:MM[:SS]][Z]"},
    {"to", 0, "T", "until T (exclusive), as --from"},
    {"by", 0, "G", "group by function (default), namespace, key or day"},
    {"format", 0, "F", "table (default), json (an array of rows) or csv"},
    {"json", 0, NULL, "the same as --format json"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "usage",
    .synopsis = "[--since 24h | --from T --to T] [--by function|namespace|key|day] "
                "[--format table|json|csv]",
    .description = "Usage and cost from the daemon's metering: requests, errors, throttles, "
                   "billed ms,\nGB-seconds, CPU ms and cost (the daemon's price sheet, 'nimbus "
                   "serve --prices').\nThe last row is the total.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 0,
    .max_pos = 0,
};

/* Times go into the query as they are: only characters that need no escaping. */
static int time_ok(const char *s)
{
    if (!*s || strlen(s) > 40) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == ':' || *s == 'T' || *s == 'Z'))
            return 0;
    return 1;
}

static const char *const cols[] = {"requests",   "errors", "throttles", "billed_ms",
                                   "gb_seconds", "cpu_ms", "cost_usd"};

static void cell(char *buf, size_t size, const json_t *v, const char *key)
{
    if (json_is_integer(v))
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, size, strcmp(key, "cost_usd") == 0 ? "%.6f" : "%.3f", json_real_value(v));
    else if (json_is_string(v))
        snprintf(buf, size, "%s", json_string_value(v));
    else
        snprintf(buf, size, "%s", "");
}

static int print_rows(const json_t *rows, const char *by, int csv)
{
    enum { NC = 1 + NB_ARRAY_LEN(cols) };
    char head[NC][32];
    const char *hp[NC];
    snprintf(head[0], sizeof head[0], "%s", by);
    for (size_t i = 0; i < NB_ARRAY_LEN(cols); i++)
        snprintf(head[i + 1], sizeof head[i + 1], "%s", cols[i]);
    for (size_t i = 0; i < NC; i++) {
        if (!csv)
            for (char *p = head[i]; *p; p++)
                if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
        hp[i] = head[i];
    }
    nb_cli_table t;
    if (!csv && nb_cli_table_init(&t, NC, hp) < 0) return nb_cli__oom();
    if (csv) {
        for (size_t i = 0; i < NC; i++)
            printf("%s%s", i ? "," : "", hp[i]);
        printf("\n");
    }
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        char c[NC][256];
        const char *cp[NC];
        cell(c[0], sizeof c[0], json_object_get(row, by), by);
        for (size_t k = 0; k < NB_ARRAY_LEN(cols); k++)
            cell(c[k + 1], sizeof c[k + 1], json_object_get(row, cols[k]), cols[k]);
        for (size_t k = 0; k < NC; k++)
            cp[k] = c[k];
        if (csv) {
            for (size_t k = 0; k < NC; k++) {
                /* Quoted when a name could break the line (keys and names are plain). */
                int q = strpbrk(cp[k], ",\"\n") != NULL;
                printf("%s%s%s%s", k ? "," : "", q ? "\"" : "", cp[k], q ? "\"" : "");
            }
            printf("\n");
        } else if (nb_cli_table_add(&t, cp) < 0) {
            nb_cli_table_free(&t);
            return nb_cli__oom();
        }
    }
    if (csv) return ferror(stdout) ? NB_CLI_FAILED : NB_CLI_OK;
    int rc = nb_cli__print_table(&t);
    nb_cli_table_free(&t);
    return rc;
}

int nb_cli_usage(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    const char *since = nb_cli_args_get(&a, "since");
    const char *from = nb_cli_args_get(&a, "from");
    const char *to = nb_cli_args_get(&a, "to");
    const char *by = nb_cli_args_get(&a, "by");
    const char *fmt = nb_cli_args_get(&a, "format");
    if (!by) by = "function";
    if (!fmt) fmt = nb_cli_args_has(&a, "json") ? "json" : "table";
    int64_t since_ms = 86400000;
    if (strcmp(by, "function") && strcmp(by, "namespace") && strcmp(by, "key") && strcmp(by, "day"))
        rc = nb_cli__usage("usage", "--by must be function, namespace, key or day, not '%s'", by);
    else if (strcmp(fmt, "table") && strcmp(fmt, "json") && strcmp(fmt, "csv"))
        rc = nb_cli__usage("usage", "--format must be table, json or csv, not '%s'", fmt);
    else if (since && (from || to))
        rc = nb_cli__usage("usage", "--since and --from/--to are exclusive");
    else if (since && nb_cli_parse_duration_ms(since, &since_ms) < 0)
        rc = nb_cli__usage("usage", "--since wants a duration such as 90s, 30m, 24h or 7d");
    else if ((from && !time_ok(from)) || (to && !time_ok(to)))
        rc = nb_cli__usage("usage", "--from/--to want epoch ms or YYYY-MM-DD[THH:MM[:SS]][Z]");
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    char path[256];
    if (from || to)
        snprintf(path, sizeof path, "/v1/usage?by=%s%s%s%s%s", by, from ? "&from=" : "",
                 from ? from : "", to ? "&to=" : "", to ? to : "");
    else
        snprintf(path, sizeof path, "/v1/usage?by=%s&since=%llds", by,
                 (long long)(since_ms / 1000 + (since_ms % 1000 != 0)));
    nb_err err;
    nb_err_clear(&err);
    nb_cli__client c;
    json_t *answer = NULL;
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        nb_cli_args_free(&a);
        return nb_cli__fail(&err);
    }
    if (nb_cli__call_json(&c, "GET", path, NULL, 0, NULL, &answer, &err) < 0) {
        rc = nb_cli__fail(&err);
    } else {
        const json_t *rows = json_object_get(answer, "usage");
        if (strcmp(fmt, "json") == 0) {
            nb_cli__print_json(rows);
            rc = NB_CLI_OK;
        } else {
            rc = print_rows(rows, by, strcmp(fmt, "csv") == 0);
        }
    }
    json_decref(answer);
    nb_cli__client_close(&c);
    nb_cli_args_free(&a);
    return rc;
}
