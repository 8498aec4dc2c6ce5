/* Option parsing and the per-command help text. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_help(const char *s)
{
    return strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0;
}

/* Finds the option for "--name[=value]" (long) or "-x" (short); NULL if unknown. For the long
 * form, *inline_value points after '=' when there is one. */
static const nb_cli_opt *find_opt(const nb_cli_opt *opts, size_t nopts, const char *arg,
                                  const char **inline_value, size_t *index)
{
    *inline_value = NULL;
    if (arg[1] == '-') {
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t i = 0; i < nopts; i++) {
            if (strlen(opts[i].name) == n && strncmp(opts[i].name, name, n) == 0) {
                if (eq) *inline_value = eq + 1;
                *index = i;
                return &opts[i];
            }
        }
        return NULL;
    }
    if (arg[2] != 0) return NULL; /* no bundling of short flags */
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].short_name && opts[i].short_name == arg[1]) {
            *index = i;
            return &opts[i];
        }
    }
    return NULL;
}

int nb_cli_args_parse(nb_cli_args *a, const nb_cli_opt *opts, size_t nopts, int argc, char **argv,
                      int flags, nb_err *err)
{
    memset(a, 0, sizeof *a);
    a->opts = opts;
    a->nopts = nopts;
    a->next = argc;
    size_t n = argc > 0 ? (size_t)argc : 0;
    a->pos = calloc(n + 1, sizeof *a->pos);
    a->items = calloc(n + 1, sizeof *a->items);
    if (!a->pos || !a->items) return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");

    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == 0) {
            if (flags & NB_CLI_ARGS_STOP_AT_POSITIONAL) {
                a->next = i;
                return 0;
            }
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (is_help(arg)) {
            a->help = 1;
            a->next = i + 1;
            return 0;
        }
        const char *value;
        size_t idx = 0;
        const nb_cli_opt *o = find_opt(opts, nopts, arg, &value, &idx);
        if (!o) {
            const char *eq = strchr(arg, '=');
            int len = eq ? (int)(eq - arg) : (int)strlen(arg);
            return nb_err_set(err, 400, NB_E_BAD_REQUEST, "unknown flag %.*s", len, arg);
        }
        if (!o->metavar) {
            if (value)
                return nb_err_set(err, 400, NB_E_BAD_REQUEST, "--%s takes no value", o->name);
            value = "";
        } else if (!value) {
            if (i + 1 >= argc)
                return nb_err_set(err, 400, NB_E_BAD_REQUEST, "--%s needs a value (%s)", o->name,
                                  o->metavar);
            value = argv[++i];
        }
        a->items[a->nitems].opt = idx;
        a->items[a->nitems].value = value;
        a->nitems++;
    }
    return 0;
}

void nb_cli_args_free(nb_cli_args *a)
{
    free(a->pos);
    free(a->items);
    a->pos = NULL;
    a->items = NULL;
    a->npos = a->nitems = 0;
}

static size_t opt_index(const nb_cli_args *a, const char *name)
{
    for (size_t i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0) return i;
    abort(); /* asking for an option the command does not declare is a bug */
}

const char *nb_cli_args_get(const nb_cli_args *a, const char *name)
{
    size_t idx = opt_index(a, name);
    for (int i = a->nitems - 1; i >= 0; i--)
        if (a->items[i].opt == idx) return a->items[i].value;
    return NULL;
}

int nb_cli_args_has(const nb_cli_args *a, const char *name)
{
    return nb_cli_args_get(a, name) != NULL;
}

/* The left column of one help row: "-x, --name META" or "    --name META". */
static void opt_left(const nb_cli_opt *o, char *buf, size_t size)
{
    char shortf[8] = "    ";
    if (o->short_name) snprintf(shortf, sizeof shortf, "-%c, ", o->short_name);
    snprintf(buf, size, "%s--%s%s%s", shortf, o->name, o->metavar ? " " : "",
             o->metavar ? o->metavar : "");
}

void nb_cli_args_help(const nb_cli_opt *opts, size_t nopts, const char *command,
                      const char *synopsis, const char *description, nb_buf *out)
{
    nb_buf_appendf(out, "usage: nimbus %s%s%s\n", command, synopsis && *synopsis ? " " : "",
                   synopsis ? synopsis : "");
    if (description && *description) nb_buf_appendf(out, "\n%s\n", description);
    nb_buf_appendf(out, "\nOptions:\n");
    static const nb_cli_opt help_opt = {"help", 'h', NULL, "show this help"};
    char left[128];
    size_t width = 0;
    for (size_t i = 0; i <= nopts; i++) {
        opt_left(i < nopts ? &opts[i] : &help_opt, left, sizeof left);
        if (strlen(left) > width) width = strlen(left);
    }
    for (size_t i = 0; i <= nopts; i++) {
        const nb_cli_opt *o = i < nopts ? &opts[i] : &help_opt;
        opt_left(o, left, sizeof left);
        nb_buf_appendf(out, "  %-*s  %s\n", (int)width, left, o->help);
    }
}
