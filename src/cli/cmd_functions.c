/* nimbus ls, get, rm, versions: reading and deleting functions. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd ls_cmd = {
    .name = "ls",
    .synopsis = "[options]",
    .description = "Lists the functions with their latest version.",
    .opts = json_opts,
    .nopts = NB_ARRAY_LEN(json_opts),
    .min_pos = 0,
    .max_pos = 0,
};
static const nb_cli__cmd get_cmd = {
    .name = "get",
    .synopsis = "NAME [options]",
    .description = "Shows a function's settings at its latest version.",
    .opts = json_opts,
    .nopts = NB_ARRAY_LEN(json_opts),
    .min_pos = 1,
    .max_pos = 1,
};
static const nb_cli__cmd rm_cmd = {
    .name = "rm",
    .synopsis = "NAME [options]",
    .description = "Deletes a function and all its versions. Invocations in flight finish first.",
    .opts = json_opts,
    .nopts = NB_ARRAY_LEN(json_opts),
    .min_pos = 1,
    .max_pos = 1,
};
static const nb_cli__cmd versions_cmd = {
    .name = "versions",
    .synopsis = "NAME [options]",
    .description = "Lists a function's published versions, oldest first.",
    .opts = json_opts,
    .nopts = NB_ARRAY_LEN(json_opts),
    .min_pos = 1,
    .max_pos = 1,
};

/* Runs one GET/DELETE and hands the answer to show(); the shared shape of the four commands.
 * suffix NULL means the collection route /v1/functions. */
static int run(const nb_cli__cmd *cmd, const nb_cli_globals *g, int argc, char **argv,
               const char *method, const char *suffix,
               int (*show)(const nb_cli_args *a, const json_t *answer))
{
    nb_cli_args a;
    int rc = nb_cli__begin(cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    nb_err err;
    nb_err_clear(&err);
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *answer = NULL;
    nb_cli__client c;
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
        goto out;
    }
    if (a.npos > 0)
        nb_cli_fn_path(&path, a.pos[0], suffix);
    else
        nb_buf_appendf(&path, "/v1/functions");
    if (nb_cli__call_json(&c, method, path.data, NULL, 0, NULL, &answer, &err) < 0)
        rc = nb_cli__fail(&err);
    else
        rc = show(&a, answer);
    nb_cli__client_close(&c);
out:
    json_decref(answer);
    nb_buf_free(&path);
    nb_cli_args_free(&a);
    return rc;
}

static int print_table(nb_cli_table *t)
{
    nb_buf out;
    nb_buf_init(&out, 256u << 20);
    int rc = nb_cli_table_render(t, &out);
    nb_cli__write(out.data, out.len);
    nb_buf_free(&out);
    nb_cli_table_free(t);
    if (rc < 0) fprintf(stderr, "nimbus: out of memory\n");
    return rc < 0 ? NB_CLI_FAILED : NB_CLI_OK;
}

static void fmt_int(char *buf, size_t size, int64_t v, const char *unit)
{
    if (v < 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%lld%s", (long long)v, unit);
}

static int show_ls(const nb_cli_args *a, const json_t *answer)
{
    json_t *fns = json_object_get(answer, "functions");
    if (nb_cli_args_has(a, "json")) {
        if (fns)
            nb_cli__print_json(fns);
        else
            puts("[]");
        return NB_CLI_OK;
    }
    static const char *const header[] = {"NAME",    "RUNTIME", "HANDLER", "MEMORY",
                                         "TIMEOUT", "VERSION", "UPDATED"};
    nb_cli_table t;
    if (nb_cli_table_init(&t, NB_ARRAY_LEN(header), header) < 0) return NB_CLI_FAILED;
    size_t i;
    json_t *fn;
    json_array_foreach(fns, i, fn)
    {
        char mem[32], tmo[32], ver[32];
        fmt_int(mem, sizeof mem, nb_cli__int(fn, "memory_mb"), "MB");
        fmt_int(tmo, sizeof tmo, nb_cli__int(fn, "timeout_s"), "s");
        fmt_int(ver, sizeof ver, nb_cli__int(fn, "version"), "");
        const char *row[] = {nb_cli__str(fn, "name"),
                             nb_cli__str(fn, "runtime"),
                             nb_cli__str(fn, "handler"),
                             mem,
                             tmo,
                             ver,
                             nb_cli__str(fn, "updated_at")};
        if (nb_cli_table_add(&t, row) < 0) {
            nb_cli_table_free(&t);
            return NB_CLI_FAILED;
        }
    }
    return print_table(&t);
}

/* The scheduler's view as flat "key: value" lines for the text output. */
static void flatten_stats(json_t *o)
{
    json_t *st = json_object_get(o, "stats");
    if (!json_is_object(st)) return;
    json_t *in = json_object_get(st, "instances");
    char buf[160];
    snprintf(buf, sizeof buf, "%lld starting, %lld idle, %lld busy, %lld draining",
             (long long)nb_cli__int(in, "starting"), (long long)nb_cli__int(in, "idle"),
             (long long)nb_cli__int(in, "busy"), (long long)nb_cli__int(in, "draining"));
    json_object_set_new(o, "instances", json_string(buf));
    static const char *const counters[] = {"in_flight",   "queued",    "invocations",
                                           "cold_starts", "throttles", "instance_starts"};
    for (size_t i = 0; i < NB_ARRAY_LEN(counters); i++)
        json_object_set_new(o, counters[i], json_integer(nb_cli__int(st, counters[i])));
    json_t *last = json_object_get(st, "last_cold_start_ms");
    if (json_is_integer(last))
        snprintf(buf, sizeof buf, "%lld ms", (long long)json_integer_value(last));
    else
        snprintf(buf, sizeof buf, "-");
    json_object_set_new(o, "last_cold_start", json_string(buf));
    json_t *async = json_object_get(st, "async");
    nb_buf line;
    nb_buf_init(&line, 1024);
    if (json_is_object(async) && nb_cli_format_async(&line, async) == 0)
        json_object_set_new(o, "async", json_string(line.data));
    nb_buf_free(&line);
    json_object_del(o, "stats");
}

static int show_get(const nb_cli_args *a, const json_t *answer)
{
    if (nb_cli_args_has(a, "json")) {
        nb_cli__print_json(answer);
        return NB_CLI_OK;
    }
    static const char *const order[] = {"name",
                                        "namespace",
                                        "version",
                                        "runtime",
                                        "handler",
                                        "memory_mb",
                                        "timeout_s",
                                        "ephemeral_storage_mb",
                                        "network",
                                        "description",
                                        "environment",
                                        "code_sha256",
                                        "created_at",
                                        "updated_at",
                                        "max_concurrency",
                                        "min_instances",
                                        "idle_timeout_s",
                                        "max_queue",
                                        "queue_timeout_ms",
                                        "instances",
                                        "in_flight",
                                        "queued",
                                        "invocations",
                                        "cold_starts",
                                        "throttles",
                                        "instance_starts",
                                        "last_cold_start",
                                        "async",
                                        NULL};
    json_t *o = json_deep_copy(answer);
    if (json_is_object(o)) {
        flatten_stats(o);
        if (json_is_null(json_object_get(o, "max_concurrency")))
            json_object_set_new(o, "max_concurrency", json_string("none (unreserved)"));
        if (json_is_null(json_object_get(o, "idle_timeout_s")))
            json_object_set_new(o, "idle_timeout_s", json_string("default"));
    }
    nb_buf out;
    nb_buf_init(&out, 64u << 20);
    int rc = nb_cli_format_object(&out, o, order);
    nb_cli__write(out.data, out.len);
    nb_buf_free(&out);
    json_decref(o);
    if (rc < 0) fprintf(stderr, "nimbus: the daemon's answer is not an object\n");
    return rc < 0 ? NB_CLI_FAILED : NB_CLI_OK;
}

static int show_rm(const nb_cli_args *a, const json_t *answer)
{
    if (nb_cli_args_has(a, "json"))
        nb_cli__print_json(answer);
    else
        printf("deleted %s\n", a->pos[0]);
    return NB_CLI_OK;
}

static int show_versions(const nb_cli_args *a, const json_t *answer)
{
    json_t *vers = json_object_get(answer, "versions");
    if (nb_cli_args_has(a, "json")) {
        if (vers)
            nb_cli__print_json(vers);
        else
            puts("[]");
        return NB_CLI_OK;
    }
    static const char *const header[] = {"VERSION", "RUNTIME", "HANDLER", "MEMORY",
                                         "TIMEOUT", "CODE",    "CREATED"};
    nb_cli_table t;
    if (nb_cli_table_init(&t, NB_ARRAY_LEN(header), header) < 0) return NB_CLI_FAILED;
    size_t i;
    json_t *v;
    json_array_foreach(vers, i, v)
    {
        char mem[32], tmo[32], ver[32], code[16];
        fmt_int(mem, sizeof mem, nb_cli__int(v, "memory_mb"), "MB");
        fmt_int(tmo, sizeof tmo, nb_cli__int(v, "timeout_s"), "s");
        fmt_int(ver, sizeof ver, nb_cli__int(v, "version"), "");
        snprintf(code, sizeof code, "%.12s", nb_cli__str(v, "code_sha256"));
        const char *row[] = {ver,  nb_cli__str(v, "runtime"),   nb_cli__str(v, "handler"), mem, tmo,
                             code, nb_cli__str(v, "created_at")};
        if (nb_cli_table_add(&t, row) < 0) {
            nb_cli_table_free(&t);
            return NB_CLI_FAILED;
        }
    }
    return print_table(&t);
}

int nb_cli_ls(const nb_cli_globals *g, int argc, char **argv)
{
    return run(&ls_cmd, g, argc, argv, "GET", NULL, show_ls);
}

int nb_cli_get(const nb_cli_globals *g, int argc, char **argv)
{
    return run(&get_cmd, g, argc, argv, "GET", "", show_get);
}

int nb_cli_rm(const nb_cli_globals *g, int argc, char **argv)
{
    return run(&rm_cmd, g, argc, argv, "DELETE", "", show_rm);
}

int nb_cli_versions(const nb_cli_globals *g, int argc, char **argv)
{
    return run(&versions_cmd, g, argc, argv, "GET", "/versions", show_versions);
}
