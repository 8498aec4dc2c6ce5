/* Unit tests of src/function/: names, runtimes, config validation (nb_fn_config_apply), equality,
 * the stored JSON form and the handler-to-file mapping. */
#include "function/function.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je); /* to test NUL handling */
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", text, je.text);
        exit(1);
    }
    return j;
}

/* Applies JSON text to cfg; returns the result and leaves the error in *err. */
static int apply(nb_fn_config *cfg, const char *text, int creating, nb_err *err)
{
    json_t *j = parse(text);
    nb_err_clear(err);
    int rc = nb_fn_config_apply(cfg, j, creating, err);
    json_decref(j);
    if (rc < 0) CHECK(err->status == 400 && err->code && err->msg[0]);
    return rc;
}

/* A valid python function created from defaults. */
static void make_py(nb_fn_config *cfg)
{
    nb_err err;
    nb_fn_config_init(cfg);
    CHECK(apply(cfg,
                "{\"runtime\":\"python3.12\",\"handler\":\"app.handler\",\"code_sha256\":\"" SHA_A
                "\"}",
                1, &err) == 0);
}

/* Expects apply to fail with code; cfg must come out exactly as it went in. */
static void expect_fail(nb_fn_config *cfg, const char *text, int creating, const char *code)
{
    nb_fn_config before;
    nb_fn_config_copy(&before, cfg);
    nb_err err;
    if (apply(cfg, text, creating, &err) == 0) {
        fprintf(stderr, "apply accepted %s\n", text);
        exit(1);
    }
    if (strcmp(err.code, code) != 0) {
        fprintf(stderr, "apply %s: code %s, want %s (%s)\n", text, err.code, code, err.msg);
        exit(1);
    }
    CHECK(nb_fn_config_equal(cfg, &before));
    CHECK(cfg->kind == before.kind);
    nb_fn_config_release(&before);
}

static void test_names(void)
{
    CHECK(nb_fn_valid_name("hello"));
    CHECK(nb_fn_valid_name("a"));
    CHECK(nb_fn_valid_name("Hello_World-2"));
    char n64[65], n65[66];
    memset(n64, 'x', 64);
    n64[64] = 0;
    memset(n65, 'x', 65);
    n65[65] = 0;
    CHECK(nb_fn_valid_name(n64));
    CHECK(!nb_fn_valid_name(n65));
    CHECK(!nb_fn_valid_name(""));
    CHECK(!nb_fn_valid_name("a.b"));
    CHECK(!nb_fn_valid_name("a/b"));
    CHECK(!nb_fn_valid_name(".."));
    CHECK(!nb_fn_valid_name("a b"));
    CHECK(!nb_fn_valid_name("caf\xc3\xa9"));
    CHECK(!nb_fn_valid_name("a%2f"));
}

static void test_runtimes(void)
{
    static const char *py[] = {"python3", "python3.8", "python3.12", "python3.13", "python3.100"};
    static const char *node[] = {"nodejs", "nodejs18.x", "nodejs20.x", "nodejs22.x"};
    static const char *prov[] = {"provided", "provided.al2", "provided.al2023"};
    static const char *bad[] = {"",           "python",      "python2.7",   "python3.",
                                "python3.x",  "python3.12a", "python3.1.2", "python3.-1",
                                "python3. 1", "Python3.12",  "python3.12 ", "nodejs16.x",
                                "nodejs20",   "node",        "nodejs20.x ", "provided.al2024",
                                "provided.",  "java21",      "go1.x",       "ruby3.3"};
    for (size_t i = 0; i < sizeof py / sizeof *py; i++)
        CHECK(nb_fn_runtime_kind(py[i]) == NB_RT_PYTHON);
    for (size_t i = 0; i < sizeof node / sizeof *node; i++)
        CHECK(nb_fn_runtime_kind(node[i]) == NB_RT_NODE);
    for (size_t i = 0; i < sizeof prov / sizeof *prov; i++)
        CHECK(nb_fn_runtime_kind(prov[i]) == NB_RT_PROVIDED);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (nb_fn_runtime_kind(bad[i]) != -1) {
            fprintf(stderr, "runtime '%s' accepted\n", bad[i]);
            exit(1);
        }
    }
}

static void test_defaults_and_required(void)
{
    nb_fn_config cfg;
    nb_fn_config_init(&cfg);
    CHECK(cfg.memory_mb == 128);
    CHECK(cfg.timeout_s == 3);
    CHECK(json_is_object(cfg.environment) && json_object_size(cfg.environment) == 0);
    CHECK(cfg.runtime[0] == 0 && cfg.handler[0] == 0 && cfg.code_sha256[0] == 0);
    CHECK(cfg.description[0] == 0);

    /* Creating needs runtime, handler and code_sha256; each missing one is named. */
    nb_err err;
    CHECK(apply(&cfg, "{\"handler\":\"app.handler\",\"code_sha256\":\"" SHA_A "\"}", 1, &err) < 0);
    CHECK_STR(err.code, NB_E_INVALID_VALUE);
    CHECK(strstr(err.msg, "runtime") != NULL);
    CHECK(apply(&cfg, "{\"runtime\":\"python3\",\"code_sha256\":\"" SHA_A "\"}", 1, &err) < 0);
    CHECK(strstr(err.msg, "handler") != NULL);
    CHECK(apply(&cfg, "{\"runtime\":\"python3\",\"handler\":\"app.handler\"}", 1, &err) < 0);
    CHECK(strstr(err.msg, "code_sha256") != NULL);
    CHECK(apply(&cfg, "{}", 1, &err) < 0);
    CHECK(cfg.runtime[0] == 0); /* nothing leaked in from the failed attempts */

    /* Not an object. */
    json_t *arr = parse("[1]");
    CHECK(nb_fn_config_apply(&cfg, arr, 1, &err) < 0);
    CHECK_STR(err.code, NB_E_INVALID_JSON);
    json_decref(arr);

    CHECK(apply(&cfg,
                "{\"runtime\":\"python3.12\",\"handler\":\"app.handler\",\"code_sha256\":\"" SHA_A
                "\"}",
                1, &err) == 0);
    CHECK_STR(cfg.runtime, "python3.12");
    CHECK(cfg.kind == NB_RT_PYTHON);
    CHECK_STR(cfg.handler, "app.handler");
    CHECK_STR(cfg.code_sha256, SHA_A);
    CHECK(cfg.memory_mb == 128 && cfg.timeout_s == 3); /* defaults kept */

    /* An update need not repeat anything; only the given fields change. */
    CHECK(apply(&cfg, "{\"memory_mb\":512}", 0, &err) == 0);
    CHECK(cfg.memory_mb == 512);
    CHECK(cfg.ephemeral_storage_mb == 512 && cfg.network == NB_NET_NONE);
    CHECK(apply(&cfg, "{\"ephemeral_storage_mb\":1024,\"network\":\"host\"}", 0, &err) == 0);
    CHECK(cfg.ephemeral_storage_mb == 1024 && cfg.network == NB_NET_HOST);
    CHECK(apply(&cfg, "{\"ephemeral_storage_mb\":512,\"network\":\"none\"}", 0, &err) == 0);
    CHECK_STR(cfg.handler, "app.handler");
    CHECK(apply(&cfg, "{}", 0, &err) == 0);
    CHECK(cfg.memory_mb == 512);

    /* Changing the runtime re-derives the kind and re-checks the handler. */
    CHECK(apply(&cfg, "{\"runtime\":\"provided.al2023\"}", 0, &err) == 0);
    CHECK(cfg.kind == NB_RT_PROVIDED);
    CHECK(apply(&cfg, "{\"runtime\":\"nodejs20.x\",\"handler\":\"index.handler\"}", 0, &err) == 0);
    CHECK(cfg.kind == NB_RT_NODE);
    nb_fn_config_release(&cfg);
}

static void test_field_errors(void)
{
    nb_fn_config cfg;
    make_py(&cfg);
    CHECK(apply(&cfg, "{\"environment\":{\"KEEP\":\"me\"},\"description\":\"d\"}", 0,
                &(nb_err){0}) == 0);

    expect_fail(&cfg, "{\"memroy_mb\":256}", 0, NB_E_UNKNOWN_FIELD);
    expect_fail(&cfg, "{\"memory_mb\":256,\"bogus\":1}", 0, NB_E_UNKNOWN_FIELD);
    expect_fail(&cfg, "{\"name\":\"x\"}", 0, NB_E_UNKNOWN_FIELD);

    /* memory 128..10240 */
    expect_fail(&cfg, "{\"memory_mb\":127}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"memory_mb\":10241}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"memory_mb\":-1}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"memory_mb\":256.0}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"ephemeral_storage_mb\":511}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"ephemeral_storage_mb\":10241}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"network\":\"bridge\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"network\":1}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"memory_mb\":\"256\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"memory_mb\":4294967424}", 0, NB_E_INVALID_VALUE); /* 2^32 + 128 */
    expect_fail(&cfg, "{\"memory_mb\":null}", 0, NB_E_INVALID_VALUE);
    nb_err err;
    CHECK(apply(&cfg, "{\"memory_mb\":128}", 0, &err) == 0 && cfg.memory_mb == 128);
    CHECK(apply(&cfg, "{\"memory_mb\":10240}", 0, &err) == 0 && cfg.memory_mb == 10240);

    /* timeout 1..900 */
    expect_fail(&cfg, "{\"timeout_s\":0}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"timeout_s\":901}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"timeout_s\":true}", 0, NB_E_INVALID_VALUE);
    CHECK(apply(&cfg, "{\"timeout_s\":1}", 0, &err) == 0 && cfg.timeout_s == 1);
    CHECK(apply(&cfg, "{\"timeout_s\":900}", 0, &err) == 0 && cfg.timeout_s == 900);

    /* A failure late in the body leaves earlier valid fields unapplied too. */
    expect_fail(&cfg, "{\"timeout_s\":5,\"memory_mb\":1}", 0, NB_E_INVALID_VALUE);
    CHECK(cfg.timeout_s == 900);
    expect_fail(&cfg, "{\"timeout_s\":5,\"environment\":{\"NEW\":\"x\"},\"nope\":1}", 0,
                NB_E_UNKNOWN_FIELD);
    CHECK(cfg.timeout_s == 900);
    CHECK(json_object_size(cfg.environment) == 1 && json_object_get(cfg.environment, "KEEP"));

    /* runtime */
    expect_fail(&cfg, "{\"runtime\":\"python2.7\"}", 0, NB_E_INVALID_RUNTIME);
    expect_fail(&cfg, "{\"runtime\":\"python3.x\"}", 0, NB_E_INVALID_RUNTIME);
    expect_fail(&cfg, "{\"runtime\":3}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"runtime\":\"python3.1234567890123456789012345678901\"}", 0,
                NB_E_INVALID_VALUE);

    /* code_sha256: exactly 64 lowercase hex digits */
    expect_fail(&cfg, "{\"code_sha256\":\"abc\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"code_sha256\":\"" SHA_A "a\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(
        &cfg,
        "{\"code_sha256\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", 0,
        NB_E_INVALID_VALUE);
    expect_fail(
        &cfg,
        "{\"code_sha256\":\"gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg\"}", 0,
        NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"code_sha256\":\"\"}", 0, NB_E_INVALID_VALUE);
    CHECK(apply(&cfg, "{\"code_sha256\":\"" SHA_B "\"}", 0, &err) == 0);
    CHECK_STR(cfg.code_sha256, SHA_B);

    /* description up to 256 bytes, no NUL inside */
    char body[1024], d[300];
    memset(d, 'd', sizeof d);
    d[256] = 0;
    snprintf(body, sizeof body, "{\"description\":\"%s\"}", d);
    CHECK(apply(&cfg, body, 0, &err) == 0 && strlen(cfg.description) == 256);
    d[256] = 'd';
    d[257] = 0;
    snprintf(body, sizeof body, "{\"description\":\"%s\"}", d);
    expect_fail(&cfg, body, 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"description\":\"a\\u0000b\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"description\":7}", 0, NB_E_INVALID_VALUE);
    CHECK(apply(&cfg, "{\"description\":\"\"}", 0, &err) == 0 && cfg.description[0] == 0);
    nb_fn_config_release(&cfg);
}

static void test_environment(void)
{
    nb_fn_config cfg;
    make_py(&cfg);
    nb_err err;
    CHECK(apply(&cfg, "{\"environment\":{\"DB_HOST\":\"db\",\"lower_ok\":\"1\",\"A1\":\"\"}}", 0,
                &err) == 0);
    CHECK(json_object_size(cfg.environment) == 3);
    CHECK_STR(json_string_value(json_object_get(cfg.environment, "DB_HOST")), "db");
    /* Replaced whole, not merged. */
    CHECK(apply(&cfg, "{\"environment\":{\"ONLY\":\"x\"}}", 0, &err) == 0);
    CHECK(json_object_size(cfg.environment) == 1 && json_object_get(cfg.environment, "ONLY"));

    /* The config holds its own copy: changing the request afterwards changes nothing. */
    json_t *body = parse("{\"environment\":{\"MINE\":\"v\"}}");
    CHECK(nb_fn_config_apply(&cfg, body, 0, &err) == 0);
    json_object_set_new(json_object_get(body, "environment"), "LATER", json_string("x"));
    json_decref(body);
    CHECK(json_object_size(cfg.environment) == 1);

    static const char *bad_keys[] = {
        "A", /* too short */
        "1ABC",
        "_X",
        "A-B",
        "A B",
        "A.B",
        "A=B",
        "\\u00e9t\\u00e9",
        "_HANDLER",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "TZ",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "LAMBDA_TASK_ROOT",
        "NIMBUS_ANYTHING",
        "_X_AMZN_TRACE_ID",
    };
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"environment\":{\"OK_KEY\":\"1\",\"%s\":\"v\"}}",
                 bad_keys[i]);
        expect_fail(&cfg, text, 0, NB_E_INVALID_VALUE);
    }
    expect_fail(&cfg, "{\"environment\":{\"NUM\":1}}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"environment\":{\"NUL\":\"a\\u0000b\"}}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"environment\":[\"A=B\"]}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"environment\":\"A=B\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"environment\":null}", 0, NB_E_INVALID_VALUE);

    /* 4 KiB total over keys and values: exactly 4096 passes, 4097 fails. */
    static char text[8192], val[5000];
    memset(val, 'v', sizeof val);
    val[4096 - 3] = 0; /* key "KEY" + 4093 bytes = 4096 */
    snprintf(text, sizeof text, "{\"environment\":{\"KEY\":\"%s\"}}", val);
    CHECK(apply(&cfg, text, 0, &err) == 0);
    val[4096 - 3] = 'v';
    val[4096 - 2] = 0;
    snprintf(text, sizeof text, "{\"environment\":{\"KEY\":\"%s\"}}", val);
    expect_fail(&cfg, text, 0, NB_E_INVALID_VALUE);
    /* The total spans keys: two entries each under the limit. */
    memset(val, 'v', sizeof val);
    val[2040] = 0;
    snprintf(text, sizeof text, "{\"environment\":{\"K1\":\"%s\",\"K2\":\"%s\"}}", val, val);
    CHECK(apply(&cfg, text, 0, &err) == 0); /* 2 * (2 + 2040) = 4084 */
    val[2040] = 'v';
    val[2050] = 0;
    snprintf(text, sizeof text, "{\"environment\":{\"K1\":\"%s\",\"K2\":\"%s\"}}", val, val);
    expect_fail(&cfg, text, 0, NB_E_INVALID_VALUE); /* 2 * (2 + 2050) = 4104 */
    nb_fn_config_release(&cfg);
}

static void test_handlers(void)
{
    struct {
        const char *runtime, *handler;
        int ok;
    } cases[] = {
        {"python3", "app.handler", 1},
        {"python3", "src/app.handler", 1},
        {"python3", "pkg.mod.handler", 1},
        {"python3", "src/pkg.mod.handler", 1},
        {"python3", "app", 0},
        {"python3", "app.", 0},
        {"python3", ".handler", 0},
        {"python3", "src/.handler", 0},
        {"python3", "src.x/app", 0}, /* the dot must be after the last slash */
        {"python3", "/abs/app.handler", 0},
        {"python3", "../app.handler", 0},
        {"python3", "a/../app.handler", 0},
        {"python3", "app..handler", 0},
        {"python3", "app.han dler", 0},
        {"python3", "app.handler\\\\x", 0},
        {"python3", "app.handler\\u0001", 0},
        {"python3", "", 0},
        {"nodejs20.x", "index.handler", 1},
        {"nodejs20.x", "lib/index.handler", 1},
        {"nodejs20.x", "index", 0},
        {"nodejs20.x", "/index.handler", 0},
        {"provided.al2023", "anything-at-all", 1},
        {"provided", "x", 1},
        {"provided", "has space", 0},
        {"provided", "", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nb_fn_config cfg;
        nb_fn_config_init(&cfg);
        char text[512];
        snprintf(text, sizeof text,
                 "{\"runtime\":\"%s\",\"handler\":\"%s\",\"code_sha256\":\"" SHA_A "\"}",
                 cases[i].runtime, cases[i].handler);
        nb_err err;
        int rc = apply(&cfg, text, 1, &err);
        if ((rc == 0) != cases[i].ok) {
            fprintf(stderr, "%s:%d: handler '%s' for %s: rc %d (%s)\n", __FILE__, __LINE__,
                    cases[i].handler, cases[i].runtime, rc, rc ? err.msg : "");
            exit(1);
        }
        if (rc < 0) CHECK_STR(err.code, NB_E_INVALID_VALUE);
        nb_fn_config_release(&cfg);
    }
    /* Over the length limit. */
    char h[200], text[512];
    memset(h, 'a', sizeof h);
    memcpy(h + 120, ".handler", 9); /* 128 bytes */
    snprintf(text, sizeof text,
             "{\"runtime\":\"python3\",\"handler\":\"%s\",\"code_sha256\":\"" SHA_A "\"}", h);
    nb_fn_config cfg;
    nb_fn_config_init(&cfg);
    nb_err err;
    CHECK(apply(&cfg, text, 1, &err) == 0);
    memcpy(h + 121, ".handler", 9); /* 129 bytes */
    snprintf(text, sizeof text, "{\"handler\":\"%s\"}", h);
    expect_fail(&cfg, text, 0, NB_E_INVALID_VALUE);
    /* A handler valid for provided but not for python: switching runtimes re-checks it. */
    CHECK(apply(&cfg, "{\"runtime\":\"provided\",\"handler\":\"bin\"}", 0, &err) == 0);
    expect_fail(&cfg, "{\"runtime\":\"python3\"}", 0, NB_E_INVALID_VALUE);
    CHECK(cfg.kind == NB_RT_PROVIDED);
    nb_fn_config_release(&cfg);
}

static void test_equal_and_json(void)
{
    nb_fn_config a, b;
    make_py(&a);
    nb_err err;
    CHECK(apply(&a,
                "{\"memory_mb\":256,\"timeout_s\":30,\"description\":\"d\\\"q\\u00e9\","
                "\"environment\":{\"BB\":\"2\",\"AA\":\"1\"}}",
                0, &err) == 0);
    nb_fn_config_copy(&b, &a);
    CHECK(nb_fn_config_equal(&a, &b));
    CHECK(b.environment != a.environment); /* deep copy */
    json_object_set_new(b.environment, "CC", json_string("3"));
    CHECK(!nb_fn_config_equal(&a, &b));
    json_object_del(b.environment, "CC");
    CHECK(nb_fn_config_equal(&a, &b));

    const char *changes[] = {"{\"memory_mb\":257}",
                             "{\"timeout_s\":31}",
                             "{\"description\":\"e\"}",
                             "{\"handler\":\"app.other\"}",
                             "{\"runtime\":\"python3.13\"}",
                             "{\"code_sha256\":\"" SHA_B "\"}",
                             "{\"environment\":{\"BB\":\"2\",\"AA\":\"x\"}}"};
    for (size_t i = 0; i < sizeof changes / sizeof *changes; i++) {
        nb_fn_config c;
        nb_fn_config_copy(&c, &a);
        CHECK(apply(&c, changes[i], 0, &err) == 0);
        if (nb_fn_config_equal(&a, &c)) {
            fprintf(stderr, "change %s not seen by equal\n", changes[i]);
            exit(1);
        }
        nb_fn_config_release(&c);
    }
    /* Key order of the environment does not matter. */
    nb_fn_config c;
    nb_fn_config_copy(&c, &a);
    CHECK(apply(&c, "{\"environment\":{\"AA\":\"1\",\"BB\":\"2\"}}", 0, &err) == 0);
    CHECK(nb_fn_config_equal(&a, &c));
    nb_fn_config_release(&c);

    /* Round trip through the stored JSON form, also through text. */
    json_t *j = nb_fn_config_to_json(&a);
    CHECK(j && json_object_size(j) == 9);
    CHECK(json_integer_value(json_object_get(j, "ephemeral_storage_mb")) == 512);
    CHECK_STR(json_string_value(json_object_get(j, "network")), "none");
    CHECK_STR(json_string_value(json_object_get(j, "runtime")), "python3.12");
    CHECK(json_integer_value(json_object_get(j, "memory_mb")) == 256);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    json_t *back = parse(text);
    free(text);
    nb_fn_config d;
    CHECK(nb_fn_config_from_json(&d, back, &err) == 0);
    json_decref(back);
    CHECK(nb_fn_config_equal(&a, &d));
    CHECK(d.kind == NB_RT_PYTHON);
    CHECK_STR(d.description, "d\"q\xc3\xa9");
    nb_fn_config_release(&d);

    /* A stored config that no longer validates is an error with context, not a crash. */
    json_t *broken =
        parse("{\"runtime\":\"cobol\",\"handler\":\"a.b\",\"code_sha256\":\"" SHA_A "\"}");
    CHECK(nb_fn_config_from_json(&d, broken, &err) < 0);
    CHECK(strncmp(err.msg, "stored config: ", 15) == 0);
    nb_fn_config_release(&d);
    json_decref(broken);

    /* Versions: refcounting and the API object. */
    nb_fn_version *v = nb_fn_version_new();
    CHECK(v->refs == 1);
    snprintf(v->ns, sizeof v->ns, "default");
    snprintf(v->name, sizeof v->name, "hello");
    v->version = 3;
    v->fn_created_at = 0;
    nb_fn_config_release(&v->cfg);
    nb_fn_config_copy(&v->cfg, &a);
    CHECK(nb_fn_version_ref(v) == v && v->refs == 2);
    nb_fn_version_unref(v);
    CHECK(v->refs == 1);
    json_t *o = nb_fn_version_to_json(v, 1700000000123LL);
    CHECK_STR(json_string_value(json_object_get(o, "name")), "hello");
    CHECK_STR(json_string_value(json_object_get(o, "namespace")), "default");
    CHECK(json_integer_value(json_object_get(o, "version")) == 3);
    CHECK_STR(json_string_value(json_object_get(o, "created_at")), "1970-01-01T00:00:00.000Z");
    CHECK_STR(json_string_value(json_object_get(o, "updated_at")), "2023-11-14T22:13:20.123Z");
    CHECK_STR(json_string_value(json_object_get(o, "handler")), "app.handler");
    json_decref(o);
    nb_fn_version_unref(v);
    nb_fn_version_unref(NULL);

    nb_fn_config_release(&a);
    nb_fn_config_release(&b);
}

/* Checks the NUL-separated list nb_fn_handler_files writes against want (NULL-terminated). */
static void check_files(const char *runtime, const char *handler, const char *const *want)
{
    nb_fn_config cfg;
    nb_fn_config_init(&cfg);
    char text[512];
    snprintf(text, sizeof text,
             "{\"runtime\":\"%s\",\"handler\":\"%s\",\"code_sha256\":\"" SHA_A "\"}", runtime,
             handler);
    nb_err err;
    CHECK(apply(&cfg, text, 1, &err) == 0);
    char out[1024];
    memset(out, 'X', sizeof out);
    CHECK(nb_fn_handler_files(&cfg, out, sizeof out) == 0);
    const char *f = out;
    for (size_t i = 0; want[i]; i++) {
        if (strcmp(f, want[i]) != 0) {
            fprintf(stderr, "%s %s: file %zu is '%s', want '%s'\n", runtime, handler, i, f,
                    want[i]);
            exit(1);
        }
        f += strlen(f) + 1;
    }
    if (*f) {
        fprintf(stderr, "%s %s: extra file '%s'\n", runtime, handler, f);
        exit(1);
    }
    /* Too small an output buffer is an error, never an overrun. */
    CHECK(nb_fn_handler_files(&cfg, out, 8) == -1);
    nb_fn_config_release(&cfg);
}

static void test_scaling(void)
{
    nb_fn_config cfg;
    make_py(&cfg);
    CHECK(cfg.scaling.max_concurrency == NB_SCALE_UNSET && cfg.scaling.min_instances == 0);
    CHECK(cfg.scaling.idle_timeout_s == NB_SCALE_UNSET);
    CHECK(cfg.scaling.max_queue == NB_SCALE_DEFAULT_QUEUE);
    CHECK(cfg.scaling.queue_timeout_ms == NB_SCALE_DEFAULT_QUEUE_MS);
    nb_err err;
    nb_fn_config before;
    nb_fn_config_copy(&before, &cfg);
    CHECK(apply(&cfg,
                "{\"max_concurrency\":3,\"min_instances\":2,\"idle_timeout_s\":5,"
                "\"max_queue\":0,\"queue_timeout_ms\":250}",
                0, &err) == 0);
    CHECK(cfg.scaling.max_concurrency == 3 && cfg.scaling.min_instances == 2);
    CHECK(cfg.scaling.idle_timeout_s == 5 && cfg.scaling.max_queue == 0);
    CHECK(cfg.scaling.queue_timeout_ms == 250);
    /* Not versioned: equal to before. */
    CHECK(nb_fn_config_equal(&cfg, &before));
    CHECK(!nb_fn_scaling_equal(&cfg.scaling, &before.scaling));
    /* null unsets; 0 disables. */
    CHECK(apply(&cfg, "{\"max_concurrency\":null,\"idle_timeout_s\":null}", 0, &err) == 0);
    CHECK(cfg.scaling.max_concurrency == NB_SCALE_UNSET);
    CHECK(cfg.scaling.idle_timeout_s == NB_SCALE_UNSET);
    CHECK(apply(&cfg, "{\"max_concurrency\":0,\"min_instances\":0}", 0, &err) == 0);
    CHECK(cfg.scaling.max_concurrency == 0);
    expect_fail(&cfg, "{\"min_instances\":1}", 0, NB_E_INVALID_VALUE); /* above max */
    expect_fail(&cfg, "{\"max_concurrency\":-1}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"max_concurrency\":10001}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"max_concurrency\":\"2\"}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"min_instances\":null}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"idle_timeout_s\":0}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"max_queue\":-1}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"queue_timeout_ms\":0}", 0, NB_E_INVALID_VALUE);
    expect_fail(&cfg, "{\"queue_timeout_ms\":1.5}", 0, NB_E_INVALID_VALUE);
    /* The stored form of a version has none of them; the API object has all. */
    json_t *j = nb_fn_config_to_json(&cfg);
    CHECK(!json_object_get(j, "max_concurrency") && !json_object_get(j, "max_queue"));
    json_decref(j);
    /* The scaling-only body: anything else is unknown. */
    nb_fn_scaling sc = cfg.scaling;
    json_t *body = parse("{\"max_queue\":7,\"memory_mb\":256}");
    nb_err_clear(&err);
    CHECK(nb_fn_scaling_apply(&sc, body, &err) < 0 && strcmp(err.code, NB_E_UNKNOWN_FIELD) == 0);
    CHECK(sc.max_queue == cfg.scaling.max_queue); /* unchanged on error */
    json_decref(body);
    body = parse("{\"max_queue\":7,\"max_concurrency\":null}");
    CHECK(nb_fn_scaling_apply(&sc, body, &err) == 0 && sc.max_queue == 7);
    json_decref(body);
    json_t *o = json_object();
    nb_fn_scaling_to_json(&sc, o);
    CHECK(json_is_null(json_object_get(o, "max_concurrency")));
    CHECK(json_integer_value(json_object_get(o, "max_queue")) == 7);
    json_decref(o);
    nb_fn_config_release(&before);
    nb_fn_config_release(&cfg);
}

static void test_handler_files(void)
{
    check_files("python3.12", "app.handler",
                (const char *const[]){"app.py", "app/__init__.py", NULL});
    check_files("python3", "src/app.handler",
                (const char *const[]){"src/app.py", "src/app/__init__.py", NULL});
    check_files("python3", "pkg.mod.handler",
                (const char *const[]){"pkg/mod.py", "pkg/mod/__init__.py", NULL});
    check_files("python3", "src/pkg.mod.handler",
                (const char *const[]){"src/pkg/mod.py", "src/pkg/mod/__init__.py", NULL});
    check_files("nodejs20.x", "index.handler",
                (const char *const[]){"index.js", "index.mjs", "index.cjs", NULL});
    check_files("nodejs", "lib/app.nested.fn",
                (const char *const[]){"lib/app.js", "lib/app.mjs", "lib/app.cjs", NULL});
    check_files("provided.al2023", "whatever", (const char *const[]){"bootstrap", NULL});
    check_files("provided", "x.y", (const char *const[]){"bootstrap", NULL});

    /* The longest handler fits the buffer the gateway uses (1024 bytes). */
    char h[NB_HANDLER_MAX + 1];
    memset(h, 'a', NB_HANDLER_MAX);
    h[NB_HANDLER_MAX] = 0;
    h[NB_HANDLER_MAX - 2] = '.';
    nb_fn_config cfg;
    nb_fn_config_init(&cfg);
    char text[512];
    snprintf(text, sizeof text,
             "{\"runtime\":\"python3\",\"handler\":\"%s\",\"code_sha256\":\"" SHA_A "\"}", h);
    nb_err err;
    CHECK(apply(&cfg, text, 1, &err) == 0);
    char out[1024];
    CHECK(nb_fn_handler_files(&cfg, out, sizeof out) == 0);
    CHECK(strlen(out) == NB_HANDLER_MAX - 2 + 3);
    nb_fn_config_release(&cfg);
}

int main(void)
{
    test_names();
    test_runtimes();
    test_defaults_and_required();
    test_field_errors();
    test_environment();
    test_handlers();
    test_equal_and_json();
    test_handler_files();
    test_scaling();
    printf("test_function: ok\n");
    return 0;
}
