import Fluent
import SQLKit

/// Single-use WebSocket tickets: only the hash is stored; each row names the session or key it stands for.
struct CreateStreamTickets: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("stream_tickets")
            .field("token_hash", .string, .identifier(auto: false))
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("session_id", .uuid)
            .field("api_key_id", .uuid)
            .field("expires_at", .datetime, .required)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "stream_tickets_expiry_idx").on("stream_tickets").column("expires_at").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("stream_tickets").delete()
    }
}
