import Fluent
import SQLKit

extension Database {
    /// A transaction that takes SQLite's write lock before anything else.
    ///
    /// SQLite transactions start deferred: one that reads and then writes fails with SQLITE_BUSY, without waiting,
    /// if another connection committed in between. Writing first makes the busy timeout apply instead.
    /// On PostgreSQL this is a plain transaction.
    func writeTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        try await transaction { db in
            if let sql = db as? any SQLDatabase, sql.dialect.name == "sqlite" {
                try await sql.raw("UPDATE ledger_heads SET seq = seq WHERE 1 = 0").run()
            }
            return try await body(db)
        }
    }
}
