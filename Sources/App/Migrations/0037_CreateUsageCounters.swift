import Fluent

/// Per-user usage (issue 26): `/api/v1` requests per user and hour, added to by each instance's flush.
struct CreateUsageCounters: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("usage_counters")
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("hour", .datetime, .required)
            .field("requests", .int64, .required)
            .compositeIdentifier(over: "user_id", "hour")
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("usage_counters").delete()
    }
}
