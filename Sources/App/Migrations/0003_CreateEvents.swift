import Fluent
import SQLKit

/// The event log that webhooks and realtime streams read in `seq` order.
struct CreateEvents: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Event.schema)
            .id()
            .field("seq", .int64, .required)
            .field("at", .datetime, .required)
            .field("type", .string, .required)
            .field("actor_id", .uuid)
            .field("resource_type", .string, .required)
            .field("resource_id", .string)
            .field("data", .string, .required)
            .unique(on: "seq")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "events_type_idx").on(Event.schema).column("type").run()
        try await sql.create(index: "events_resource_idx").on(Event.schema).column("resource_type").column("resource_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(Event.schema).delete()
    }
}
