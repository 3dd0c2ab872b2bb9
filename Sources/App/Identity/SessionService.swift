import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats
import StewardSQLite

/// A new session's credentials; `cookieToken` and `csrfToken` only in cookie mode.
struct IssuedSession: Sendable {
    var pair: TokenPairResponse
    var sessionID: UUID
    var cookieToken: String?
}

/// Sessions and their tokens: opening one, refresh rotation, listing and revoking.
struct SessionService: IdentityService {
    /// Two refreshes with the same token this close together get the same new pair.
    static let refreshGraceSeconds: TimeInterval = 10

    let app: Application
    private var tokens: AccessTokens { AccessTokens(app: app) }


    /// Creates a session row, its first refresh token and an access token (inside the caller's transaction).
    func openSession(for user: User, cookie: Bool, origin: RequestOrigin, on db: any Database) async throws -> IssuedSession {
        let now = self.now
        let session = UserSession()
        session.id = UUID()
        session.$user.id = try user.requireID()
        session.ipAddress = origin.ipAddress
        session.userAgent = origin.userAgent
        session.createdAt = now
        session.lastSeenAt = now
        session.idleExpiresAt = now.addingTimeInterval(TimeInterval(app.settings.sessionIdleTimeoutSeconds))
        session.expiresAt = now.addingTimeInterval(TimeInterval(app.settings.sessionAbsoluteTimeoutSeconds))
        var cookieToken: String?
        var csrfToken: String?
        if cookie {
            cookieToken = SecureToken.generate()
            csrfToken = SecureToken.generate()
            session.cookieTokenHash = SecureToken.hash(cookieToken!)
            session.csrfTokenHash = SecureToken.hash(csrfToken!)
        }
        try await session.create(on: db)
        var pair = try await issuePair(user: user, session: session, on: db)
        pair.csrfToken = csrfToken
        return IssuedSession(pair: pair, sessionID: session.id!, cookieToken: cookieToken)
    }

    private func issuePair(user: User, session: UserSession, on db: any Database) async throws -> TokenPairResponse {
        let now = self.now
        let record = RefreshToken()
        record.$session.id = try session.requireID()
        let refresh = try await HashedTokens.issue(
            record, now: now, expiresAt: min(now.addingTimeInterval(TimeInterval(config.refreshTokenTTLSeconds)), session.expiresAt), on: db)
        // The roles claim is informational: authorization reads the role tables on every request.
        let roles = try await UserRole.grants(of: user.requireID(), on: db).roles
        let access = try await tokens.issue(userID: user.requireID(), sessionID: session.requireID(), roles: roles, now: now)
        return TokenPairResponse(accessToken: access, refreshToken: refresh, tokenType: "Bearer",
                                 expiresIn: app.settings.accessTokenTTLSeconds, user: UserResponse(user))
    }

    private enum RefreshResult: Sendable {
        case issued(TokenPairResponse)
        case revoked
        case invalid
    }

    /// Rotates a refresh token. A token used before is accepted once more within the grace window (and gets
    /// the same pair); after it, its reuse revokes the whole session.
    func refresh(_ rawToken: String, origin: RequestOrigin) async throws -> TokenPairResponse {
        let now = self.now
        let result = try await app.writeTransaction { db -> RefreshResult in
            // Claim first: the write lock (SQLite) or row lock (PostgreSQL) orders concurrent refreshes.
            let claimed = try await HashedTokens.claim(RefreshToken.self, raw: rawToken, now: now, on: db)
            guard let token = try await HashedTokens.find(RefreshToken.self, raw: rawToken, on: db).with(\.$session).first() else {
                return .invalid
            }
            let session = token.session
            guard let user = try await User.find(session.$user.id, on: db) else { return .invalid }
            guard session.isLive(at: now), user.status == .active else { return .revoked }

            if claimed {
                guard token.expiresAt > now else { return .invalid }
                let pair = try await issuePair(user: user, session: session, on: db)
                token.usedAt = now
                token.gracePayload = try app.secretBox.seal(try APIJSON.string(pair))
                try await token.save(on: db)
                session.lastSeenAt = now
                session.idleExpiresAt = min(now.addingTimeInterval(TimeInterval(app.settings.sessionIdleTimeoutSeconds)), session.expiresAt)
                try await session.save(on: db)
                try await recorder.record(audit: AuditRecord(
                    action: "auth.refresh", actorID: user.id, actorType: .user, resourceType: "session",
                    resourceID: session.id?.lowercasedString, origin: origin), on: db)
                return .issued(pair)
            }
            if let usedAt = token.usedAt, now.timeIntervalSince(usedAt) <= Self.refreshGraceSeconds, let payload = token.gracePayload {
                let pair = try JSONDecoder.api.decode(TokenPairResponse.self, from: Data(try app.secretBox.open(payload).utf8))
                return .issued(pair)
            }
            // A rotated token came back after the grace window: assume it was stolen.
            try await revoke(session: session, reason: "refresh_token_reuse", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.refresh_reuse", actorID: user.id, actorType: .user, resourceType: "session",
                resourceID: session.id?.lowercasedString, outcome: .failure, origin: origin), on: db)
            return .revoked
        }
        switch result {
        case .issued(let pair): return pair
        case .revoked: throw AuthError.tokenRevoked
        case .invalid: throw AuthError.invalidRefreshToken
        }
    }

    /// Ends a session now: its access tokens, refresh tokens and cookie stop working on the next request.
    func revoke(session: UserSession, reason: String, actorID: UUID?, origin: RequestOrigin, on db: any Database) async throws {
        guard session.revokedAt == nil else { return }
        session.revokedAt = now
        session.revokedReason = reason
        try await session.save(on: db)
        let id = try session.requireID().lowercasedString
        try await recorder.record(
            audit: AuditRecord(action: "session.revoked", actorID: actorID, actorType: actorID == nil ? .system : .user,
                               resourceType: "session", resourceID: id, origin: origin, details: ["reason": .string(reason)]),
            event: EventRecord(type: "session.revoked", actorID: actorID, resourceType: "session", resourceID: id,
                               data: ["userId": .string(session.$user.id.lowercasedString), "reason": .string(reason)]),
            on: db)
    }

    /// Revokes every live session of a user except `keeping`.
    func revokeSessions(of userID: UUID, except keeping: UUID?, reason: String, actorID: UUID?, origin: RequestOrigin, on db: any Database) async throws {
        var query = UserSession.query(on: db).filter(\.$user.$id == userID).filter(\.$revokedAt == nil)
        if let keeping { query = query.filter(\.$id != keeping) }
        for session in try await query.all() {
            try await revoke(session: session, reason: reason, actorID: actorID, origin: origin, on: db)
        }
    }

    func logout(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard let current = caller.session else { return }
        try await app.writeTransaction { db in
            // The row as it is now, inside the transaction: the caller's copy is the request's snapshot.
            if let session = try await UserSession.find(current.id, on: db) {
                try await revoke(session: session, reason: "logout", actorID: caller.user.id, origin: origin, on: db)
            }
            try await recorder.record(audit: AuditRecord(
                action: "auth.logout", actorID: caller.user.id, actorType: .user, resourceType: "session",
                resourceID: current.id.lowercasedString, origin: origin), on: db)
        }
    }

    func sessions(of caller: AuthenticatedCaller) async throws -> [SessionResponse] {
        try await sessions(ofUser: caller.user.id, current: caller.session?.id)
    }

    /// A user's live sessions, newest first; `current` marks the one the asking request uses, if any.
    func sessions(ofUser userID: UUID, current: UUID?) async throws -> [SessionResponse] {
        let now = self.now
        let sessions = try await UserSession.query(on: reads)
            .filter(\.$user.$id == userID)
            .filter(\.$revokedAt == nil)
            .filter(\.$expiresAt > now)
            .filter(\.$idleExpiresAt > now)
            .sort(\.$createdAt, .descending)
            .listed(through: app.sqliteReaders, offLoopOn: app.threadPool)
        return sessions.map { session in
            SessionResponse(id: session.id!, ipAddress: session.ipAddress, userAgent: session.userAgent,
                            createdAt: session.createdAt, lastSeenAt: session.lastSeenAt,
                            expiresAt: min(session.expiresAt, session.idleExpiresAt), current: session.id == current)
        }
    }

    /// Revokes one of the caller's own sessions; another user's id is a 404, like a missing one.
    func revokeOwnSession(id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard let session = try await UserSession.query(on: reads)
            .filter(\.$id == id)
            .filter(\.$user.$id == caller.user.id)
            .filter(\.$revokedAt == nil)
            .first()
        else { throw HTTPProblem.notFound("No such session.") }
        try await app.writeTransaction { db in
            try await revoke(session: session, reason: "revoked_by_user", actorID: caller.user.id, origin: origin, on: db)
        }
    }

    func revokeOtherSessions(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        try await app.writeTransaction { db in
            try await revokeSessions(of: caller.user.id, except: caller.session?.id, reason: "revoked_by_user",
                                     actorID: caller.user.id, origin: origin, on: db)
        }
    }
}
