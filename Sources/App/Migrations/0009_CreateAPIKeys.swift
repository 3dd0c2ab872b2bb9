import Fluent
import SQLKit

/// API keys: looked up by their public prefix, verified by SHA-256 of the whole key.
struct CreateAPIKeys: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(APIKey.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("name", .string, .required)
            .field("prefix", .string, .required)
            .field("key_hash", .string, .required)
            .field("scopes", .string, .required)
            .field("expires_at", .datetime)
            .field("revoked_at", .datetime)
            .field("last_used_at", .datetime)
            .field("last_used_ip", .string)
            .field("created_at", .datetime, .required)
            .unique(on: "prefix")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "api_keys_user_idx").on(APIKey.schema).column("user_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(APIKey.schema).delete()
    }
}
