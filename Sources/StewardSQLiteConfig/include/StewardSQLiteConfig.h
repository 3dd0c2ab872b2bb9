#ifndef STEWARD_SQLITE_CONFIG_H
#define STEWARD_SQLITE_CONFIG_H

/// Turns on SQLite's query planner stability guarantee (SQLITE_DBCONFIG_ENABLE_QPSG) on one connection, so that
/// no value bound to a prepared statement makes SQLite prepare it again. `db` is a `sqlite3 *` of the SQLite that
/// sqlite-nio builds. sqlite3_db_config is variadic, which Swift cannot call, hence this one C function.
/// Returns SQLite's result code.
int steward_sqlite_enable_qpsg(void *db);

#endif
