#include "StewardSQLiteConfig.h"
#include "sqlite_nio_sqlite3.h"

int steward_sqlite_enable_qpsg(void *db) {
    int enabled = 0;
    int rc = sqlite_nio_sqlite3_db_config((sqlite3 *)db, SQLITE_DBCONFIG_ENABLE_QPSG, 1, &enabled);
    if (rc == SQLITE_OK && enabled != 1) return SQLITE_ERROR;
    return rc;
}
