/* nimbus invoke: POST an event, print the function's result (or, with --async, queue it and
 * print its request id). */
#include "cli/internal.h"

#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const nb_cli_opt opts[] = {
    {"version", 0, "N", "run this published version instead of the latest"},
    {"async", 0, NULL, "queue the event (invocation type Event) and print its request id"},
    {"json", 0, NULL, "with --async: print the daemon's JSON answer"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "invoke",
    .synopsis = "NAME [JSON|@FILE|-] [options]",
    .description =
        "Invokes NAME synchronously with an event (default {}): a JSON text, @FILE for a file's\n"
        "contents, or - for standard input; use -- before an event that starts with '-'. The\n"
        "result goes to stdout. When the function fails, its error JSON still goes to stdout and\n"
        "the exit status is 1.\n"
        "With --async the daemon stores the event (up to 1 MiB) and answers at once; the\n"
        "function runs later with the function's retries and destinations (see 'nimbus\n"
        "config'), and failures show in 'nimbus events failed NAME'.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 1,
    .max_pos = 2,
};

/* Fills ev with the event named by arg. 0, or the exit status after printing the error. */
static int load_event(const char *arg, nb_buf *ev)
{
    if (!arg) return nb_buf_append(ev, "{}", 2) < 0 ? NB_CLI_FAILED : 0;
    if (strcmp(arg, "-") == 0) return nb_cli__read_stdin("invoke", "event", ev);
    if (arg[0] == '@') {
        size_t len;
        char *data = nb_read_file(arg + 1, NB_CLI_EVENT_MAX, &len);
        if (!data) {
            if (errno == EFBIG)
                return nb_cli__usage("invoke", "%s is over %u bytes (the event limit)", arg + 1,
                                     NB_CLI_EVENT_MAX);
            return nb_cli__usage("invoke", "%s: %s", arg + 1, strerror(errno));
        }
        int rc = nb_buf_append(ev, data, len);
        free(data);
        return rc < 0 ? NB_CLI_FAILED : 0;
    }
    if (nb_buf_append(ev, arg, strlen(arg)) < 0)
        return nb_cli__usage("invoke", "the event is over %u bytes (the limit)", NB_CLI_EVENT_MAX);
    return 0;
}

static int invoke(nb_cli__client *c, const char *name, const char *version, const nb_buf *ev)
{
    nb_err err;
    nb_err_clear(&err);
    nb_buf path;
    nb_buf_init(&path, 4096);
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    int rc = NB_CLI_FAILED;
    if (nb_cli_fn_path(&path, name, "/invoke") < 0 ||
        (version && nb_buf_appendf(&path, "?version=%s", version) < 0)) {
        nb_err_set(&err, 500, NB_E_INTERNAL, "out of memory");
        goto out;
    }
    if (nb_cli__request(c, "POST", path.data, ev->data, ev->len, "application/json", &r, &err) <
            0 ||
        nb_cli__check(c, &r, &err) < 0)
        goto out;

    nb_cli__write(r.body.data, r.body.len);
    if (r.body.len == 0 || r.body.data[r.body.len - 1] != '\n') putchar('\n');
    if (c->verbose)
        fprintf(stderr, "nimbus: request id %s, version %s%s%s\n",
                r.request_id[0] ? r.request_id : "-",
                r.executed_version[0] ? r.executed_version : "-",
                r.function_error[0] ? ", function error " : "", r.function_error);
    rc = r.function_error[0] ? NB_CLI_FAILED : NB_CLI_OK;
out:
    if (err.msg[0]) nb_cli__fail(&err);
    nb_cli__resp_free(&r);
    nb_buf_free(&path);
    return rc;
}

/* The Event invocation type: 202 {"request_id"} once the event is stored. */
static int invoke_async(nb_cli__client *c, const char *name, const nb_buf *ev, int json)
{
    nb_err err;
    nb_err_clear(&err);
    nb_buf path;
    nb_buf_init(&path, 4096);
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    json_t *answer = NULL;
    int rc = NB_CLI_FAILED;
    c->header = "X-Nimbus-Invocation-Type: Event";
    if (nb_cli_fn_path(&path, name, "/invoke") < 0) {
        nb_err_set(&err, 500, NB_E_INTERNAL, "out of memory");
        goto out;
    }
    if (nb_cli__request(c, "POST", path.data, ev->data, ev->len, "application/json", &r, &err) <
            0 ||
        nb_cli__check(c, &r, &err) < 0)
        goto out;
    /* Anything but 202 means the function ran (a daemon without async invocations). */
    answer =
        r.status == 202 ? json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(answer, "request_id"));
    if (!id) {
        nb_err_set(&err, 502, NB_E_INTERNAL,
                   "the daemon at %s answered HTTP %ld, not 202 with a request id: does it "
                   "support --async?",
                   c->conn.url, r.status);
        goto out;
    }
    if (json)
        nb_cli__print_json(answer);
    else
        printf("%s\n", id);
    rc = NB_CLI_OK;
out:
    if (err.msg[0]) nb_cli__fail(&err);
    json_decref(answer);
    nb_cli__resp_free(&r);
    nb_buf_free(&path);
    return rc;
}

int nb_cli_invoke(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    nb_buf ev;
    nb_buf_init(&ev, NB_CLI_EVENT_MAX);
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) goto out;

    const char *version = nb_cli_args_get(&a, "version");
    int64_t v;
    if (version && nb_cli_parse_int(version, 1, INT32_MAX, &v) < 0) {
        rc = nb_cli__usage("invoke", "--version must be a version number (1, 2, ...), not '%s'",
                           version);
        goto out;
    }
    int async = nb_cli_args_has(&a, "async");
    if (async && version) {
        rc = nb_cli__usage("invoke", "--async runs the latest version: drop --version");
        goto out;
    }
    if (!async && nb_cli_args_has(&a, "json")) {
        rc = nb_cli__usage("invoke", "--json goes with --async (the result is printed as is)");
        goto out;
    }
    if ((rc = load_event(a.npos > 1 ? a.pos[1] : NULL, &ev)) != 0) goto out;
    if (async && ev.len > NB_CLI_ASYNC_EVENT_MAX) {
        rc = nb_cli__usage("invoke", "an --async event is at most %u bytes, this one is %zu",
                           NB_CLI_ASYNC_EVENT_MAX, ev.len);
        goto out;
    }

    nb_cli__client c;
    nb_err err;
    nb_err_clear(&err);
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
        goto out;
    }
    rc = async ? invoke_async(&c, a.pos[0], &ev, nb_cli_args_has(&a, "json"))
               : invoke(&c, a.pos[0], version, &ev);
    nb_cli__client_close(&c);
out:
    nb_buf_free(&ev);
    nb_cli_args_free(&a);
    return rc;
}
