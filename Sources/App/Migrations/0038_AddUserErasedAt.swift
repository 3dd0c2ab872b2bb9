import Fluent

/// Erasure (issue 26): when a user was erased; the row stays as a tombstone that keeps only the id.
struct AddUserErasedAt: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(User.schema).field("erased_at", .datetime).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(User.schema).deleteField("erased_at").update()
    }
}
