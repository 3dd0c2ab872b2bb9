import Fluent
import Foundation
import StewardSQLite

/// An identity at a provider (its `sub`) linked to a Steward account. One `(provider, subject)` belongs to one
/// account; an account may hold several. The provider's tokens are never stored: Steward needs only the identity.
public final class OAuthIdentity: Model, @unchecked Sendable {
    public static let schema = "oauth_identities"

    // managed
    @ID(key: .id) public var id: UUID?

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "provider") public var provider: String
    @Field(key: "subject") public var subject: String
    @OptionalField(key: "email") public var email: String?
    @Field(key: "email_verified") public var emailVerified: Bool
    @Field(key: "linked_at") public var linkedAt: Date
    @OptionalField(key: "last_login_at") public var lastLoginAt: Date?

    public init() {}
}

extension OAuthIdentity: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $user.$id, $provider, $subject, $email, $emailVerified, $linkedAt, $lastLoginAt]
    }
}

/// A sign-in (or link) started at a provider and not yet back: the `state` sent (stored as its hash), the nonce and
/// PKCE verifier to check the answer with, where to return, and the hash of the secret in the browser's binding
/// cookie. Single-use, for ten minutes.
public final class OAuthState: Model, @unchecked Sendable {
    public static let schema = "oauth_states"

    /// Sign in (or sign up), or link an identity to the signed-in account that started the flow.
    public enum Mode: String, Codable, Sendable { case login, link }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // data
    @Field(key: "token_hash") public var tokenHash: String
    @Field(key: "provider") public var provider: String
    @Enum(key: "mode") public var mode: Mode
    /// Link mode: the account that asked.
    @OptionalField(key: "user_id") public var userID: UUID?
    @Field(key: "nonce") public var nonce: String
    /// Sealed with the encryption key.
    @Field(key: "code_verifier") public var codeVerifier: String
    @Field(key: "redirect_url") public var redirectURL: String
    @Field(key: "binding_hash") public var bindingHash: String
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "used_at") public var usedAt: Date?

    public init() {}
}

/// What a login callback produced, handed to the client as a one-time `code` in the redirect (never tokens in a
/// URL): the account to sign in, or the problem to answer with. Single-use, for 60 seconds.
public final class OAuthLoginCode: Model, @unchecked Sendable {
    public static let schema = "oauth_login_codes"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // data
    @Field(key: "token_hash") public var tokenHash: String
    @Field(key: "provider") public var provider: String
    @OptionalField(key: "user_id") public var userID: UUID?
    /// A failed callback: `{"status", "code", "detail"}` as canonical JSON.
    @OptionalField(key: "problem") public var problem: String?
    @Field(key: "expires_at") public var expiresAt: Date
    @OptionalField(key: "used_at") public var usedAt: Date?

    public init() {}
}

extension OAuthState: HashedToken {}
extension OAuthLoginCode: HashedToken {}
