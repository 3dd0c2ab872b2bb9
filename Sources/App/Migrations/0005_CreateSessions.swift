import Fluent
import SQLKit

/// Login sessions and the refresh tokens that rotate within them.
struct CreateSessions: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(UserSession.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("ip_address", .string)
            .field("user_agent", .string)
            .field("created_at", .datetime, .required)
            .field("last_seen_at", .datetime, .required)
            .field("idle_expires_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("revoked_at", .datetime)
            .field("revoked_reason", .string)
            .field("cookie_token_hash", .string)
            .field("csrf_token_hash", .string)
            .unique(on: "cookie_token_hash")
            .create()
        try await database.schema(RefreshToken.schema)
            .id()
            .field("session_id", .uuid, .required, .references(UserSession.schema, "id", onDelete: .cascade))
            .field("token_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .field("grace_payload", .string)
            .unique(on: "token_hash")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "sessions_user_idx").on(UserSession.schema).column("user_id").run()
        try await sql.create(index: "refresh_tokens_session_idx").on(RefreshToken.schema).column("session_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(RefreshToken.schema).delete()
        try await database.schema(UserSession.schema).delete()
    }
}
