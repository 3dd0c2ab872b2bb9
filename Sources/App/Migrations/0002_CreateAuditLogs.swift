import Fluent
import SQLKit

/// The audit trail, with its hash chain columns.
struct CreateAuditLogs: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(AuditLog.schema)
            .id()
            .field("seq", .int64, .required)
            .field("at", .datetime, .required)
            .field("actor_id", .uuid)
            .field("actor_type", .string, .required)
            .field("action", .string, .required)
            .field("resource_type", .string)
            .field("resource_id", .string)
            .field("outcome", .string, .required)
            .field("ip_address", .string)
            .field("user_agent", .string)
            .field("request_id", .string)
            .field("details", .string, .required)
            .field("prev_hash", .string, .required)
            .field("hash", .string, .required)
            .unique(on: "seq")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "audit_logs_at_idx").on(AuditLog.schema).column("at").run()
        try await sql.create(index: "audit_logs_actor_idx").on(AuditLog.schema).column("actor_id").run()
        try await sql.create(index: "audit_logs_action_idx").on(AuditLog.schema).column("action").run()
        try await sql.create(index: "audit_logs_resource_idx").on(AuditLog.schema).column("resource_type").column("resource_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(AuditLog.schema).delete()
    }
}
