/* Unit tests of src/store/ with the real SQLite backend in a fresh mkdtemp directory: schema and
 * pragmas, publishing versions, reads, listing, deleting, code blobs, reopening, and refusing a
 * database newer than the binary. The test peeks at the file with its own sqlite3 connection
 * where the ops table has no way to say (pragmas, cascades, extra namespaces). */
#include "store/store.h"

#include "base/util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static char tmpdir[] = "/tmp/nb-test-store-XXXXXX";
static char dbpath[512];

/* Runs one SQL statement on a side connection; returns the first column of the first row as
 * an integer (or -1 when there is no row). */
static long long side_int(const char *sql)
{
    sqlite3 *db;
    CHECK(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "side sql %s: %s\n", sql, sqlite3_errmsg(db));
        exit(1);
    }
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fprintf(stderr, "side sql %s: %s\n", sql, sqlite3_errmsg(db));
        exit(1);
    }
    long long v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void side_text(const char *sql, char *out, size_t size)
{
    sqlite3 *db;
    CHECK(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void cfg_make(nb_fn_config *cfg, const char *sha, int memory)
{
    nb_fn_config_init(cfg);
    char text[512];
    snprintf(text, sizeof text,
             "{\"runtime\":\"python3.12\",\"handler\":\"app.handler\",\"code_sha256\":\"%s\","
             "\"memory_mb\":%d,\"environment\":{\"KEY\":\"v\"}}",
             sha, memory);
    json_t *j = json_loads(text, 0, NULL);
    nb_err err;
    CHECK(j && nb_fn_config_apply(cfg, j, 1, &err) == 0);
    json_decref(j);
}

static nb_store *open_store(void)
{
    nb_err err = {0};
    nb_store *s = nb_store_sqlite_open(dbpath, &err);
    if (!s) {
        fprintf(stderr, "open %s: %s\n", dbpath, err.msg);
        exit(1);
    }
    CHECK_STR(s->ops->name, "sqlite");
    return s;
}

static void test_schema(void)
{
    nb_store *s = open_store();
    CHECK(nb_store_sqlite_schema_version() >= 1);
    CHECK(side_int("PRAGMA user_version") == nb_store_sqlite_schema_version());
    char mode[32];
    side_text("PRAGMA journal_mode", mode, sizeof mode);
    CHECK_STR(mode, "wal");
    CHECK(side_int("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                   "('namespaces', 'functions', 'versions', 'code_blobs')") == 4);
    CHECK(side_int("SELECT count(*) FROM namespaces WHERE name = 'default'") == 1);
    s->ops->close(s);
    /* Reopening an up-to-date database migrates nothing and changes nothing. */
    s = open_store();
    CHECK(side_int("PRAGMA user_version") == nb_store_sqlite_schema_version());
    CHECK(side_int("SELECT count(*) FROM namespaces") == 1);
    s->ops->close(s);
}

static void test_put_get(nb_store *s)
{
    nb_fn_config c1, c2;
    cfg_make(&c1, SHA_A, 128);
    nb_put_result r;
    nb_err err = {0};
    int64_t t0 = nb_now_ms();

    CHECK(s->ops->fn_put(s, "default", "hello", &c1, &r, &err) == 0);
    CHECK(r.created == 1 && r.changed == 1);
    CHECK(r.version && r.version->version == 1);
    CHECK_STR(r.version->name, "hello");
    CHECK_STR(r.version->ns, "default");
    CHECK(r.updated_at >= t0 && r.version->created_at == r.updated_at);
    CHECK(r.version->fn_created_at == r.version->created_at);
    CHECK(nb_fn_config_equal(&r.version->cfg, &c1));
    int64_t created_at = r.version->fn_created_at, first_update = r.updated_at;
    nb_fn_version_unref(r.version);

    /* Same config again: nothing published, the latest version comes back. */
    CHECK(s->ops->fn_put(s, "default", "hello", &c1, &r, &err) == 0);
    CHECK(r.created == 0 && r.changed == 0);
    CHECK(r.version && r.version->version == 1);
    CHECK(r.updated_at == first_update);
    nb_fn_version_unref(r.version);
    CHECK(side_int("SELECT count(*) FROM versions WHERE name = 'hello'") == 1);

    /* A copy is equal too (equality is by value, not identity). */
    nb_fn_config copy;
    nb_fn_config_copy(&copy, &c1);
    CHECK(s->ops->fn_put(s, "default", "hello", &copy, &r, &err) == 0);
    CHECK(r.changed == 0);
    nb_fn_version_unref(r.version);
    nb_fn_config_release(&copy);

    /* A change publishes v2 and keeps the function's creation time. */
    usleep(2000);
    cfg_make(&c2, SHA_B, 256);
    CHECK(s->ops->fn_put(s, "default", "hello", &c2, &r, &err) == 0);
    CHECK(r.created == 0 && r.changed == 1);
    CHECK(r.version->version == 2);
    CHECK(r.version->fn_created_at == created_at);
    CHECK(r.updated_at > first_update);
    nb_fn_version_unref(r.version);

    /* fn_get: latest, by version, and the 404s. */
    int64_t upd = 0;
    nb_fn_version *v = s->ops->fn_get(s, "default", "hello", 0, &upd, &err);
    CHECK(v && v->version == 2 && v->cfg.memory_mb == 256);
    CHECK_STR(v->cfg.code_sha256, SHA_B);
    CHECK(v->cfg.kind == NB_RT_PYTHON);
    CHECK(v->fn_created_at == created_at);
    CHECK(upd == v->created_at);
    CHECK(nb_fn_config_equal(&v->cfg, &c2));
    nb_fn_version_unref(v);
    v = s->ops->fn_get(s, "default", "hello", 1, NULL, &err);
    CHECK(v && v->version == 1 && v->cfg.memory_mb == 128);
    CHECK(nb_fn_config_equal(&v->cfg, &c1));
    CHECK_STR(json_string_value(json_object_get(v->cfg.environment, "KEY")), "v");
    nb_fn_version_unref(v);

    nb_err_clear(&err);
    CHECK(s->ops->fn_get(s, "default", "hello", 3, NULL, &err) == NULL);
    CHECK(err.status == 404);
    CHECK_STR(err.code, NB_E_NOT_FOUND);
    CHECK(strstr(err.msg, "version 3") != NULL);
    nb_err_clear(&err);
    CHECK(s->ops->fn_get(s, "default", "nope", 0, NULL, &err) == NULL);
    CHECK(err.status == 404);
    CHECK_STR(err.code, NB_E_NOT_FOUND);
    nb_err_clear(&err);
    CHECK(s->ops->fn_get(s, "other", "hello", 0, NULL, &err) == NULL); /* keyed by namespace */
    CHECK(err.status == 404);

    /* Going back to the v1 config is a change too: v3, equal to v1. */
    CHECK(s->ops->fn_put(s, "default", "hello", &c1, &r, &err) == 0);
    CHECK(r.changed == 1 && r.version->version == 3);
    nb_fn_version_unref(r.version);

    /* Publishing into a namespace that does not exist is a clean 404, nothing written. */
    nb_err_clear(&err);
    CHECK(s->ops->fn_put(s, "ghost", "hello", &c1, &r, &err) == -1);
    CHECK(err.status == 404);
    CHECK_STR(err.code, NB_E_NOT_FOUND);
    CHECK(strstr(err.msg, "ghost") != NULL);
    CHECK(r.version == NULL);
    CHECK(side_int("SELECT count(*) FROM functions WHERE ns = 'ghost'") == 0);
    /* ... and the store is not left inside a transaction. */
    CHECK(s->ops->fn_put(s, "default", "after", &c1, &r, &err) == 0);
    nb_fn_version_unref(r.version);
    CHECK(s->ops->fn_delete(s, "default", "after", &err) == 0);

    nb_fn_config_release(&c1);
    nb_fn_config_release(&c2);
}

/* Scaling settings live on the function: changing only them publishes nothing, every version
 * read carries the current ones, and a stored row without them reads as the defaults. */
static void test_scaling(nb_store *s)
{
    nb_fn_config c;
    cfg_make(&c, SHA_A, 128);
    nb_put_result r;
    nb_err err = {0};
    CHECK(s->ops->fn_put(s, "default", "sc", &c, &r, &err) == 0);
    CHECK(r.changed == 1 && r.scaling_changed == 0 && r.version->version == 1);
    nb_fn_version_unref(r.version);
    c.scaling.max_concurrency = 2;
    c.scaling.min_instances = 1;
    CHECK(s->ops->fn_put(s, "default", "sc", &c, &r, &err) == 0);
    CHECK(r.changed == 0 && r.scaling_changed == 1 && r.version->version == 1);
    CHECK(r.version->cfg.scaling.max_concurrency == 2 && r.version->cfg.scaling.min_instances == 1);
    nb_fn_version_unref(r.version);
    CHECK(side_int("SELECT count(*) FROM versions WHERE name = 'sc'") == 1);
    CHECK(s->ops->fn_put(s, "default", "sc", &c, &r, &err) == 0);
    CHECK(r.changed == 0 && r.scaling_changed == 0);
    nb_fn_version_unref(r.version);
    /* A new version keeps them; an old version read now carries them too. */
    c.memory_mb = 256;
    CHECK(s->ops->fn_put(s, "default", "sc", &c, &r, &err) == 0);
    CHECK(r.changed == 1 && r.version->version == 2);
    nb_fn_version_unref(r.version);
    nb_fn_version *v = s->ops->fn_get(s, "default", "sc", 1, NULL, &err);
    CHECK(v && v->cfg.memory_mb == 128 && v->cfg.scaling.max_concurrency == 2);
    nb_fn_version_unref(v);
    /* A row from before the column existed. */
    sqlite3 *db;
    CHECK(sqlite3_open(dbpath, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "UPDATE functions SET scaling = NULL WHERE name = 'sc'", NULL, NULL,
                       NULL) == SQLITE_OK);
    sqlite3_close(db);
    v = s->ops->fn_get(s, "default", "sc", 0, NULL, &err);
    CHECK(v && v->cfg.scaling.max_concurrency == NB_SCALE_UNSET);
    CHECK(v->cfg.scaling.max_queue == NB_SCALE_DEFAULT_QUEUE && v->cfg.scaling.min_instances == 0);
    nb_fn_version_unref(v);
    CHECK(s->ops->fn_delete(s, "default", "sc", &err) == 0);
    nb_fn_config_release(&c);
}

static void test_list_versions(nb_store *s)
{
    nb_fn_config c;
    cfg_make(&c, SHA_A, 512);
    nb_put_result r;
    nb_err err = {0};
    /* Insert out of order; list sorts by name. */
    const char *names[] = {"zeta", "alpha", "Mid", "beta"};
    for (size_t i = 0; i < 4; i++) {
        CHECK(s->ops->fn_put(s, "default", names[i], &c, &r, &err) == 0);
        nb_fn_version_unref(r.version);
    }
    /* A second namespace, made by hand: the ops table has no call for it yet. */
    CHECK(side_int("INSERT INTO namespaces VALUES ('team', 0)") == -1);
    CHECK(s->ops->fn_put(s, "team", "alpha", &c, &r, &err) == 0);
    CHECK(r.created == 1 && r.version->version == 1); /* separate from default/alpha */
    nb_fn_version_unref(r.version);

    nb_fn_version **vs = NULL;
    int64_t *upd = NULL;
    size_t n = 0;
    CHECK(s->ops->fn_list(s, "default", &vs, &upd, &n, &err) == 0);
    CHECK(n == 5);                                                  /* + hello */
    const char *want[] = {"Mid", "alpha", "beta", "hello", "zeta"}; /* byte order */
    for (size_t i = 0; i < n; i++) {
        CHECK_STR(vs[i]->name, want[i]);
        CHECK_STR(vs[i]->ns, "default");
        CHECK(upd[i] > 0);
    }
    CHECK(vs[3]->version == 3); /* the latest version of each */
    nb_store_free_versions(vs, n);
    free(upd);

    CHECK(s->ops->fn_list(s, "team", &vs, NULL, &n, &err) == 0);
    CHECK(n == 1);
    CHECK_STR(vs[0]->name, "alpha");
    CHECK_STR(vs[0]->ns, "team");
    nb_store_free_versions(vs, n);

    CHECK(s->ops->fn_list(s, "empty", &vs, NULL, &n, &err) == 0);
    CHECK(n == 0);
    nb_store_free_versions(vs, n);

    CHECK(s->ops->fn_list(s, NULL, &vs, NULL, &n, &err) == 0); /* every namespace */
    CHECK(n == 6);
    CHECK_STR(vs[5]->ns, "team");
    nb_store_free_versions(vs, n);

    /* fn_versions: every version, oldest first. */
    CHECK(s->ops->fn_versions(s, "default", "hello", &vs, &n, &err) == 0);
    CHECK(n == 3);
    for (size_t i = 0; i < n; i++)
        CHECK(vs[i]->version == (int64_t)i + 1);
    CHECK(vs[0]->cfg.memory_mb == 128 && vs[1]->cfg.memory_mb == 256 &&
          vs[2]->cfg.memory_mb == 128);
    nb_store_free_versions(vs, n);
    nb_err_clear(&err);
    nb_fn_version *sentinel[1] = {NULL};
    vs = sentinel; /* must be reset, not left pointing at anything */
    CHECK(s->ops->fn_versions(s, "default", "nope", &vs, &n, &err) == -1);
    CHECK(err.status == 404);
    CHECK(vs == NULL && n == 0);
    nb_fn_config_release(&c);
}

static void test_delete(nb_store *s)
{
    nb_err err = {0};
    CHECK(side_int("SELECT count(*) FROM versions WHERE ns = 'default' AND name = 'hello'") == 3);
    CHECK(s->ops->fn_delete(s, "default", "hello", &err) == 0);
    CHECK(side_int("SELECT count(*) FROM versions WHERE ns = 'default' AND name = 'hello'") == 0);
    CHECK(side_int("SELECT count(*) FROM functions WHERE ns = 'default' AND name = 'hello'") == 0);
    nb_err_clear(&err);
    CHECK(s->ops->fn_delete(s, "default", "hello", &err) == -1);
    CHECK(err.status == 404);
    CHECK_STR(err.code, NB_E_NOT_FOUND);
    nb_err_clear(&err);
    CHECK(s->ops->fn_get(s, "default", "hello", 0, NULL, &err) == NULL && err.status == 404);
    nb_err_clear(&err);
    CHECK(s->ops->fn_get(s, "default", "hello", 1, NULL, &err) == NULL && err.status == 404);
    nb_fn_version **vs;
    size_t n;
    CHECK(s->ops->fn_versions(s, "default", "hello", &vs, &n, &err) == -1 && err.status == 404);
    /* Namespaced: deleting team/alpha leaves default/alpha. */
    CHECK(s->ops->fn_delete(s, "team", "alpha", &err) == 0);
    nb_fn_version *v = s->ops->fn_get(s, "default", "alpha", 0, NULL, &err);
    CHECK(v != NULL);
    nb_fn_version_unref(v);
    CHECK(s->ops->fn_delete(s, "team", "alpha", &err) == -1 && err.status == 404);

    /* A deleted name starts over at v1. */
    nb_fn_config c;
    cfg_make(&c, SHA_A, 128);
    nb_put_result r;
    CHECK(s->ops->fn_put(s, "default", "hello", &c, &r, &err) == 0);
    CHECK(r.created == 1 && r.version->version == 1);
    nb_fn_version_unref(r.version);
    nb_fn_config_release(&c);
}

static void test_blobs(nb_store *s)
{
    nb_err err = {0};
    nb_code_blob b = {.size = 1234, .unpacked_size = 5678, .files = 9};
    memcpy(b.sha256, SHA_A, 65);
    nb_code_blob got;
    CHECK(s->ops->blob_get(s, SHA_A, &got, &err) == 0);
    CHECK(s->ops->blob_put(s, &b, &err) == 0);
    memset(&got, 0, sizeof got);
    CHECK(s->ops->blob_get(s, SHA_A, &got, &err) == 1);
    CHECK_STR(got.sha256, SHA_A);
    CHECK(got.size == 1234 && got.unpacked_size == 5678 && got.files == 9);
    /* Content-addressed: a second put of the same sha is a no-op, not an error. */
    nb_code_blob b2 = b;
    b2.size = 1;
    CHECK(s->ops->blob_put(s, &b2, &err) == 0);
    CHECK(s->ops->blob_get(s, SHA_A, &got, &err) == 1 && got.size == 1234);
    CHECK(s->ops->blob_get(s, SHA_B, &got, &err) == 0);
    /* Large values survive (int64). */
    nb_code_blob big = {.size = 5000000000LL, .unpacked_size = 6000000000LL, .files = 20000};
    memcpy(big.sha256, SHA_B, 65);
    CHECK(s->ops->blob_put(s, &big, &err) == 0);
    CHECK(s->ops->blob_get(s, SHA_B, &got, &err) == 1);
    CHECK(got.size == 5000000000LL && got.unpacked_size == 6000000000LL);
}

static void test_corrupt_row(nb_store *s)
{
    /* A stored config that no longer parses is an error, not a crash or a half-built version. */
    CHECK(
        side_int("UPDATE versions SET config = '{broken' WHERE ns = 'default' AND name = 'zeta'") ==
        -1);
    nb_err err;
    memset(&err, 0x55, sizeof err); /* callers may pass an uninitialised error */
    CHECK(s->ops->fn_get(s, "default", "zeta", 0, NULL, &err) == NULL);
    CHECK(err.status == 500);
    CHECK(strstr(err.msg, "stored config") != NULL);
    nb_fn_version **vs = NULL;
    size_t n = 0;
    memset(&err, 0x55, sizeof err);
    CHECK(s->ops->fn_list(s, "default", &vs, NULL, &n, &err) == -1);
    CHECK(err.status == 500 && strstr(err.msg, "stored config") != NULL);
    CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL);
    /* A stored config that parses but no longer validates (say, a retired runtime). */
    nb_err_clear(&err);
    CHECK(s->ops->fn_delete(s, "default", "zeta", &err) == 0); /* can still be removed */
    CHECK(side_int("UPDATE versions SET config = json_set(config, '$.runtime', 'cobol')"
                   " WHERE ns = 'default' AND name = 'beta'") == -1);
    memset(&err, 0, sizeof err);
    CHECK(s->ops->fn_get(s, "default", "beta", 0, NULL, &err) == NULL);
    CHECK(err.status == 500 && strstr(err.msg, "stored config") != NULL); /* not the caller's 4xx */
    CHECK_STR(err.code, NB_E_INTERNAL);
    nb_err_clear(&err);
    CHECK(s->ops->fn_delete(s, "default", "beta", &err) == 0);
    CHECK(s->ops->fn_list(s, "default", &vs, NULL, &n, &err) == 0);
    CHECK(n == 3);
    nb_store_free_versions(vs, n);
}

static void test_objects(nb_store *s)
{
    nb_err err = {0};
    int created = -1;
    CHECK(s->ops->obj_put(s, "default", "api", "shop", "{\"a\":1}", NB_OBJ_CREATE, &created,
                          &err) == 0);
    CHECK(created == 1);
    /* CREATE of an existing object is a conflict and changes nothing. */
    CHECK(s->ops->obj_put(s, "default", "api", "shop", "{\"a\":2}", NB_OBJ_CREATE, NULL, &err) ==
          -1);
    CHECK(err.status == 409);
    CHECK(s->ops->obj_put(s, "default", "api", "nope", "{}", NB_OBJ_UPDATE, NULL, &err) == -1);
    CHECK(err.status == 404);
    CHECK(s->ops->obj_put(s, "default", "api", "shop", "{\"a\":3}", NB_OBJ_UPSERT, &created,
                          &err) == 0);
    CHECK(created == 0);
    nb_obj o = {0};
    CHECK(s->ops->obj_get(s, "default", "api", "shop", &o, &err) == 1);
    CHECK_STR(o.body, "{\"a\":3}");
    CHECK(o.updated_at >= o.created_at);
    nb_obj_clear(&o);
    CHECK(s->ops->obj_get(s, "other", "api", "shop", &o, &err) == 0);
    /* Routes of two APIs, listed by prefix and deleted with their API by prefix. */
    CHECK(s->ops->obj_put(s, "default", "route", "shop/1", "{}", NB_OBJ_CREATE, NULL, &err) == 0);
    CHECK(s->ops->obj_put(s, "default", "route", "shop/2", "{}", NB_OBJ_CREATE, NULL, &err) == 0);
    CHECK(s->ops->obj_put(s, "default", "route", "shopx/1", "{}", NB_OBJ_CREATE, NULL, &err) == 0);
    nb_obj *list;
    size_t n;
    CHECK(s->ops->obj_list(s, "default", "route", "shop/", &list, &n, &err) == 0);
    CHECK(n == 2);
    CHECK_STR(list[0].name, "shop/1");
    CHECK_STR(list[1].name, "shop/2");
    nb_obj_free_list(list, n);
    CHECK(s->ops->obj_list(s, NULL, NULL, NULL, &list, &n, &err) == 0);
    CHECK(n == 4);
    nb_obj_free_list(list, n);
    CHECK(s->ops->obj_delete(s, "default", "route", "shop/*", &err) == 0);
    CHECK(s->ops->obj_list(s, "default", "route", NULL, &list, &n, &err) == 0);
    CHECK(n == 1);
    CHECK_STR(list[0].name, "shopx/1");
    nb_obj_free_list(list, n);
    CHECK(s->ops->obj_delete(s, "default", "api", "nope", &err) == -1);
    CHECK(err.status == 404);
    CHECK(s->ops->obj_delete(s, "default", "api", "shop", &err) == 0);
    CHECK(s->ops->obj_get(s, "default", "api", "shop", &o, &err) == 0);
    CHECK(s->ops->obj_delete(s, "default", "route", "shopx/1", &err) == 0);

    /* Upserts in one commit: new objects made, existing ones replaced. */
    CHECK(s->ops->obj_put(s, "_system", "fired", "a", "{\"last\":1}", NB_OBJ_CREATE, NULL, &err) ==
          0);
    nb_obj many[2] = {{.ns = "_system", .kind = "fired", .name = "a", .body = "{\"last\":2}"},
                      {.ns = "_system", .kind = "fired", .name = "b", .body = "{\"last\":3}"}};
    CHECK(s->ops->obj_upsert_many(s, many, 2, &err) == 0);
    CHECK(s->ops->obj_list(s, "_system", "fired", NULL, &list, &n, &err) == 0);
    CHECK(n == 2);
    CHECK_STR(list[0].body, "{\"last\":2}");
    CHECK_STR(list[1].body, "{\"last\":3}");
    nb_obj_free_list(list, n);
    CHECK(s->ops->obj_delete(s, "_system", "fired", "*", &err) == 0);
}

static void test_reopen_and_newer(void)
{
    nb_store *s = open_store();
    nb_err err = {0};
    nb_fn_version *v = s->ops->fn_get(s, "default", "alpha", 0, NULL, &err);
    CHECK(v && v->version == 1 && v->cfg.memory_mb == 512);
    nb_fn_version_unref(v);
    nb_code_blob got;
    CHECK(s->ops->blob_get(s, SHA_A, &got, &err) == 1 && got.files == 9);
    s->ops->close(s);

    /* A database from a newer nimbus is refused, and left as it was. */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", nb_store_sqlite_schema_version() + 1);
    side_int(sql);
    nb_err_clear(&err);
    CHECK(nb_store_sqlite_open(dbpath, &err) == NULL);
    CHECK(err.status == 500);
    CHECK(strstr(err.msg, "newer") != NULL);
    CHECK(side_int("PRAGMA user_version") == nb_store_sqlite_schema_version() + 1);
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", nb_store_sqlite_schema_version());
    side_int(sql);
    s = open_store();
    s->ops->close(s);

    /* A path that cannot be opened is an error with the path in it. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/db", tmpdir);
    nb_err_clear(&err);
    CHECK(nb_store_sqlite_open(bad, &err) == NULL);
    CHECK(err.status == 500 && strstr(err.msg, "no/such/dir") != NULL);
    /* Not a database at all. */
    snprintf(bad, sizeof bad, "%s/garbage.db", tmpdir);
    CHECK(nb_write_file(bad, "this is not sqlite, just text long enough to be a header.......", 64,
                        0600) == 0);
    nb_err_clear(&err);
    CHECK(nb_store_sqlite_open(bad, &err) == NULL);
    CHECK(err.status == 500 && err.msg[0]);
}

int main(void)
{
    CHECK(mkdtemp(tmpdir) != NULL);
    snprintf(dbpath, sizeof dbpath, "%s/nimbus.db", tmpdir);
    test_schema();
    nb_store *s = open_store();
    test_put_get(s);
    test_scaling(s);
    test_list_versions(s);
    test_delete(s);
    test_blobs(s);
    test_corrupt_row(s);
    test_objects(s);
    nb_store *ls = nb_store_locked(open_store());
    test_objects(ls);
    ls->ops->close(ls);
    s->ops->close(s);
    test_reopen_and_newer();
    CHECK(nb_rm_rf(tmpdir) == 0);
    printf("test_store: ok\n");
    return 0;
}
