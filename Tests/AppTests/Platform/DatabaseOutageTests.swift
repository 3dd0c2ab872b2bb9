import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Database outage")
struct DatabaseOutageTests {
    @Test("With PostgreSQL unreachable, requests that need it answer 503 unavailable with Retry-After, never 500, and readiness says so")
    func unreachablePostgres() async throws {
        // Nothing listens on port 1: every connection attempt is refused at once.
        try await withTestApp(environment: ["DATABASE_URL": "postgres://steward:steward@127.0.0.1:1/steward", "STEWARD_DB_CONNECT_TIMEOUT": "2"],
                              migrate: false) { app in
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
