import Fluent
import Foundation

/// Failed-login counter per normalised email, whether or not an account exists.
public final class LoginThrottle: Model, @unchecked Sendable {
    public static let schema = "login_throttles"

    // managed
    @ID(custom: "key", generatedBy: .user) public var id: String?
    @Field(key: "updated_at") public var updatedAt: Date

    // data
    @Field(key: "failed_count") public var failedCount: Int
    @OptionalField(key: "locked_until") public var lockedUntil: Date?

    public init() {}

    public init(key: String, now: Date) {
        self.id = key
        self.failedCount = 0
        self.updatedAt = now
    }
}

/// A single-use token mailed to a user (password reset, email verification), stored as a hash.
public final class OneTimeToken: Model, @unchecked Sendable {
    public static let schema = "one_time_tokens"

    /// What the token is for.
    public enum Purpose: String, Codable, Sendable {
        case passwordReset = "password_reset"
        case emailVerification = "email_verification"
    }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Enum(key: "purpose") public var purpose: Purpose
    @Field(key: "token_hash") public var tokenHash: String
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "used_at") public var usedAt: Date?

    public init() {}
}

/// The second step of a login with MFA: valid 5 minutes, for `/auth/mfa/verify` only.
public final class MFAChallenge: Model, @unchecked Sendable {
    public static let schema = "mfa_challenges"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "token_hash") public var tokenHash: String
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "used_at") public var usedAt: Date?
    @Field(key: "cookie") public var cookie: Bool

    public init() {}
}

/// A single-use MFA recovery code, stored as a hash.
public final class RecoveryCode: Model, @unchecked Sendable {
    public static let schema = "mfa_recovery_codes"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "code_hash") public var codeHash: String
    @OptionalField(key: "used_at") public var usedAt: Date?

    public init() {}
}
