import Fluent
import SQLKit

/// PostgreSQL: each user's queued and running executions counted by a trigger into a few rows per user
/// (`execution_active_shards`), so the per-user cap sums at most 16 rows on every create instead of counting up to
/// `cap` index entries. Counting cost time in proportion to the user's backlog: 0.76 ms of PostgreSQL's time per
/// create over a backlog that grew to 5,000, a third of a core in the execution benchmark.
///
/// One counter row per user would be a lock that every create and finish of that user's executions waits for until
/// it commits, across instances (why migration 0023 left PostgreSQL counting). The rows here are split so that no
/// writer waits for another:
/// - shards 0 to 7 belong to the cap's lanes (`ExecutionService.checkCap`). A create holds its lane's advisory lock
///   until it commits, and names the lane in the transaction setting `steward.cap_lane`; its insert adds to that
///   lane's row, which no other transaction writes meanwhile;
/// - every other change (a finish, a cancel, a delete, an insert outside a create) goes to one of shards 8 to 15
///   that no other transaction has locked (`FOR UPDATE SKIP LOCKED`), or to a random one of them when all are.
/// Rows may go below zero; only a user's sum means anything, and it equals the user's committed active executions.
struct ShardActiveExecutionCounts: AsyncMigration {
    static let active = "('queued', 'running')"

    func prepare(on database: any Database) async throws {
        guard (database as! any SQLDatabase).dialect.name == "postgresql" else { return }
        try await database.transaction { db in
            let sql = db as! any SQLDatabase
            // No create or finish commits between the count below and the trigger taking over.
            try await sql.raw("LOCK TABLE executions IN SHARE ROW EXCLUSIVE MODE").run()
            // No foreign key to users: a user's executions deleted in the same statement as the user would have the
            // trigger write rows for a user already gone.
            try await sql.raw("""
                CREATE TABLE execution_active_shards (
                    user_id UUID NOT NULL,
                    shard SMALLINT NOT NULL,
                    active INTEGER NOT NULL,
                    PRIMARY KEY (user_id, shard)
                )
                """).run()
            try await sql.raw("""
                INSERT INTO execution_active_shards (user_id, shard, active)
                SELECT user_id, 8, count(*) FROM executions WHERE status IN \(unsafeRaw: Self.active) GROUP BY user_id
                """).run()
            try await sql.raw("""
                CREATE FUNCTION steward_count_active_executions() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE
                    owner UUID;
                    delta INTEGER;
                    lane INTEGER;
                BEGIN
                    IF TG_OP = 'INSERT' THEN
                        owner := NEW.user_id; delta := 1;
                    ELSIF TG_OP = 'DELETE' THEN
                        owner := OLD.user_id; delta := -1;
                    ELSE
                        owner := NEW.user_id;
                        delta := CASE WHEN NEW.status IN \(unsafeRaw: Self.active) THEN 1 ELSE -1 END;
                    END IF;
                    lane := nullif(current_setting('steward.cap_lane', true), '')::INTEGER;
                    IF delta > 0 AND lane IS NOT NULL THEN
                        INSERT INTO execution_active_shards (user_id, shard, active) VALUES (owner, lane, 1)
                        ON CONFLICT (user_id, shard) DO UPDATE SET active = execution_active_shards.active + 1;
                        RETURN NULL;
                    END IF;
                    UPDATE execution_active_shards SET active = active + delta
                    WHERE (user_id, shard) = (
                        SELECT user_id, shard FROM execution_active_shards WHERE user_id = owner AND shard >= 8
                        LIMIT 1 FOR UPDATE SKIP LOCKED);
                    IF NOT FOUND THEN
                        INSERT INTO execution_active_shards (user_id, shard, active) VALUES (owner, 8 + floor(random() * 8)::INTEGER, delta)
                        ON CONFLICT (user_id, shard) DO UPDATE SET active = execution_active_shards.active + EXCLUDED.active;
                    END IF;
                    RETURN NULL;
                END
                $$
                """).run()
            try await sql.raw("""
                CREATE TRIGGER executions_active_insert AFTER INSERT ON executions
                FOR EACH ROW WHEN (NEW.status IN \(unsafeRaw: Self.active)) EXECUTE FUNCTION steward_count_active_executions()
                """).run()
            try await sql.raw("""
                CREATE TRIGGER executions_active_update AFTER UPDATE OF status ON executions
                FOR EACH ROW WHEN ((OLD.status IN \(unsafeRaw: Self.active)) IS DISTINCT FROM (NEW.status IN \(unsafeRaw: Self.active)))
                EXECUTE FUNCTION steward_count_active_executions()
                """).run()
            try await sql.raw("""
                CREATE TRIGGER executions_active_delete AFTER DELETE ON executions
                FOR EACH ROW WHEN (OLD.status IN \(unsafeRaw: Self.active)) EXECUTE FUNCTION steward_count_active_executions()
                """).run()
        }
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "postgresql" else { return }
        for trigger in ["executions_active_insert", "executions_active_update", "executions_active_delete"] {
            try await sql.raw("DROP TRIGGER IF EXISTS \(unsafeRaw: trigger) ON executions").run()
        }
        try await sql.raw("DROP FUNCTION IF EXISTS steward_count_active_executions()").run()
        try await sql.raw("DROP TABLE IF EXISTS execution_active_shards").run()
    }
}
