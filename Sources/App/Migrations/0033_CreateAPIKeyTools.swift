import Fluent

/// An API key's MCP tool allow-list (issue 24): `tools` is a canonical JSON array of entries, each a tool name
/// (a skill's slug or a built-in tool's name) or `tag:<tag>`. A key without a row may use every tool its scopes
/// allow. A table of its own so that the key routes' reads and the caller lookup keep their shape while this
/// migration is pending; the list is fixed when the key is made.
struct CreateAPIKeyTools: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("api_key_tools")
            .field("api_key_id", .uuid, .identifier(auto: false), .references("api_keys", "id", onDelete: .cascade))
            .field("tools", .string, .required)
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("api_key_tools").delete()
    }
}
