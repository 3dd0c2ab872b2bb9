import Fluent
import SQLKit

/// GCRA state for the database rate-limit store: one theoretical arrival time per (policy, hashed key).
struct CreateRateLimits: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("rate_limits")
            .field("key", .string, .identifier(auto: false))
            .field("tat", .double, .required)
            .field("allowed", .int, .required)
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("rate_limits").delete()
    }
}
