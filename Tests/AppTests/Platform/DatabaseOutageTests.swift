import Foundation
import NIOConcurrencyHelpers
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Database outage")
struct DatabaseOutageTests {
    @Test("With PostgreSQL unreachable, over TCP or its Unix socket, requests that need it answer 503 unavailable with Retry-After, never 500, and readiness says so",
          arguments: [
              // Nothing listens on port 1: every connection attempt is refused at once.
              "postgres://steward:steward@127.0.0.1:1/steward",
              // No socket in that directory.
              "postgres://steward:steward@/steward?host=/nonexistent-steward-socket-directory",
          ])
    func unreachablePostgres(url: String) async throws {
        try await withTestApp(environment: ["DATABASE_URL": url, "STEWARD_DB_CONNECT_TIMEOUT": "2"], migrate: false) { app in
            for (method, path, body) in [(HTTPMethod.POST, "/api/v1/auth/login", #"{"email": "a@example.com", "password": "whatever-password"}"#),
                                         (.GET, "/api/v1/skills", nil)] {
                var headers: HTTPHeaders = ["Authorization": "Bearer stw_abcdefgh_0123456789abcdef0123456789abcdef"]
                if body != nil { headers.add(name: .contentType, value: "application/json") }
                let res = try await app.testing().sendRequest(method, path, headers: headers, body: body.map { .init(string: $0) })
                #expect(res.status == .serviceUnavailable, "\(path): \(res.status) \(res.body.string)")
                #expect(res.headers.first(name: "Retry-After") != nil, "\(path)")
                #expect(try res.problem().code == "unavailable", "\(path)")
            }
            let ready = try await app.testing().sendRequest(.GET, "/health/ready")
            #expect(ready.status == .serviceUnavailable)
        }
    }
}

@Suite("Database outage: connections cut in flight")
struct ConnectionCutTests {
    @Test("Execution creates in flight when every session is cut (a fast shutdown, a failover) all answer, 202 or 503, and none hangs", .enabled(if: TestDatabase.isPostgres))
    func createsInFlightAnswer() async throws {
        try await withTestApp(environment: ["STEWARD_WORKERS": "0", "STEWARD_RATE_LIMIT_EXECUTIONS": "0", "STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "100000"]) { app in
            _ = try await SkillService(app: app).seedSamples()
            try await makeUser(app, email: "cut@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "cut@example.com").requireID(), roles: ["executor"], actor: .cli)
            let token = try await login(app, email: "cut@example.com").accessToken
            let stop = NIOLockedValueBox(false)
            let loops = (0..<8).map { _ in
                Task { () -> [HTTPStatus] in
                    var statuses: [HTTPStatus] = []
                    while !stop.withLockedValue({ $0 }) {
                        let res = try await app.testing().sendRequest(.POST, "/api/v1/executions", headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                                                                      body: .init(string: #"{"skillId": "echo", "input": {}}"#))
                        statuses.append(res.status)
                    }
                    return statuses
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            for _ in 0..<3 {
                try await (app.db as! any SQLDatabase).raw("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").run()
                try await Task.sleep(for: .milliseconds(150))
            }
            stop.withLockedValue { $0 = true }
            // A hung request cannot be cancelled, so the answers are awaited against a deadline, not joined.
            let (answers, answer) = AsyncStream<[HTTPStatus]>.makeStream()
            for loop in loops { Task { answer.yield((try? await loop.value) ?? []) } }
            let deadline = Task { try await Task.sleep(for: .seconds(15)); answer.finish() }
            var statuses: [HTTPStatus] = [], finished = 0
            for await part in answers {
                statuses += part
                finished += 1
                if finished == loops.count { break }
            }
            deadline.cancel()
            try #require(finished == loops.count, "\(loops.count - finished) of \(loops.count) requests in flight when the sessions were cut still hang after 15 s")
            #expect(statuses.allSatisfy { [.accepted, .serviceUnavailable].contains($0) }, "\(Set(statuses.map(\.code)))")
            // Every acknowledged create is stored (a create cut during its COMMIT may be stored and still get 503).
            let stored = try await Execution.query(on: app.db).count()
            #expect(stored >= statuses.filter { $0 == .accepted }.count)
            #expect(statuses.contains(.serviceUnavailable), "no request was in flight at a cut")
        }
    }
}
