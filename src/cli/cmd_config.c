/* nimbus config: a function's scaling settings, shown or changed (PUT .../scaling). They are
 * not versioned: changing them publishes nothing and restarts no instance. `deploy` takes the
 * same flags through nb_cli__scaling_flags(). */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

static const nb_cli_opt opts[] = {
    NB_CLI_SCALING_OPTS,
    {"json", 0, NULL, "print the daemon's function object as JSON"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "config",
    .synopsis = "NAME [--max-concurrency N|none] [--min-instances N] [--idle-timeout S|default]\n"
                "       [--max-queue N] [--queue-timeout-ms N] [options]",
    .description =
        "Shows the scaling settings of the function NAME, or changes the ones given (the\n"
        "others keep their values). They apply at once to the running function: no new\n"
        "version, no restart; instances above a lower max-concurrency stop when idle.\n"
        "--max-concurrency 0 disables the function (every invocation gets 429).",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 1,
    .max_pos = 1,
};

/* One flag: an integer in lo..hi, or `unset_word` (if not NULL) for JSON null. */
static int int_flag(const nb_cli_args *a, const char *cmdname, const char *flag, const char *field,
                    int64_t lo, int64_t hi, const char *unset_word, json_t *out)
{
    const char *v = nb_cli_args_get(a, flag);
    if (!v) return 0;
    if (unset_word && strcmp(v, unset_word) == 0) {
        json_object_set_new(out, field, json_null());
        return 0;
    }
    int64_t n;
    if (nb_cli_parse_int(v, lo, hi, &n) < 0)
        return nb_cli__usage(cmdname, "--%s must be a number from %lld to %lld%s%s%s, not '%s'",
                             flag, (long long)lo, (long long)hi, unset_word ? " or '" : "",
                             unset_word ? unset_word : "", unset_word ? "'" : "", v);
    json_object_set_new(out, field, json_integer(n));
    return 0;
}

/* A destination flag: TYPE:NAME as given (the daemon checks it), or 'none' for JSON null. */
static int target_flag(const nb_cli_args *a, const char *cmdname, const char *flag,
                       const char *field, json_t *out)
{
    const char *v = nb_cli_args_get(a, flag);
    if (!v) return 0;
    if (strcmp(v, "none") == 0) {
        json_object_set_new(out, field, json_null());
        return 0;
    }
    if (strncmp(v, "function:", 9) != 0 && strncmp(v, "queue:", 6) != 0 &&
        strncmp(v, "topic:", 6) != 0)
        return nb_cli__usage(cmdname,
                             "--%s must be function:NAME, queue:NAME, topic:NAME or none, not '%s'",
                             flag, v);
    json_object_set_new(out, field, json_string(v));
    return 0;
}

int nb_cli__scaling_flags(const nb_cli_args *a, const char *cmdname, json_t *out)
{
    if (int_flag(a, cmdname, "max-concurrency", "max_concurrency", 0, NB_CLI_CONCURRENCY_MAX,
                 "none", out) ||
        int_flag(a, cmdname, "min-instances", "min_instances", 0, NB_CLI_MIN_INSTANCES_MAX, NULL,
                 out) ||
        int_flag(a, cmdname, "idle-timeout", "idle_timeout_s", 1, NB_CLI_IDLE_TIMEOUT_MAX,
                 "default", out) ||
        int_flag(a, cmdname, "max-queue", "max_queue", 0, NB_CLI_QUEUE_MAX, NULL, out) ||
        int_flag(a, cmdname, "queue-timeout-ms", "queue_timeout_ms", 1, NB_CLI_QUEUE_TIMEOUT_MAX,
                 NULL, out) ||
        int_flag(a, cmdname, "max-retry-attempts", "max_retry_attempts", 0, 2, NULL, out) ||
        int_flag(a, cmdname, "max-event-age", "max_event_age_s", 1, 21600, NULL, out) ||
        int_flag(a, cmdname, "retry-delay-ms", "retry_delay_ms", 100, 3600000, NULL, out) ||
        int_flag(a, cmdname, "async-share", "async_share", 1, 100, NULL, out) ||
        target_flag(a, cmdname, "on-success", "on_success", out) ||
        target_flag(a, cmdname, "on-failure", "on_failure", out) ||
        target_flag(a, cmdname, "dead-letter", "dead_letter", out))
        return NB_CLI_USAGE;
    const char *sv = nb_cli_args_get(a, "service");
    if (sv)
        json_object_set_new(out, "service",
                            strcmp(sv, "none") == 0 ? json_null() : json_string(sv));
    return 0;
}

static void print_settings(const char *name, const json_t *fn)
{
    const json_t *mc = json_object_get(fn, "max_concurrency");
    const json_t *it = json_object_get(fn, "idle_timeout_s");
    char mcs[24], its[24];
    if (json_is_integer(mc))
        snprintf(mcs, sizeof mcs, "%lld", (long long)json_integer_value(mc));
    else
        snprintf(mcs, sizeof mcs, "none");
    if (json_is_integer(it))
        snprintf(its, sizeof its, "%llds", (long long)json_integer_value(it));
    else
        snprintf(its, sizeof its, "default");
    printf("%s: max_concurrency=%s min_instances=%lld idle_timeout=%s max_queue=%lld "
           "queue_timeout_ms=%lld\n",
           name, mcs, (long long)nb_cli__int(fn, "min_instances"), its,
           (long long)nb_cli__int(fn, "max_queue"), (long long)nb_cli__int(fn, "queue_timeout_ms"));
    const char *ok = nb_cli__str(fn, "on_success"), *ko = nb_cli__str(fn, "on_failure"),
               *dl = nb_cli__str(fn, "dead_letter");
    printf("%s: async max_retry_attempts=%lld max_event_age_s=%lld retry_delay_ms=%lld "
           "async_share=%lld%% on_success=%s on_failure=%s dead_letter=%s\n",
           name, (long long)nb_cli__int(fn, "max_retry_attempts"),
           (long long)nb_cli__int(fn, "max_event_age_s"),
           (long long)nb_cli__int(fn, "retry_delay_ms"), (long long)nb_cli__int(fn, "async_share"),
           *ok ? ok : "none", *ko ? ko : "none", *dl ? dl : "none");
    const char *sv = nb_cli__str(fn, "service");
    if (*sv) printf("%s: service=%s\n", name, sv);
}

int nb_cli_config(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    json_t *body = json_object(), *answer = NULL;
    char *text = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    nb_err err;
    nb_err_clear(&err);
    if ((rc = nb_cli__scaling_flags(&a, "config", body)) != 0) goto out;
    nb_cli__client c;
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
        goto out;
    }
    int changing = json_object_size(body) > 0;
    text = json_dumps(body, JSON_COMPACT);
    if (!text || nb_cli_fn_path(&path, a.pos[0], changing ? "/scaling" : "") < 0) {
        nb_err_set(&err, 500, NB_E_INTERNAL, "out of memory");
        rc = nb_cli__fail(&err);
    } else if (nb_cli__call_json(&c, changing ? "PUT" : "GET", path.data, changing ? text : NULL,
                                 changing ? strlen(text) : 0, "application/json", &answer,
                                 &err) < 0) {
        rc = nb_cli__fail(&err);
    } else {
        if (nb_cli_args_has(&a, "json"))
            nb_cli__print_json(answer);
        else
            print_settings(a.pos[0], answer);
        rc = NB_CLI_OK;
    }
    nb_cli__client_close(&c);
out:
    free(text);
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    nb_cli_args_free(&a);
    return rc;
}
