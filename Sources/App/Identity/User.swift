import Fluent
import Foundation
import StewardSQLite

/// An account. Email is stored normalised (trimmed, lower-cased) so uniqueness is case-insensitive.
public final class User: Model, @unchecked Sendable {
    public static let schema = "users"

    /// The lifecycle of an account; only `active` may sign in.
    public enum Status: String, Codable, Sendable, CaseIterable {
        case active, inactive, suspended, deleted
    }

    // managed
    @ID(key: .id) public var id: UUID?
    @Timestamp(key: "created_at", on: .create) public var createdAt: Date?
    @Timestamp(key: "updated_at", on: .update) public var updatedAt: Date?

    // data
    @Field(key: "email") public var email: String
    @Field(key: "username") public var username: String
    @OptionalField(key: "full_name") public var fullName: String?
    @Field(key: "password_hash") public var passwordHash: String
    @Enum(key: "status") public var status: Status
    @OptionalField(key: "email_verified_at") public var emailVerifiedAt: Date?
    @Field(key: "failed_login_count") public var failedLoginCount: Int
    @OptionalField(key: "locked_until") public var lockedUntil: Date?
    @OptionalField(key: "last_login_at") public var lastLoginAt: Date?
    @Field(key: "mfa_enabled") public var mfaEnabled: Bool
    @OptionalField(key: "mfa_secret") public var mfaSecret: String?
    @OptionalField(key: "mfa_last_used_step") public var mfaLastUsedStep: Int64?

    public init() {}

    public init(id: UUID? = nil, email: String, username: String, fullName: String?, passwordHash: String, status: Status = .active) {
        self.id = id
        self.email = User.normalise(email: email)
        self.username = username
        self.fullName = fullName
        self.passwordHash = passwordHash
        self.status = status
        self.failedLoginCount = 0
        self.mfaEnabled = false
    }

    /// The stored hash of an account without a password (made through an identity provider): it matches no
    /// password. The account can set one through the password-reset flow.
    public static let noPassword = "!"

    /// Whether a password can sign this account in.
    public var hasPassword: Bool { passwordHash.hasPrefix("$2") }

    /// The one spelling of an email used for storage, uniqueness and lockout keys.
    public static func normalise(email: String) -> String {
        email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    }
}

extension User: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $email, $username, $fullName, $passwordHash, $status, $emailVerifiedAt,
         $failedLoginCount, $lockedUntil, $lastLoginAt, $mfaEnabled, $mfaSecret, $mfaLastUsedStep]
    }
}
