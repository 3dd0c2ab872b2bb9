import Fluent
import SQLKit

/// Makes audit entries immutable in the database itself: a trigger refuses UPDATE (on PostgreSQL and SQLite).
/// Also adds the `audit_pruned` ledger row, which remembers where retention cut the chain so it still verifies.
struct ProtectAuditLogs: AsyncMigration {
    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                CREATE OR REPLACE FUNCTION steward_refuse_audit_update() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'audit_logs entries are immutable'; END;
                $$ LANGUAGE plpgsql
                """).run()
            try await sql.raw("""
                CREATE TRIGGER audit_logs_immutable BEFORE UPDATE ON audit_logs
                FOR EACH ROW EXECUTE FUNCTION steward_refuse_audit_update()
                """).run()
        } else {
            try await sql.raw("""
                CREATE TRIGGER audit_logs_immutable BEFORE UPDATE ON audit_logs
                BEGIN SELECT RAISE(ABORT, 'audit_logs entries are immutable'); END
                """).run()
        }
        try await sql.insert(into: "ledger_heads").columns("name", "seq", "last_hash")
            .values(SQLBind(LedgerHead.auditPruned), SQLBind(Int64(0)), SQLBind(AuditChain.genesisHash)).run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.raw("DELETE FROM ledger_heads WHERE name = \(bind: LedgerHead.auditPruned)").run()
        try await sql.raw("DROP TRIGGER IF EXISTS audit_logs_immutable\(unsafeRaw: sql.dialect.name == "postgresql" ? " ON audit_logs" : "")").run()
        if sql.dialect.name == "postgresql" {
            try await sql.raw("DROP FUNCTION IF EXISTS steward_refuse_audit_update()").run()
        }
    }
}
