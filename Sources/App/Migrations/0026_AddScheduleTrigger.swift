import Fluent

/// Executions and workflow runs started by a schedule name it, and the occurrence they were fired for
/// (`scheduled_for`; null for a run-now), so "exactly once per occurrence" can be checked from outside.
struct AddScheduleTrigger: AsyncMigration {
    func prepare(on database: any Database) async throws {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for table in ["executions", "workflow_runs"] {
            try await database.schema(table).field("schedule_id", .uuid).update()
            try await database.schema(table).field("scheduled_for", .datetime).update()
        }
    }

    func revert(on database: any Database) async throws {
        for table in ["executions", "workflow_runs"] {
            try await database.schema(table).deleteField("scheduled_for").update()
            try await database.schema(table).deleteField("schedule_id").update()
        }
    }
}
