import Fluent

/// Runtime settings (issue 26): one row per setting an operator changed, its value canonical JSON; a setting
/// without a row has its default.
struct CreateSettings: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("settings")
            .field("key", .string, .identifier(auto: false))
            .field("value", .string, .required)
            .field("updated_by", .uuid)
            .field("updated_at", .datetime, .required)
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("settings").delete()
    }
}
