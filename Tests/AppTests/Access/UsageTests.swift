import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

@Suite("Per-user usage")
struct UsageTests {
    @Test("Usage counts a user's executions by status, origin and skill, their duration percentiles, their API requests and their webhooks' deliveries")
    func figures() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
            let admin = try await adminToken(app)
            _ = try await SkillService(app: app).seedSamples()
            let user = try await makeUser(app, email: "usage@example.com")
            let userID = try user.requireID()
            _ = try await UserAdminService(app: app).setRoles(userID, roles: ["developer"], actor: .cli)
            let token = try await login(app, email: "usage@example.com").accessToken
            let hook = try await send(app, .POST, "/api/v1/webhooks", token: token,
                                      json: #"{"url": "http://127.0.0.1:9/hook", "events": ["execution.*"]}"#)
            #expect(hook.status == .created)
            for skill in ["echo", "echo", "echo", "always-fails"] {
                let created = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "\#(skill)", "input": {"message": "x"}}"#)
                #expect(created.status == .accepted, "\(created.body.string)")
            }
            // Someone else's execution counts for them only.
            #expect(try await send(app, .POST, "/api/v1/executions", token: admin, json: #"{"skillId": "echo", "input": {}}"#).status == .accepted)
            try await drainJobs(app)
            // Known durations, so the percentiles are known: 10, 20, 30, 40 ms.
            let ids = try await Execution.query(on: app.db).filter(\.$user.$id == userID).sort(\.$queuedAt).all().map { try $0.requireID() }
            #expect(ids.count == 4)
            try await app.writeStatements { sql in
                for (index, id) in ids.enumerated() {
                    try await sql.raw("UPDATE executions SET duration_ms = \(bind: (index + 1) * 10) WHERE id = \(bind: id)").run()
                }
            }
            _ = try await app.settledLedger()
            try await WebhookDispatcher(app: app).dispatchBatch()
            let deliveries = try await WebhookDelivery.query(on: app.db).count()
            #expect(deliveries > 0)

            for _ in 0..<5 { #expect(try await send(app, .GET, "/api/v1/auth/me", token: token).status == .ok) }
            // Written counts and this instance's unwritten ones add up: 1 webhook + 4 executions + 5 reads so far.
            try await app.usageCounter.flush(app)
            let mine = try await send(app, .GET, "/api/v1/auth/me/usage", token: token)
            #expect(mine.status == .ok, "\(mine.body.string)")
            let usage = try #require(JSONValue.parse(mine.body.string).object)
            #expect(usage["userId"] == .string(userID.lowercasedString))
            #expect(usage["apiRequests"] == 11, "10 requests before this one, and this one")
            let executions = try #require(usage["executions"]?.object)
            #expect(executions["total"] == 4)
            #expect(executions["byStatus"]?.object?["succeeded"] == 3 && executions["byStatus"]?.object?["failed"] == 1)
            #expect(executions["byStatus"]?.object?["cancelled"] == 0, "every status is listed, zero included")
            #expect(executions["byOrigin"]?.object?["api"] == 4 && executions["byOrigin"]?.object?["mcp"] == 0)
            let bySkill = try #require(executions["bySkill"]?.arrayValue).compactMap(\.object)
            #expect(bySkill.map { $0["slug"] } == ["echo", "always-fails"] && bySkill.map { $0["count"] } == [3, 1])
            #expect(executions["durationMs"] == ["count": 4, "p50": 20, "p95": 40, "p99": 40])
            let hooks = try #require(usage["webhookDeliveries"]?.object)
            #expect(hooks["total"] == .number(Double(deliveries)) && hooks["byStatus"]?.object?["pending"] == .number(Double(deliveries)))

            // An admin reads the same figures; requests made by the admin are not the user's.
            let read = try await send(app, .GET, "/api/v1/users/\(userID.lowercasedString)/usage", token: admin)
            let byAdmin = try #require(JSONValue.parse(read.body.string).object)
            #expect(byAdmin["executions"] == usage["executions"] && byAdmin["apiRequests"] == 11, "\(read.body.string)")
            let adminUsage = JSONValue.parse(try await send(app, .GET, "/api/v1/auth/me/usage", token: admin).body.string).object
            #expect(adminUsage?["executions"]?.object?["total"] == 1 && adminUsage?["webhookDeliveries"]?.object?["total"] == 0)

            // A window with none of it.
            let later = RFC3339.string(from: Date().addingTimeInterval(3600))
            let empty = JSONValue.parse(try await send(app, .GET, "/api/v1/auth/me/usage?from=\(later)&to=\(RFC3339.string(from: Date().addingTimeInterval(7200)))", token: token).body.string).object
            #expect(empty?["executions"]?.object?["total"] == 0 && empty?["executions"]?.object?["durationMs"]?.object?["p50"] == .null)
        }
    }

    @Test("A bad window is 422; another user's usage needs users:read; with analytics off usage is 404 feature_disabled")
    func refusals() async throws {
        try await withTestApp { app in
            let admin = try await adminToken(app)
            let user = try await makeUser(app, email: "plain@example.com")
            let token = try await login(app, email: "plain@example.com").accessToken
            for query in ["from=yesterday", "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"] {
                let response = try await send(app, .GET, "/api/v1/auth/me/usage?\(query)", token: token)
                #expect(response.status == .unprocessableEntity, "\(query): \(response.body.string)")
            }
            #expect(try await send(app, .GET, "/api/v1/users/\(try user.requireID())/usage", token: token).status == .forbidden)
            #expect(try await send(app, .GET, "/api/v1/users/\(UUID())/usage", token: admin).status == .notFound)
            _ = try await SettingsService(app: app).set("features.analytics", to: .bool(false), actor: .cli)
            let off = try await send(app, .GET, "/api/v1/auth/me/usage", token: token)
            #expect(off.status == .notFound)
            #expect(try off.problem().code == "feature_disabled")
        }
    }

    @Test("GET /executions?userId= narrows to one user for callers who read all executions; others may name only themselves")
    func executionsByUser() async throws {
        try await withTestApp { app in
            let admin = try await adminToken(app)
            _ = try await SkillService(app: app).seedSamples()
            let user = try await makeUser(app, email: "runner@example.com")
            let userID = try user.requireID()
            _ = try await UserAdminService(app: app).setRoles(userID, roles: ["executor"], actor: .cli)
            let token = try await login(app, email: "runner@example.com").accessToken
            for _ in 0..<2 { _ = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#) }
            _ = try await send(app, .POST, "/api/v1/executions", token: admin, json: #"{"skillId": "echo", "input": {}}"#)

            let all = try await send(app, .GET, "/api/v1/executions", token: admin)
            #expect(JSONValue.parse(all.body.string).object?["items"]?.arrayValue?.count == 3)
            let theirs = try await send(app, .GET, "/api/v1/executions?userId=\(userID.uuidString)", token: admin)
            let items = try #require(JSONValue.parse(theirs.body.string).object?["items"]?.arrayValue)
            #expect(items.count == 2 && items.allSatisfy { $0.object?["userId"] == .string(userID.lowercasedString) })
            let adminID = try await UserAdminService(app: app).find(email: app.appConfig.adminEmail).requireID()
            #expect(try await send(app, .GET, "/api/v1/executions?userId=\(adminID)", token: token).status == .forbidden)
            let own = try await send(app, .GET, "/api/v1/executions?userId=\(userID)", token: token)
            #expect(JSONValue.parse(own.body.string).object?["items"]?.arrayValue?.count == 2)
            #expect(try await send(app, .GET, "/api/v1/executions?userId=nope", token: admin).status == .unprocessableEntity)
        }
    }
}
