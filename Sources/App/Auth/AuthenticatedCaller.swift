import Vapor

/// Who is calling, once an authenticator has checked their credentials.
public struct AuthenticatedCaller: Authenticatable, Sendable {
    /// How the caller proved who they are.
    public enum Method: String, Sendable { case accessToken, cookie }

    public let user: User
    public let session: UserSession?
    public let method: Method
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
            ipAddress: remoteAddress?.ipAddress,
            userAgent: headers.first(name: .userAgent).map { String($0.prefix(512)) },
            requestID: requestID
        )
    }
}
