import Fluent
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// 2025-revision MCP sessions, in the database (`mcp_sessions`): any instance serves any session, and a restart
/// loses none. A session belongs to the credential that opened it (a login session or an API key): another
/// credential, even of the same user, gets 404, as does a session that was closed or idle for a day.
enum MCPSessions {
    static let idleLimit: TimeInterval = 24 * 3600
    /// `last_seen_at` is written at most this often.
    static let touchEvery: TimeInterval = 60

    struct Session: Sendable {
        var id: UUID
        var protocolVersion: String
        var clientName: String?
        var clientVersion: String?
    }

    static func open(caller: AuthenticatedCaller, version: String, clientName: String?, clientVersion: String?, app: Application) async throws -> UUID {
        let id = UUID()
        let now = app.wallClock.now()
        let userID = caller.user.id
        let sessionID = caller.session?.id, keyID = caller.apiKey?.id
        try await app.writeStatements { sql in
            try await sql.insert(into: "mcp_sessions")
                .columns("id", "user_id", "session_id", "api_key_id", "protocol_version", "client_name", "client_version", "created_at", "last_seen_at")
                .values(SQLBind(id), SQLBind(userID), SQLBind(sessionID), SQLBind(keyID), SQLBind(version), SQLBind(clientName),
                        SQLBind(clientVersion), SQLBind(now), SQLBind(now))
                .run()
        }
        return id
    }

    private static func notFound() -> JSONRPCError {
        JSONRPCError(code: -32600, message: "The session does not exist or has ended; initialize a new one.", status: .notFound)
    }

    /// The caller's open session, or 404.
    static func find(_ id: UUID, caller: AuthenticatedCaller, app: Application) async throws -> Session {
        let sql = app.db as! any SQLDatabase
        guard let row = try await sql.raw("""
            SELECT user_id, session_id, api_key_id, protocol_version, client_name, client_version, last_seen_at, closed_at
            FROM mcp_sessions WHERE id = \(bind: id)
            """).first()
        else { throw notFound() }
        let now = app.wallClock.now()
        let lastSeen = try row.decode(column: "last_seen_at", as: Date.self)
        guard try row.decode(column: "user_id", as: UUID.self) == caller.user.id,
              try row.decode(column: "session_id", as: UUID?.self) == caller.session?.id,
              try row.decode(column: "api_key_id", as: UUID?.self) == caller.apiKey?.id,
              try row.decode(column: "closed_at", as: Date?.self) == nil,
              now.timeIntervalSince(lastSeen) < idleLimit
        else { throw notFound() }
        if now.timeIntervalSince(lastSeen) >= touchEvery {
            try await app.writeStatements { sql in
                try await sql.raw("UPDATE mcp_sessions SET last_seen_at = \(bind: now) WHERE id = \(bind: id)").run()
            }
        }
        return Session(id: id, protocolVersion: try row.decode(column: "protocol_version", as: String.self),
                       clientName: try row.decode(column: "client_name", as: String?.self),
                       clientVersion: try row.decode(column: "client_version", as: String?.self))
    }

    static func close(_ id: UUID, caller: AuthenticatedCaller, app: Application) async throws {
        _ = try await find(id, caller: caller, app: app)
        let now = app.wallClock.now()
        try await app.writeStatements { sql in
            try await sql.raw("UPDATE mcp_sessions SET closed_at = \(bind: now) WHERE id = \(bind: id)").run()
        }
    }
}
