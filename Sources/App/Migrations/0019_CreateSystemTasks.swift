import Fluent

/// Built-in maintenance tasks run by the scheduler: one row per task, claimed like a schedule's occurrence
/// (compare-and-set on `next_run_at`), so each occurrence runs once across instances.
struct CreateSystemTasks: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("system_tasks")
            .field("name", .string, .identifier(auto: false))
            .field("cron", .string, .required)
            .field("next_run_at", .datetime, .required)
            .field("last_run_at", .datetime)
            .field("last_status", .string)
            .field("last_result", .string)
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("system_tasks").delete()
    }
}
