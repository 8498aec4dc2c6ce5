/* nimbus deploy: upload code (POST /v1/code), then create or update the function (PUT). */
#include "cli/internal.h"

#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bundles from this size up show their upload moving. */
#define PROGRESS_MIN (1u << 20)

static const nb_cli_opt opts[] = {
    {"runtime", 0, "R", "python3, nodejs, provided, ... (see docs/api.md)"},
    {"handler", 0, "H", "module.function (python), file.export (node), anything (provided)"},
    {"memory", 0, "MB", "memory in MB, 128..10240 (default 128)"},
    {"timeout", 0, "S", "timeout in seconds, 1..900 (default 3)"},
    {"ephemeral-storage", 0, "MB", "size of the private /tmp in MB, 512..10240 (default 512)"},
    {"network", 0, "none|host", "none: loopback only (default); host: the host's network"},
    {"env", 'e', "K=V", "an environment variable; repeat for more; replaces the whole set"},
    {"description", 0, "D", "free text, at most 256 bytes"},
    NB_CLI_SCALING_OPTS,
    {"json", 0, NULL, "print the daemon's function object as JSON"},
    NB_CLI_COMMON_OPTS,
};

static const nb_cli__cmd cmd = {
    .name = "deploy",
    .synopsis = "NAME DIR|ARCHIVE --runtime R --handler H [options]",
    .description =
        "Uploads code and creates the function NAME, or updates it and publishes a new version.\n"
        "DIR is packed as a tar.gz (symlinks kept as links, exec bits kept); an ARCHIVE\n"
        "(.zip, .tar, .tar.gz, .tgz) is uploaded as it is. --runtime and --handler are needed\n"
        "when the function is created; on update every option left out keeps its current value.\n"
        "Deploying identical code and settings publishes nothing. The scaling flags are the\n"
        "ones of 'nimbus config' and are not versioned.",
    .opts = opts,
    .nopts = NB_ARRAY_LEN(opts),
    .min_pos = 2,
    .max_pos = 2,
};

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int is_archive_name(const char *path)
{
    return has_suffix(path, ".zip") || has_suffix(path, ".tar") || has_suffix(path, ".tar.gz") ||
           has_suffix(path, ".tgz");
}

/* Builds the PUT body from the flags; every check happens here, before any upload.
 * Returns NULL after printing a usage error. */
static json_t *build_config(const nb_cli_args *a)
{
    json_t *cfg = json_object();
    const char *v;
    if ((v = nb_cli_args_get(a, "runtime"))) json_object_set_new(cfg, "runtime", json_string(v));
    if ((v = nb_cli_args_get(a, "handler"))) json_object_set_new(cfg, "handler", json_string(v));
    int64_t n;
    if ((v = nb_cli_args_get(a, "memory"))) {
        if (nb_cli_parse_int(v, NB_CLI_MEMORY_MIN, NB_CLI_MEMORY_MAX, &n) < 0) {
            nb_cli__usage("deploy", "--memory must be a number of MB from %d to %d, not '%s'",
                          NB_CLI_MEMORY_MIN, NB_CLI_MEMORY_MAX, v);
            goto bad;
        }
        json_object_set_new(cfg, "memory_mb", json_integer(n));
    }
    if ((v = nb_cli_args_get(a, "timeout"))) {
        if (nb_cli_parse_int(v, NB_CLI_TIMEOUT_MIN, NB_CLI_TIMEOUT_MAX, &n) < 0) {
            nb_cli__usage("deploy", "--timeout must be a number of seconds from %d to %d, not '%s'",
                          NB_CLI_TIMEOUT_MIN, NB_CLI_TIMEOUT_MAX, v);
            goto bad;
        }
        json_object_set_new(cfg, "timeout_s", json_integer(n));
    }
    if ((v = nb_cli_args_get(a, "ephemeral-storage"))) {
        if (nb_cli_parse_int(v, NB_CLI_EPHEMERAL_MIN, NB_CLI_EPHEMERAL_MAX, &n) < 0) {
            nb_cli__usage("deploy",
                          "--ephemeral-storage must be a number of MB from %d to %d, not '%s'",
                          NB_CLI_EPHEMERAL_MIN, NB_CLI_EPHEMERAL_MAX, v);
            goto bad;
        }
        json_object_set_new(cfg, "ephemeral_storage_mb", json_integer(n));
    }
    if ((v = nb_cli_args_get(a, "network"))) {
        if (strcmp(v, "none") != 0 && strcmp(v, "host") != 0) {
            nb_cli__usage("deploy", "--network must be none or host, not '%s'", v);
            goto bad;
        }
        json_object_set_new(cfg, "network", json_string(v));
    }
    json_t *env = NULL;
    for (int i = 0; i < a->nitems; i++) {
        if (strcmp(a->opts[a->items[i].opt].name, "env") != 0) continue;
        const char *kv = a->items[i].value;
        size_t klen;
        if (nb_cli_parse_env(kv, &klen) < 0) {
            nb_cli__usage("deploy",
                          "--env wants KEY=VALUE with KEY like [A-Za-z_][A-Za-z0-9_]*, "
                          "not '%s'",
                          kv);
            json_decref(env);
            goto bad;
        }
        if (!env) env = json_object();
        char *key = strndup(kv, klen);
        if (key) json_object_set_new(env, key, json_string(kv + klen + 1));
        free(key);
    }
    if (env) json_object_set_new(cfg, "environment", env);
    if ((v = nb_cli_args_get(a, "description")))
        json_object_set_new(cfg, "description", json_string(v));
    if (nb_cli__scaling_flags(a, "deploy", cfg) != 0) goto bad;
    return cfg;
bad:
    json_decref(cfg);
    return NULL;
}

/* Reads or packs the code. Returns 0, 2 (bad path, printed) or 1 (err filled). */
static int load_code(const char *path, nb_buf *code, nb_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0) return nb_cli__usage("deploy", "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (nb_cli_pack_dir(path, code, err) < 0) {
            nb_err_prefix(err, "pack %s", path);
            return NB_CLI_FAILED;
        }
        return 0;
    }
    if (!S_ISREG(st.st_mode) || !is_archive_name(path))
        return nb_cli__usage("deploy",
                             "%s is neither a directory nor a .zip, .tar, .tar.gz or "
                             ".tgz archive",
                             path);
    size_t len;
    char *data = nb_read_file(path, NB_CLI_CODE_MAX, &len);
    if (!data) {
        if (errno == EFBIG)
            nb_err_set(err, 413, NB_E_TOO_LARGE, "%s is over %u bytes (the upload limit)", path,
                       NB_CLI_CODE_MAX);
        else
            nb_err_sys(err, errno, "read %s", path);
        return NB_CLI_FAILED;
    }
    int rc = nb_buf_append(code, data, len);
    free(data);
    if (rc < 0) {
        nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
        return NB_CLI_FAILED;
    }
    return 0;
}

static int deploy(nb_cli__client *c, const nb_cli_args *a, json_t *cfg)
{
    const char *name = a->pos[0], *path = a->pos[1];
    nb_err err;
    nb_err_clear(&err);
    nb_buf code, fpath;
    nb_buf_init(&code, NB_CLI_CODE_MAX);
    nb_buf_init(&fpath, 4096);
    json_t *blob = NULL, *fn = NULL;
    char *body = NULL;
    int rc = load_code(path, &code, &err);
    if (rc != 0) goto out;

    rc = NB_CLI_FAILED;
    /* A large bundle shows its upload moving on a terminal (NIMBUS_PROGRESS=1 forces it). */
    char label[64];
    const char *force = getenv("NIMBUS_PROGRESS");
    if ((code.len >= PROGRESS_MIN && isatty(2)) || (force && strcmp(force, "1") == 0)) {
        snprintf(label, sizeof label, "uploading %.40s", path);
        c->progress = label;
    }
    int up = nb_cli__call_json(c, "POST", "/v1/code", code.data, code.len,
                               "application/octet-stream", &blob, &err);
    c->progress = NULL;
    if (up < 0) goto out; /* the daemon's own words, as "message (code)" */
    const char *sha = nb_cli__str(blob, "sha256");
    if (!*sha) {
        nb_err_set(&err, 502, NB_E_INTERNAL, "upload %s: the daemon's answer has no sha256", path);
        goto out;
    }
    if (c->verbose)
        fprintf(stderr, "nimbus: uploaded %zu bytes, sha256 %s, %lld files\n", code.len, sha,
                (long long)nb_cli__int(blob, "files"));
    json_object_set_new(cfg, "code_sha256", json_string(sha));

    body = json_dumps(cfg, JSON_COMPACT);
    if (!body || nb_cli_fn_path(&fpath, name, NULL) < 0) {
        nb_err_set(&err, 500, NB_E_INTERNAL, "out of memory");
        goto out;
    }
    if (nb_cli__call_json(c, "PUT", fpath.data, body, strlen(body), "application/json", &fn, &err) <
        0)
        goto out;
    if (nb_cli_args_has(a, "json")) {
        nb_cli__print_json(fn);
    } else if (json_is_false(json_object_get(fn, "changed"))) {
        printf("%s unchanged at version %lld\n", name, (long long)nb_cli__int(fn, "version"));
    } else {
        printf("deployed %s version %lld (%s, %s, %lld MB, %lld s)\n", name,
               (long long)nb_cli__int(fn, "version"), nb_cli__str(fn, "runtime"),
               nb_cli__str(fn, "handler"), (long long)nb_cli__int(fn, "memory_mb"),
               (long long)nb_cli__int(fn, "timeout_s"));
    }
    rc = NB_CLI_OK;
out:
    if (rc == NB_CLI_FAILED) nb_cli__fail(&err);
    free(body);
    json_decref(blob);
    json_decref(fn);
    nb_buf_free(&code);
    nb_buf_free(&fpath);
    return rc;
}

int nb_cli_deploy(const nb_cli_globals *g, int argc, char **argv)
{
    nb_cli_args a;
    int rc = nb_cli__begin(&cmd, argc, argv, &a);
    if (rc != NB_CLI__CONTINUE) goto out;
    json_t *cfg = build_config(&a);
    if (!cfg) {
        rc = NB_CLI_USAGE;
        goto out;
    }
    nb_cli__client c;
    nb_err err;
    nb_err_clear(&err);
    if (nb_cli__client_open(&c, g, &a, &err) < 0) {
        rc = nb_cli__fail(&err);
    } else {
        rc = deploy(&c, &a, cfg);
        nb_cli__client_close(&c);
    }
    json_decref(cfg);
out:
    nb_cli_args_free(&a);
    return rc;
}
