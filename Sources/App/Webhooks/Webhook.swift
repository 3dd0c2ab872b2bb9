import Fluent
import Foundation
import StewardFormats
import StewardSQLite

/// A webhook subscription: where to POST which events. The secret is stored AES-GCM encrypted.
public final class Webhook: Model, @unchecked Sendable {
    public static let schema = "webhooks"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "url") public var url: String
    /// JSON array of exact types or `prefix.*`.
    @Field(key: "events") public var eventsJSON: String
    @OptionalField(key: "description") public var descriptionText: String?
    /// JSON object of extra headers.
    @Field(key: "headers") public var headersJSON: String
    @Field(key: "secret") public var sealedSecret: String
    @OptionalField(key: "previous_secret") public var sealedPreviousSecret: String?
    @OptionalField(key: "previous_secret_expires_at") public var previousSecretExpiresAt: Date?
    @Field(key: "enabled") public var enabled: Bool
    @OptionalField(key: "disabled_reason") public var disabledReason: String?
    /// When the current run of failures began; any success clears it.
    @OptionalField(key: "failing_since") public var failingSince: Date?

    public init() {}

    var events: [String] {
        get { JSONText.strings(in: eventsJSON) }
        set { eventsJSON = JSONText.canonical(strings: newValue) }
    }

    /// The extra headers as stored: names in the clear, each value sealed (they often carry API keys).
    var sealedHeaders: [String: String] { Self.headerMap(headersJSON) }

    /// The `headers` column's text as a map (values as stored).
    static func headerMap(_ text: String) -> [String: String] {
        JSONText.parse(text)?.object?.compactMapValues(\.stringValue) ?? [:]
    }

    /// The extra headers to send, their values opened.
    func headers(opening box: SecretBox) throws -> [String: String] {
        try box.open(values: sealedHeaders)
    }

    func setHeaders(_ headers: [String: String], sealing box: SecretBox) throws {
        headersJSON = JSONText.canonical(stringMap: try box.seal(values: headers))
    }

    /// True when this subscription wants events of `type`.
    func wants(_ type: String) -> Bool {
        Self.matches(filters: events, type: type)
    }

    /// Exact types, `prefix.*` or `*`: the one event-filter rule for webhooks and the event log.
    static func matches(filters: [String], type: String) -> Bool {
        filters.contains { filter in
            filter == type || filter == "*" || (filter.hasSuffix(".*") && type.hasPrefix(String(filter.dropLast(1))))
        }
    }
}

/// One event on its way to one endpoint. `payload` is the exact body that is signed and sent on every attempt.
public final class WebhookDelivery: Model, @unchecked Sendable {
    public static let schema = "webhook_deliveries"

    /// Where a delivery is.
    public enum Status: String, Codable, Sendable { case pending, succeeded, failed }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date

    // references
    @Parent(key: "webhook_id") public var webhook: Webhook
    @Field(key: "event_id") public var eventID: UUID

    // data
    @Field(key: "event_type") public var eventType: String
    @Field(key: "payload") public var payload: String
    @Enum(key: "status") public var status: Status
    @Field(key: "attempt") public var attempt: Int
    @OptionalField(key: "next_attempt_at") public var nextAttemptAt: Date?
    @OptionalField(key: "response_status") public var responseStatus: Int?
    @OptionalField(key: "duration_ms") public var durationMs: Int64?
    @OptionalField(key: "error") public var error: String?
    @OptionalField(key: "response_body") public var responseBody: String?

    public init() {}
}

/// One HTTP attempt of a delivery, kept for the history.
public final class WebhookAttempt: Model, @unchecked Sendable {
    public static let schema = "webhook_attempts"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "at") public var at: Date

    // references
    @Parent(key: "delivery_id") public var delivery: WebhookDelivery

    // data
    @Field(key: "attempt") public var attempt: Int
    @OptionalField(key: "response_status") public var responseStatus: Int?
    @Field(key: "duration_ms") public var durationMs: Int64
    @OptionalField(key: "error") public var error: String?
    @OptionalField(key: "response_body") public var responseBody: String?

    public init() {}
}

extension Webhook: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $user, $url, $eventsJSON, $descriptionText, $headersJSON, $sealedSecret,
         $sealedPreviousSecret, $previousSecretExpiresAt, $enabled, $disabledReason, $failingSince]
    }
}

extension WebhookDelivery: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $webhook, $eventID, $eventType, $payload, $status, $attempt,
         $nextAttemptAt, $responseStatus, $durationMs, $error, $responseBody]
    }
}

extension WebhookAttempt: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $at, $delivery, $attempt, $responseStatus, $durationMs, $error, $responseBody]
    }
}
