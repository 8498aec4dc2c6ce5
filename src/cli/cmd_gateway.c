/* nimbus api, route, plan, key, client: the API gateway's objects through the admin API
 * (namespace default, short /v1/... routes). Each group is `nimbus GROUP SUB ...`; a sub is an
 * nb_cli__cmd named "GROUP SUB" with its own --help. Everything the user typed is checked
 * before the first request (exit 2, nothing sent); the daemon stays the authority for the rest
 * (base paths, CORS origins, JWT keys, route conflicts, whether plans and consumers exist). */
#include "cli/internal.h"

#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define RATE_MAX    1000000.0
#define BURST_MAX   1000000
#define PEM_MAX     (64u << 10)
#define USAGE_LIMIT 10000

/* --rate R [--burst B] into {"rate","burst"?}; *out stays NULL when neither was given. */
static int throttle_flags(const nb_cli__ctx *x, json_t **out)
{
    const char *r = nb_cli_args_get(&x->a, "rate"), *b = nb_cli_args_get(&x->a, "burst");
    *out = NULL;
    if (!r && !b) return 0;
    if (!r) return nb_cli__usage(x->cmd, "--burst needs --rate");
    double rate;
    int64_t burst = 0;
    if (nb_cli_parse_real(r, 0, RATE_MAX, &rate) < 0 || rate <= 0)
        return nb_cli__usage(
            x->cmd, "--rate must be requests per second above 0, up to 1000000, not '%s'", r);
    if (b && nb_cli_parse_int(b, 1, BURST_MAX, &burst) < 0)
        return nb_cli__usage(x->cmd, "--burst must be a number from 1 to %d, not '%s'", BURST_MAX,
                             b);
    /* A whole rate goes as an integer: what the user typed, not 10.0. */
    *out = json_object();
    json_object_set_new(*out, "rate",
                        rate == (double)(int64_t)rate ? json_integer((json_int_t)rate)
                                                      : json_real(rate));
    if (b) json_object_set_new(*out, "burst", json_integer(burst));
    return 0;
}

/* The values of every occurrence of a repeatable, comma-list flag appended to arr. */
static int list_flag(const nb_cli__ctx *x, const char *flag, json_t *arr)
{
    size_t idx = 0;
    while (idx < x->a.nopts && strcmp(x->a.opts[idx].name, flag) != 0)
        idx++;
    for (int i = 0; i < x->a.nitems; i++) {
        if (x->a.items[i].opt != idx) continue;
        if (nb_cli_split_list(x->a.items[i].value, arr) < 0)
            return nb_cli__usage(x->cmd, "--%s wants a comma-separated list, not '%s'", flag,
                                 x->a.items[i].value);
    }
    return 0;
}

static const nb_cli_opt json_opts[] = {
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

/* ---------- nimbus api ---------- */

#define API_OPTS                                                                                   \
    {"base-path", 0, "PATH", "where the API lives on the gateway (default /NAME)"},                \
        {"cors-origins", 0, "LIST",                                                                \
         "CORS: allowed origins, comma list ('*', https://*.b.example)"},                          \
        {"cors-methods", 0, "LIST",                                                                \
         "CORS: allowed methods (default GET,POST,PUT,PATCH,DELETE,HEAD)"},                        \
        {"cors-headers", 0, "LIST", "CORS: allowed request headers"},                              \
        {"cors-expose-headers", 0, "LIST", "CORS: response headers the browser may read"},         \
        {"cors-credentials", 0, NULL, "CORS: allow credentials (needs listed origins)"},           \
        {"cors-max-age", 0, "S", "CORS: preflight cache seconds, 0..86400"},                       \
        {"rate", 0, "R", "the API's global throttle: requests per second"},                        \
        {"burst", 0, "B", "the throttle's burst (default: one second of --rate)"},                 \
        {"plan", 0, "PLAN", "usage plan for consumers without their own"},                         \
        {"jwt-issuer", 0, "ISS", "JWT: required iss claim"},                                       \
        {"jwt-audience", 0, "AUD", "JWT: accepted aud (repeat or comma list)"},                    \
        {"jwt-alg", 0, "LIST", "JWT: accepted algorithms among RS256,ES256,HS256"},                \
        {"jwt-jwks", 0, "FILE", "JWT: JWKS file, an absolute path read by the daemon"},            \
        {"jwt-secret", 0, "SECRET", "JWT: an HS256 shared secret"},                                \
        {"jwt-pem", 0, "FILE", "JWT: a PEM public key file, read here and sent"},                  \
        {"jwt-kid", 0, "KID", "JWT: the kid of --jwt-secret or --jwt-pem"},                        \
    {                                                                                              \
        "json", 0, NULL, "print the daemon's JSON instead of text"                                 \
    }

static const nb_cli_opt api_create_opts[] = {
    API_OPTS,
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt api_update_opts[] = {
    API_OPTS,
    {"no-cors", 0, NULL, "remove the CORS settings"},
    {"no-jwt", 0, NULL, "remove the JWT settings"},
    {"no-throttle", 0, NULL, "remove the global throttle"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(
    api_create_cmd, "api create",
    "NAME [--base-path /shop] [--cors-origins LIST ...] [--rate R [--burst B]] [--plan PLAN]\n"
    "       [--jwt-issuer ISS] [--jwt-audience AUD] [--jwt-alg LIST] [--jwt-jwks FILE]\n"
    "       [--jwt-secret SECRET | --jwt-pem FILE] [--jwt-kid KID] [options]",
    "Creates the API NAME (or updates it when it exists) at its base path on the\n"
    "gateway listener. Routes are added with 'nimbus route add'. CORS applies when\n"
    "--cors-origins is given; JWT when keys are given (--jwt-jwks, --jwt-secret or\n"
    "--jwt-pem).",
    api_create_opts, 1, 1);
NB_CLI__SUBCMD(api_update_cmd, "api update",
               "NAME [the flags of 'api create'] [--no-cors] [--no-jwt] [options]",
               "Changes the settings given and keeps the others. --cors-* and --jwt-* flags\n"
               "change those fields inside the current CORS and JWT settings. --plan none removes\n"
               "the plan.",
               api_update_opts, 1, 1);
NB_CLI__SUBCMD(api_ls_cmd, "api ls", "[options]", "Lists the APIs.", json_opts, 0, 0);
NB_CLI__SUBCMD(api_get_cmd, "api get", "NAME [options]", "Shows an API's settings and its routes.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(api_rm_cmd, "api rm", "NAME [options]", "Deletes an API with its routes and shares.",
               json_opts, 1, 1);

/* Merges the --cors-* flags into cors (a copy of the current settings or a new object). */
static int cors_flags(const nb_cli__ctx *x, json_t *cors, int *given, int check_origins)
{
    static const struct {
        const char *flag, *field;
    } lists[] = {{"cors-origins", "origins"},
                 {"cors-methods", "methods"},
                 {"cors-headers", "headers"},
                 {"cors-expose-headers", "expose_headers"}};
    for (size_t i = 0; i < NB_ARRAY_LEN(lists); i++) {
        if (!nb_cli_args_has(&x->a, lists[i].flag)) continue;
        json_t *arr = json_array();
        if (list_flag(x, lists[i].flag, arr)) {
            json_decref(arr);
            return NB_CLI_USAGE;
        }
        json_object_set_new(cors, lists[i].field, arr);
        *given = 1;
    }
    if (nb_cli_args_has(&x->a, "cors-credentials")) {
        json_object_set_new(cors, "credentials", json_true());
        *given = 1;
    }
    const char *v = nb_cli_args_get(&x->a, "cors-max-age");
    if (v) {
        int64_t n;
        if (nb_cli_parse_int(v, 0, 86400, &n) < 0)
            return nb_cli__usage(x->cmd, "--cors-max-age must be seconds from 0 to 86400, not '%s'",
                                 v);
        json_object_set_new(cors, "max_age", json_integer(n));
        *given = 1;
    }
    if (check_origins && *given && !json_object_get(cors, "origins"))
        return nb_cli__usage(x->cmd, "CORS settings need --cors-origins");
    return 0;
}

/* Merges the --jwt-* flags into jwt (a copy of the current settings or a new object). */
static int jwt_flags(const nb_cli__ctx *x, json_t *jwt, int *given)
{
    const char *v;
    if ((v = nb_cli_args_get(&x->a, "jwt-issuer"))) {
        json_object_set_new(jwt, "issuer", json_string(v));
        *given = 1;
    }
    if (nb_cli_args_has(&x->a, "jwt-audience")) {
        json_t *arr = json_array();
        json_object_set_new(jwt, "audiences", arr);
        if (list_flag(x, "jwt-audience", arr)) return NB_CLI_USAGE;
        *given = 1;
    }
    if ((v = nb_cli_args_get(&x->a, "jwt-alg"))) {
        json_t *arr = json_array();
        json_object_set_new(jwt, "algorithms", arr);
        if (nb_cli_split_list(v, arr) < 0)
            return nb_cli__usage(x->cmd, "--jwt-alg wants a comma list of RS256, ES256, HS256");
        size_t i;
        json_t *a;
        json_array_foreach(arr, i, a)
        {
            const char *s = json_string_value(a);
            if (strcmp(s, "RS256") && strcmp(s, "ES256") && strcmp(s, "HS256"))
                return nb_cli__usage(x->cmd, "--jwt-alg: '%s' is not one of RS256, ES256, HS256",
                                     s);
        }
        *given = 1;
    }
    if ((v = nb_cli_args_get(&x->a, "jwt-jwks"))) {
        if (v[0] != '/')
            return nb_cli__usage(x->cmd,
                                 "--jwt-jwks must be an absolute path (the daemon reads it), "
                                 "not '%s'",
                                 v);
        json_object_set_new(jwt, "jwks_file", json_string(v));
        *given = 1;
    }
    const char *secret = nb_cli_args_get(&x->a, "jwt-secret");
    const char *pem = nb_cli_args_get(&x->a, "jwt-pem");
    const char *kid = nb_cli_args_get(&x->a, "jwt-kid");
    if (secret && pem) return nb_cli__usage(x->cmd, "give --jwt-secret or --jwt-pem, not both");
    if (kid && !secret && !pem)
        return nb_cli__usage(x->cmd, "--jwt-kid names the key of --jwt-secret or --jwt-pem");
    if (secret && !*secret) return nb_cli__usage(x->cmd, "--jwt-secret must not be empty");
    if (secret || pem) {
        json_t *key = json_object();
        json_t *keys = json_array();
        json_array_append_new(keys, key);
        json_object_set_new(jwt, "keys", keys);
        if (kid) json_object_set_new(key, "kid", json_string(kid));
        if (secret) {
            json_object_set_new(key, "secret", json_string(secret));
        } else {
            size_t len;
            char *text = nb_read_file(pem, PEM_MAX, &len);
            if (!text)
                return nb_cli__usage(x->cmd, "--jwt-pem %s: %s", pem,
                                     errno ? strerror(errno) : "cannot be read");
            json_t *s = json_stringn(text, len);
            free(text);
            if (!s) return nb_cli__usage(x->cmd, "--jwt-pem %s: not a text file", pem);
            json_object_set_new(key, "pem", s);
        }
        *given = 1;
    }
    return 0;
}

/* The body of PUT /v1/apis/NAME from the flags. update: cur is the API as it is, or NULL for
 * a first pass that only checks the flags (before anything is sent). */
static int api_body(const nb_cli__ctx *x, int update, const json_t *cur, json_t *body)
{
    const char *v;
    int rc;
    if ((v = nb_cli_args_get(&x->a, "base-path"))) {
        if (v[0] != '/')
            return nb_cli__usage(x->cmd, "--base-path must start with '/', not '%s'", v);
        json_object_set_new(body, "base_path", json_string(v));
    }
    if ((v = nb_cli_args_get(&x->a, "plan"))) {
        if (update && strcmp(v, "none") == 0)
            json_object_set_new(body, "plan", json_null());
        else if ((rc = nb_cli__check_name(x, "plan", v)))
            return rc;
        else
            json_object_set_new(body, "plan", json_string(v));
    }
    json_t *t;
    if ((rc = throttle_flags(x, &t))) return rc;
    if (t) json_object_set_new(body, "throttle", t);

    const json_t *cc = json_object_get(cur, "cors");
    json_t *cors = json_is_object(cc) ? json_deep_copy(cc) : json_object();
    int given = 0;
    rc = cors_flags(x, cors, &given, !update);
    if (rc == 0 && given && update && cur && !json_object_get(cors, "origins")) {
        fprintf(stderr, "nimbus: API %s has no CORS settings yet: give --cors-origins too\n",
                x->a.pos[0]);
        rc = NB_CLI_FAILED;
    }
    if (rc == 0 && given) json_object_set(body, "cors", cors);
    json_decref(cors);
    if (rc) return rc;

    const json_t *cj = json_object_get(cur, "jwt");
    json_t *jwt = json_is_object(cj) ? json_deep_copy(cj) : json_object();
    given = 0;
    rc = jwt_flags(x, jwt, &given);
    if (rc == 0 && given) json_object_set(body, "jwt", jwt);
    json_decref(jwt);
    if (rc) return rc;

    static const struct {
        const char *flag, *field;
    } removals[] = {{"no-cors", "cors"}, {"no-jwt", "jwt"}, {"no-throttle", "throttle"}};
    for (size_t i = 0; update && i < NB_ARRAY_LEN(removals); i++) {
        if (!nb_cli_args_has(&x->a, removals[i].flag)) continue;
        if (json_object_get(body, removals[i].field))
            return nb_cli__usage(x->cmd, "--%s contradicts the other %s flags", removals[i].flag,
                                 removals[i].field);
        json_object_set_new(body, removals[i].field, json_null());
    }
    return 0;
}

static int api_put(nb_cli__ctx *x, int update)
{
    const char *name = x->a.pos[0];
    int rc = nb_cli__check_name(x, "API", name);
    if (rc) return rc;
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *body = json_object(), *cur = NULL, *answer = NULL;
    if (nb_cli_obj_path(&path, "apis", name, NULL) < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    /* Check the flags before anything is sent; an update then merges into the current
     * settings, so the flags are read again over them. */
    if ((rc = api_body(x, update, NULL, body))) goto out;
    if (update) {
        if (json_object_size(body) == 0) {
            rc = nb_cli__usage(x->cmd, "nothing to change: give at least one flag");
            goto out;
        }
        if ((rc = nb_cli__call(x, "GET", &path, NULL, &cur))) goto out;
        json_object_clear(body);
        if ((rc = api_body(x, update, cur, body))) goto out;
    }
    if ((rc = nb_cli__call(x, "PUT", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("%s API %s at %s\n", x->status == 201 ? "created" : "updated", name,
               nb_cli__str(answer, "base_path"));
out:
    json_decref(body);
    json_decref(cur);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int api_create(nb_cli__ctx *x)
{
    return api_put(x, 0);
}

static int api_update(nb_cli__ctx *x)
{
    return api_put(x, 1);
}

static void api_row(const json_t *o, char c[][256])
{
    const json_t *cors = json_object_get(o, "cors"), *jwt = json_object_get(o, "jwt");
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "base_path"));
    if (json_is_object(cors))
        nb_cli__cell_list(c[2], 256, json_object_get(cors, "origins"));
    else
        nb_cli__cell(c[2], 256, NULL);
    if (json_is_object(jwt))
        nb_cli__cell(c[3], 256, json_string_value(json_object_get(jwt, "issuer")) ?: "yes");
    else
        nb_cli__cell(c[3], 256, NULL);
    nb_cli__cell(c[4], 256, nb_cli__str(o, "plan"));
}

static int api_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "apis", "API", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "BASE_PATH", "CORS", "JWT", "PLAN"};
    rc = nb_cli__list_answer(x, answer, "apis", NB_ARRAY_LEN(header), header, api_row);
    json_decref(answer);
    return rc;
}

static void route_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "id"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "method"));
    nb_cli__cell(c[2], 256, nb_cli__str(o, "path"));
    nb_cli__cell(c[3], 256, nb_cli__str(o, "function"));
    nb_cli__cell(c[4], 256, nb_cli__str(o, "auth"));
    nb_cli__cell_num(c[5], 256, json_object_get(o, "timeout_ms"), "ms");
}

static const char *const route_header[] = {"ID", "METHOD", "PATH", "FUNCTION", "AUTH", "TIMEOUT"};

/* JWT secrets and PEM keys do not belong on a terminal: the text view shows their kids. */
static void redact_jwt(json_t *o)
{
    json_t *keys = json_object_get(json_object_get(o, "jwt"), "keys");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (json_object_get(k, "secret")) json_object_set_new(k, "secret", json_string("(hidden)"));
        if (json_object_get(k, "pem")) json_object_set_new(k, "pem", json_string("(PEM key)"));
    }
}

static int api_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "apis", "API", NULL, &answer);
    if (rc) return rc;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
        json_decref(answer);
        return NB_CLI_OK;
    }
    json_t *o = json_deep_copy(answer);
    json_t *routes = json_incref(json_object_get(o, "routes"));
    json_object_del(o, "routes");
    redact_jwt(o);
    static const char *const order[] = {"name", "base_path",  "plan",       "throttle", "cors",
                                        "jwt",  "created_at", "updated_at", NULL};
    rc = nb_cli__print_object(o, order);
    if (rc == 0) {
        printf("\n");
        if (json_array_size(routes) == 0) {
            printf("no routes (add one with 'nimbus route add %s METHOD PATH FUNCTION')\n",
                   x->a.pos[0]);
        } else {
            json_t *wrap = json_pack("{s:O}", "routes", routes);
            rc = nb_cli__list_answer(x, wrap, "routes", NB_ARRAY_LEN(route_header), route_header,
                                     route_row);
            json_decref(wrap);
        }
    }
    json_decref(routes);
    json_decref(o);
    json_decref(answer);
    return rc;
}

/* Prints "deleted WHAT NAME" or the answer as JSON. */
static int api_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "apis", "API", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "API", x->a.pos[0]);
}

/* ---------- nimbus api share, unshare, shares ---------- */

static const nb_cli_opt share_opts[] = {
    {"with", 0, "CONSUMER", "the key or client: NAME or NAMESPACE/NAME (required)"},
    {"plan", 0, "PLAN", "usage plan for this consumer on this API"},
    {"kind", 0, "KIND", "key or client, when both have that name"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt unshare_opts[] = {
    {"with", 0, "CONSUMER", "the key or client: NAME or NAMESPACE/NAME (required)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(api_share_cmd, "api share",
               "API --with CONSUMER [--plan PLAN] [--kind key|client] [options]",
               "Lets a key or client (CONSUMER: NAME, or NAMESPACE/NAME for another namespace's)\n"
               "call the API's key and client routes, optionally under its own plan.",
               share_opts, 1, 1);
NB_CLI__SUBCMD(api_unshare_cmd, "api unshare", "API --with CONSUMER [options]",
               "Withdraws a share: the consumer's requests to the API are refused from now on.",
               unshare_opts, 1, 1);
NB_CLI__SUBCMD(api_shares_cmd, "api shares", "API [options]", "Lists who the API is shared with.",
               json_opts, 1, 1);

/* --with: NAME or NS/NAME, both parts names. */
static int consumer_flag(const nb_cli__ctx *x, const char **out)
{
    const char *v = nb_cli_args_get(&x->a, "with");
    if (!v) return nb_cli__usage(x->cmd, "--with CONSUMER is required");
    const char *slash = strchr(v, '/');
    char ns[80] = "";
    if (slash && (size_t)(slash - v) < sizeof ns)
        snprintf(ns, sizeof ns, "%.*s", (int)(slash - v), v);
    if ((slash && (!nb_cli_valid_name(ns) || !nb_cli_valid_name(slash + 1))) ||
        (!slash && !nb_cli_valid_name(v)))
        return nb_cli__usage(
            x->cmd, "--with must be NAME or NAMESPACE/NAME (" NB_CLI__NAME_RULE "), not '%s'", v);
    *out = v;
    return 0;
}

static int api_share(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0], *consumer, *v;
    int rc = nb_cli__check_name(x, "API", api);
    if (rc || (rc = consumer_flag(x, &consumer))) return rc;
    json_t *body = json_pack("{s:s}", "consumer", consumer), *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if ((v = nb_cli_args_get(&x->a, "kind"))) {
        if (strcmp(v, "key") && strcmp(v, "client")) {
            rc = nb_cli__usage(x->cmd, "--kind must be key or client, not '%s'", v);
            goto out;
        }
        json_object_set_new(body, "kind", json_string(v));
    }
    if ((v = nb_cli_args_get(&x->a, "plan"))) {
        if ((rc = nb_cli__check_name(x, "plan", v))) goto out;
        json_object_set_new(body, "plan", json_string(v));
    }
    if (nb_cli_obj_path(&path, "apis", api, "/shares") < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "POST", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
    } else {
        const char *plan = nb_cli__str(answer, "plan");
        printf("shared API %s with %s %s/%s%s%s\n", api, nb_cli__str(answer, "kind"),
               nb_cli__str(answer, "consumer_ns"), nb_cli__str(answer, "consumer"),
               *plan ? ", plan " : "", plan);
    }
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int api_unshare(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0], *consumer;
    int rc = nb_cli__check_name(x, "API", api);
    if (rc || (rc = consumer_flag(x, &consumer))) return rc;
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *answer = NULL;
    if (nb_cli_obj_path(&path, "apis", api, "/shares/") < 0 || nb_cli_escape(&path, consumer) < 0)
        rc = nb_cli__oom();
    else if ((rc = nb_cli__call(x, "DELETE", &path, NULL, &answer)) == 0) {
        if (nb_cli__json_out(x))
            nb_cli__print_json(answer);
        else
            printf("API %s is no longer shared with %s\n", api, consumer);
    }
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static void share_row(const json_t *o, char c[][256])
{
    char who[160];
    snprintf(who, sizeof who, "%s/%s", nb_cli__str(o, "consumer_ns"), nb_cli__str(o, "consumer"));
    nb_cli__cell(c[0], 256, who);
    nb_cli__cell(c[1], 256, nb_cli__str(o, "kind"));
    nb_cli__cell(c[2], 256, nb_cli__str(o, "plan"));
    nb_cli__cell(c[3], 256, nb_cli__str(o, "created_at"));
}

static int api_shares(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "apis", "API", "/shares", &answer);
    if (rc) return rc;
    static const char *const header[] = {"CONSUMER", "KIND", "PLAN", "CREATED"};
    rc = nb_cli__list_answer(x, answer, "shares", NB_ARRAY_LEN(header), header, share_row);
    json_decref(answer);
    return rc;
}

/* ---------- nimbus api usage, logs ---------- */

static const nb_cli_opt usage_opts[] = {
    {"by", 0, "WHAT", "group by key, route, status or day (default route)"},
    {"since", 0, "WHEN", "only requests from WHEN ago: 90s, 30m, 24h, 7d (default: all kept)"},
    {"format", 0, "FMT", "table (default) or json"},
    {"json", 0, NULL, "same as --format json"},
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt logs_opts[] = {
    {"follow", 'f', NULL, "keep streaming new records until interrupted"},
    {"status", 0, "S", "only a status class (5xx) or code (404)"},
    {"since", 0, "WHEN", "only requests from WHEN ago: 90s, 30m, 1h, 7d"},
    {"limit", 'n', "N", "at most the newest N records, 1..10000 (daemon default 100)"},
    {"json", 0, NULL, "print the records as NDJSON"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(api_usage_cmd, "api usage",
               "API [--by key|route|status|day] [--since 24h] [--format table|json]",
               "Sums the API's requests per consumer key, route, status or day: requests, 4xx\n"
               "and 5xx errors, bytes in and out, average and maximum latency.",
               usage_opts, 1, 1);
NB_CLI__SUBCMD(api_logs_cmd, "api logs",
               "API [--follow] [--status 5xx|404] [--since 1h] [--limit N] [--json]",
               "Prints the API's access records, oldest first, one per line:\n"
               "  time status method path latency consumer route request_id [cold] [error]\n"
               "consumer is kind:name (- when anonymous), route the matched route's path pattern.",
               logs_opts, 1, 1);

/* --since as the daemon takes it: whole seconds ("3600s"). 0, or 2 after the usage line. */
static int since_flag(const nb_cli__ctx *x, char *buf, size_t size)
{
    const char *v = nb_cli_args_get(&x->a, "since");
    buf[0] = 0;
    if (!v) return 0;
    int64_t ms;
    if (nb_cli_parse_duration_ms(v, &ms) < 0)
        return nb_cli__usage(x->cmd,
                             "--since wants a duration such as 90s, 30m, 24h or 7d, not '%s'", v);
    snprintf(buf, size, "%llds", (long long)(ms / 1000 + (ms % 1000 != 0)));
    return 0;
}

static void usage_row(const json_t *o, char c[][256])
{
    const char *by = NULL;
    const char *k;
    json_t *v;
    static const char *const nums[] = {"requests",  "errors_4xx",     "errors_5xx",    "bytes_in",
                                       "bytes_out", "latency_ms_avg", "latency_ms_max"};
    /* The grouping column is the one field that is not a number column. */
    json_object_foreach((json_t *)o, k, v)
    {
        int num = 0;
        for (size_t i = 0; i < NB_ARRAY_LEN(nums); i++)
            num |= strcmp(k, nums[i]) == 0;
        if (!num) by = k;
    }
    nb_cli__cell_num(c[0], 256, by ? json_object_get(o, by) : NULL, "");
    for (size_t i = 0; i < NB_ARRAY_LEN(nums); i++) {
        const json_t *n = json_object_get(o, nums[i]);
        if (json_is_real(n))
            snprintf(c[i + 1], 256, "%.1f", json_real_value(n));
        else
            nb_cli__cell_num(c[i + 1], 256, n, "");
    }
}

static int api_usage(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0];
    const char *by = nb_cli_args_get(&x->a, "by");
    const char *fmt = nb_cli_args_get(&x->a, "format");
    char since[32];
    int rc = nb_cli__check_name(x, "API", api);
    if (rc) return rc;
    if (by && strcmp(by, "key") && strcmp(by, "route") && strcmp(by, "status") && strcmp(by, "day"))
        return nb_cli__usage(x->cmd, "--by must be key, route, status or day, not '%s'", by);
    if (fmt && strcmp(fmt, "table") && strcmp(fmt, "json"))
        return nb_cli__usage(x->cmd, "--format must be table or json, not '%s'", fmt);
    if ((rc = since_flag(x, since, sizeof since))) return rc;
    int json = nb_cli__json_out(x) || (fmt && strcmp(fmt, "json") == 0);
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *answer = NULL;
    if (nb_cli_obj_path(&path, "apis", api, "/usage") < 0 ||
        nb_buf_appendf(&path, "?by=%s", by ? by : "route") < 0 ||
        (since[0] && nb_buf_appendf(&path, "&since=%s", since) < 0)) {
        rc = nb_cli__oom();
    } else if ((rc = nb_cli__call(x, "GET", &path, NULL, &answer)) == 0) {
        if (json) {
            /* The rows alone, an array, as `nimbus usage --format json` prints them. */
            nb_cli__print_json(json_object_get(answer, "usage"));
        } else {
            char col[16];
            snprintf(col, sizeof col, "%s", by ? by : "route");
            for (char *p = col; *p; p++)
                *p = (char)(*p - 'a' + 'A');
            const char *const header[] = {col,        "REQUESTS",  "4XX",    "5XX",
                                          "BYTES_IN", "BYTES_OUT", "AVG_MS", "MAX_MS"};
            rc = nb_cli__list_answer(x, answer, "usage", NB_ARRAY_LEN(header), header, usage_row);
        }
    }
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

typedef struct access_out {
    int json, follow;
    nb_buf line;
} access_out;

static int print_record(access_out *o, const json_t *rec, const char *raw, size_t len)
{
    nb_buf_reset(&o->line);
    if (o->json || !rec || nb_cli_format_access(&o->line, rec) < 0) {
        nb_buf_reset(&o->line);
        if (nb_buf_append(&o->line, raw, len) < 0 || nb_buf_append(&o->line, "\n", 1) < 0) return 0;
    }
    nb_cli__write(o->line.data, o->line.len);
    if (o->follow) fflush(stdout);
    return ferror(stdout) ? -1 : 0;
}

static int on_access_line(void *ud, const char *line, size_t len)
{
    json_t *rec = json_loadb(line, len, 0, NULL);
    int rc = print_record(ud, rec, line, len);
    json_decref(rec);
    return rc;
}

static int api_logs(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0], *v;
    char since[32];
    int64_t limit = 0;
    int rc = nb_cli__check_name(x, "API", api);
    if (rc || (rc = since_flag(x, since, sizeof since))) return rc;
    const char *status = nb_cli_args_get(&x->a, "status");
    if (status) {
        int64_t code;
        int cls = strlen(status) == 3 && status[0] >= '1' && status[0] <= '5' && status[1] == 'x' &&
                  status[2] == 'x';
        if (!cls && nb_cli_parse_int(status, 100, 599, &code) < 0)
            return nb_cli__usage(x->cmd,
                                 "--status must be a class such as 5xx or a code such as 404, "
                                 "not '%s'",
                                 status);
    }
    if ((v = nb_cli_args_get(&x->a, "limit")) && nb_cli_parse_int(v, 1, USAGE_LIMIT, &limit) < 0)
        return nb_cli__usage(x->cmd, "--limit must be a number from 1 to %d, not '%s'", USAGE_LIMIT,
                             v);
    access_out o = {.json = nb_cli__json_out(x), .follow = nb_cli_args_has(&x->a, "follow")};
    nb_buf_init(&o.line, NB_CLI_LOG_LINE_MAX + 4096);
    nb_buf path;
    nb_buf_init(&path, 4096);
    nb_err err;
    nb_err_clear(&err);
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    char sep = '?';
    if (nb_cli_obj_path(&path, "apis", api, "/logs") < 0) goto nomem;
    if (since[0]) {
        if (nb_buf_appendf(&path, "%csince=%s", sep, since) < 0) goto nomem;
        sep = '&';
    }
    if (status) {
        if (nb_buf_appendf(&path, "%cstatus=%s", sep, status) < 0) goto nomem;
        sep = '&';
    }
    if (limit > 0) {
        if (nb_buf_appendf(&path, "%climit=%lld", sep, (long long)limit) < 0) goto nomem;
        sep = '&';
    }
    if (o.follow && nb_buf_appendf(&path, "%cfollow=1", sep) < 0) goto nomem;
    if (o.follow) {
        r.on_line = on_access_line;
        r.ud = &o;
        if (nb_cli__client_open(&x->c, x->g, &x->a, &err) < 0) {
            rc = nb_cli__fail(&err);
            goto out;
        }
        x->open = 1;
        if (nb_cli__request(&x->c, "GET", path.data, NULL, 0, NULL, &r, &err) < 0 ||
            nb_cli__check(&x->c, &r, &err) < 0)
            rc = nb_cli__fail(&err);
        goto out;
    }
    json_t *answer;
    if ((rc = nb_cli__call(x, "GET", &path, NULL, &answer))) goto out;
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(answer, "records"), i, rec)
    {
        char *raw = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
        int stop = raw ? print_record(&o, rec, raw, strlen(raw)) : -1;
        free(raw);
        if (stop < 0) break;
    }
    json_decref(answer);
    goto out;
nomem:
    rc = nb_cli__oom();
out:
    nb_cli__resp_free(&r);
    nb_buf_free(&path);
    nb_buf_free(&o.line);
    return rc;
}

static const nb_cli__sub api_subs[] = {
    {"create", "create an API (or update it) at a base path", &api_create_cmd, api_create},
    {"update", "change some of an API's settings", &api_update_cmd, api_update},
    {"ls", "list the APIs", &api_ls_cmd, api_ls},
    {"get", "show an API's settings and routes", &api_get_cmd, api_get},
    {"rm", "delete an API, its routes and shares", &api_rm_cmd, api_rm},
    {"share", "let a key or client use the API", &api_share_cmd, api_share},
    {"unshare", "withdraw a share", &api_unshare_cmd, api_unshare},
    {"shares", "list who the API is shared with", &api_shares_cmd, api_shares},
    {"usage", "requests, errors and latency per key, route, status or day", &api_usage_cmd,
     api_usage},
    {"logs", "print or follow the API's access records", &api_logs_cmd, api_logs},
};

static const nb_cli__group api_group = {
    "api",
    "HTTP APIs on the gateway listener: a base path, CORS, JWT settings, a throttle and\n"
    "a usage plan; their routes are managed with 'nimbus route'.",
    api_subs, NB_ARRAY_LEN(api_subs)};

int nb_cli_api(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&api_group, g, argc, argv);
}

/* ---------- nimbus route ---------- */

static const nb_cli_opt route_add_opts[] = {
    {"auth", 0, "AUTH", "none (default), key, client or jwt"},
    {"timeout-ms", 0, "N", "the function's time budget, 50..900000 ms (default 30000)"},
    {"scopes", 0, "'A B'", "scopes a client or JWT must hold (space-separated)"},
    {"rate", 0, "R", "the route's throttle: requests per second"},
    {"burst", 0, "B", "the throttle's burst (default: one second of --rate)"},
    {"log-body", 0, "MAX_BYTES", "log response bodies, up to 1..65536 bytes each"},
    {"log-sample", 0, "F", "fraction of responses whose body is logged, 0..1 (default 1)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(
    route_add_cmd, "route add",
    "API METHOD PATH FUNCTION [--auth none|key|client|jwt] [--timeout-ms N]\n"
    "       [--scopes 'a b'] [--rate R [--burst B]] [--log-body MAX_BYTES [--log-sample F]]",
    "Sends METHOD PATH (under the API's base path) to FUNCTION. METHOD is an HTTP\n"
    "method or ANY; PATH may hold {param} segments and a final {proxy+}.",
    route_add_opts, 4, 4);
NB_CLI__SUBCMD(route_ls_cmd, "route ls", "API [options]", "Lists an API's routes.", json_opts, 1,
               1);
NB_CLI__SUBCMD(route_rm_cmd, "route rm", "API ID [options]",
               "Deletes a route (IDs from 'route ls').", json_opts, 2, 2);

static int route_add(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0], *method = x->a.pos[1], *rpath = x->a.pos[2];
    const char *fn = x->a.pos[3], *v;
    int rc = nb_cli__check_name(x, "API", api);
    if (rc || (rc = nb_cli__check_name(x, "function", fn))) return rc;
    if (!nb_cli_valid_method(method))
        return nb_cli__usage(x->cmd, "METHOD must be an HTTP method such as GET, or ANY, not '%s'",
                             method);
    if (rpath[0] != '/') return nb_cli__usage(x->cmd, "PATH must start with '/', not '%s'", rpath);
    char up[32];
    snprintf(up, sizeof up, "%s", method);
    for (char *p = up; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    json_t *body = json_pack("{s:s, s:s, s:s}", "method", up, "path", rpath, "function", fn);
    json_t *answer = NULL, *t = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if ((v = nb_cli_args_get(&x->a, "auth"))) {
        if (strcmp(v, "none") && strcmp(v, "key") && strcmp(v, "client") && strcmp(v, "jwt")) {
            rc = nb_cli__usage(x->cmd, "--auth must be none, key, client or jwt, not '%s'", v);
            goto out;
        }
        json_object_set_new(body, "auth", json_string(v));
    }
    if ((v = nb_cli_args_get(&x->a, "timeout-ms"))) {
        int64_t n;
        if (nb_cli_parse_int(v, 50, 900000, &n) < 0) {
            rc = nb_cli__usage(x->cmd, "--timeout-ms must be a number from 50 to 900000, not '%s'",
                               v);
            goto out;
        }
        json_object_set_new(body, "timeout_ms", json_integer(n));
    }
    if ((v = nb_cli_args_get(&x->a, "scopes"))) json_object_set_new(body, "scopes", json_string(v));
    if ((rc = throttle_flags(x, &t))) goto out;
    if (t) json_object_set_new(body, "throttle", t);
    const char *lb = nb_cli_args_get(&x->a, "log-body");
    const char *ls = nb_cli_args_get(&x->a, "log-sample");
    if (ls && !lb) {
        rc = nb_cli__usage(x->cmd, "--log-sample needs --log-body");
        goto out;
    }
    if (lb) {
        int64_t n;
        double f = 1;
        if (nb_cli_parse_int(lb, 1, 65536, &n) < 0) {
            rc = nb_cli__usage(
                x->cmd, "--log-body must be a number of bytes from 1 to 65536, not '%s'", lb);
            goto out;
        }
        if (ls && nb_cli_parse_real(ls, 0, 1, &f) < 0) {
            rc = nb_cli__usage(x->cmd, "--log-sample must be a number from 0 to 1, not '%s'", ls);
            goto out;
        }
        json_t *o = json_pack("{s:I}", "max_bytes", (json_int_t)n);
        if (ls) json_object_set_new(o, "sample", json_real(f));
        json_object_set_new(body, "log_body", o);
    }
    if (nb_cli_obj_path(&path, "apis", api, "/routes") < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "POST", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        printf("route %s: %s %s -> %s (auth %s)\n", nb_cli__str(answer, "id"),
               nb_cli__str(answer, "method"), nb_cli__str(answer, "path"),
               nb_cli__str(answer, "function"), nb_cli__str(answer, "auth"));
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int route_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "apis", "API", "/routes", &answer);
    if (rc) return rc;
    rc = nb_cli__list_answer(x, answer, "routes", NB_ARRAY_LEN(route_header), route_header,
                             route_row);
    json_decref(answer);
    return rc;
}

static int route_rm(nb_cli__ctx *x)
{
    const char *api = x->a.pos[0], *id = x->a.pos[1];
    int rc = nb_cli__check_name(x, "API", api);
    if (rc) return rc;
    if (!nb_cli_valid_name(id))
        return nb_cli__usage(x->cmd, "invalid route id '%s' (see 'nimbus route ls %s')", id, api);
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *answer = NULL;
    if (nb_cli_obj_path(&path, "apis", api, "/routes/") < 0 || nb_cli_escape(&path, id) < 0)
        rc = nb_cli__oom();
    else if ((rc = nb_cli__call(x, "DELETE", &path, NULL, &answer)) == 0)
        rc = nb_cli__deleted(x, json_incref(answer), "route", id);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static const nb_cli__sub route_subs[] = {
    {"add", "send METHOD PATH of an API to a function", &route_add_cmd, route_add},
    {"ls", "list an API's routes", &route_ls_cmd, route_ls},
    {"rm", "delete a route", &route_rm_cmd, route_rm},
};

static const nb_cli__group route_group = {"route", "The routes of an API: METHOD PATH -> FUNCTION.",
                                          route_subs, NB_ARRAY_LEN(route_subs)};

int nb_cli_route(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&route_group, g, argc, argv);
}

/* ---------- nimbus plan ---------- */

#define PLAN_OPTS                                                                                  \
    {"rate", 0, "R", "requests per second per consumer"},                                          \
        {"burst", 0, "B", "the rate's burst (default: one second of --rate)"},                     \
        {"quota", 0, "N/PERIOD", "requests per consumer per day or month: 10000/day"},             \
    {                                                                                              \
        "json", 0, NULL, "print the daemon's JSON instead of text"                                 \
    }

static const nb_cli_opt plan_create_opts[] = {
    PLAN_OPTS,
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt plan_update_opts[] = {
    PLAN_OPTS,
    {"no-quota", 0, NULL, "remove the quota"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(plan_create_cmd, "plan create",
               "NAME [--rate R [--burst B]] [--quota N/day|N/month] [options]",
               "Creates (or replaces the given fields of) the usage plan NAME. A plan limits each\n"
               "consumer (key, client) that uses it: a rate, a quota, or both.",
               plan_create_opts, 1, 1);
NB_CLI__SUBCMD(
    plan_update_cmd, "plan update", "NAME [--rate R [--burst B]] [--quota N/PERIOD] [--no-quota]",
    "Changes the fields given of an existing plan; consumers get the new limits at once.",
    plan_update_opts, 1, 1);
NB_CLI__SUBCMD(plan_ls_cmd, "plan ls", "[options]", "Lists the usage plans.", json_opts, 0, 0);
NB_CLI__SUBCMD(plan_rm_cmd, "plan rm", "NAME [options]",
               "Deletes a plan; the daemon refuses while an API, key, client or share uses it.",
               json_opts, 1, 1);

static void plan_quota(char *buf, size_t size, const json_t *q)
{
    if (!json_is_object(q)) {
        snprintf(buf, size, "-");
        return;
    }
    snprintf(buf, size, "%lld/%s", (long long)nb_cli__int(q, "limit"), nb_cli__str(q, "period"));
}

static int plan_put(nb_cli__ctx *x, int update)
{
    const char *name = x->a.pos[0], *v;
    int rc = nb_cli__check_name(x, "plan", name);
    if (rc) return rc;
    json_t *body = json_object(), *answer = NULL, *t = NULL, *list = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if ((rc = throttle_flags(x, &t))) goto out;
    if (t) json_object_update(body, t);
    json_decref(t);
    if ((v = nb_cli_args_get(&x->a, "quota"))) {
        int64_t limit;
        const char *period;
        if (nb_cli_parse_quota(v, &limit, &period) < 0) {
            rc = nb_cli__usage(x->cmd, "--quota must be N/day or N/month (N >= 1), not '%s'", v);
            goto out;
        }
        json_object_set_new(body, "quota",
                            json_pack("{s:I, s:s}", "limit", (json_int_t)limit, "period", period));
    }
    if (update && nb_cli_args_has(&x->a, "no-quota")) {
        if (json_object_get(body, "quota")) {
            rc = nb_cli__usage(x->cmd, "--no-quota contradicts --quota");
            goto out;
        }
        json_object_set_new(body, "quota", json_null());
    }
    if (json_object_size(body) == 0) {
        rc = nb_cli__usage(x->cmd, update ? "nothing to change: give at least one flag"
                                          : "a plan needs --rate, --quota or both");
        goto out;
    }
    if (update) {
        /* No GET route for one plan: find it in the list, so update never creates. */
        if (nb_cli_obj_path(&path, "plans", NULL, NULL) < 0) {
            rc = nb_cli__oom();
            goto out;
        }
        if ((rc = nb_cli__call(x, "GET", &path, NULL, &list))) goto out;
        int found = 0;
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(list, "plans"), i, p) found |=
            strcmp(nb_cli__str(p, "name"), name) == 0;
        if (!found) {
            fprintf(stderr, "nimbus: plan '%s' not found (not_found)\n", name);
            rc = NB_CLI_FAILED;
            goto out;
        }
    }
    if (nb_cli_obj_path(&path, "plans", name, NULL) < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "PUT", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x)) {
        nb_cli__print_json(answer);
    } else {
        char rate[64] = "no rate", quota[64] = "no quota";
        const json_t *r = json_object_get(answer, "rate");
        if (json_is_number(r))
            snprintf(rate, sizeof rate, "rate %g/s burst %lld", json_number_value(r),
                     (long long)nb_cli__int(answer, "burst"));
        if (json_is_object(json_object_get(answer, "quota"))) {
            char q[48];
            plan_quota(q, sizeof q, json_object_get(answer, "quota"));
            snprintf(quota, sizeof quota, "quota %s", q);
        }
        printf("%s plan %s: %s, %s\n", x->status == 201 ? "created" : "updated", name, rate, quota);
    }
out:
    json_decref(body);
    json_decref(answer);
    json_decref(list);
    nb_buf_free(&path);
    return rc;
}

static int plan_create(nb_cli__ctx *x)
{
    return plan_put(x, 0);
}

static int plan_update(nb_cli__ctx *x)
{
    return plan_put(x, 1);
}

static void plan_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell_num(c[1], 256, json_object_get(o, "rate"), "/s");
    nb_cli__cell_num(c[2], 256, json_object_get(o, "burst"), "");
    plan_quota(c[3], 256, json_object_get(o, "quota"));
    nb_cli__cell(c[4], 256, nb_cli__str(o, "updated_at"));
}

static int plan_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", "plans", "plan", NULL, &answer);
    if (rc) return rc;
    static const char *const header[] = {"NAME", "RATE", "BURST", "QUOTA", "UPDATED"};
    rc = nb_cli__list_answer(x, answer, "plans", NB_ARRAY_LEN(header), header, plan_row);
    json_decref(answer);
    return rc;
}

static int plan_rm(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", "plans", "plan", NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, "plan", x->a.pos[0]);
}

static const nb_cli__sub plan_subs[] = {
    {"create", "create a usage plan (rate, quota)", &plan_create_cmd, plan_create},
    {"update", "change a plan's rate or quota", &plan_update_cmd, plan_update},
    {"ls", "list the plans", &plan_ls_cmd, plan_ls},
    {"rm", "delete a plan no one uses", &plan_rm_cmd, plan_rm},
};

static const nb_cli__group plan_group = {
    "plan", "Usage plans: the rate and quota each consumer (key, client) of an API gets.",
    plan_subs, NB_ARRAY_LEN(plan_subs)};

int nb_cli_plan(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&plan_group, g, argc, argv);
}

/* ---------- nimbus key, client: credentials ---------- */

static const nb_cli_opt key_create_opts[] = {
    {"plan", 0, "PLAN", "the key's usage plan"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};
static const nb_cli_opt client_create_opts[] = {
    {"plan", 0, "PLAN", "the client's usage plan"},
    {"scopes", 0, "'A B'", "scopes the client may ask for (space-separated)"},
    {"json", 0, NULL, "print the daemon's JSON instead of text"},
    NB_CLI_COMMON_OPTS,
};

NB_CLI__SUBCMD(key_create_cmd, "key create", "NAME [--plan PLAN] [options]",
               "Creates an API key and prints it once: only its hash is kept. Callers send it in\n"
               "the x-api-key header to routes with --auth key of APIs shared with it.",
               key_create_opts, 1, 1);
NB_CLI__SUBCMD(key_ls_cmd, "key ls", "[options]", "Lists the API keys (never the keys themselves).",
               json_opts, 0, 0);
NB_CLI__SUBCMD(key_get_cmd, "key get", "NAME [options]", "Shows an API key's settings.", json_opts,
               1, 1);
NB_CLI__SUBCMD(key_disable_cmd, "key disable", "NAME [options]",
               "Refuses the key's requests from now on (enable brings it back).", json_opts, 1, 1);
NB_CLI__SUBCMD(key_enable_cmd, "key enable", "NAME [options]", "Accepts a disabled key again.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(key_set_plan_cmd, "key set-plan", "NAME PLAN|none [options]",
               "Puts the key on a usage plan, or on none.", json_opts, 2, 2);
NB_CLI__SUBCMD(key_rotate_cmd, "key rotate", "NAME [options]",
               "Replaces the key with a new one, printed once; the old one stops working now.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(key_rm_cmd, "key rm", "NAME [options]", "Deletes an API key.", json_opts, 1, 1);

NB_CLI__SUBCMD(client_create_cmd, "client create", "NAME [--plan PLAN] [--scopes 'a b'] [options]",
               "Creates an OAuth client (client credentials) and prints its client_id and secret;\n"
               "the secret is shown once: only its hash is kept.",
               client_create_opts, 1, 1);
NB_CLI__SUBCMD(client_ls_cmd, "client ls", "[options]", "Lists the clients (never their secrets).",
               json_opts, 0, 0);
NB_CLI__SUBCMD(client_get_cmd, "client get", "NAME [options]", "Shows a client's settings.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(client_disable_cmd, "client disable", "NAME [options]",
               "Refuses the client's tokens and token requests from now on.", json_opts, 1, 1);
NB_CLI__SUBCMD(client_enable_cmd, "client enable", "NAME [options]",
               "Accepts a disabled client again.", json_opts, 1, 1);
NB_CLI__SUBCMD(client_set_plan_cmd, "client set-plan", "NAME PLAN|none [options]",
               "Puts the client on a usage plan, or on none.", json_opts, 2, 2);
NB_CLI__SUBCMD(client_rotate_cmd, "client rotate", "NAME [options]",
               "Replaces the client's secret, printed once; tokens issued before stop working.",
               json_opts, 1, 1);
NB_CLI__SUBCMD(client_rm_cmd, "client rm", "NAME [options]", "Deletes a client.", json_opts, 1, 1);

/* "key" or "client" from the command's name. */
static int is_client(const nb_cli__ctx *x)
{
    return strncmp(x->cmd, "client", 6) == 0;
}

static const char *coll(const nb_cli__ctx *x)
{
    return is_client(x) ? "clients" : "keys";
}

/* The one-time secret of a create or rotate answer. */
static void print_secret(const nb_cli__ctx *x, const json_t *answer, const char *verb)
{
    const char *name = nb_cli__str(answer, "name");
    if (is_client(x)) {
        printf("%s client %s\nclient_id:     %s\nclient_secret: %s\n", verb, name,
               nb_cli__str(answer, "client_id"), nb_cli__str(answer, "client_secret"));
        printf("The secret is shown only this once and cannot be shown again: store it now.\n");
    } else {
        printf("%s key %s\nkey: %s\n", verb, name, nb_cli__str(answer, "key"));
        printf("The key is shown only this once and cannot be shown again: store it now.\n");
    }
}

static int cred_create(nb_cli__ctx *x)
{
    const char *name = x->a.pos[0], *v;
    int rc = nb_cli__check_name(x, is_client(x) ? "client" : "key", name);
    if (rc) return rc;
    json_t *body = json_pack("{s:s}", "name", name), *answer = NULL;
    nb_buf path;
    nb_buf_init(&path, 4096);
    if ((v = nb_cli_args_get(&x->a, "plan"))) {
        if ((rc = nb_cli__check_name(x, "plan", v))) goto out;
        json_object_set_new(body, "plan", json_string(v));
    }
    if (is_client(x) && (v = nb_cli_args_get(&x->a, "scopes")))
        json_object_set_new(body, "scopes", json_string(v));
    if (nb_cli_obj_path(&path, coll(x), NULL, NULL) < 0) {
        rc = nb_cli__oom();
        goto out;
    }
    if ((rc = nb_cli__call(x, "POST", &path, body, &answer))) goto out;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        print_secret(x, answer, "created");
out:
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static void key_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "prefix"));
    nb_cli__cell(c[2], 256, nb_cli__str(o, "plan"));
    nb_cli__cell(c[3], 256, json_is_false(json_object_get(o, "enabled")) ? "no" : "yes");
    nb_cli__cell(c[4], 256, nb_cli__str(o, "created_at"));
}

static void client_row(const json_t *o, char c[][256])
{
    nb_cli__cell(c[0], 256, nb_cli__str(o, "name"));
    nb_cli__cell(c[1], 256, nb_cli__str(o, "client_id"));
    nb_cli__cell(c[2], 256, nb_cli__str(o, "plan"));
    nb_cli__cell(c[3], 256, nb_cli__str(o, "scopes"));
    nb_cli__cell(c[4], 256, json_is_false(json_object_get(o, "enabled")) ? "no" : "yes");
    nb_cli__cell(c[5], 256, nb_cli__str(o, "created_at"));
}

static int cred_ls(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", coll(x), "", NULL, &answer);
    if (rc) return rc;
    static const char *const kh[] = {"NAME", "PREFIX", "PLAN", "ENABLED", "CREATED"};
    static const char *const ch[] = {"NAME", "CLIENT_ID", "PLAN", "SCOPES", "ENABLED", "CREATED"};
    if (is_client(x))
        rc = nb_cli__list_answer(x, answer, "clients", NB_ARRAY_LEN(ch), ch, client_row);
    else
        rc = nb_cli__list_answer(x, answer, "keys", NB_ARRAY_LEN(kh), kh, key_row);
    json_decref(answer);
    return rc;
}

static int cred_get(nb_cli__ctx *x)
{
    json_t *answer;
    int rc = nb_cli__simple(x, "GET", coll(x), is_client(x) ? "client" : "key", NULL, &answer);
    if (rc) return rc;
    static const char *const order[] = {"name",   "client_id",  "prefix",     "enabled", "plan",
                                        "scopes", "created_at", "updated_at", NULL};
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        rc = nb_cli__print_object(answer, order);
    json_decref(answer);
    return rc;
}

/* PATCH /v1/{keys,clients}/NAME with body; prints "<what> NAME: <done>". */
static int cred_patch(nb_cli__ctx *x, json_t *body, const char *done)
{
    const char *name = x->a.pos[0];
    const char *what = is_client(x) ? "client" : "key";
    int rc = nb_cli__check_name(x, what, name);
    nb_buf path;
    nb_buf_init(&path, 4096);
    json_t *answer = NULL;
    if (rc) {
        /* nothing */
    } else if (nb_cli_obj_path(&path, coll(x), name, NULL) < 0) {
        rc = nb_cli__oom();
    } else if ((rc = nb_cli__call(x, "PATCH", &path, body, &answer)) == 0) {
        if (nb_cli__json_out(x))
            nb_cli__print_json(answer);
        else
            printf("%s %s: %s\n", what, name, done);
    }
    json_decref(body);
    json_decref(answer);
    nb_buf_free(&path);
    return rc;
}

static int cred_disable(nb_cli__ctx *x)
{
    return cred_patch(x, json_pack("{s:b}", "enabled", 0), "disabled");
}

static int cred_enable(nb_cli__ctx *x)
{
    return cred_patch(x, json_pack("{s:b}", "enabled", 1), "enabled");
}

static int cred_set_plan(nb_cli__ctx *x)
{
    const char *plan = x->a.pos[1];
    char done[96];
    if (strcmp(plan, "none") == 0) {
        snprintf(done, sizeof done, "no plan");
        return cred_patch(x, json_pack("{s:n}", "plan"), done);
    }
    int rc = nb_cli__check_name(x, "plan", plan);
    if (rc) return rc;
    snprintf(done, sizeof done, "plan %s", plan);
    return cred_patch(x, json_pack("{s:s}", "plan", plan), done);
}

static int cred_rotate(nb_cli__ctx *x)
{
    json_t *answer;
    int rc =
        nb_cli__simple(x, "POST", coll(x), is_client(x) ? "client" : "key", "/rotate", &answer);
    if (rc) return rc;
    if (nb_cli__json_out(x))
        nb_cli__print_json(answer);
    else
        print_secret(x, answer, "rotated");
    json_decref(answer);
    return NB_CLI_OK;
}

static int cred_rm(nb_cli__ctx *x)
{
    const char *what = is_client(x) ? "client" : "key";
    json_t *answer;
    int rc = nb_cli__simple(x, "DELETE", coll(x), what, NULL, &answer);
    return rc ? rc : nb_cli__deleted(x, answer, what, x->a.pos[0]);
}

static const nb_cli__sub key_subs[] = {
    {"create", "create an API key (printed once)", &key_create_cmd, cred_create},
    {"ls", "list the API keys", &key_ls_cmd, cred_ls},
    {"get", "show an API key", &key_get_cmd, cred_get},
    {"disable", "refuse a key's requests", &key_disable_cmd, cred_disable},
    {"enable", "accept a disabled key again", &key_enable_cmd, cred_enable},
    {"set-plan", "change a key's usage plan", &key_set_plan_cmd, cred_set_plan},
    {"rotate", "replace a key (the new one printed once)", &key_rotate_cmd, cred_rotate},
    {"rm", "delete an API key", &key_rm_cmd, cred_rm},
};

static const nb_cli__sub client_subs[] = {
    {"create", "create a client (secret printed once)", &client_create_cmd, cred_create},
    {"ls", "list the clients", &client_ls_cmd, cred_ls},
    {"get", "show a client", &client_get_cmd, cred_get},
    {"disable", "refuse a client", &client_disable_cmd, cred_disable},
    {"enable", "accept a disabled client again", &client_enable_cmd, cred_enable},
    {"set-plan", "change a client's usage plan", &client_set_plan_cmd, cred_set_plan},
    {"rotate", "replace a client's secret (printed once)", &client_rotate_cmd, cred_rotate},
    {"rm", "delete a client", &client_rm_cmd, cred_rm},
};

static const nb_cli__group key_group = {
    "key", "API keys: consumers that call an API's --auth key routes with x-api-key.", key_subs,
    NB_ARRAY_LEN(key_subs)};

static const nb_cli__group client_group = {
    "client",
    "OAuth clients: consumers that get tokens with client credentials for --auth client\n"
    "routes.",
    client_subs, NB_ARRAY_LEN(client_subs)};

int nb_cli_key(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&key_group, g, argc, argv);
}

int nb_cli_client(const nb_cli_globals *g, int argc, char **argv)
{
    return nb_cli__run_group(&client_group, g, argc, argv);
}
