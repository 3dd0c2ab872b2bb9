import Fluent
import Vapor

/// Logs the caller in from a bearer access token or the session cookie, checking on every request that the
/// session is live and the user active, so logout, revocation and suspension take effect at once.
/// Credentials that are present but bad answer 401 rather than passing the request on as anonymous.
struct SessionAuthenticator: AsyncMiddleware {
    static let cookieName = "__Host-steward_session"
    /// `last_seen_at` is written at most this often per session.
    static let lastSeenResolution: TimeInterval = 60

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        if let authorization = request.headers.bearerAuthorization?.token {
            if authorization.hasPrefix("stw_") { throw AuthError.apiKeysNotSupported }
            try await authenticate(accessToken: authorization, request: request)
        } else if request.headers.first(name: .authorization) != nil {
            throw AuthError.invalidToken
        } else if let cookie = request.cookies[Self.cookieName]?.string, !cookie.isEmpty {
            try await authenticate(cookie: cookie, request: request)
        }
        return try await next.respond(to: request)
    }

    private func authenticate(accessToken: String, request: Request) async throws {
        let app = request.application
        let now = app.wallClock.now()
        let claims = try await AccessTokens(app: app).verify(accessToken, now: now)
        guard let userID = UUID(uuidString: claims.sub.value), let sessionID = UUID(uuidString: claims.sid) else {
            throw AuthError.invalidToken
        }
        let (user, session) = try await load(userID: userID, sessionID: sessionID, request: request, now: now)
        request.auth.login(AuthenticatedCaller(user: user, session: session, method: .accessToken))
    }

    private func authenticate(cookie: String, request: Request) async throws {
        let app = request.application
        let now = app.wallClock.now()
        guard cookie.utf8.count <= 256,
              let session = try await UserSession.query(on: request.db)
                .filter(\.$cookieTokenHash == SecureToken.hash(cookie)).first()
        else { throw AuthError.tokenRevoked }
        let (user, live) = try await load(userID: session.$user.id, sessionID: session.requireID(), request: request, now: now)
        // Browsers send cookies on cross-site requests too: unsafe methods must prove they read the CSRF token.
        if ![.GET, .HEAD, .OPTIONS].contains(request.method) {
            guard let sent = request.headers.first(name: "X-CSRF-Token"), let expected = live.csrfTokenHash,
                  SecureToken.constantTimeEquals(SecureToken.hash(sent), expected)
            else { throw AuthError.csrfMismatch }
        }
        request.auth.login(AuthenticatedCaller(user: user, session: live, method: .cookie))
    }

    private func load(userID: UUID, sessionID: UUID, request: Request, now: Date) async throws -> (User, UserSession) {
        guard let session = try await UserSession.find(sessionID, on: request.db), session.$user.id == userID else {
            throw AuthError.tokenRevoked
        }
        guard session.isLive(at: now) else { throw AuthError.tokenRevoked }
        guard let user = try await User.find(userID, on: request.db), user.status == .active else {
            throw AuthError.tokenRevoked
        }
        if now.timeIntervalSince(session.lastSeenAt) >= Self.lastSeenResolution {
            let idle = TimeInterval(request.application.appConfig.sessionIdleTimeoutSeconds)
            session.lastSeenAt = now
            session.idleExpiresAt = min(now.addingTimeInterval(idle), session.expiresAt)
            try await session.save(on: request.db)
        }
        return (user, session)
    }
}

/// Refuses requests that reached an authenticated route without credentials.
struct RequireCaller: AsyncMiddleware {
    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        guard request.auth.has(AuthenticatedCaller.self) else { throw AuthError.unauthenticated }
        return try await next.respond(to: request)
    }
}
