import Fluent
import SQLKit

/// The counters behind the event `seq` and the audit hash chain; updating a row serialises writers on it.
struct CreateLedgerHeads: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("ledger_heads")
            .field("name", .string, .identifier(auto: false))
            .field("seq", .int64, .required)
            .field("last_hash", .string, .required)
            .create()
        let sql = database as! any SQLDatabase
        for name in [LedgerHead.audit, LedgerHead.events] {
            try await sql.insert(into: "ledger_heads")
                .columns("name", "seq", "last_hash")
                .values(SQLBind(name), SQLBind(Int64(0)), SQLBind(AuditChain.genesisHash))
                .run()
        }
    }

    func revert(on database: any Database) async throws {
        try await database.schema("ledger_heads").delete()
    }
}
