import Fluent
import SQLKit

/// The dashboard counts deliveries that gave up in the last day and those waiting to retry
/// (`GET /api/v1/admin/stats`). Without an index on (status, updated_at) each count scanned every delivery.
struct AddDeliveryStatusIndex: AsyncMigration {
    private static let indexes: [IndexChange] = [
        .init("webhook_deliveries_status_updated_idx", on: WebhookDelivery.schema, ["status", "updated_at"]),
    ]

    func prepare(on database: any Database) async throws {
        try await IndexChange.apply(Self.indexes, on: database as! any SQLDatabase)
    }

    func revert(on database: any Database) async throws {
        try await IndexChange.undo(Self.indexes, on: database as! any SQLDatabase)
    }
}
