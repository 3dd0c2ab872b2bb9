import Fluent
import Foundation

/// A mail in the outbox. Its secret (a token) is kept encrypted apart from the body and erased once sent.
public final class OutboxMail: Model, @unchecked Sendable {
    public static let schema = "mail_outbox"

    /// Delivery state.
    public enum Status: String, Codable, Sendable { case pending, sent, failed }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // data
    @Field(key: "to_address") public var toAddress: String
    @Field(key: "subject") public var subject: String
    /// The body with `{{secret}}` where the secret goes.
    @Field(key: "body") public var body: String
    @OptionalField(key: "secret") public var secret: String?
    @Enum(key: "status") public var status: Status
    @Field(key: "attempts") public var attempts: Int
    @Field(key: "next_attempt_at") public var nextAttemptAt: Date
    @OptionalField(key: "last_error") public var lastError: String?
    @OptionalField(key: "sent_at") public var sentAt: Date?

    public init() {}
}
