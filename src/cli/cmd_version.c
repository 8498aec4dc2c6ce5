/* nimbus version: the client's version and, when the daemon answers, the server's. */
#include "cli/internal.h"

#include "base/util.h"

#include <stdio.h>

static const nb_cli_opt opts[] = {
    {"json", 0, NULL, "print {\"client\":..., \"server\":...} (server null when unreachable)"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "version",
    .synopsis = "[options]",
    .description =
        "Prints the client's version, then the daemon's if it can be reached. Exits 0 either way.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 0,
    .max_pos = 0,
};

int nb_cli_version(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) {
        nb_cli_args_free(&a);
        return rc;
    }
    nb_err err;
    nb_err_clear(&err);
    json_t *answer = NULL;
    const char *server = NULL;
    nb_cli__client c;
    int opened = nb_cli__client_open(&c, g, &a, &err) == 0;
    if (opened && nb_cli__call_json(&c, "GET", "/v1/version", NULL, 0, NULL, &answer, &err) == 0)
        server = json_string_value(json_object_get(answer, "version"));

    if (nb_cli_args_has(&a, "json")) {
        json_t *out = json_pack("{s:s, s:s?}", "client", NIMBUS_VERSION, "server", server);
        nb_cli__print_json(out);
        json_decref(out);
    } else {
        printf("client %s\n", NIMBUS_VERSION);
        if (server) printf("server %s (%s)\n", server, c.conn.url);
    }
    /* The client's version is the answer; a missing server is only worth a note. */
    if (!server)
        fprintf(stderr, "nimbus: no server version: %s\n",
                err.msg[0] ? err.msg : "the daemon's answer has no version");
    if (opened) nb_cli__client_close(&c);
    json_decref(answer);
    nb_cli_args_free(&a);
    return NB_CLI_OK;
}
