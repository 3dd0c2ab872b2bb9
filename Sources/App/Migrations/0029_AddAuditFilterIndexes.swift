import Fluent
import SQLKit

/// The audit list pages newest first by seq. Filtered by actor, action or resource, it read the filter's index and
/// then sorted every matching entry by seq; with seq after the filter's columns it reads the page in order and stops.
/// Each new index starts with the columns of the one it replaces.
struct AddAuditFilterIndexes: AsyncMigration {
    /// (name, columns, the index it replaces with its columns)
    private static let indexes: [(String, [String], (String, [String]))] = [
        ("audit_logs_actor_seq_idx", ["actor_id", "seq"], ("audit_logs_actor_idx", ["actor_id"])),
        ("audit_logs_action_seq_idx", ["action", "seq"], ("audit_logs_action_idx", ["action"])),
        ("audit_logs_resource_seq_idx", ["resource_type", "resource_id", "seq"], ("audit_logs_resource_idx", ["resource_type", "resource_id"])),
    ]

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        for (name, columns, (old, _)) in Self.indexes {
            var create = sql.create(index: name).on(AuditLog.schema)
            for column in columns { create = create.column(column) }
            try await create.run()
            try await sql.drop(index: old).run()
        }
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        for (name, _, (old, columns)) in Self.indexes.reversed() {
            var create = sql.create(index: old).on(AuditLog.schema)
            for column in columns { create = create.column(column) }
            try await create.run()
            try await sql.drop(index: name).run()
        }
    }
}
