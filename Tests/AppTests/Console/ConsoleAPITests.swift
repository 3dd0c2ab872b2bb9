import Foundation
import StewardFormats
import Testing
import Vapor
import VaporTesting
@testable import App

/// The routes the console needed and the API gained for it: anything the console does, an API client can do.
@Suite("API routes the console uses")
struct ConsoleAPITests {
    private func get(_ app: Application, _ path: String, token: String? = nil) async throws -> TestingHTTPResponse {
        try await send(app, .GET, path, token: token)
    }

    private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String? = nil, json: String? = nil) async throws -> TestingHTTPResponse {
        var headers: HTTPHeaders = [:]
        if let token { headers.bearerAuthorization = BearerAuthorization(token: token) }
        if json != nil { headers.contentType = .json }
        return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }

    private func token(_ app: Application, role: String) async throws -> (String, UUID) {
        let email = "\(role)-\(UUID().uuidString.prefix(6).lowercased())@example.com"
        let id = try await makeUser(app, email: email).requireID()
        _ = try await UserAdminService(app: app).setRoles(id, roles: [role], actor: .cli)
        return (try await login(app, email: email).accessToken, id)
    }

    @Test("GET /api/v1/admin/about names the version, the database and the schema; analytics:read only")
    func about() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let response = try await get(app, "/api/v1/admin/about", token: admin)
            #expect(response.status == .ok)
            let about = try response.json()
            #expect(about["version"] == .string(StewardVersion.current))
            #expect(about["database"] == .string(TestDatabase.isPostgres ? "postgresql" : "sqlite"))
            let (pending, version) = try await MigrationService(app: app).pendingCount(on: app.db)
            #expect(pending == 0 && version?.hasPrefix(String(format: "%04d_", AppMigrations.all(app.keyMaterial).count)) == true)
            #expect(about["schemaVersion"] == .string(version ?? ""))
            #expect(about["pendingMigrations"] == .number(0))
            #expect(about["openapi"] == "/openapi.yaml" && about["metrics"] == "/metrics")
            #expect(try await get(app, "/api/v1/admin/about").status == .unauthorized)
            let (developer, _) = try await token(app, role: "developer")
            #expect(try await get(app, "/api/v1/admin/about", token: developer).status == .forbidden)
        }
    }

    @Test("GET /api/v1/admin/stats counts webhook subscriptions, disabled ones and failed deliveries")
    func webhookFigures() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            for (index, enabled) in [true, false].enumerated() {
                let created = try await send(app, .POST, "/api/v1/webhooks", token: admin,
                                             json: #"{"url": "https://hooks\#(index).example.com/in", "events": ["execution.*"], "enabled": \#(enabled)}"#)
                #expect(created.status == .created, "\(created.body.string)")
            }
            try await app.writeStatements { sql in
                try await sql.raw("""
                    INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempt, created_at, updated_at)
                    SELECT \(bind: UUID()), id, \(bind: UUID()), 'execution.failed', '{}', 'failed', 8, \(bind: app.wallClock.now()), \(bind: app.wallClock.now())
                    FROM webhooks WHERE enabled = \(bind: true)
                    """).run()
            }
            let stats = try await get(app, "/api/v1/admin/stats", token: admin).json()
            let hooks = try #require(stats["webhooks"]?.object)
            #expect(hooks["subscriptions"] == .number(2))
            #expect(hooks["disabled"] == .number(1))
            #expect(hooks["failedLast24h"] == .number(1))
            #expect(hooks["retrying"] == .number(0))
        }
    }

    @Test("GET /api/v1/audit/verify: intact with the count of entries; a tampered entry is named; audit:read only")
    func auditVerify() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let intact = try await get(app, "/api/v1/audit/verify", token: admin)
            #expect(intact.status == .ok)
            #expect(intact.headers.first(name: .cacheControl) == "no-store")
            let verdict = try intact.json()
            #expect(verdict["intact"] == .bool(true))
            #expect((verdict["checked"]?.intValue ?? 0) >= 2, "the bootstrap and the login: \(verdict)")
            #expect(verdict["firstBroken"] == .null && verdict.keys.contains("firstBroken"))

            try await tamper(app, "UPDATE audit_logs SET outcome = 'failure' WHERE seq = 2")
            let broken = try await get(app, "/api/v1/audit/verify", token: admin).json()
            #expect(broken["intact"] == .bool(false))
            #expect(broken["checked"] == .number(1))
            let first = try #require(broken["firstBroken"]?.object)
            #expect(first["seq"] == .number(2))
            #expect(first["reason"] == .string("content does not match its hash"))
            #expect(first["id"]?.stringValue?.count == 36)

            let (developer, _) = try await token(app, role: "developer")
            #expect(try await get(app, "/api/v1/audit/verify", token: developer).status == .forbidden)
        }
    }

    @Test("GET /api/v1/schedules/preview: the next fire times in the zone; bad expressions, zones and counts are 422")
    func schedulePreview() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let admin = try await adminToken(app)
            let response = try await get(app, "/api/v1/schedules/preview?cron=0%209%20*%20*%20MON-FRI&timezone=Europe/Berlin", token: admin)
            #expect(response.status == .ok, "\(response.body.string)")
            let body = try response.json()
            #expect(body["cron"] == "0 9 * * MON-FRI" && body["timezone"] == "Europe/Berlin")
            let times = try #require(body["next"]?.arrayValue).compactMap { $0.stringValue.flatMap { ISO8601DateFormatter().date(from: $0) } }
            #expect(times.count == 5)
            var berlin = Calendar(identifier: .gregorian)
            berlin.timeZone = TimeZone(identifier: "Europe/Berlin")!
            for (index, time) in times.enumerated() {
                #expect(time > clock.now())
                if index > 0 { #expect(time > times[index - 1]) }
                let parts = berlin.dateComponents([.hour, .minute, .weekday], from: time)
                #expect(parts.hour == 9 && parts.minute == 0 && (2...6).contains(parts.weekday ?? 0), "\(time) is 09:00 on a weekday in Berlin")
            }
            let three = try await get(app, "/api/v1/schedules/preview?cron=@hourly&count=3", token: admin).json()
            #expect(three["next"]?.arrayValue?.count == 3 && three["timezone"] == "UTC")

            for (query, field) in [("cron=61%20*%20*%20*%20*", "cron"), ("", "cron"), ("cron=@daily&timezone=Mars/Olympus", "timezone"),
                                   ("cron=@daily&count=0", "count"), ("cron=@daily&count=21", "count"), ("cron=0%200%2031%202%20*", "cron")] {
                let refused = try await get(app, "/api/v1/schedules/preview?\(query)", token: admin)
                #expect(refused.status == .unprocessableEntity, "\(query): \(refused.status)")
                #expect(try refused.problem().errors?.map(\.field) == [field], "\(query): \(refused.body.string)")
            }
        }
    }

    @Test("GET /api/v1/users/{id}/sessions: a user's live sessions for users:read; 404 for no such user; 403 without")
    func userSessions() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let email = "sessions-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let user = try await makeUser(app, email: email)
            _ = try await login(app, email: email)
            _ = try await login(app, email: email)
            let response = try await get(app, "/api/v1/users/\(try user.requireID().lowercasedString)/sessions", token: admin)
            #expect(response.status == .ok)
            let items = try #require(response.json()["items"]?.arrayValue)
            #expect(items.count == 2)
            #expect(items.allSatisfy { $0.object?["current"] == .bool(false) }, "neither is the admin's own")
            #expect(try await get(app, "/api/v1/users/\(UUID().uuidString.lowercased())/sessions", token: admin).status == .notFound)
            let (viewer, _) = try await token(app, role: "viewer")
            #expect(try await get(app, "/api/v1/users/\(try user.requireID().lowercasedString)/sessions", token: viewer).status == .forbidden)
        }
    }

    @Test("GET /api/v1/executions?from=&to=: the queued time bounds the list; a bad time is 422")
    func executionDates() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            let admin = try await adminToken(app)
            let early = try await send(app, .POST, "/api/v1/executions", token: admin, json: #"{"skillId": "echo", "input": {}}"#).json()["id"]
            clock.advance(by: 600) // within the access token's lifetime
            let late = try await send(app, .POST, "/api/v1/executions", token: admin, json: #"{"skillId": "echo", "input": {}}"#).json()["id"]
            let middle = RFC3339.string(from: clock.now().addingTimeInterval(-300))
            let after = try await get(app, "/api/v1/executions?from=\(middle)", token: admin).json()["items"]?.arrayValue
            #expect(after?.map { $0.object?["id"] } == [late])
            let before = try await get(app, "/api/v1/executions?to=\(middle)", token: admin).json()["items"]?.arrayValue
            #expect(before?.map { $0.object?["id"] } == [early])
            let both = try await get(app, "/api/v1/executions?status=queued&from=\(middle)&to=\(RFC3339.string(from: clock.now().addingTimeInterval(60)))", token: admin)
                .json()["items"]?.arrayValue
            #expect(both?.map { $0.object?["id"] } == [late])
            let refused = try await get(app, "/api/v1/executions?from=yesterday", token: admin)
            #expect(refused.status == .unprocessableEntity)
            #expect(try refused.problem().errors?.map(\.field) == ["from"])
        }
    }
}
