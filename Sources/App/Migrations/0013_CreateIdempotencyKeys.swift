import Fluent
import SQLKit

/// Remembered answers to unsafe requests sent with an Idempotency-Key, per user, for 24 hours.
struct CreateIdempotencyKeys: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("idempotency_keys")
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("key", .string, .required)
            .field("request_hash", .string, .required)
            .field("response_status", .int)
            .field("response_body", .string)
            .field("response_type", .string)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .unique(on: "user_id", "key")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "idempotency_keys_expiry_idx").on("idempotency_keys").column("expires_at").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("idempotency_keys").delete()
    }
}
