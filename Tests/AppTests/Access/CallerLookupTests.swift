import Fluent
import Foundation
import PostgresNIO
import SQLKit
import SQLiteNIO
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardSQLite

private func me(_ app: Application, _ headers: HTTPHeaders) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: headers)
}

/// The caller lookup that runs on every authenticated request: one row, read on SQLite through direct read
/// connections, with models filled from hand-written property lists.
@Suite("Caller lookup")
struct CallerLookupTests {
    @Test("/me shows the stored account, its roles and permissions; an API key's caller is the same user")
    func meShowsTheAccount() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let user = try await makeUser(app, email: "shown@example.com", username: "shown")
            let userID = try user.requireID()
            _ = try await UserAdminService(app: app).setRoles(userID, roles: ["developer", "viewer"], actor: .cli)
            let token = try await login(app, email: "shown@example.com").accessToken

            let res = try await me(app, bearer(token))
            #expect(res.status == .ok)
            let body = try res.content.decode(MeResponse.self)
            let stored = try #require(try await User.find(userID, on: app.db))
            let expectedUser = UserResponse(stored)
            #expect(body.user.id == expectedUser.id && body.user.email == expectedUser.email && body.user.username == "shown")
            #expect(body.user.status == "active" && !body.user.mfaEnabled && !body.user.emailVerified)
            for (shown, kept) in [(body.user.createdAt, expectedUser.createdAt), (body.user.lastLoginAt, expectedUser.lastLoginAt)] {
                #expect(abs((shown ?? .distantPast).timeIntervalSince(kept ?? .distantFuture)) < 1)
            }
            #expect(body.user.fullName == "Test User")
            #expect(body.user.lastLoginAt != nil, "the login just now")
            #expect(body.roles == ["developer", "viewer"])
            var expected: Set<String> = []
            for role in RoleCatalog.roles where role.name == "developer" || role.name == "viewer" {
                expected.formUnion(role.permissions.map(\.rawValue))
            }
            #expect(Set(body.permissions) == expected)
            #expect(body.permissions.count == expected.count, "each permission once, though two roles grant it")

            // The same lookup by key prefix: the key's caller is this user, narrowed to the key's scopes.
            let created = try await app.testing().sendRequest(.POST, "/api/v1/api-keys", headers: bearer(token), beforeRequest: { req in
                try req.content.encode(NewKey(name: "ci", scopes: ["skills:read"]), as: .json)
            })
            #expect(created.status == .created)
            let key = try created.content.decode(CreatedKey.self).key
            let byKey = try await app.testing().sendRequest(.GET, "/api/v1/skills", headers: ["X-API-Key": key])
            #expect(byKey.status == .ok)
            let refused = try await app.testing().sendRequest(.GET, "/api/v1/executions", headers: ["X-API-Key": key])
            #expect(refused.status == .forbidden, "executions:read is the user's but not the key's")
            let keyMe = try await me(app, ["X-API-Key": key])
            #expect(keyMe.status == .ok)
            #expect(try keyMe.content.decode(MeResponse.self).permissions == ["skills:read"])
            #expect(try keyMe.content.decode(MeResponse.self).user.id == userID)
        }
    }

    @Test("Bearer credentials are read as before: any case of the scheme, extra spaces; anything else is 401")
    func bearerForms() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "forms@example.com")
            let token = try await login(app, email: "forms@example.com").accessToken
            for value in ["Bearer \(token)", "bearer \(token)", "BEARER  \(token)", " Bearer \(token) "] {
                #expect(try await me(app, ["Authorization": value]).status == .ok, "\(value.prefix(10))")
            }
            for value in ["Bearer", "Bearer \(token) extra", "Basic \(token)", "Bearer\(token)", "Bearer ", "Bearer é\u{301}"] {
                let res = try await me(app, ["Authorization": value])
                #expect(res.status == .unauthorized, "\(value.prefix(10))")
                let code = try res.problem().code
                #expect(code == "unauthorized", "\(value.prefix(10)): \(code)")
            }
        }
    }

    @Test("Reads on every request leave no read transaction open: the log checkpoints to empty while clients call",
          .enabled(if: !TestDatabase.isPostgres))
    func readersHoldNoSnapshot() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "wal@example.com")
            let token = try await login(app, email: "wal@example.com").accessToken
            for _ in 0..<20 { #expect(try await me(app, bearer(token)).status == .ok) }
            // Something in the log to checkpoint.
            let renamed = try await app.testing().sendRequest(.PATCH, "/api/v1/auth/me", headers: bearer(token), beforeRequest: { req in
                try req.content.encode(["fullName": "Renamed"], as: .json)
            })
            #expect(renamed.status == .ok)
            #expect(try await me(app, bearer(token)).content.decode(MeResponse.self).user.fullName == "Renamed",
                    "the direct read sees the commit at once")

            guard case .sqlite(let path) = app.appConfig.database else { Issue.record("not SQLite"); return }
            let other = try await SQLiteConnection.open(storage: .file(path: path), threadPool: app.threadPool, logger: app.logger, on: app.eventLoopGroup.any())
            let result = try await other.query("PRAGMA wal_checkpoint(TRUNCATE)", [])
            try await other.close()
            let row = try #require(result.first)
            #expect(row.column("busy")?.integer == 0, "a reader still holds a snapshot")
            #expect(row.column("log")?.integer == 0, "the log was not emptied")
        }
    }

    @Test("With no direct read connection free, requests authenticate through the driver, and revocation still holds",
          .enabled(if: !TestDatabase.isPostgres))
    func driverFallback() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            guard case .sqlite(let path) = app.appConfig.database else { Issue.record("not SQLite"); return }
            app.sqliteReaders?.close()
            app.sqliteReaders = SQLiteReaders(path: path, limit: 0, observer: nil, logger: app.logger)
            try await makeUser(app, email: "fallback@example.com")
            let pair = try await login(app, email: "fallback@example.com")
            let res = try await me(app, bearer(pair.accessToken))
            #expect(res.status == .ok)
            #expect(try res.content.decode(MeResponse.self).user.email == "fallback@example.com")
            let logout = try await app.testing().sendRequest(.POST, "/api/v1/auth/logout", headers: bearer(pair.accessToken))
            #expect(logout.status == .noContent)
            #expect(try await me(app, bearer(pair.accessToken)).status == .unauthorized)
        }
    }

    @Test("On PostgreSQL the lookup is a statement prepared once per connection, and answers as the unprepared one does",
          .enabled(if: TestDatabase.isPostgres))
    func preparedOnPostgres() async throws {
        try await withTestApp { app in
            let (token, session, instrumented, prepared) = try await signedIn(app, email: "prepared@example.com")
            #expect(prepared.isEnabled)
            for _ in 0..<3 { #expect(try await me(app, bearer(token)).status == .ok) }
            let (found, missing, names) = try await instrumented.base.withConnection { connection in
                var bindings = PostgresBindings()
                bindings.append(try session.requireID())
                var found: [any SQLRow]? = nil
                for _ in 0..<2 {
                    found = try await prepared.rows(CallerLookup.Prepared.SessionByID.self, bindings, on: connection, observer: instrumented.observer)
                }
                var other = PostgresBindings()
                other.append(UUID())
                let missing = try await prepared.rows(CallerLookup.Prepared.SessionByID.self, other, on: connection, observer: instrumented.observer)
                let names = try await (connection as! any SQLDatabase).raw("SELECT name FROM pg_prepared_statements").all()
                    .map { try $0.decode(column: "name", as: String.self) }
                return (found, missing, names)
            }
            let row = try #require(found?.first)
            #expect(try row.decode(column: "email", as: String.self) == "prepared@example.com")
            #expect(try row.decode(column: "c_id", as: UUID.self) == session.id)
            #expect(missing?.isEmpty == true, "no such session: no row")
            #expect(names.filter { $0 == "steward_caller_session_by_id" }.count == 1, "prepared once on the connection: \(names)")
            #expect(prepared.isEnabled)
        }
    }

    @Test("A connection that refuses the prepared statement (as a pooler in transaction mode does) gets the answer unprepared, and preparing turns off",
          .enabled(if: TestDatabase.isPostgres))
    func preparedFallsBack() async throws {
        try await withTestApp { app in
            let (token, session, instrumented, prepared) = try await signedIn(app, email: "pooled@example.com")
            let refused = try await instrumented.base.withConnection { connection in
                // What a pooler does: this server connection already has the name, prepared by another client.
                try await (connection as! any SQLDatabase).raw("PREPARE steward_caller_session_by_id(uuid) AS SELECT 1").run()
                var bindings = PostgresBindings()
                bindings.append(try session.requireID())
                return try await prepared.rows(CallerLookup.Prepared.SessionByID.self, bindings, on: connection, observer: instrumented.observer)
            }
            #expect(refused == nil, "refused: the caller runs the statement unprepared")
            #expect(!prepared.isEnabled, "the first refusal turns preparing off for the process")
            let res = try await me(app, bearer(token))
            #expect(res.status == .ok)
            #expect(try res.content.decode(MeResponse.self).user.email == "pooled@example.com")
        }
    }
}

/// A signed-in user's token and session, and the app's database with its prepared statements (PostgreSQL).
private func signedIn(_ app: Application, email: String) async throws
    -> (token: String, session: UserSession, database: InstrumentedDatabase, prepared: PreparedStatements) {
    app.useTestDoubles()
    let user = try await makeUser(app, email: email)
    let token = try await login(app, email: email).accessToken
    let session = try #require(try await UserSession.query(on: app.db).filter(\.$user.$id == user.requireID()).first())
    let instrumented = try #require(app.db as? InstrumentedDatabase)
    return (token, session, instrumented, try #require(instrumented.preparedStatements))
}

private struct CreatedKey: Decodable {
    var key: String
}

private struct NewKey: Content {
    var name: String
    var scopes: [String]
}
