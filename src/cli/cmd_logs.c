/* nimbus logs: read or follow a function's NDJSON log stream. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt opts[] = {
    {"since", 0, "WHEN", "only lines from WHEN: 30s, 10m, 2h, 1d, 1h30m ago, or epoch ms"},
    {"follow", 'f', NULL, "keep streaming new lines until interrupted"},
    {"limit", 'n', "N", "at most the newest N lines (daemon default 1000)"},
    {"json", 0, NULL, "print the daemon's NDJSON records as they are"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "logs",
    .synopsis = "NAME [--since WHEN] [--follow] [--limit N] [options]",
    .description =
        "Prints a function's log lines as\n"
        "  2026-11-23T10:00:00.123Z [v2 i-3 <request id>] line\n"
        "with \" stderr\" inside the brackets for the function's stderr. START, END and REPORT\n"
        "lines come from the platform.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 1,
    .max_pos = 1,
};

typedef struct logs_out {
    int json;
    int follow;
    nb_buf line;
} logs_out;

static int on_line(void *ud, const char *line, size_t len)
{
    logs_out *o = ud;
    nb_buf_reset(&o->line);
    if (o->json || nb_cli_format_log(&o->line, line, len) < 0) {
        /* --json, or a record we cannot read: pass it through untouched. */
        nb_buf_reset(&o->line);
        if (nb_buf_append(&o->line, line, len) < 0 || nb_buf_append(&o->line, "\n", 1) < 0)
            return 0; /* over the line cap: the client already dropped longer ones */
    }
    nb_cli__write(o->line.data, o->line.len);
    if (o->follow) fflush(stdout); /* lines show up as they come, even in a pipe */
    return ferror(stdout) ? -1 : 0;
}

int nb_cli_logs(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    int64_t since = -1, limit = 0;
    const char *v;
    if ((v = nb_cli_args_get(&a, "since")) && nb_cli_parse_since(v, nb_now_ms(), &since) < 0) {
        rc = nb_cli__usage("logs", "--since wants 30s, 10m, 2h, 1d or epoch milliseconds, not '%s'",
                           v);
        nb_cli_args_free(&a);
        return rc;
    }
    if ((v = nb_cli_args_get(&a, "limit")) && nb_cli_parse_int(v, 1, INT32_MAX, &limit) < 0) {
        rc = nb_cli__usage("logs", "--limit must be a positive number, not '%s'", v);
        nb_cli_args_free(&a);
        return rc;
    }

    logs_out o = {.json = nb_cli_args_has(&a, "json"), .follow = nb_cli_args_has(&a, "follow")};
    nb_buf_init(&o.line, NB_CLI_LOG_LINE_MAX + 4096);
    nb_buf path;
    nb_buf_init(&path, 4096);
    nb_err err;
    nb_err_clear(&err);
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    r.on_line = on_line;
    r.ud = &o;
    nb_cli__client c;
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
        goto out;
    }
    nb_cli_logs_path(&path, a.pos[0], since, o.follow, limit);
    if (nb_cli__request(&c, "GET", path.data, NULL, 0, NULL, &r, &err) < 0 ||
        nb_cli__check(&c, &r, &err) < 0)
        rc = nb_cli__fail(&err);
    else
        rc = NB_CLI_OK;
    nb_cli__client_close(&c);
out:
    nb_cli__resp_free(&r);
    nb_buf_free(&path);
    nb_buf_free(&o.line);
    nb_cli_args_free(&a);
    return rc;
}
