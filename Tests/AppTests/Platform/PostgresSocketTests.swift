import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("PostgreSQL over its Unix socket")
struct PostgresSocketTests {
    @Test("With DATABASE_URL naming the socket's directory, Steward signs in, writes and reads a skill, numbers its audit entry, holds every connection on the socket, and backs up with pg_dump",
          .enabled(if: TestDatabase.postgresSocketURL != nil, "needs PostgreSQL and its socket directory (the PostgreSQL leg sets both)"))
    func socket() async throws {
        let url = try #require(TestDatabase.postgresSocketURL)
        try await withTestApp(environment: ["DATABASE_URL": url]) { app in
            // Not TCP: the server sees no client address on a socket connection.
            let row = try await (app.db as! any SQLDatabase).raw("SELECT inet_client_addr() IS NULL AS local").first()
            #expect(try row?.decode(column: "local", as: Bool.self) == true)

            try await makeUser(app, email: "socket@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "socket@example.com").requireID(),
                                                              roles: ["admin"], actor: .cli)
            let headers = bearer(try await login(app, email: "socket@example.com").accessToken)
            var json = headers
            json.add(name: .contentType, value: "application/json")
            let created = try await app.testing().sendRequest(.POST, "/api/v1/skills", headers: json, body: .init(string: """
                {"slug": "socket-skill", "name": "Over the socket", "description": "Written through a Unix socket", "runner": {"type": "builtin", "name": "echo"}}
                """))
            #expect(created.status == .created, "\(created.body.string)")
            let read = try await app.testing().sendRequest(.GET, "/api/v1/skills?q=socket", headers: headers)
            #expect(read.status == .ok)
            #expect(read.body.string.contains(#""slug":"socket-skill""#))

            // The sequencer numbers the write's audit entry on its own connection, also the socket; the log shows
            // only numbered entries.
            var numbered = false
            for _ in 0..<50 where !numbered {
                let entries = try await app.testing().sendRequest(.GET, "/api/v1/audit-logs?limit=100", headers: headers)
                numbered = entries.body.string.contains("skill.created")
                if !numbered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(numbered)
            let tcp = try await (app.db as! any SQLDatabase).raw("""
                SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND client_addr IS NOT NULL
                """).first()
            #expect(try tcp?.decode(column: "n", as: Int.self) == 0)

            // pg_dump is given the same URL, password aside, and reads libpq's socket form.
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = directory.path + "/socket.dump"
            #expect(try await app.runCommand(["db", "backup", "--out", path]).contains("backup written to \(path)"))
            let header = try FileHandle(forReadingFrom: URL(fileURLWithPath: path)).readData(ofLength: 5)
            #expect(header == Data("PGDMP".utf8))
        }
    }
}
