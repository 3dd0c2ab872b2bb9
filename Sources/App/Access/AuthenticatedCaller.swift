import Fluent
import SQLKit
import StewardSQLite
import Vapor

/// Who is calling, once an authenticator has checked their credentials, and what they may do right now.
public struct AuthenticatedCaller: Authenticatable, Sendable {
    /// How the caller proved who they are.
    /// `schedule`: no one signed in; a schedule acts for its owner with the owner's current grants.
    public enum Method: String, Sendable { case accessToken, cookie, apiKey, schedule }

    public let user: CallerUser
    public let session: CallerSession?
    public let apiKey: CallerKey?
    public let method: Method
    /// The caller's effective grants: the user's roles, narrowed to the key's scopes for an API key.
    public let grants: Grants

    public func can(_ permission: Permission) -> Bool {
        grants.permissions.contains(permission)
    }

    /// Admins (and holders of `admin:full`) see every owner's objects; everyone else only their own.
    public var seesEveryOwner: Bool { can(.adminFull) }

    /// Who audit entries name for this caller.
    public var actorType: ActorType {
        switch method {
        case .apiKey: .apiKey
        case .schedule: .system
        case .accessToken, .cookie: .user
        }
    }
}

extension AuthenticatedCaller {
    /// The caller's account row as it is now, as a model: for the few paths that change it (MFA, password,
    /// profile). 401 when the account is gone.
    func account(on db: any Database) async throws -> User {
        guard let account = try await User.find(user.id, on: db) else { throw AuthError.tokenRevoked }
        return account
    }
}

/// The caller's account as its credential's lookup read it: a value, because it is read on every request and a
/// Fluent model is one object per column (building and freeing `User` and `UserSession` models was 9% of the CPU
/// of `GET /auth/me` on PostgreSQL). No secrets: the password hash and the TOTP secret are not read.
public struct CallerUser: Sendable {
    public let id: UUID
    public let email: String
    public let username: String
    public let fullName: String?
    public let status: User.Status
    public let emailVerifiedAt: Date?
    public let mfaEnabled: Bool
    public let lastLoginAt: Date?
    public let createdAt: Date?
    public let updatedAt: Date?

    /// The columns `init(row:)` reads, by their names in `users`.
    static let columns = ["id", "email", "username", "full_name", "status", "email_verified_at", "mfa_enabled", "last_login_at",
                          "created_at", "updated_at"]

    /// A stored user's values (one that has an id: read, or saved).
    init(_ user: User) {
        guard let id = user.id else { preconditionFailure("a user answers for a caller only once it is stored") }
        self.id = id
        email = user.email
        username = user.username
        fullName = user.fullName
        status = user.status
        emailVerifiedAt = user.emailVerifiedAt
        mfaEnabled = user.mfaEnabled
        lastLoginAt = user.lastLoginAt
        createdAt = user.createdAt
        updatedAt = user.updatedAt
    }

    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        email = try row.decode(column: "email", as: String.self)
        username = try row.decode(column: "username", as: String.self)
        fullName = try row.optional("full_name", as: String.self)
        let status = try row.decode(column: "status", as: String.self)
        guard let known = User.Status(rawValue: status) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "unknown user status \(status)"))
        }
        self.status = known
        emailVerifiedAt = try row.optional("email_verified_at", as: Date.self)
        mfaEnabled = try row.decode(column: "mfa_enabled", as: Bool.self)
        lastLoginAt = try row.optional("last_login_at", as: Date.self)
        createdAt = try row.optional("created_at", as: Date.self)
        updatedAt = try row.optional("updated_at", as: Date.self)
    }
}

/// The session a caller signed in with, as its lookup read it (see `CallerUser`).
public struct CallerSession: Sendable {
    public let id: UUID
    public let userID: UUID
    public let lastSeenAt: Date
    public let idleExpiresAt: Date
    public let expiresAt: Date
    public let revokedAt: Date?
    public let csrfTokenHash: String?

    /// The columns `init(row:prefix:)` reads, by their names in `sessions`.
    static let columns = ["id", "user_id", "last_seen_at", "idle_expires_at", "expires_at", "revoked_at", "csrf_token_hash"]

    init(row: any SQLRow, prefix: String) throws {
        id = try row.decode(column: prefix + "id", as: UUID.self)
        userID = try row.decode(column: prefix + "user_id", as: UUID.self)
        lastSeenAt = try row.decode(column: prefix + "last_seen_at", as: Date.self)
        idleExpiresAt = try row.decode(column: prefix + "idle_expires_at", as: Date.self)
        expiresAt = try row.decode(column: prefix + "expires_at", as: Date.self)
        revokedAt = try row.optional(prefix + "revoked_at", as: Date.self)
        csrfTokenHash = try row.optional(prefix + "csrf_token_hash", as: String.self)
    }

    /// Live: not revoked, and neither the idle nor the absolute expiry has passed.
    public func isLive(at now: Date) -> Bool {
        UserSession.isLive(revokedAt: revokedAt, idleExpiresAt: idleExpiresAt, expiresAt: expiresAt, at: now)
    }
}

/// The API key a caller presented, as its lookup read it (see `CallerUser`).
public struct CallerKey: Sendable {
    public let id: UUID
    public let userID: UUID
    public let keyHash: String
    public let scopes: Set<Permission>
    public let expiresAt: Date?
    public let revokedAt: Date?
    public let lastUsedAt: Date?

    /// The columns `init(row:prefix:)` reads, by their names in `api_keys`.
    static let columns = ["id", "user_id", "key_hash", "scopes", "expires_at", "revoked_at", "last_used_at"]

    init(row: any SQLRow, prefix: String) throws {
        id = try row.decode(column: prefix + "id", as: UUID.self)
        userID = try row.decode(column: prefix + "user_id", as: UUID.self)
        keyHash = try row.decode(column: prefix + "key_hash", as: String.self)
        scopes = APIKey.scopes(in: try row.decode(column: prefix + "scopes", as: String.self))
        expiresAt = try row.optional(prefix + "expires_at", as: Date.self)
        revokedAt = try row.optional(prefix + "revoked_at", as: Date.self)
        lastUsedAt = try row.optional(prefix + "last_used_at", as: Date.self)
    }

    /// Neither revoked nor expired.
    public func isUsable(at now: Date) -> Bool {
        APIKey.isUsable(revokedAt: revokedAt, expiresAt: expiresAt, at: now)
    }
}

extension Request {
    /// The authenticated caller; throws 401 on routes reached without one.
    var caller: AuthenticatedCaller {
        get throws {
            guard let caller = auth.get(AuthenticatedCaller.self) else { throw AuthError.unauthenticated }
            return caller
        }
    }

    /// Where this request came from, for audit entries.
    var origin: RequestOrigin {
        RequestOrigin(
            ipAddress: remoteAddress == nil ? nil : clientIP,
            userAgent: headers.first(name: .userAgent).map { String($0.prefix(512)) },
            requestID: requestID
        )
    }
}
