import Fluent
import SQLKit

/// The audit list pages newest first by seq. Filtered by actor, action or resource, it read the filter's index and
/// then sorted every matching entry by seq; with seq after the filter's columns it reads the page in order and stops.
/// Each new index starts with the columns of the one it replaces.
struct AddAuditFilterIndexes: AsyncMigration {
    private static let indexes: [IndexChange] = [
        .init("audit_logs_actor_seq_idx", on: AuditLog.schema, ["actor_id", "seq"], replacing: ("audit_logs_actor_idx", ["actor_id"])),
        .init("audit_logs_action_seq_idx", on: AuditLog.schema, ["action", "seq"], replacing: ("audit_logs_action_idx", ["action"])),
        .init("audit_logs_resource_seq_idx", on: AuditLog.schema, ["resource_type", "resource_id", "seq"],
              replacing: ("audit_logs_resource_idx", ["resource_type", "resource_id"])),
    ]

    func prepare(on database: any Database) async throws {
        try await IndexChange.apply(Self.indexes, on: database as! any SQLDatabase)
    }

    func revert(on database: any Database) async throws {
        try await IndexChange.undo(Self.indexes, on: database as! any SQLDatabase)
    }
}
