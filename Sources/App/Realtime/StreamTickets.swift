import Fluent
import Foundation
import SQLKit
import StewardSQLite
import Vapor

/// Single-use tickets that let a browser open `/api/v1/ws` (browsers cannot set headers on a WebSocket).
/// A ticket stands for the session or key that asked for it, lives 30 s, and is deleted by the first use, so
/// it is worthless once used or leaked late. Only its hash is stored; any instance can redeem it.
enum StreamTickets {
    static let lifetime: TimeInterval = 30

    struct Issued: Content {
        var ticket: String
        var expiresAt: Date
    }

    struct Redeemed {
        var userID: UUID
        var credential: StreamCredential
    }

    static func issue(for caller: AuthenticatedCaller, app: Application) async throws -> Issued {
        guard let credential = StreamCredential(caller) else { throw AuthError.unauthenticated }
        let token = "wst_" + SecureToken.generate()
        let now = app.wallClock.now()
        let expiresAt = AuditChain.truncatedToMilliseconds(now.addingTimeInterval(lifetime))
        let userID = caller.user.id
        let (sessionID, keyID): (UUID?, UUID?) = switch credential {
        case .session(let id): (id, nil)
        case .apiKey(let id): (nil, id)
        }
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            try await sql.raw("DELETE FROM stream_tickets WHERE user_id = \(bind: userID) AND expires_at < \(bind: now)").run()
            try await sql.insert(into: "stream_tickets")
                .columns("token_hash", "user_id", "session_id", "api_key_id", "expires_at")
                .values(SQLBind(SecureToken.hash(token)), SQLBind(userID), SQLBind(sessionID), SQLBind(keyID), SQLBind(expiresAt))
                .run()
        }
        return Issued(ticket: token, expiresAt: expiresAt)
    }

    /// Uses a ticket up; nil when it does not exist, was used, or expired.
    static func redeem(_ token: String, app: Application) async throws -> Redeemed? {
        guard token.hasPrefix("wst_"), token.utf8.count <= 128 else { return nil }
        let now = app.wallClock.now()
        let row = try await app.writeStatements { sql in
            try await sql.raw("""
                DELETE FROM stream_tickets WHERE token_hash = \(bind: SecureToken.hash(token))
                RETURNING user_id, session_id, api_key_id, expires_at
                """).first()
        }
        guard let row, try row.decode(column: "expires_at", as: Date.self) > now else { return nil }
        let userID = try row.decode(column: "user_id", as: UUID.self)
        if let key = try row.decode(column: "api_key_id", as: UUID?.self) {
            return Redeemed(userID: userID, credential: .apiKey(key))
        }
        guard let session = try row.decode(column: "session_id", as: UUID?.self) else { return nil }
        return Redeemed(userID: userID, credential: .session(session))
    }

    static func pruneExpired(app: Application) async throws {
        let now = app.wallClock.now()
        try await app.writeStatements { sql in try await sql.raw("DELETE FROM stream_tickets WHERE expires_at < \(bind: now)").run() }
    }
}
