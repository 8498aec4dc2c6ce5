#include "store/sqlite_util.h"

#include <stdio.h>

int nb_sql_fail(sqlite3 *db, const char *name, const char *what, nb_err *err)
{
    return nb_err_set(err, 500, NB_E_INTERNAL, "%s: %s: %s", name, what,
                      db ? sqlite3_errmsg(db) : "out of memory");
}

int nb_sql_migrate(sqlite3 *db, const char *name, const char *const *migrations, int n, nb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return nb_sql_fail(db, name, "read schema version", err);
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (v > n)
        return nb_err_set(err, 500, NB_E_INTERNAL,
                          "%s schema version %d is newer than this nimbus (%d)", name, v, n);
    for (; v < n; v++) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            nb_sql_fail(db, name, "migrate", err);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return nb_err_prefix(err, "migration %d", v + 1);
        }
    }
    return 0;
}

int nb_sql_open(const char *path, int flags, const char *name, sqlite3 **db, nb_err *err)
{
    if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        return nb_sql_fail(*db, name, path, err);
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}
