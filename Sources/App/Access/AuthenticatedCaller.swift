import Vapor

/// Who is calling, once an authenticator has checked their credentials, and what they may do right now.
public struct AuthenticatedCaller: Authenticatable, Sendable {
    /// How the caller proved who they are.
    /// `schedule`: no one signed in; a schedule acts for its owner with the owner's current grants.
    public enum Method: String, Sendable { case accessToken, cookie, apiKey, schedule }

    public let user: User
    public let session: UserSession?
    public let apiKey: APIKey?
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
