import Fluent
import SQLKit

/// The durable job queue, executions and their history.
struct CreateJobsAndExecutions: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Job.schema)
            .id()
            .field("kind", .string, .required)
            .field("payload", .string, .required)
            .field("status", .string, .required)
            .field("run_at", .datetime, .required)
            .field("attempts", .int, .required)
            .field("max_attempts", .int, .required)
            .field("lease_owner", .string)
            .field("lease_token", .uuid)
            .field("lease_expires_at", .datetime)
            .field("last_error", .string)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .field("finished_at", .datetime)
            .create()
        try await database.schema(Execution.schema)
            .id()
            .field("skill_id", .uuid, .required)
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("status", .string, .required)
            .field("progress", .int, .required)
            .field("input", .string, .required)
            .field("output", .string)
            .field("error", .string)
            .field("attempt", .int, .required)
            .field("cancel_requested", .bool, .required)
            .field("queued_at", .datetime, .required)
            .field("started_at", .datetime)
            .field("finished_at", .datetime)
            .field("duration_ms", .int64)
            .field("job_id", .uuid)
            .create()
        try await database.schema(ExecutionHistoryEntry.schema)
            .id()
            .field("execution_id", .uuid, .required, .references(Execution.schema, "id", onDelete: .cascade))
            .field("ordinal", .int, .required)
            .field("at", .datetime, .required)
            .field("level", .string, .required)
            .field("message", .string, .required)
            .field("progress", .int)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "jobs_claim_idx").on(Job.schema).column("status").column("run_at").run()
        try await sql.create(index: "jobs_lease_idx").on(Job.schema).column("status").column("lease_expires_at").run()
        try await sql.create(index: "executions_user_idx").on(Execution.schema).column("user_id").column("queued_at").run()
        try await sql.create(index: "executions_skill_idx").on(Execution.schema).column("skill_id").column("queued_at").run()
        try await sql.create(index: "executions_status_idx").on(Execution.schema).column("status").run()
        try await sql.create(index: "execution_history_idx").on(ExecutionHistoryEntry.schema).column("execution_id").column("ordinal").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(ExecutionHistoryEntry.schema).delete()
        try await database.schema(Execution.schema).delete()
        try await database.schema(Job.schema).delete()
    }
}
