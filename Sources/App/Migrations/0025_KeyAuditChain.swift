import Crypto
import Fluent
import SQLKit

/// Re-links the audit chain with the keyed HMAC (`AuditChain.hash(of:previous:key:)`) in place of plain SHA-256,
/// from the prune marker (or the genesis hash) on, and moves the head to the new last link. The immutability
/// trigger is lifted for the rewrite and restored in the same transaction. Revert re-links with SHA-256.
struct KeyAuditChain: AsyncMigration {
    let key: SymmetricKey

    func prepare(on database: any Database) async throws {
        try await relink(on: database) { entry, previous in AuditChain.hash(of: entry, previous: previous, key: key) }
    }

    func revert(on database: any Database) async throws {
        try await relink(on: database) { entry, previous in AuditChain.unkeyedHash(of: entry, previous: previous) }
    }

    private func relink(on database: any Database, _ link: @escaping @Sendable (AuditChain.Entry, String) -> String) async throws {
        try await database.transaction { db in
            let sql = db as! any SQLDatabase
            let postgres = sql.dialect.name == "postgresql"
            if postgres {
                try await sql.raw("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable").run()
            } else {
                try await sql.raw("DROP TRIGGER IF EXISTS audit_logs_immutable").run()
            }
            var previous = AuditChain.genesisHash
            var lastSeq: Int64 = 0
            if let pruned = try await sql.raw("SELECT seq, last_hash FROM ledger_heads WHERE name = \(bind: LedgerHead.auditPruned)").first() {
                lastSeq = try pruned.decode(column: "seq", as: Int64.self)
                previous = try pruned.decode(column: "last_hash", as: String.self)
            }
            while true {
                let batch = try await AuditLog.query(on: db).filter(\.$seq > lastSeq).sort(\.$seq, .ascending).limit(1000).all()
                if batch.isEmpty { break }
                for log in batch {
                    let hash = link(AuditChain.Entry(log), previous)
                    try await sql.raw("UPDATE audit_logs SET prev_hash = \(bind: previous), hash = \(bind: hash) WHERE seq = \(bind: log.seq)").run()
                    previous = hash
                    lastSeq = log.seq
                }
            }
            try await sql.raw("UPDATE ledger_heads SET last_hash = \(bind: previous) WHERE name = \(bind: LedgerHead.audit)").run()
            if postgres {
                try await sql.raw("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable").run()
            } else {
                try await sql.raw("""
                    CREATE TRIGGER audit_logs_immutable BEFORE UPDATE ON audit_logs
                    BEGIN SELECT RAISE(ABORT, 'audit_logs entries are immutable'); END
                    """).run()
            }
        }
    }
}
