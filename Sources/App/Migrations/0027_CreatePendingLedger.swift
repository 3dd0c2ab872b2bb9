import Crypto
import Fluent
import SQLKit

/// PostgreSQL: where writers leave events and audit entries for the sequencer (`LedgerSequencer`), which numbers
/// them and links the audit chain after they commit; and the lease that says which instance runs it. Each pending
/// row carries its transaction's id (`xid8`, PostgreSQL 13 or newer), which is how a read finds the rows that
/// committed before it (`LedgerSequencer.settle`). SQLite numbers inside its single writer and needs none of this.
struct CreatePendingLedger: AsyncMigration {
    /// Links the audit entries a revert numbers.
    let key: SymmetricKey

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "postgresql" else { return }
        try await sql.raw("""
            CREATE TABLE pending_events (
                pos BIGSERIAL PRIMARY KEY,
                tx XID8 NOT NULL DEFAULT pg_current_xact_id(),
                id UUID NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                type TEXT NOT NULL,
                actor_id UUID,
                resource_type TEXT NOT NULL,
                resource_id TEXT,
                data TEXT NOT NULL
            )
            """).run()
        try await sql.raw("CREATE INDEX pending_events_tx_idx ON pending_events (tx)").run()
        try await sql.raw("""
            CREATE TABLE pending_audit_logs (
                pos BIGSERIAL PRIMARY KEY,
                tx XID8 NOT NULL DEFAULT pg_current_xact_id(),
                id UUID NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                actor_id UUID,
                actor_type TEXT NOT NULL,
                action TEXT NOT NULL,
                resource_type TEXT,
                resource_id TEXT,
                outcome TEXT NOT NULL,
                ip_address TEXT,
                user_agent TEXT,
                request_id TEXT,
                details TEXT NOT NULL
            )
            """).run()
        try await sql.raw("CREATE INDEX pending_audit_logs_tx_idx ON pending_audit_logs (tx)").run()
        try await sql.raw("""
            CREATE TABLE leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                term BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )
            """).run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "postgresql" else { return }
        // Anything still pending is numbered first, so reverting loses no entry.
        try await database.transaction { db in
            while try await LedgerSequencer.sequence(on: db as! any SQLDatabase, key: key).moved == LedgerSequencer.batchLimit {}
        }
        for table in ["pending_events", "pending_audit_logs", "leases"] {
            try await sql.raw("DROP TABLE IF EXISTS \(unsafeRaw: table)").run()
        }
    }
}
