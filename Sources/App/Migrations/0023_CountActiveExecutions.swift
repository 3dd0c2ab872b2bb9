import Fluent
import SQLKit

/// On SQLite, each user's queued and running executions are counted by triggers into `execution_active_counts`,
/// so the per-user cap reads one row on every create. Counting them instead cost time in proportion to the
/// user's backlog: 0.7 ms per create with 10,000 queued, about a tenth of the server's CPU in the executions
/// benchmark, and growing with it.
/// The triggers follow every insert, status change and delete, whichever code makes it. PostgreSQL keeps counting
/// (at most `cap` index entries): a counter row there would be a lock every create and finish of that user's
/// executions waits for, across instances.
struct CountActiveExecutions: AsyncMigration {
    static let active = "('queued', 'running')"

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "sqlite" else { return }
        try await sql.raw("""
            CREATE TABLE execution_active_counts (
                user_id UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
                active INTEGER NOT NULL
            )
            """).run()
        try await sql.raw("""
            INSERT INTO execution_active_counts (user_id, active)
            SELECT user_id, count(*) FROM executions WHERE status IN \(unsafeRaw: Self.active) GROUP BY user_id
            """).run()
        try await sql.raw("""
            CREATE TRIGGER executions_active_insert AFTER INSERT ON executions
            WHEN new.status IN \(unsafeRaw: Self.active) BEGIN
                INSERT INTO execution_active_counts (user_id, active) VALUES (new.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET active = active + 1;
            END
            """).run()
        try await sql.raw("""
            CREATE TRIGGER executions_active_update AFTER UPDATE OF status ON executions
            WHEN (old.status IN \(unsafeRaw: Self.active)) != (new.status IN \(unsafeRaw: Self.active)) BEGIN
                INSERT INTO execution_active_counts (user_id, active)
                VALUES (new.user_id, CASE WHEN new.status IN \(unsafeRaw: Self.active) THEN 1 ELSE 0 END)
                ON CONFLICT (user_id) DO UPDATE
                SET active = max(0, active + CASE WHEN new.status IN \(unsafeRaw: Self.active) THEN 1 ELSE -1 END);
            END
            """).run()
        try await sql.raw("""
            CREATE TRIGGER executions_active_delete AFTER DELETE ON executions
            WHEN old.status IN \(unsafeRaw: Self.active) BEGIN
                UPDATE execution_active_counts SET active = max(0, active - 1) WHERE user_id = old.user_id;
            END
            """).run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "sqlite" else { return }
        for trigger in ["executions_active_insert", "executions_active_update", "executions_active_delete"] {
            try await sql.raw("DROP TRIGGER IF EXISTS \(unsafeRaw: trigger)").run()
        }
        try await sql.raw("DROP TABLE IF EXISTS execution_active_counts").run()
    }
}
