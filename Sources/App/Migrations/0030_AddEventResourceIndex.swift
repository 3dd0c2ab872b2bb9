import Fluent
import SQLKit

/// The events list filtered by one resource (`?resourceId=`) reads the log in seq order for that resource. The
/// index on (resource_type, resource_id) cannot answer a filter on the id alone, so the read walked the seq index
/// past every other resource's events: a scan of the log. With (resource_id, seq) it reads the page in order.
struct AddEventResourceIndex: AsyncMigration {
    private static let indexes: [IndexChange] = [
        .init("events_resource_id_seq_idx", on: Event.schema, ["resource_id", "seq"]),
    ]

    func prepare(on database: any Database) async throws {
        try await IndexChange.apply(Self.indexes, on: database as! any SQLDatabase)
    }

    func revert(on database: any Database) async throws {
        try await IndexChange.undo(Self.indexes, on: database as! any SQLDatabase)
    }
}
