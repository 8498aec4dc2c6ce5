/* nb_cli__ group plumbing: the commands grouped as `nimbus GROUP SUB ...` (cmd_gateway.c,
 * cmd_queue.c) and the helpers their subs share. See internal.h. */
#include "cli/internal.h"

#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int nb_cli__oom(void)
{
    fprintf(stderr, "nimbus: out of memory\n");
    return NB_CLI_FAILED;
}

/* One request with an optional JSON body; the client is opened on first use, so validation
 * that runs before the first call still means nothing was sent. 0, or 1 after printing. */
int nb_cli__call(nb_cli__ctx *x, const char *method, const nb_buf *path, const json_t *body,
                 json_t **out)
{
    nb_err err;
    nb_err_clear(&err);
    *out = NULL;
    if (!x->open) {
        if (nb_cli__client_open(&x->c, x->g, &x->a, &err) < 0) return nb_cli__fail(&err);
        x->open = 1;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text) return nb_cli__oom();
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    int rc = nb_cli__request(&x->c, method, path->data, text, text ? strlen(text) : 0,
                             text ? "application/json" : NULL, &r, &err);
    free(text);
    x->status = r.status;
    if (rc == 0) rc = nb_cli__check(&x->c, &r, &err);
    if (rc == 0) {
        json_error_t je;
        *out = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, &je);
        if (!*out)
            rc = nb_err_set(&err, 502, NB_E_INTERNAL, "%s %s: the daemon's answer is not JSON: %s",
                            method, path->data, je.text);
    }
    nb_cli__resp_free(&r);
    return rc < 0 ? nb_cli__fail(&err) : 0;
}

int nb_cli__json_out(const nb_cli__ctx *x)
{
    return nb_cli_args_has(&x->a, "json");
}

/* A positional or flag value that must be an object name. 0, or 2 after the usage line. */
int nb_cli__check_name(const nb_cli__ctx *x, const char *what, const char *s)
{
    if (nb_cli_valid_name(s)) return 0;
    return nb_cli__usage(x->cmd, "invalid %s name '%s': " NB_CLI__NAME_RULE, what, s);
}

int nb_cli__print_table(nb_cli_table *t)
{
    nb_buf out;
    nb_buf_init(&out, 256u << 20);
    int rc = nb_cli_table_render(t, &out);
    nb_cli__write(out.data, out.len);
    nb_buf_free(&out);
    nb_cli_table_free(t);
    return rc < 0 ? nb_cli__oom() : NB_CLI_OK;
}

int nb_cli__print_object(const json_t *o, const char *const *order)
{
    nb_buf out;
    nb_buf_init(&out, 64u << 20);
    int rc = nb_cli_format_object(&out, o, order);
    nb_cli__write(out.data, out.len);
    nb_buf_free(&out);
    if (rc < 0) fprintf(stderr, "nimbus: the daemon's answer is not an object\n");
    return rc < 0 ? NB_CLI_FAILED : NB_CLI_OK;
}

/* Table cells: "-" for missing or empty, no blanks inside (so awk keeps the columns). */
void nb_cli__cell(char *buf, size_t size, const char *s)
{
    snprintf(buf, size, "%s", s && *s ? s : "-");
    for (char *p = buf; *p; p++)
        if (*p == ' ' || *p == '\t') *p = ',';
}

void nb_cli__cell_num(char *buf, size_t size, const json_t *v, const char *unit)
{
    if (json_is_integer(v))
        snprintf(buf, size, "%lld%s", (long long)json_integer_value(v), unit);
    else if (json_is_real(v))
        snprintf(buf, size, "%g%s", json_real_value(v), unit);
    else if (json_is_string(v))
        nb_cli__cell(buf, size, json_string_value(v));
    else
        snprintf(buf, size, "-");
}

/* A JSON array of strings as "a,b,c" ("-" when empty). */
void nb_cli__cell_list(char *buf, size_t size, const json_t *arr)
{
    size_t i, off = 0;
    json_t *v;
    buf[0] = 0;
    json_array_foreach(arr, i, v)
    {
        int n = snprintf(buf + off, size - off, "%s%s", off ? "," : "", json_string_value(v) ?: "");
        if (n < 0 || (size_t)n >= size - off) break;
        off += (size_t)n;
    }
    if (!buf[0]) snprintf(buf, size, "-");
}

/* The answer's array `key` (--json) or a table built by row(). */
int nb_cli__list_answer(const nb_cli__ctx *x, const json_t *answer, const char *key, size_t ncols,
                        const char *const *header, void (*row)(const json_t *o, char cells[][256]))
{
    json_t *arr = json_object_get(answer, key);
    if (nb_cli__json_out(x)) {
        if (arr)
            nb_cli__print_json(arr);
        else
            puts("[]");
        return NB_CLI_OK;
    }
    nb_cli_table t;
    if (nb_cli_table_init(&t, ncols, header) < 0) return nb_cli__oom();
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        char cells[8][256];
        const char *ptrs[8];
        for (size_t k = 0; k < ncols && k < 8; k++) {
            cells[k][0] = 0;
            ptrs[k] = cells[k];
        }
        row(o, cells);
        if (nb_cli_table_add(&t, ptrs) < 0) {
            nb_cli_table_free(&t);
            return nb_cli__oom();
        }
    }
    return nb_cli__print_table(&t);
}

/* Runs one sub of a group: `nimbus GROUP SUB ...`, argv[0] being GROUP. */
int nb_cli__run_group(const nb_cli__group *gr, const nb_cli_globals *g, int argc, char **argv)
{
    const char *s = argc > 1 ? argv[1] : NULL;
    int help = s && (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0);
    if (!s || help) {
        FILE *f = help ? stdout : stderr;
        fprintf(f, "usage: nimbus %s SUBCOMMAND [ARGS] [options]\n\n%s\n\nSubcommands:\n", gr->name,
                gr->description);
        int w = 9;
        for (size_t i = 0; i < gr->nsubs; i++)
            if ((int)strlen(gr->subs[i].name) > w) w = (int)strlen(gr->subs[i].name);
        for (size_t i = 0; i < gr->nsubs; i++)
            fprintf(f, "  %-*s %s\n", w, gr->subs[i].name, gr->subs[i].summary);
        fprintf(f, "\nRun 'nimbus %s SUBCOMMAND --help' for its arguments and options.\n",
                gr->name);
        return help ? NB_CLI_OK : NB_CLI_USAGE;
    }
    const nb_cli__sub *sb = NULL;
    for (size_t i = 0; i < gr->nsubs; i++)
        if (strcmp(gr->subs[i].name, s) == 0) sb = &gr->subs[i];
    if (!sb) {
        fprintf(stderr, "nimbus: %s: unknown subcommand '%s' (see 'nimbus %s --help')\n", gr->name,
                s, gr->name);
        return NB_CLI_USAGE;
    }
    nb_cli__ctx x = {.g = g, .cmd = sb->cmd->name};
    int rc = nb_cli__begin(sb->cmd, argc - 1, argv + 1, &x.a);
    if (rc == NB_CLI__CONTINUE) rc = sb->run(&x);
    if (x.open) nb_cli__client_close(&x.c);
    nb_cli_args_free(&x.a);
    return rc;
}

int nb_cli__simple(nb_cli__ctx *x, const char *method, const char *coll, const char *what,
                   const char *suffix, json_t **out)
{
    const char *name = x->a.npos > 0 ? x->a.pos[0] : NULL;
    int rc = name ? nb_cli__check_name(x, what, name) : 0;
    if (rc) return rc;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if (nb_cli_obj_path(&path, coll, name, suffix) < 0)
        rc = nb_cli__oom();
    else
        rc = nb_cli__call(x, method, &path, NULL, out);
    nb_buf_free(&path);
    return rc;
}

int nb_cli__deleted(const nb_cli__ctx *x, json_t *answer, const char *what, const char *name)
{
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("deleted %s %s\n", what, name);
    json_decref(answer);
    return NB_CLI_OK;
}

int nb_cli__read_stdin(const char *cmd, const char *what, nb_buf *out)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (nb_buf_append(out, chunk, n) < 0)
            return nb_cli__usage(cmd, "the %s on stdin is over %zu bytes (the limit)", what,
                                 out->max);
    }
    if (ferror(stdin)) return nb_cli__usage(cmd, "reading stdin: %s", strerror(errno));
    return 0;
}
