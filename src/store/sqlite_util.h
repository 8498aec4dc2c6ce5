/* nb_sql: what every SQLite file of nimbus does the same way (the queue store, the access log,
 * usage): errors named after the file's role, numbered migrations tracked in user_version, and
 * connections opened for one thread at a time.
 *
 * Threads: as the connection passed in (these only use it). */
#ifndef NB_SQLITE_UTIL_H
#define NB_SQLITE_UTIL_H

#include "base/err.h"

#include <sqlite3.h>

/* A 500 internal err "NAME: WHAT: <sqlite's message>" (db NULL: "out of memory"); -1. */
int nb_sql_fail(sqlite3 *db, const char *name, const char *what, nb_err *err);

/* Brings db's schema to version n by running migrations[v..n) in order, each in its own
 * transaction with its user_version; a file newer than n is refused. 0, or -1 with err
 * ("migration K: ..."). */
int nb_sql_migrate(sqlite3 *db, const char *name, const char *const *migrations, int n,
                   nb_err *err);

/* Opens path with flags, NOMUTEX (the caller uses each connection from one thread at a time, so
 * SQLite's own locking would be redundant) and a 5 s busy timeout. 0, or -1 with err. */
int nb_sql_open(const char *path, int flags, const char *name, sqlite3 **db, nb_err *err);

#endif
