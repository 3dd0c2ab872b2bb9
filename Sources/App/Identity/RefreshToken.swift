import Fluent
import Foundation

/// One refresh token of a session, stored as a hash. Each use replaces it; a used one presented again
/// after the grace window revokes the session.
public final class RefreshToken: Model, @unchecked Sendable {
    public static let schema = "refresh_tokens"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "session_id") public var session: UserSession

    // data
    @Field(key: "token_hash") public var tokenHash: String
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "used_at") public var usedAt: Date?
    /// The pair issued when this token was used, encrypted, so a concurrent refresh within the grace window
    /// gets the same pair.
    @OptionalField(key: "grace_payload") public var gracePayload: String?

    public init() {}
}
