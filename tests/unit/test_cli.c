/* Unit tests of the CLI's pure logic (src/cli/cli.h): option parsing, values, URLs,
 * formatting, locating the daemon, packing a directory. No daemon is needed. */
#include "cli/cli.h"

#include "base/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

static const nb_cli_opt opts[] = {
    {"memory", 0, "MB", "memory"},
    {"env", 'e', "K=V", "env"},
    {"follow", 'f', NULL, "follow"},
    NB_CLI_COMMON_OPTS,
};

static int parse(nb_cli_args *a, nb_err *err, int flags, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return nb_cli_args_parse(a, opts, NB_ARRAY_LEN(opts), argc, argv, flags, err);
}

static void test_args(void)
{
    nb_cli_args a;
    nb_err err;

    char *v1[] = {"deploy",    "hello", "--memory",         "256", "-e", "A=1", "./dir",
                  "--env=B=2", "-f",    "--url=http://x:1", NULL};
    CHECK(parse(&a, &err, 0, v1) == 0);
    CHECK(!a.help);
    CHECK(a.npos == 2);
    CHECK_STR(a.pos[0], "hello");
    CHECK_STR(a.pos[1], "./dir");
    CHECK_STR(nb_cli_args_get(&a, "memory"), "256");
    CHECK_STR(nb_cli_args_get(&a, "env"), "B=2"); /* the last one wins for get() */
    CHECK_STR(nb_cli_args_get(&a, "follow"), "");
    CHECK_STR(nb_cli_args_get(&a, "url"), "http://x:1");
    CHECK(!nb_cli_args_has(&a, "token"));
    int envs = 0; /* ...and every occurrence is kept in order */
    for (int i = 0; i < a.nitems; i++)
        if (strcmp(opts[a.items[i].opt].name, "env") == 0)
            CHECK_STR(a.items[i].value, envs++ == 0 ? "A=1" : "B=2");
    CHECK(envs == 2);
    nb_cli_args_free(&a);

    /* "--" ends options; "-" is a positional. */
    char *v2[] = {"invoke", "fn", "--", "-1", "--memory", NULL};
    CHECK(parse(&a, &err, 0, v2) == 0);
    CHECK(a.npos == 3 && strcmp(a.pos[1], "-1") == 0 && strcmp(a.pos[2], "--memory") == 0);
    nb_cli_args_free(&a);
    char *v3[] = {"invoke", "fn", "-", NULL};
    CHECK(parse(&a, &err, 0, v3) == 0 && a.npos == 2 && strcmp(a.pos[1], "-") == 0);
    nb_cli_args_free(&a);

    /* Errors name the flag. */
    char *v4[] = {"ls", "--bogus=1", NULL};
    CHECK(parse(&a, &err, 0, v4) < 0);
    CHECK_STR(err.msg, "unknown flag --bogus");
    nb_cli_args_free(&a);
    char *v5[] = {"ls", "--memory", NULL};
    CHECK(parse(&a, &err, 0, v5) < 0 && strstr(err.msg, "--memory needs a value"));
    nb_cli_args_free(&a);
    char *v6[] = {"ls", "--follow=yes", NULL};
    CHECK(parse(&a, &err, 0, v6) < 0 && strstr(err.msg, "takes no value"));
    nb_cli_args_free(&a);
    char *v7[] = {"ls", "-x", NULL};
    CHECK(parse(&a, &err, 0, v7) < 0);
    nb_cli_args_free(&a);
    char *v7b[] = {"ls", "-fv", NULL}; /* no bundling */
    CHECK(parse(&a, &err, 0, v7b) < 0);
    nb_cli_args_free(&a);

    /* Help wins over what follows it, not over an error before it. */
    char *v8[] = {"ls", "--help", "--bogus", NULL};
    CHECK(parse(&a, &err, 0, v8) == 0 && a.help);
    nb_cli_args_free(&a);
    char *v9[] = {"ls", "--bogus", "-h", NULL};
    CHECK(parse(&a, &err, 0, v9) < 0);
    nb_cli_args_free(&a);

    /* main()'s mode: stop at the command name. */
    char *v10[] = {"nimbus", "--url", "http://h:1", "-v", "deploy", "--memory", "x", NULL};
    CHECK(parse(&a, &err, NB_CLI_ARGS_STOP_AT_POSITIONAL, v10) == 0);
    CHECK(a.next == 4 && a.npos == 0);
    CHECK_STR(nb_cli_args_get(&a, "url"), "http://h:1");
    CHECK(nb_cli_args_has(&a, "verbose") && !nb_cli_args_has(&a, "memory"));
    nb_cli_args_free(&a);

    /* The help text lists every option and -h. */
    nb_buf b;
    nb_buf_init(&b, 1 << 16);
    nb_cli_args_help(opts, NB_ARRAY_LEN(opts), "deploy", "NAME DIR", "Deploys.", &b);
    CHECK(strncmp(b.data, "usage: nimbus deploy NAME DIR\n", 30) == 0);
    CHECK(strstr(b.data, "  -e, --env K=V  "));
    CHECK(strstr(b.data, "      --memory MB"));
    CHECK(strstr(b.data, "  -h, --help "));
    nb_buf_free(&b);
}

static void test_values(void)
{
    int64_t v;
    CHECK(nb_cli_parse_int("128", 128, 10240, &v) == 0 && v == 128);
    CHECK(nb_cli_parse_int("10240", 128, 10240, &v) == 0 && v == 10240);
    CHECK(nb_cli_parse_int("10241", 128, 10240, &v) < 0);
    CHECK(nb_cli_parse_int("127", 128, 10240, &v) < 0);
    CHECK(nb_cli_parse_int("", 0, 10, &v) < 0);
    CHECK(nb_cli_parse_int("12x", 0, 100, &v) < 0);
    CHECK(nb_cli_parse_int("-5", -10, 10, &v) < 0);
    CHECK(nb_cli_parse_int(" 5", 0, 10, &v) < 0);
    CHECK(nb_cli_parse_int("99999999999999999999999", 0, INT64_MAX, &v) < 0);

    CHECK(nb_cli_parse_duration_ms("30s", &v) == 0 && v == 30000);
    CHECK(nb_cli_parse_duration_ms("10m", &v) == 0 && v == 600000);
    CHECK(nb_cli_parse_duration_ms("2h", &v) == 0 && v == 7200000);
    CHECK(nb_cli_parse_duration_ms("1d", &v) == 0 && v == 86400000);
    CHECK(nb_cli_parse_duration_ms("250ms", &v) == 0 && v == 250);
    CHECK(nb_cli_parse_duration_ms("1h30m", &v) == 0 && v == 5400000);
    CHECK(nb_cli_parse_duration_ms("10", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("m", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("10x", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("-1s", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("9999999999999999999d", &v) < 0);
    CHECK(nb_cli_parse_duration_ms("106751991168d", &v) < 0); /* overflows int64 ms */

    int64_t now = 1763892000123;
    CHECK(nb_cli_parse_since("10m", now, &v) == 0 && v == now - 600000);
    CHECK(nb_cli_parse_since("1763892000000", now, &v) == 0 && v == 1763892000000);
    CHECK(nb_cli_parse_since("100000d", now, &v) == 0 && v == 0); /* clamped */
    CHECK(nb_cli_parse_since("yesterday", now, &v) < 0);

    size_t k;
    CHECK(nb_cli_parse_env("A=1", &k) == 0 && k == 1);
    CHECK(nb_cli_parse_env("DB_URL=postgres://x?a=b", &k) == 0 && k == 6);
    CHECK(nb_cli_parse_env("_X=", &k) == 0 && k == 2);
    CHECK(nb_cli_parse_env("=1", &k) < 0);
    CHECK(nb_cli_parse_env("NOEQ", &k) < 0);
    CHECK(nb_cli_parse_env("1A=x", &k) < 0);
    CHECK(nb_cli_parse_env("A-B=x", &k) < 0);
    CHECK(nb_cli_parse_env("A B=x", &k) < 0);
}

static void test_urls(void)
{
    nb_buf b;
    nb_buf_init(&b, 4096);
    CHECK(nb_cli_escape(&b, "hello-World_1.~") == 0);
    CHECK_STR(b.data, "hello-World_1.~");
    nb_buf_reset(&b);
    CHECK(nb_cli_escape(&b, "a b/c?d%\xc3\xa9") == 0);
    CHECK_STR(b.data, "a%20b%2Fc%3Fd%25%C3%A9");

    CHECK(nb_cli_fn_path(&b, "hello", NULL) == 0);
    CHECK_STR(b.data, "/v1/functions/hello");
    CHECK(nb_cli_fn_path(&b, "../x", "/invoke") == 0);
    CHECK_STR(b.data, "/v1/functions/..%2Fx/invoke");

    CHECK(nb_cli_logs_path(&b, "fn", -1, 0, 0) == 0);
    CHECK_STR(b.data, "/v1/functions/fn/logs");
    CHECK(nb_cli_logs_path(&b, "fn", 1763892000123, 1, 0) == 0);
    CHECK_STR(b.data, "/v1/functions/fn/logs?since=1763892000123&follow=1");
    CHECK(nb_cli_logs_path(&b, "fn", -1, 1, 50) == 0);
    CHECK_STR(b.data, "/v1/functions/fn/logs?follow=1&limit=50");
    CHECK(nb_cli_logs_path(&b, "fn", 0, 0, 5) == 0);
    CHECK_STR(b.data, "/v1/functions/fn/logs?since=0&limit=5");

    CHECK(nb_cli_listen_url("127.0.0.1:9000\n", &b) == 0);
    CHECK_STR(b.data, "http://127.0.0.1:9000");
    CHECK(nb_cli_listen_url("0.0.0.0:8080", &b) == 0);
    CHECK_STR(b.data, "http://127.0.0.1:8080");
    CHECK(nb_cli_listen_url(":8081", &b) == 0);
    CHECK_STR(b.data, "http://127.0.0.1:8081");
    CHECK(nb_cli_listen_url("8082", &b) == 0);
    CHECK_STR(b.data, "http://127.0.0.1:8082");
    CHECK(nb_cli_listen_url("[::]:8083", &b) == 0);
    CHECK_STR(b.data, "http://[::1]:8083");
    CHECK(nb_cli_listen_url("[fe80::1]:80", &b) == 0);
    CHECK_STR(b.data, "http://[fe80::1]:80");
    CHECK(nb_cli_listen_url("example.org:443", &b) == 0);
    CHECK_STR(b.data, "http://example.org:443");
    CHECK(nb_cli_listen_url("https://h.example/", &b) == 0);
    CHECK_STR(b.data, "https://h.example");
    CHECK(nb_cli_listen_url("host:", &b) < 0);
    CHECK(nb_cli_listen_url("host:99999", &b) < 0);
    CHECK(nb_cli_listen_url("::1:80", &b) < 0);
    CHECK(nb_cli_listen_url("", &b) < 0);
    nb_buf_free(&b);
}

static void test_format(void)
{
    nb_buf b;
    nb_buf_init(&b, 1 << 20);
    const char *rec = "{\"ts\":1763892000123,\"version\":2,\"instance\":\"i-3\",\"request_id\":"
                      "\"r-1\",\"stream\":\"stdout\",\"line\":\"hello\"}";
    CHECK(nb_cli_format_log(&b, rec, strlen(rec)) == 0);
    CHECK_STR(b.data, "2025-11-23T10:00:00.123Z [v2 i-3 r-1] hello\n");
    nb_buf_reset(&b);
    rec = "{\"ts\":1763892000000,\"version\":10,\"instance\":\"i-1\",\"stream\":\"stderr\","
          "\"line\":\"oops\"}";
    CHECK(nb_cli_format_log(&b, rec, strlen(rec)) == 0);
    CHECK_STR(b.data, "2025-11-23T10:00:00.000Z [v10 i-1 - stderr] oops\n");
    nb_buf_reset(&b);
    rec = "{\"line\":\"START\"}";
    CHECK(nb_cli_format_log(&b, rec, strlen(rec)) == 0);
    CHECK_STR(b.data, "- [- - -] START\n");
    nb_buf_reset(&b);
    CHECK(nb_cli_format_log(&b, "not json", 8) < 0);
    CHECK(nb_cli_format_log(&b, "[1]", 3) < 0);

    nb_cli_table t;
    const char *const header[] = {"NAME", "RUNTIME", "MEMORY"};
    CHECK(nb_cli_table_init(&t, 3, header) == 0);
    const char *const r1[] = {"hello", "python3", "128MB"};
    const char *const r2[] = {"a-much-longer-name", NULL, "1024MB"};
    CHECK(nb_cli_table_add(&t, r1) == 0 && nb_cli_table_add(&t, r2) == 0);
    nb_buf_reset(&b);
    CHECK(nb_cli_table_render(&t, &b) == 0);
    CHECK_STR(b.data, "NAME                RUNTIME  MEMORY\n"
                      "hello               python3  128MB\n"
                      "a-much-longer-name           1024MB\n");
    nb_cli_table_free(&t);

    json_t *obj = json_loads("{\"name\":\"hello\",\"extra\":true,\"memory_mb\":128,"
                             "\"environment\":{\"A\":\"1\"},\"description\":\"\",\"x\":null}",
                             0, NULL);
    CHECK(obj);
    const char *const order[] = {"name", "memory_mb", "missing", NULL};
    nb_buf_reset(&b);
    CHECK(nb_cli_format_object(&b, obj, order) == 0);
    CHECK_STR(b.data, "name:        hello\n"
                      "memory_mb:   128\n"
                      "extra:       true\n"
                      "environment: {\"A\":\"1\"}\n"
                      "description:\n"
                      "x:\n");
    json_decref(obj);
    json_t *arr = json_array();
    CHECK(nb_cli_format_object(&b, arr, NULL) < 0);
    json_decref(arr);
    nb_buf_free(&b);
}

static char tmp_root[] = "/tmp/nimbus-test-cli-XXXXXX";

static void write_text(const char *path, const char *text, mode_t mode)
{
    CHECK(nb_write_file(path, text, strlen(text), mode) == 0);
    CHECK(chmod(path, mode) == 0); /* nb_write_file's mode passes through the umask */
}

static void test_conn(void)
{
    char data[256], path[300];
    snprintf(data, sizeof data, "%s/data", tmp_root);
    CHECK(nb_mkdir_p(data, 0700) == 0);
    unsetenv("NIMBUS_URL");
    unsetenv("NIMBUS_TOKEN");
    unsetenv("NIMBUS_LISTEN");
    unsetenv("NIMBUS_DATA");

    nb_cli_conn c;
    /* Nothing anywhere: defaults, no token. */
    CHECK(nb_cli_conn_resolve(&c, NULL, NULL, data) == 0);
    CHECK_STR(c.url, "http://127.0.0.1:8080");
    CHECK(c.token == NULL);
    nb_cli_conn_free(&c);

    /* Files in the data dir (given by env), trimmed. */
    snprintf(path, sizeof path, "%s/admin.token", data);
    write_text(path, "  tok-from-file\n", 0600);
    snprintf(path, sizeof path, "%s/listen", data);
    write_text(path, "127.0.0.1:41234\n", 0644);
    setenv("NIMBUS_DATA", data, 1);
    CHECK(nb_cli_conn_resolve(&c, NULL, NULL, NULL) == 0);
    CHECK_STR(c.url, "http://127.0.0.1:41234");
    CHECK_STR(c.token, "tok-from-file");
    CHECK_STR(c.data, data);
    nb_cli_conn_free(&c);

    /* Env beats files, flags beat env; trailing slashes go. */
    setenv("NIMBUS_URL", "http://env:1/", 1);
    setenv("NIMBUS_TOKEN", "tok-env", 1);
    CHECK(nb_cli_conn_resolve(&c, NULL, NULL, NULL) == 0);
    CHECK_STR(c.url, "http://env:1");
    CHECK_STR(c.token, "tok-env");
    nb_cli_conn_free(&c);
    CHECK(nb_cli_conn_resolve(&c, "http://flag:2", "tok-flag", NULL) == 0);
    CHECK_STR(c.url, "http://flag:2");
    CHECK_STR(c.token, "tok-flag");
    nb_cli_conn_free(&c);
    unsetenv("NIMBUS_URL");
    unsetenv("NIMBUS_TOKEN");

    /* NIMBUS_LISTEN only when DATA/listen is missing. */
    setenv("NIMBUS_LISTEN", "0.0.0.0:5555", 1);
    CHECK(nb_cli_conn_resolve(&c, NULL, NULL, NULL) == 0);
    CHECK_STR(c.url, "http://127.0.0.1:41234");
    nb_cli_conn_free(&c);
    CHECK(unlink(path) == 0);
    CHECK(nb_cli_conn_resolve(&c, NULL, NULL, NULL) == 0);
    CHECK_STR(c.url, "http://127.0.0.1:5555");
    nb_cli_conn_free(&c);
    unsetenv("NIMBUS_LISTEN");
    unsetenv("NIMBUS_DATA");
}

/* Reads a packed bundle back: "path type perm [target|content]" lines. */
static void list_bundle(const nb_buf *tgz, nb_buf *out)
{
    struct archive *ar = archive_read_new();
    archive_read_support_filter_all(ar);
    archive_read_support_format_all(ar);
    CHECK(archive_read_open_memory(ar, tgz->data, tgz->len) == ARCHIVE_OK);
    CHECK(archive_filter_code(ar, 0) == ARCHIVE_FILTER_GZIP);
    struct archive_entry *e;
    while (archive_read_next_header(ar, &e) == ARCHIVE_OK) {
        CHECK(archive_entry_uid(e) == 0 && archive_entry_mtime(e) == 0);
        mode_t type = archive_entry_filetype(e);
        nb_buf_appendf(out, "%s %c %o", archive_entry_pathname(e),
                       type == AE_IFDIR   ? 'd'
                       : type == AE_IFLNK ? 'l'
                                          : 'f',
                       (unsigned)archive_entry_perm(e));
        if (type == AE_IFLNK) nb_buf_appendf(out, " -> %s", archive_entry_symlink(e));
        if (type == AE_IFREG) {
            char content[64] = {0};
            la_ssize_t n = archive_read_data(ar, content, sizeof content - 1);
            CHECK(n >= 0);
            nb_buf_appendf(out, " '%s'", content);
        }
        nb_buf_appendf(out, "\n");
    }
    archive_read_free(ar);
}

static void test_pack(void)
{
    char dir[256], p[400];
    snprintf(dir, sizeof dir, "%s/bundle", tmp_root);
    snprintf(p, sizeof p, "%s/lib/empty", dir);
    CHECK(nb_mkdir_p(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/app.py", dir);
    write_text(p, "print(1)", 0600);
    snprintf(p, sizeof p, "%s/bootstrap", dir);
    write_text(p, "#!/bin/sh", 0700);
    snprintf(p, sizeof p, "%s/lib/util.py", dir);
    write_text(p, "x = 1", 0644);
    snprintf(p, sizeof p, "%s/.hidden", dir);
    write_text(p, "h", 0644);
    snprintf(p, sizeof p, "%s/link", dir);
    CHECK(symlink("lib/util.py", p) == 0);
    snprintf(p, sizeof p, "%s/dangling", dir);
    CHECK(symlink("/nonexistent/target", p) == 0);

    nb_err err;
    nb_buf tgz, list;
    nb_buf_init(&tgz, 1 << 20);
    nb_buf_init(&list, 1 << 16);
    CHECK(nb_cli_pack_dir(dir, &tgz, &err) == 0);
    list_bundle(&tgz, &list);
    CHECK_STR(list.data, ".hidden f 644 'h'\n"
                         "app.py f 644 'print(1)'\n"
                         "bootstrap f 755 '#!/bin/sh'\n"
                         "dangling l 777 -> /nonexistent/target\n"
                         "lib/ d 755\n"
                         "lib/empty/ d 755\n"
                         "lib/util.py f 644 'x = 1'\n"
                         "link l 777 -> lib/util.py\n");

    /* Same tree, new times: same bytes (so a redeploy is a no-op). */
    char sha1[65], sha2[65];
    nb_sha256_hex(tgz.data, tgz.len, sha1);
    sleep(1);
    snprintf(p, sizeof p, "%s/app.py", dir);
    write_text(p, "print(1)", 0600);
    nb_buf_reset(&tgz);
    CHECK(nb_cli_pack_dir(dir, &tgz, &err) == 0);
    nb_sha256_hex(tgz.data, tgz.len, sha2);
    CHECK_STR(sha2, sha1);

    /* The cap of the output buffer is the size limit. */
    nb_buf small;
    nb_buf_init(&small, 64);
    CHECK(nb_cli_pack_dir(dir, &small, &err) < 0);
    CHECK(strstr(err.msg, "over 64 bytes"));
    nb_buf_free(&small);

    /* A fifo cannot go in a bundle. */
    snprintf(p, sizeof p, "%s/lib/pipe", dir);
    CHECK(mkfifo(p, 0600) == 0);
    nb_buf_reset(&tgz);
    CHECK(nb_cli_pack_dir(dir, &tgz, &err) < 0);
    CHECK(strstr(err.msg, "lib/pipe is not a regular file"));

    snprintf(p, sizeof p, "%s/missing", tmp_root);
    CHECK(nb_cli_pack_dir(p, &tgz, &err) < 0);

    nb_buf_free(&tgz);
    nb_buf_free(&list);
}

/* The helpers of the gateway commands (cmd_gateway.c). */
static void test_gateway(void)
{
    CHECK(nb_cli_valid_name("shop_v2-x"));
    CHECK(!nb_cli_valid_name(""));
    CHECK(!nb_cli_valid_name("a b"));
    CHECK(!nb_cli_valid_name("a/b"));
    CHECK(nb_cli_valid_name(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 64 */
    CHECK(!nb_cli_valid_name(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
    CHECK(nb_cli_valid_method("GET") && nb_cli_valid_method("ANY") && nb_cli_valid_method("get"));
    CHECK(!nb_cli_valid_method("") && !nb_cli_valid_method("GE T") && !nb_cli_valid_method("a/b"));

    double d;
    CHECK(nb_cli_parse_real("2.5", 0, 10, &d) == 0 && d == 2.5);
    CHECK(nb_cli_parse_real("10", 0, 10, &d) == 0 && d == 10);
    CHECK(nb_cli_parse_real(".5", 0, 1, &d) == 0 && d == 0.5);
    CHECK(nb_cli_parse_real("1.5", 0, 1, &d) < 0);
    CHECK(nb_cli_parse_real("1e3", 0, 1e6, &d) < 0);
    CHECK(nb_cli_parse_real("-1", -5, 5, &d) < 0);
    CHECK(nb_cli_parse_real("1.", 0, 5, &d) < 0);
    CHECK(nb_cli_parse_real("", 0, 5, &d) < 0);
    CHECK(nb_cli_parse_real(".", 0, 5, &d) < 0);

    int64_t n;
    const char *period = NULL;
    CHECK(nb_cli_parse_quota("10000/day", &n, &period) == 0 && n == 10000);
    CHECK_STR(period, "day");
    CHECK(nb_cli_parse_quota("5/month", &n, &period) == 0 && n == 5);
    CHECK_STR(period, "month");
    CHECK(nb_cli_parse_quota("0/day", &n, &period) < 0);
    CHECK(nb_cli_parse_quota("10/week", &n, &period) < 0);
    CHECK(nb_cli_parse_quota("/day", &n, &period) < 0);
    CHECK(nb_cli_parse_quota("10", &n, &period) < 0);
    CHECK(nb_cli_parse_quota("x/day", &n, &period) < 0);

    json_t *arr = json_array();
    CHECK(nb_cli_split_list("GET, POST ,x-a", arr) == 0);
    char *dump = json_dumps(arr, JSON_COMPACT);
    CHECK_STR(dump, "[\"GET\",\"POST\",\"x-a\"]");
    free(dump);
    json_array_clear(arr);
    CHECK(nb_cli_split_list("a,,b", arr) < 0);
    CHECK(nb_cli_split_list("a,", arr) < 0);
    CHECK(nb_cli_split_list("", arr) < 0);
    json_decref(arr);

    nb_buf b;
    nb_buf_init(&b, 4096);
    CHECK(nb_cli_obj_path(&b, "apis", "shop", "/routes") == 0);
    CHECK_STR(b.data, "/v1/apis/shop/routes");
    CHECK(nb_cli_obj_path(&b, "keys", NULL, NULL) == 0);
    CHECK_STR(b.data, "/v1/keys");

    nb_buf_reset(&b);
    json_t *rec =
        json_pack("{s:I, s:s, s:s, s:s, s:i, s:f, s:s, s:s, s:s, s:b, s:s}", "time",
                  (json_int_t)1763892000123, "route", "GET /items/{id}", "method", "GET", "path",
                  "/shop/items/7", "status", 200, "latency_ms", 12.5, "consumer", "alice",
                  "consumer_kind", "key", "request_id", "req-1", "cold_start", 1, "error_code", "");
    CHECK(nb_cli_format_access(&b, rec) == 0);
    CHECK_STR(b.data,
              "2025-11-23T10:00:00.123Z 200 GET /shop/items/7 12.5ms key:alice /items/{id} req-1 "
              "cold\n");
    json_decref(rec);
    nb_buf_reset(&b);
    rec = json_pack("{s:i, s:s}", "status", 429, "error_code", "throttled");
    CHECK(nb_cli_format_access(&b, rec) == 0);
    CHECK_STR(b.data, "- 429 - - - - - - throttled\n");
    json_decref(rec);
    CHECK(nb_cli_format_access(&b, NULL) < 0);
    nb_buf_free(&b);
}

static void test_events(void)
{
    size_t k;
    CHECK(nb_cli_parse_attr("k=v", &k) == 0 && k == 1);
    CHECK(nb_cli_parse_attr("trace.id=a=b", &k) == 0 && k == 8);
    CHECK(nb_cli_parse_attr("x-y=", &k) == 0 && k == 3);
    CHECK(nb_cli_parse_attr("=v", &k) < 0);
    CHECK(nb_cli_parse_attr("noeq", &k) < 0);
    CHECK(nb_cli_parse_attr("a b=v", &k) < 0);

    /* topic publish's attribute flags: the flag, never the text, says the SNS type. */
    json_t *ta = json_object();
    CHECK(nb_cli_topic_attr("attr", "zip=01234", ta) == 0);
    CHECK(nb_cli_topic_attr("attr-number", "n=-2.5e3", ta) == 0);
    CHECK(nb_cli_topic_attr("attr-list", "tags=a, b", ta) == 0);
    json_t *want =
        json_loads("{\"zip\":{\"Type\":\"String\",\"Value\":\"01234\"},"
                   "\"n\":{\"Type\":\"Number\",\"Value\":\"-2.5e3\"},"
                   "\"tags\":{\"Type\":\"String.Array\",\"Value\":\"[\\\"a\\\",\\\"b\\\"]\"}}",
                   0, NULL);
    CHECK(want && json_equal(ta, want));
    json_decref(want);
    CHECK(nb_cli_topic_attr("attr", "e=", ta) < 0);
    CHECK(nb_cli_topic_attr("attr-number", "n=ten", ta) < 0);
    CHECK(nb_cli_topic_attr("attr-number", "n=0x10", ta) < 0);
    CHECK(nb_cli_topic_attr("attr-number", "n= 5", ta) < 0);
    CHECK(nb_cli_topic_attr("attr-list", "l=a,,b", ta) < 0);
    CHECK(nb_cli_topic_attr("attr", "noeq", ta) < 0);
    CHECK(nb_cli_topic_attr("attr-bool", "b=1", ta) < 0);
    CHECK(json_object_size(ta) == 3);
    json_decref(ta);

    nb_buf b;
    nb_buf_init(&b, 4096);
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:i}", "queued", 3, "in_flight", 1, "oldest_ms",
                          12999, "retries", 2, "failed", 0);
    CHECK(nb_cli_format_async(&b, a) == 0);
    CHECK_STR(b.data, "queued=3 in_flight=1 oldest=12s retries=2 failed=0");
    json_decref(a);
    nb_buf_reset(&b);
    a = json_pack("{s:i}", "failed", 4);
    CHECK(nb_cli_format_async(&b, a) == 0);
    CHECK_STR(b.data, "queued=- in_flight=- oldest=- retries=- failed=4");
    json_decref(a);
    CHECK(nb_cli_format_async(&b, NULL) < 0);
    nb_buf_free(&b);
}

int main(void)
{
    CHECK(mkdtemp(tmp_root) != NULL);
    test_args();
    test_values();
    test_urls();
    test_gateway();
    test_events();
    test_format();
    test_conn();
    test_pack();
    nb_rm_rf(tmp_root);
    printf("test_cli: ok\n");
    return 0;
}
