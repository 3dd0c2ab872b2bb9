import Fluent
import Foundation
import StewardSQLite

/// One login: what the access tokens' `sid` names. Revoking it stops its tokens at once.
public final class UserSession: Model, @unchecked Sendable {
    public static let schema = "sessions"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "last_seen_at") public var lastSeenAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @OptionalField(key: "ip_address") public var ipAddress: String?
    @OptionalField(key: "user_agent") public var userAgent: String?
    @Field(key: "idle_expires_at") public var idleExpiresAt: Date
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "revoked_at") public var revokedAt: Date?
    @OptionalField(key: "revoked_reason") public var revokedReason: String?
    @OptionalField(key: "cookie_token_hash") public var cookieTokenHash: String?
    @OptionalField(key: "csrf_token_hash") public var csrfTokenHash: String?

    public init() {}

    /// Live: not revoked, and neither the idle nor the absolute expiry has passed.
    public func isLive(at now: Date) -> Bool {
        Self.isLive(revokedAt: revokedAt, idleExpiresAt: idleExpiresAt, expiresAt: expiresAt, at: now)
    }

    static func isLive(revokedAt: Date?, idleExpiresAt: Date, expiresAt: Date, at now: Date) -> Bool {
        revokedAt == nil && now < idleExpiresAt && now < expiresAt
    }
}

extension UserSession: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $lastSeenAt, $user, $ipAddress, $userAgent, $idleExpiresAt, $expiresAt, $revokedAt,
         $revokedReason, $cookieTokenHash, $csrfTokenHash]
    }
}
