import Fluent
import SQLKit

/// Webhook subscriptions, their deliveries (one per event and endpoint) and every delivery attempt, plus the
/// dispatcher's durable position in the event log.
struct CreateWebhooks: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Webhook.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("url", .string, .required)
            .field("events", .string, .required)
            .field("description", .string)
            .field("headers", .string, .required)
            .field("secret", .string, .required)
            .field("previous_secret", .string)
            .field("previous_secret_expires_at", .datetime)
            .field("enabled", .bool, .required)
            .field("disabled_reason", .string)
            .field("failing_since", .datetime)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .create()
        try await database.schema(WebhookDelivery.schema)
            .id()
            .field("webhook_id", .uuid, .required, .references(Webhook.schema, "id", onDelete: .cascade))
            .field("event_id", .uuid, .required)
            .field("event_type", .string, .required)
            .field("payload", .string, .required)
            .field("status", .string, .required)
            .field("attempt", .int, .required)
            .field("next_attempt_at", .datetime)
            .field("response_status", .int)
            .field("duration_ms", .int64)
            .field("error", .string)
            .field("response_body", .string)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .create()
        try await database.schema(WebhookAttempt.schema)
            .id()
            .field("delivery_id", .uuid, .required, .references(WebhookDelivery.schema, "id", onDelete: .cascade))
            .field("attempt", .int, .required)
            .field("at", .datetime, .required)
            .field("response_status", .int)
            .field("duration_ms", .int64, .required)
            .field("error", .string)
            .field("response_body", .string)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "webhooks_user_idx").on(Webhook.schema).column("user_id").run()
        try await sql.create(index: "webhook_deliveries_hook_idx").on(WebhookDelivery.schema).column("webhook_id").column("created_at").run()
        try await sql.create(index: "webhook_attempts_delivery_idx").on(WebhookAttempt.schema).column("delivery_id").column("attempt").run()
        try await sql.insert(into: "ledger_heads").columns("name", "seq", "last_hash")
            .values(SQLBind(LedgerHead.webhookDispatch), SQLBind(Int64(0)), SQLBind(AuditChain.genesisHash)).run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.raw("DELETE FROM ledger_heads WHERE name = \(bind: LedgerHead.webhookDispatch)").run()
        try await database.schema(WebhookAttempt.schema).delete()
        try await database.schema(WebhookDelivery.schema).delete()
        try await database.schema(Webhook.schema).delete()
    }
}
