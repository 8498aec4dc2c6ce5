/* nimbus: one binary, a table of subcommands. `serve` runs the daemon (src/daemon); every
 * other command is a client of its admin API (src/cli). Flags before the command name are
 * the client's connection flags; each command parses the rest itself. */
#include "cli/cli.h"
#include "daemon/daemon.h"
#include "instance/spawn.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(const nb_cli_globals *g, int argc, char **argv);
    const char *summary;
} command;

static int run_serve(const nb_cli_globals *g, int argc, char **argv)
{
    (void)g;
    return nb_daemon_main(argc, argv);
}

/* The kernel lays the argv strings out back to back: the whole area, for nb_spawn to blank in
 * each instance's copy of the daemon. */
static void remember_cmdline(int argc, char **argv)
{
    nb_spawn_set_cmdline(argv[0], (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]));
}

static int run_doctor(const nb_cli_globals *g, int argc, char **argv)
{
    (void)g;
    if (argc > 1) {
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
            printf("usage: nimbus doctor\n\nPrints what isolation this host gives function "
                   "instances, layer by layer,\nand exits 1 when a layer is missing. Run it as "
                   "the user that runs 'nimbus serve'.\n");
            return NB_CLI_OK;
        }
        fprintf(stderr, "nimbus: doctor takes no arguments (see 'nimbus doctor --help')\n");
        return NB_CLI_USAGE;
    }
    return nb_daemon_doctor() == 0 ? NB_CLI_OK : NB_CLI_FAILED;
}

static const command commands[] = {
    {"serve", run_serve, "run the daemon (see 'nimbus serve --help')"},
    {"deploy", nb_cli_deploy, "upload code and create or update a function"},
    {"invoke", nb_cli_invoke, "invoke a function and print its result"},
    {"ls", nb_cli_ls, "list functions"},
    {"get", nb_cli_get, "show a function's settings"},
    {"rm", nb_cli_rm, "delete a function and all its versions"},
    {"logs", nb_cli_logs, "print or follow a function's logs"},
    {"versions", nb_cli_versions, "list a function's published versions"},
    {"doctor", run_doctor, "show what isolation this host gives functions"},
    {"config", nb_cli_config, "show or change a function's scaling settings"},
    {"api", nb_cli_api, "manage the gateway's HTTP APIs, their shares, usage and access logs"},
    {"route", nb_cli_route, "add, list or delete an API's routes"},
    {"plan", nb_cli_plan, "manage usage plans (rate, quota)"},
    {"key", nb_cli_key, "manage API keys"},
    {"client", nb_cli_client, "manage OAuth clients"},
    {"queue", nb_cli_queue, "manage queues: send, receive, subscribe a function"},
    {"schedule", nb_cli_schedule, "invoke functions on a schedule (rate, cron, at)"},
    {"topic", nb_cli_topic, "publish to topics; subscribe functions, queues, webhooks"},
    {"service", nb_cli_service, "functions grouped into services, with their triggers"},
    {"top", nb_cli_top, "a live per-function view: rps, errors, p50/p99, instances"},
    {"events", nb_cli_events, "failed async events (list, redrive); send a CloudEvent (put)"},
    {"rule", nb_cli_rule, "route CloudEvents matching a pattern to a function, queue or topic"},
    {"usage", nb_cli_usage, "usage and cost per function, namespace, key or day"},
    {"version", nb_cli_version, "print the client's and the daemon's versions"},
};

static const nb_cli_opt global_opts[] = {
    NB_CLI_COMMON_OPTS,
    {"version", 0, NULL, "print the client's version and exit"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: nimbus [--url URL] [--token TOKEN] [--data DIR] [-v] COMMAND [ARGS]\n\n"
               "A self-hosted serverless platform.\n\nCommands:\n");
    for (size_t i = 0; i < NB_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    nb_buf b;
    nb_buf_init(&b, 1u << 16);
    /* Reuse the option table printer, skipping its "usage:" line. */
    nb_cli_args_help(global_opts, NB_ARRAY_LEN(global_opts), "", NULL, NULL, &b);
    const char *opts = b.data ? strstr(b.data, "\nOptions:") : NULL;
    if (opts) fputs(opts, f);
    nb_buf_free(&b);
    fprintf(f, "\nRun 'nimbus COMMAND --help' for a command's arguments and options.\n");
}

int main(int argc, char **argv)
{
    nb_cli_args a;
    nb_err err;
    nb_err_clear(&err);
    int rc;
    if (nb_cli_args_parse(&a, global_opts, NB_ARRAY_LEN(global_opts), argc, argv,
                          NB_CLI_ARGS_STOP_AT_POSITIONAL, &err) < 0) {
        fprintf(stderr, "nimbus: %s (see 'nimbus --help')\n", err.msg);
        rc = NB_CLI_USAGE;
        goto out;
    }
    if (a.help) {
        usage(stdout);
        rc = NB_CLI_OK;
        goto out;
    }
    if (nb_cli_args_has(&a, "version")) {
        printf("nimbus %s\n", NIMBUS_VERSION);
        rc = NB_CLI_OK;
        goto out;
    }
    if (a.next >= argc) {
        usage(stderr);
        rc = NB_CLI_USAGE;
        goto out;
    }
    const char *name = argv[a.next];
    const command *cmd = NULL;
    for (size_t i = 0; i < NB_ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, name) == 0) cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "nimbus: unknown command '%s' (see 'nimbus --help')\n", name);
        rc = NB_CLI_USAGE;
        goto out;
    }
    if (cmd->run == run_serve && a.nitems > 0) {
        fprintf(stderr, "nimbus: serve takes its options after its name: nimbus serve [OPTIONS]\n");
        rc = NB_CLI_USAGE;
        goto out;
    }
    nb_cli_globals g = {
        .url = nb_cli_args_get(&a, "url"),
        .token = nb_cli_args_get(&a, "token"),
        .data = nb_cli_args_get(&a, "data"),
        .verbose = nb_cli_args_has(&a, "verbose"),
    };
    if (cmd->run == run_serve) remember_cmdline(argc, argv);
    rc = cmd->run(&g, argc - a.next, argv + a.next);
out:
    nb_cli_args_free(&a);
    /* Output that never made it out (full disk, closed pipe) is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == NB_CLI_OK) {
            fprintf(stderr, "nimbus: error writing to stdout\n");
            rc = NB_CLI_FAILED;
        }
    }
    return rc;
}
