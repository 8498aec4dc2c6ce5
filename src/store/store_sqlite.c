/* The embedded store: one SQLite database in WAL mode with numbered migrations. */
#include "store/store.h"

#include "base/log.h"
#include "base/util.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

typedef struct sqlite_store {
    nb_store base;
    sqlite3 *db;
} sqlite_store;

/* Migration N moves the schema from version N to N+1. Never edit a released entry: append. */
static const char *migrations[] = {
    "CREATE TABLE namespaces (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);"
    "INSERT INTO namespaces VALUES ('default', CAST(strftime('%s','now') AS INTEGER) * 1000);"
    "CREATE TABLE functions ("
    "  ns TEXT NOT NULL REFERENCES namespaces(name), name TEXT NOT NULL,"
    "  latest_version INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (ns, name));"
    "CREATE TABLE versions ("
    "  ns TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,"
    "  config TEXT NOT NULL, code_sha256 TEXT NOT NULL, created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (ns, name, version),"
    "  FOREIGN KEY (ns, name) REFERENCES functions(ns, name) ON DELETE CASCADE);"
    "CREATE TABLE code_blobs ("
    "  sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, unpacked_size INTEGER NOT NULL,"
    "  files INTEGER NOT NULL, created_at INTEGER NOT NULL);",
    /* Scaling settings are the function's, not a version's: JSON, NULL = defaults. */
    "ALTER TABLE functions ADD COLUMN scaling TEXT;",
    /* The API gateway's objects: bodies are the gateway module's JSON. */
    "CREATE TABLE objects ("
    "  ns TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (ns, kind, name));",
};

int nb_store_sqlite_schema_version(void)
{
    return (int)NB_ARRAY_LEN(migrations);
}

static int db_fail(sqlite_store *s, nb_err *err, const char *what)
{
    return nb_err_set(err, 500, NB_E_INTERNAL, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static int exec(sqlite_store *s, const char *sql, nb_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        nb_err_set(err, 500, NB_E_INTERNAL, "store: %s", msg ? msg : "exec failed");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int migrate(sqlite_store *s, nb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "read schema version");
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    int target = nb_store_sqlite_schema_version();
    if (v > target)
        return nb_err_set(err, 500, NB_E_INTERNAL,
                          "store schema version %d is newer than this nimbus (%d); upgrade nimbus",
                          v, target);
    for (; v < target; v++) {
        char sql[64];
        if (exec(s, "BEGIN IMMEDIATE", err) < 0) return -1;
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if (exec(s, migrations[v], err) < 0 || exec(s, sql, err) < 0) {
            exec(s, "ROLLBACK", NULL);
            return nb_err_prefix(err, "migration %d", v + 1);
        }
        if (exec(s, "COMMIT", err) < 0) return -1;
        nb_info("store", "applied migration %d", v + 1);
    }
    return 0;
}

static nb_fn_version *row_to_version(sqlite_store *s, sqlite3_stmt *st, nb_err *err)
{
    /* columns: ns, name, version, config, created_at, fn_created_at */
    nb_fn_version *v = nb_fn_version_new();
    snprintf(v->ns, sizeof v->ns, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(v->name, sizeof v->name, "%s", (const char *)sqlite3_column_text(st, 1));
    v->version = sqlite3_column_int64(st, 2);
    v->created_at = sqlite3_column_int64(st, 4);
    v->fn_created_at = sqlite3_column_int64(st, 5);
    json_error_t je;
    json_t *cfg = json_loads((const char *)sqlite3_column_text(st, 3), 0, &je);
    nb_fn_config_release(&v->cfg);
    int rc = cfg ? nb_fn_config_from_json(&v->cfg, cfg, err)
                 : nb_err_set(err, 500, NB_E_INTERNAL, "stored config: %s", je.text);
    json_decref(cfg);
    if (rc == 0 && sqlite3_column_type(st, 7) != SQLITE_NULL) {
        json_t *sc = json_loads((const char *)sqlite3_column_text(st, 7), 0, &je);
        rc = sc ? nb_fn_scaling_apply(&v->cfg.scaling, sc, err)
                : nb_err_set(err, 500, NB_E_INTERNAL, "stored scaling: %s", je.text);
        json_decref(sc);
    }
    if (rc < 0) {
        (void)s;
        if (err) { /* a bad stored row is our fault, not the caller's: never a 4xx */
            err->status = 500;
            err->code = NB_E_INTERNAL;
        }
        nb_fn_version_unref(v);
        return NULL;
    }
    return v;
}

#define VERSION_COLS                                                                               \
    "v.ns, v.name, v.version, v.config, v.created_at, f.created_at, f.updated_at, f.scaling"

static char *scaling_text(const nb_fn_scaling *sc)
{
    json_t *j = json_object();
    nb_fn_scaling_to_json(sc, j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text) abort();
    return text;
}

/* Only the scaling settings changed: they are written on the function's row and the latest
 * version stays; out->version is a fresh copy of it carrying the new settings. */
static int put_scaling(sqlite_store *s, nb_fn_version *cur, const nb_fn_scaling *sc,
                       nb_put_result *out, nb_err *err)
{
    char *text = scaling_text(sc);
    int64_t now = nb_now_ms();
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(s->db,
                                "UPDATE functions SET scaling = ?3, updated_at = ?4"
                                " WHERE ns = ?1 AND name = ?2",
                                -1, &st, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, cur->ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, cur->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    free(text);
    if (!ok || exec(s, "COMMIT", err) < 0) {
        if (!ok) db_fail(s, err, "update scaling");
        exec(s, "ROLLBACK", NULL);
        return -1;
    }
    nb_fn_version *v = nb_fn_version_new();
    snprintf(v->ns, sizeof v->ns, "%s", cur->ns);
    snprintf(v->name, sizeof v->name, "%s", cur->name);
    v->version = cur->version;
    v->created_at = cur->created_at;
    v->fn_created_at = cur->fn_created_at;
    nb_fn_config_release(&v->cfg);
    nb_fn_config_copy(&v->cfg, &cur->cfg);
    v->cfg.scaling = *sc;
    out->version = v;
    out->scaling_changed = 1;
    out->updated_at = now;
    return 0;
}

static nb_fn_version *sq_fn_get(nb_store *base, const char *ns, const char *name, int64_t version,
                                int64_t *updated_at, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    const char *sql = "SELECT " VERSION_COLS " FROM functions f JOIN versions v"
                      " ON v.ns = f.ns AND v.name = f.name"
                      " AND v.version = CASE WHEN ?3 > 0 THEN ?3 ELSE f.latest_version END"
                      " WHERE f.ns = ?1 AND f.name = ?2";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "get function");
        return NULL;
    }
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, version);
    nb_fn_version *v = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        v = row_to_version(s, st, err);
        if (v && updated_at) *updated_at = sqlite3_column_int64(st, 6);
    } else if (rc == SQLITE_DONE) {
        if (version > 0)
            nb_err_set(err, 404, NB_E_NOT_FOUND, "function '%s' has no version %lld", name,
                       (long long)version);
        else
            nb_err_set(err, 404, NB_E_NOT_FOUND, "function '%s' not found", name);
    } else {
        db_fail(s, err, "get function");
    }
    sqlite3_finalize(st);
    return v;
}

static int sq_fn_put(nb_store *base, const char *ns, const char *name, const nb_fn_config *cfg,
                     nb_put_result *out, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    memset(out, 0, sizeof *out);
    if (exec(s, "BEGIN IMMEDIATE", err) < 0) return -1;
    nb_err e2;
    int64_t updated_at = 0;
    nb_fn_version *cur = sq_fn_get(base, ns, name, 0, &updated_at, &e2);
    if (!cur && e2.status != 404) {
        exec(s, "ROLLBACK", NULL);
        *err = e2;
        return -1;
    }
    if (cur && nb_fn_config_equal(&cur->cfg, cfg) &&
        !nb_fn_scaling_equal(&cur->cfg.scaling, &cfg->scaling)) {
        int rc = put_scaling(s, cur, &cfg->scaling, out, err);
        nb_fn_version_unref(cur);
        return rc;
    }
    if (cur && nb_fn_config_equal(&cur->cfg, cfg)) {
        exec(s, "ROLLBACK", NULL);
        out->version = cur;
        out->updated_at = updated_at;
        return 0;
    }
    if (!cur) {
        /* functions.ns references namespaces: say so instead of failing the foreign key. */
        sqlite3_stmt *q = NULL;
        int step = SQLITE_ERROR;
        if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM namespaces WHERE name = ?1", -1, &q, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(q, 1, ns, -1, SQLITE_STATIC);
            step = sqlite3_step(q);
        }
        if (step == SQLITE_DONE)
            nb_err_set(err, 404, NB_E_NOT_FOUND, "namespace '%s' not found", ns);
        else if (step != SQLITE_ROW)
            db_fail(s, err, "read namespace");
        sqlite3_finalize(q);
        if (step != SQLITE_ROW) {
            exec(s, "ROLLBACK", NULL);
            return -1;
        }
    }
    int64_t now = nb_now_ms();
    int64_t next = cur ? cur->version + 1 : 1;
    char *cfg_text = NULL, *sc_text = scaling_text(&cfg->scaling);
    json_t *j = nb_fn_config_to_json(cfg);
    cfg_text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    sqlite3_stmt *st = NULL;
    int ok = 0;
    if (cur) {
        ok = sqlite3_prepare_v2(s->db,
                                "UPDATE functions SET latest_version = ?3, updated_at = ?4,"
                                " scaling = ?5 WHERE ns = ?1 AND name = ?2",
                                -1, &st, NULL) == SQLITE_OK;
    } else {
        ok = sqlite3_prepare_v2(s->db,
                                "INSERT INTO functions (ns, name, latest_version, created_at,"
                                " updated_at, scaling) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                                -1, &st, NULL) == SQLITE_OK;
    }
    if (ok) {
        sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, next);
        sqlite3_bind_int64(st, 4, now);
        sqlite3_bind_text(st, 5, sc_text, -1, SQLITE_STATIC);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    free(sc_text);
    st = NULL;
    if (ok)
        ok = sqlite3_prepare_v2(s->db,
                                "INSERT INTO versions (ns, name, version, config, code_sha256,"
                                " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                -1, &st, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, next);
        sqlite3_bind_text(st, 4, cfg_text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, cfg->code_sha256, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    free(cfg_text);
    if (!ok) {
        db_fail(s, err, "publish version");
        exec(s, "ROLLBACK", NULL);
        nb_fn_version_unref(cur);
        return -1;
    }
    if (exec(s, "COMMIT", err) < 0) {
        exec(s, "ROLLBACK", NULL);
        nb_fn_version_unref(cur);
        return -1;
    }
    nb_fn_version *v = nb_fn_version_new();
    snprintf(v->ns, sizeof v->ns, "%s", ns);
    snprintf(v->name, sizeof v->name, "%s", name);
    v->version = next;
    v->created_at = now;
    v->fn_created_at = cur ? cur->fn_created_at : now;
    nb_fn_config_release(&v->cfg);
    nb_fn_config_copy(&v->cfg, cfg);
    out->version = v;
    out->created = cur == NULL;
    out->changed = 1;
    out->updated_at = now;
    nb_fn_version_unref(cur);
    return 0;
}

static int collect(sqlite_store *s, sqlite3_stmt *st, nb_fn_version ***out, int64_t **updated,
                   size_t *n, nb_err *err)
{
    size_t cap = 16, len = 0;
    nb_fn_version **arr = malloc(cap * sizeof *arr);
    int64_t *upd = updated ? malloc(cap * sizeof *upd) : NULL;
    int rc, row_failed = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap *= 2;
            arr = realloc(arr, cap * sizeof *arr);
            if (updated) upd = realloc(upd, cap * sizeof *upd);
            if (!arr || (updated && !upd)) abort();
        }
        nb_fn_version *v = row_to_version(s, st, err);
        if (!v) {
            rc = SQLITE_ERROR;
            row_failed = 1; /* err already says which row */
            break;
        }
        if (updated) upd[len] = sqlite3_column_int64(st, 6);
        arr[len++] = v;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        if (!row_failed) db_fail(s, err, "list");
        nb_store_free_versions(arr, len);
        free(upd);
        return -1;
    }
    *out = arr;
    if (updated) *updated = upd;
    *n = len;
    return 0;
}

static int sq_fn_list(nb_store *base, const char *ns, nb_fn_version ***out, int64_t **updated_at,
                      size_t *n, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    const char *sql = "SELECT " VERSION_COLS " FROM functions f JOIN versions v"
                      " ON v.ns = f.ns AND v.name = f.name AND v.version = f.latest_version"
                      " WHERE ?1 IS NULL OR f.ns = ?1 ORDER BY f.ns, f.name";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s, err, "list");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    return collect(s, st, out, updated_at, n, err);
}

static int sq_fn_versions(nb_store *base, const char *ns, const char *name, nb_fn_version ***out,
                          size_t *n, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    const char *sql = "SELECT " VERSION_COLS " FROM functions f JOIN versions v"
                      " ON v.ns = f.ns AND v.name = f.name WHERE f.ns = ?1 AND f.name = ?2"
                      " ORDER BY v.version";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "versions");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    if (collect(s, st, out, NULL, n, err) < 0) return -1;
    if (*n == 0) {
        free(*out);
        *out = NULL;
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "function '%s' not found", name);
    }
    return 0;
}

static int sq_fn_delete(nb_store *base, const char *ns, const char *name, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM functions WHERE ns = ?1 AND name = ?2", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(s, err, "delete");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_fail(s, err, "delete");
    if (sqlite3_changes(s->db) == 0)
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "function '%s' not found", name);
    return 0;
}

static int sq_blob_put(nb_store *base, const nb_code_blob *b, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO code_blobs VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "blob put");
    sqlite3_bind_text(st, 1, b->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, b->size);
    sqlite3_bind_int64(st, 3, b->unpacked_size);
    sqlite3_bind_int64(st, 4, b->files);
    sqlite3_bind_int64(st, 5, nb_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, err, "blob put");
}

static int sq_blob_get(nb_store *base, const char *sha, nb_code_blob *out, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT size, unpacked_size, files FROM code_blobs WHERE sha256 = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "blob get");
    sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        snprintf(out->sha256, sizeof out->sha256, "%s", sha);
        out->size = sqlite3_column_int64(st, 0);
        out->unpacked_size = sqlite3_column_int64(st, 1);
        out->files = sqlite3_column_int64(st, 2);
        found = 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(s, err, "blob get");
    return found;
}

static void sq_close(nb_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (!s) return;
    sqlite3_close_v2(s->db);
    free(s);
}

/* ---------- gateway objects ---------- */

static int sq_obj_put(nb_store *base, const char *ns, const char *kind, const char *name,
                      const char *body, enum nb_obj_put_mode mode, int *created, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int64_t now = nb_now_ms();
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (exec(s, "BEGIN IMMEDIATE", err) < 0) return -1;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM objects WHERE ns = ?1 AND kind = ?2 AND name = ?3",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "read object");
        goto out;
    }
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    int exists = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    st = NULL;
    if (exists && mode == NB_OBJ_CREATE) {
        nb_err_set(err, 409, NB_E_CONFLICT, "%s '%s' already exists", kind, name);
        goto out;
    }
    if (!exists && mode == NB_OBJ_UPDATE) {
        nb_err_set(err, 404, NB_E_NOT_FOUND, "%s '%s' not found", kind, name);
        goto out;
    }
    if (sqlite3_prepare_v2(s->db,
                           exists ? "UPDATE objects SET body = ?4, updated_at = ?5"
                                    " WHERE ns = ?1 AND kind = ?2 AND name = ?3"
                                  : "INSERT INTO objects VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "write object");
        goto out;
    }
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, body, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        db_fail(s, err, "write object");
        goto out;
    }
    if (created) *created = !exists;
    rc = 0;
out:
    sqlite3_finalize(st);
    if (rc == 0 && exec(s, "COMMIT", err) < 0) rc = -1;
    if (rc < 0) exec(s, "ROLLBACK", NULL);
    return rc;
}

static int sq_obj_upsert_many(nb_store *base, const nb_obj *objs, size_t n, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int64_t now = nb_now_ms();
    sqlite3_stmt *st = NULL;
    if (exec(s, "BEGIN IMMEDIATE", err) < 0) return -1;
    int ok = sqlite3_prepare_v2(s->db,
                                "INSERT INTO objects VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
                                " ON CONFLICT (ns, kind, name) DO UPDATE SET body = excluded.body,"
                                " updated_at = excluded.updated_at",
                                -1, &st, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, objs[i].ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, objs[i].kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, objs[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, objs[i].body, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    if (!ok) db_fail(s, err, "write objects");
    sqlite3_finalize(st);
    if (ok && exec(s, "COMMIT", err) < 0) ok = 0;
    if (!ok) exec(s, "ROLLBACK", NULL);
    return ok ? 0 : -1;
}

static void row_to_obj(sqlite3_stmt *st, nb_obj *o)
{
    snprintf(o->ns, sizeof o->ns, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(o->kind, sizeof o->kind, "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(o->name, sizeof o->name, "%s", (const char *)sqlite3_column_text(st, 2));
    o->body = strdup((const char *)sqlite3_column_text(st, 3));
    if (!o->body) abort();
    o->created_at = sqlite3_column_int64(st, 4);
    o->updated_at = sqlite3_column_int64(st, 5);
}

static int sq_obj_get(nb_store *base, const char *ns, const char *kind, const char *name,
                      nb_obj *out, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT ns, kind, name, body, created_at, updated_at FROM objects"
                           " WHERE ns = ?1 AND kind = ?2 AND name = ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "read object");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) row_to_obj(st, out);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 1;
    return rc == SQLITE_DONE ? 0 : db_fail(s, err, "read object");
}

static int sq_obj_list(nb_store *base, const char *ns, const char *kind, const char *prefix,
                       nb_obj **out, size_t *n, nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT ns, kind, name, body, created_at, updated_at FROM objects"
                           " WHERE (?1 IS NULL OR ns = ?1) AND (?2 IS NULL OR kind = ?2)"
                           " AND (?3 IS NULL OR substr(name, 1, length(?3)) = ?3)"
                           " ORDER BY ns, kind, name",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "list objects");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, prefix, -1, SQLITE_STATIC);
    nb_obj *v = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            v = realloc(v, cap * sizeof *v);
            if (!v) abort();
        }
        row_to_obj(st, &v[len++]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        nb_obj_free_list(v, len);
        return db_fail(s, err, "list objects");
    }
    *out = v;
    *n = len;
    return 0;
}

static int sq_obj_delete(nb_store *base, const char *ns, const char *kind, const char *name,
                         nb_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t nl = strlen(name);
    int prefix = nl > 0 && name[nl - 1] == '*';
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           prefix ? "DELETE FROM objects WHERE ns = ?1 AND kind = ?2"
                                    " AND substr(name, 1, ?4) = substr(?3, 1, ?4)"
                                  : "DELETE FROM objects WHERE ns = ?1 AND kind = ?2 AND name = ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "delete object");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    if (prefix) sqlite3_bind_int64(st, 4, (sqlite3_int64)(nl - 1));
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_fail(s, err, "delete object");
    if (!prefix && sqlite3_changes(s->db) == 0)
        return nb_err_set(err, 404, NB_E_NOT_FOUND, "%s '%s' not found", kind, name);
    return 0;
}

static const nb_store_ops sqlite_ops = {
    .name = "sqlite",
    .fn_put = sq_fn_put,
    .fn_get = sq_fn_get,
    .fn_list = sq_fn_list,
    .fn_versions = sq_fn_versions,
    .fn_delete = sq_fn_delete,
    .blob_put = sq_blob_put,
    .blob_get = sq_blob_get,
    .obj_put = sq_obj_put,
    .obj_upsert_many = sq_obj_upsert_many,
    .obj_get = sq_obj_get,
    .obj_list = sq_obj_list,
    .obj_delete = sq_obj_delete,
    .close = sq_close,
};

nb_store *nb_store_sqlite_open(const char *path, nb_err *err)
{
    sqlite_store *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->base.ops = &sqlite_ops;
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        nb_err_set(err, 500, NB_E_INTERNAL, "open %s: %s", path, sqlite3_errmsg(s->db));
        sq_close(&s->base);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* WAL: readers never block the writer; synchronous=FULL so an acknowledged deploy survives
     * power loss (deploys are rare, so the fsync cost does not matter). */
    if (exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
             err) < 0 ||
        migrate(s, err) < 0) {
        sq_close(&s->base);
        return NULL;
    }
    return &s->base;
}

void nb_obj_clear(nb_obj *o)
{
    free(o->body);
    o->body = NULL;
}

void nb_obj_free_list(nb_obj *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(o[i].body);
    free(o);
}

void nb_store_free_versions(nb_fn_version **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        nb_fn_version_unref(v[i]);
    free(v);
}
