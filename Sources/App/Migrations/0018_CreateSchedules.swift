import Fluent
import SQLKit

/// Cron schedules that start executions. `next_run_at` is the occurrence to fire next; an instance claims it by
/// moving it forward with a compare-and-set, so each occurrence fires once however many instances race.
struct CreateSchedules: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Schedule.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("name", .string, .required)
            .field("target_type", .string, .required)
            .field("target_id", .uuid, .required)
            .field("input", .string, .required)
            .field("cron", .string, .required)
            .field("timezone", .string, .required)
            .field("enabled", .bool, .required)
            .field("overlap_policy", .string, .required)
            .field("catch_up", .string, .required)
            .field("next_run_at", .datetime)
            .field("last_run_at", .datetime)
            .field("last_status", .string)
            .field("last_error", .string)
            .field("last_execution_id", .uuid)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "schedules_due_idx").on(Schedule.schema).column("enabled").column("next_run_at").run()
        try await sql.create(index: "schedules_user_idx").on(Schedule.schema).column("user_id").column("created_at").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(Schedule.schema).delete()
    }
}
