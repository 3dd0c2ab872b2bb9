import Fluent
import Vapor
import StewardFormats

/// Logs the caller in from a bearer access token or the session cookie, checking on every request that the
/// session is live and the user active, so logout, revocation and suspension take effect at once.
/// Credentials that are present but bad make authenticated routes answer 401 with the reason (expired, revoked,
/// invalid); public routes go on anonymously, so a client can still refresh with a stale token attached.
struct SessionAuthenticator: AsyncMiddleware {
    static let cookieName = "__Host-steward_session"
    /// `last_seen_at` is written at most this often per session.
    static let lastSeenResolution: TimeInterval = 60

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        // A key in a URL ends up in proxy logs and browser history: refuse it outright, on every route.
        if let query = request.url.query, query.contains("stw_") { throw AuthError.apiKeyInURL }
        do {
            try await authenticate(request)
            if let caller = request.auth.get(AuthenticatedCaller.self) {
                // Every later line about this request names who made it.
                request.logger[metadataKey: "userId"] = .string(caller.user.id.lowercasedString)
            }
        } catch let failure as AuthError {
            // Public routes (login, refresh with a stale token still attached) go on anonymously;
            // `RequireCaller` reports this reason on routes that need a caller.
            request.authenticationFailure = failure
        }
        return try await next.respond(to: request)
    }

    private func authenticate(_ request: Request) async throws {
        if let key = request.headers.first(name: "X-API-Key") {
            try await authenticate(apiKey: key, request: request)
        } else if let authorization = Self.bearerToken(in: request.headers) {
            if authorization.hasPrefix("stw_") {
                try await authenticate(apiKey: authorization, request: request)
            } else {
                try await authenticate(accessToken: authorization, request: request)
            }
        } else if request.headers.first(name: .authorization) != nil {
            throw AuthError.invalidToken
        } else if let cookie = request.cookies[Self.cookieName]?.string, !cookie.isEmpty {
            try await authenticate(cookie: cookie, request: request)
        }
    }

    /// `Authorization: Bearer <token>`, read as Vapor's `bearerAuthorization` reads it (two words apart from spaces,
    /// the first `bearer` in any case), on bytes instead of characters: Vapor's splits the whole header by
    /// grapheme, which on a JWT cost more than checking the token.
    static func bearerToken(in headers: HTTPHeaders) -> String? {
        guard let value = headers.first(name: .authorization) else { return nil }
        let words = value.utf8.split(separator: UInt8(ascii: " "))
        guard words.count == 2, Substring(words[0]).lowercased() == "bearer" else { return nil }
        return String(Substring(words[1]))
    }

    private func authenticate(accessToken: String, request: Request) async throws {
        let app = request.application
        let now = app.wallClock.now()
        let claims = try await AccessTokens(app: app).verify(accessToken, now: now)
        guard let userID = UUID(text: claims.sub.value), let sessionID = UUID(text: claims.sid) else {
            throw AuthError.invalidToken
        }
        guard let (session, user, grants) = try await CallerLookup.session(.sessionID(sessionID), on: request.db, readers: app.sqliteReaders),
              session.userID == userID
        else { throw AuthError.tokenRevoked }
        try await check(session: session, user: user, request: request, now: now)
        request.auth.login(AuthenticatedCaller(user: user, session: session, apiKey: nil, method: .accessToken, grants: grants))
    }

    private func authenticate(apiKey raw: String, request: Request) async throws {
        let app = request.application
        let now = app.wallClock.now()
        guard let prefix = APIKeyFormat.prefix(of: raw),
              let (key, user, ownerGrants) = try await CallerLookup.apiKey(.apiKeyPrefix(prefix), on: request.db, readers: app.sqliteReaders),
              SecureToken.constantTimeEquals(SecureToken.hash(raw), key.keyHash)
        else { throw AuthError.invalidAPIKey }
        guard key.isUsable(at: now), user.status == .active else { throw AuthError.invalidAPIKey }
        // A key never does more than its owner can do today, whatever scopes it was given.
        var grants = ownerGrants
        grants.permissions.formIntersection(key.scopes)
        if key.lastUsedAt.map({ now.timeIntervalSince($0) >= Self.lastSeenResolution }) ?? true {
            let ip = request.remoteAddress?.ipAddress
            try await app.writeTransaction { db in
                try await APIKey.query(on: db).filter(\.$id == key.id).set(\.$lastUsedAt, to: now).set(\.$lastUsedIP, to: ip).update()
            }
        }
        request.auth.login(AuthenticatedCaller(user: user, session: nil, apiKey: key, method: .apiKey, grants: grants))
    }

    private func authenticate(cookie: String, request: Request) async throws {
        let app = request.application
        let now = app.wallClock.now()
        guard cookie.utf8.count <= 256,
              let (session, user, grants) = try await CallerLookup.session(
                .cookieHash(SecureToken.hash(cookie)), on: request.db, readers: app.sqliteReaders)
        else { throw AuthError.tokenRevoked }
        try await check(session: session, user: user, request: request, now: now)
        // Browsers send cookies on cross-site requests too: unsafe methods must prove they read the CSRF token.
        if ![.GET, .HEAD, .OPTIONS].contains(request.method) {
            guard let sent = request.headers.first(name: "X-CSRF-Token"), let expected = session.csrfTokenHash,
                  SecureToken.constantTimeEquals(SecureToken.hash(sent), expected)
            else { throw AuthError.csrfMismatch }
        }
        request.auth.login(AuthenticatedCaller(user: user, session: session, apiKey: nil, method: .cookie, grants: grants))
    }

    /// The session must be live and its user active; `last_seen_at` is refreshed at most once a minute.
    private func check(session: CallerSession, user: CallerUser, request: Request, now: Date) async throws {
        guard session.isLive(at: now), user.status == .active else { throw AuthError.tokenRevoked }
        if now.timeIntervalSince(session.lastSeenAt) >= Self.lastSeenResolution {
            let idle = TimeInterval(request.application.appConfig.sessionIdleTimeoutSeconds)
            let idleExpiresAt = min(now.addingTimeInterval(idle), session.expiresAt)
            try await request.application.writeTransaction { db in
                try await UserSession.query(on: db).filter(\.$id == session.id)
                    .set(\.$lastSeenAt, to: now).set(\.$idleExpiresAt, to: idleExpiresAt).update()
            }
        }
    }
}

/// Refuses API keys on routes that only a person at a session may use (key creation, passwords, sessions, MFA).
struct RequireInteractiveSession: RequestCheck {
    func check(_ request: Request) throws {
        if let caller = request.auth.get(AuthenticatedCaller.self), caller.method == .apiKey {
            throw AccessError.interactiveOnly
        }
    }
}

/// Refuses callers without `permission` (403), and records the denial in the audit log.
struct RequirePermission: AsyncMiddleware {
    let permission: Permission

    init(_ permission: Permission) {
        self.permission = permission
    }

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        let caller = try request.caller
        guard caller.can(permission) else { try await deny(caller, request) }
        return try await next.respond(to: request)
    }

    /// Without a Task of its own when the caller has the permission, as a `RequestCheck`; a refusal waits for its
    /// audit record.
    func respond(to request: Request, chainingTo next: any Responder) -> EventLoopFuture<Response> {
        let caller: AuthenticatedCaller
        do { caller = try request.caller } catch { return request.eventLoop.makeFailedFuture(error) }
        guard caller.can(permission) else {
            return request.eventLoop.makeFutureWithTask { () async throws -> Response in try await deny(caller, request) }
        }
        return next.respond(to: request)
    }

    /// Records the refusal in the audit log, then throws it.
    private func deny(_ caller: AuthenticatedCaller, _ request: Request) async throws -> Never {
        let app = request.application
        let record = AuditRecord(
            action: "authz.denied", actorID: caller.user.id, actorType: caller.actorType,
            resourceType: "route", resourceID: request.route.map { "\($0.method.rawValue) /" + $0.path.map(\.description).joined(separator: "/") },
            outcome: .failure, origin: request.origin,
            details: ["permission": .string(permission.rawValue), "apiKeyId": caller.apiKey.map { .string($0.id.lowercasedString) } ?? .null])
        // Through the write gate like every other write, so a burst of refused requests queues instead of
        // contending for SQLite's lock with the writer.
        try await app.writeTransaction { db in _ = try await app.activityRecorder.record(audit: record, on: db) }
        throw AccessError.missingPermission(permission)
    }
}

extension Request {
    private struct AuthenticationFailureKey: StorageKey { typealias Value = AuthError }

    /// Why the credentials this request carried were refused, if they were.
    var authenticationFailure: AuthError? {
        get { storage[AuthenticationFailureKey.self] }
        set { storage[AuthenticationFailureKey.self] = newValue }
    }
}

/// Refuses requests that reached an authenticated route without valid credentials, with the reason.
struct RequireCaller: RequestCheck {
    func check(_ request: Request) throws {
        guard request.auth.has(AuthenticatedCaller.self) else { throw request.authenticationFailure ?? AuthError.unauthenticated }
    }
}
