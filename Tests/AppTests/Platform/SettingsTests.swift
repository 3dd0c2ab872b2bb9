import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String? = nil, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = [:]
    if let token { headers.add(name: .authorization, value: "Bearer \(token)") }
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// Sets one setting through the API and expects it to be taken.
private func put(_ app: Application, _ token: String, _ key: String, _ value: String) async throws {
    let response = try await send(app, .PUT, "/api/v1/settings/\(key)", token: token, json: #"{"value": \#(value)}"#)
    #expect(response.status == .ok, "\(key) = \(value): \(response.body.string)")
}

private func setting(_ app: Application, _ token: String, _ key: String) async throws -> [String: JSONValue] {
    let response = try await send(app, .GET, "/api/v1/settings/\(key)", token: token)
    #expect(response.status == .ok, "\(response.body.string)")
    return try #require(JSONValue.parse(response.body.string).object)
}

/// A value of the setting's type other than its default, that leaves the test able to go on.
private func otherValue(_ definition: SettingDefinition, default current: JSONValue) -> JSONValue {
    switch definition.type {
    case .boolean: current == .bool(true) ? .bool(false) : .bool(true)
    case .integer(let range): .number(Double(current.intValue == range.upperBound ? range.upperBound - 1 : range.upperBound))
    case .rate: "100000/15min"
    case .text: "Maintenance tonight from 22:00 UTC"
    case .role: "developer"
    }
}

@Suite("Runtime settings")
struct SettingsTests {
    @Test("Every setting round-trips: listed with its default and source, set (database, audited with old and new value), read back, and reset")
    func roundTrip() async throws {
        try await withTestApp(environment: ["STEWARD_ACCESS_TOKEN_TTL": "600"]) { app in
            let token = try await adminToken(app)
            let list = try await send(app, .GET, "/api/v1/settings", token: token)
            #expect(list.status == .ok)
            let items = try #require(JSONValue.parse(list.body.string).object?["items"]?.arrayValue)
            let listed = items.compactMap { $0.object?["key"]?.stringValue }
            #expect(listed == SettingsRegistry.definitions.map(\.key))
            for key in ["features.webhooks", "features.workflows", "features.schedules", "features.analytics", "features.mcp",
                        "features.registration", "accounts.defaultRole", "accounts.passwordMinLength", "accounts.accessTokenTTLSeconds",
                        "accounts.sessionIdleTimeoutSeconds", "accounts.sessionAbsoluteTimeoutSeconds", "limits.maxConcurrentExecutionsPerUser",
                        "rateLimits.api", "rateLimits.global", "maintenance.message", "maintenance.readOnly"] {
                #expect(listed.contains(key), "\(key) is a setting")
            }
            let ttl = try await setting(app, token, "accounts.accessTokenTTLSeconds")
            #expect(ttl["value"] == .number(600) && ttl["source"] == "environment" && ttl["environmentVariable"] == "STEWARD_ACCESS_TOKEN_TTL")
            #expect(try await setting(app, token, "features.webhooks")["source"] == "default")
            #expect(try await setting(app, token, "maintenance.message")["value"] == .null, "a null value is written, not left out")

            for definition in SettingsRegistry.definitions {
                let before = try await setting(app, token, definition.key)
                let value = otherValue(definition, default: before["value"] ?? .null)
                try await put(app, token, definition.key, try value.canonicalString())
                let after = try await setting(app, token, definition.key)
                #expect(after["value"] == value && after["source"] == "database", "\(definition.key): \(after)")
                #expect(after["updatedAt"]?.stringValue != nil && after["updatedBy"]?.stringValue != nil)
                let reset = try await send(app, .DELETE, "/api/v1/settings/\(definition.key)", token: token)
                #expect(reset.status == .ok)
                let restored = try #require(JSONValue.parse(reset.body.string).object)
                #expect(restored["value"] == before["value"] && restored["source"] == before["source"] && restored["updatedAt"] == .null,
                        "\(definition.key) is back to its default")
            }
            let audit = try await AuditLog.query(on: app.db).filter(\.$resourceType == "setting").filter(\.$resourceID == "accounts.accessTokenTTLSeconds").all()
            #expect(audit.map(\.action).sorted() == ["setting.reset", "setting.updated"])
            let updated = try #require(audit.first { $0.action == "setting.updated" })
            #expect(JSONValue.parse(updated.details) == ["from": 600, "to": 86400])
        }
    }

    @Test("A bad value is 422 naming the field; an unknown key is 404; only settings:manage may read or change settings")
    func validation() async throws {
        try await withTestApp { app in
            let token = try await adminToken(app)
            for (key, body) in [("accounts.passwordMinLength", #"{"value": 7}"#), ("accounts.passwordMinLength", #"{"value": 9.5}"#),
                                ("accounts.passwordMinLength", #"{"value": "12"}"#), ("features.webhooks", #"{"value": "yes"}"#),
                                ("rateLimits.api", #"{"value": "lots"}"#), ("accounts.defaultRole", #"{"value": "wizard"}"#),
                                ("maintenance.message", #"{"value": "bell\u0007"}"#), ("features.mcp", #"{}"#)] {
                let response = try await send(app, .PUT, "/api/v1/settings/\(key)", token: token, json: body)
                #expect(response.status == .unprocessableEntity, "\(key) \(body): \(response.body.string)")
                #expect(try response.problem().errors?.first?.field == "value", "\(response.body.string)")
            }
            let extra = try await send(app, .PUT, "/api/v1/settings/features.mcp", token: token, json: #"{"value": true, "why": "x"}"#)
            #expect(try extra.problem().errors?.map(\.field) == ["why"])
            #expect(try await send(app, .PUT, "/api/v1/settings/nope.nope", token: token, json: #"{"value": 1}"#).status == .notFound)
            #expect(try await send(app, .DELETE, "/api/v1/settings/nope.nope", token: token).status == .notFound)
            #expect(try await SettingsRow.count(app) == 0, "nothing was stored")

            try await makeUser(app, email: "viewer@example.com")
            let viewer = try await login(app, email: "viewer@example.com").accessToken
            #expect(try await send(app, .GET, "/api/v1/settings", token: viewer).status == .forbidden)
            #expect(try await send(app, .PUT, "/api/v1/settings/features.mcp", token: viewer, json: #"{"value": false}"#).status == .forbidden)
            #expect(try await send(app, .GET, "/api/v1/settings").status == .unauthorized)
        }
    }

    @Test("Account rules and limits apply on the next request: password length, token lifetime, default role, API rate")
    func accountRules() async throws {
        try await withTestApp { app in
            let token = try await adminToken(app)
            try await put(app, token, "accounts.passwordMinLength", "14")
            let short = try await send(app, .POST, "/api/v1/auth/register",
                                       json: #"{"email": "short@example.com", "username": "shorty", "password": "Tr0ub4dor&3x"}"#)
            #expect(short.status == .unprocessableEntity)
            #expect(try short.problem().errors?.contains { $0.field == "password" && $0.message.contains("14") } == true)

            try await put(app, token, "accounts.defaultRole", #""executor""#)
            try await put(app, token, "accounts.accessTokenTTLSeconds", "120")
            let registered = try await send(app, .POST, "/api/v1/auth/register",
                                            json: #"{"email": "long@example.com", "username": "longer", "password": "Correct-Horse-Battery-9"}"#)
            #expect(registered.status == .created, "\(registered.body.string)")
            let pair = try await login(app, email: "long@example.com", password: "Correct-Horse-Battery-9")
            #expect(pair.expiresIn == 120)
            let me = try await send(app, .GET, "/api/v1/auth/me", token: pair.accessToken)
            #expect(JSONValue.parse(me.body.string).object?["roles"] == ["executor"], "\(me.body.string)")

            // A custom role that is the default role cannot be deleted until another is the default.
            let role = try await send(app, .POST, "/api/v1/roles", token: token, json: #"{"name": "newcomer", "permissions": ["skills:read"]}"#)
            #expect(role.status == .created)
            try await put(app, token, "accounts.defaultRole", #""newcomer""#)
            let refused = try await send(app, .DELETE, "/api/v1/roles/newcomer", token: token)
            #expect(refused.status == .conflict && refused.body.string.contains("accounts.defaultRole"))
            try await put(app, token, "accounts.defaultRole", #""viewer""#)
            #expect(try await send(app, .DELETE, "/api/v1/roles/newcomer", token: token).status == .noContent)

            try await put(app, token, "rateLimits.api", #""2/min""#)
            let statuses = try await (0..<3).asyncMap { _ in try await send(app, .GET, "/api/v1/auth/me", token: pair.accessToken).status }
            #expect(statuses == [.ok, .ok, .tooManyRequests])
            #expect(try await send(app, .DELETE, "/api/v1/settings/rateLimits.api", token: token).status == .ok)
            #expect(try await send(app, .GET, "/api/v1/auth/me", token: pair.accessToken).status == .ok)
        }
    }

    @Test("A feature switched off answers 404 feature_disabled, stays in the OpenAPI document, and answers again when switched on")
    func featureRoutes() async throws {
        try await withTestApp { app in
            let token = try await adminToken(app)
            let paths: [(Feature, HTTPMethod, String)] = [
                (.webhooks, .GET, "/api/v1/webhooks"), (.workflows, .GET, "/api/v1/workflows"), (.schedules, .GET, "/api/v1/schedules"),
                (.analytics, .GET, "/api/v1/admin/stats"), (.registration, .POST, "/api/v1/auth/register"), (.mcp, .POST, "/mcp"),
            ]
            for (feature, method, path) in paths {
                try await put(app, token, feature.settingKey, "false")
                let off = try await send(app, method, path, token: token, json: method == .POST ? "{}" : nil)
                #expect(off.status == .notFound, "\(path)")
                #expect(try off.problem().code == "feature_disabled" && off.body.string.contains(feature.rawValue), "\(off.body.string)")
                let status = JSONValue.parse(try await send(app, .GET, "/api/v1/status").body.string).object
                #expect(status?["features"]?.object?[feature.rawValue] == .bool(false))
                try await put(app, token, feature.settingKey, "true")
                #expect(try await send(app, method, path, token: token, json: method == .POST ? "{}" : nil).status != .notFound, "\(path) is back")
            }
            let document = try await send(app, .GET, "/openapi.yaml").body.string
            #expect(document.contains("/api/v1/webhooks:") && document.contains("/api/v1/schedules:"))
        }
    }

    @Test("With webhooks off, events are queued as deliveries and none is sent; switched on, every one is delivered")
    func webhooksPauseAndResume() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                let admin = try await adminToken(app)
                _ = try await SkillService(app: app).seedSamples()
                try await makeUser(app, email: "hooks@example.com")
                _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "hooks@example.com").requireID(),
                                                                  roles: ["developer"], actor: .cli)
                let token = try await login(app, email: "hooks@example.com").accessToken
                let hook = try await send(app, .POST, "/api/v1/webhooks", token: token,
                                          json: #"{"url": "http://127.0.0.1:\#(receiver.port)/hook", "events": ["execution.*"]}"#)
                #expect(hook.status == .created)
                try await put(app, admin, "features.webhooks", "false")
                app.jobWorkers.start(app, count: 2)
                let created = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {"x": 1}}"#)
                let execution = try created.content.decode(ExecutionResponse.self)
                try await eventually(10, "the execution to succeed") {
                    let shown = try await send(app, .GET, "/api/v1/executions/\(execution.id)", token: token)
                    return JSONValue.parse(shown.body.string).object?["status"] == "succeeded"
                }
                _ = try await app.settledLedger()
                try await WebhookDispatcher(app: app).dispatchBatch()
                try await Task.sleep(for: .seconds(1.5))
                #expect(receiver.received.isEmpty, "nothing is sent while webhooks are off")
                let queued = try await Job.query(on: app.db).filter(\.$kind == WebhookService.deliverKind).count()
                #expect(queued == 4, "the four execution events wait as deliveries")

                try await put(app, admin, "features.webhooks", "true")
                app.jobSignal.notify()
                try await eventually(10, "the waiting deliveries to be sent") { receiver.received.count == 4 }
                let types = receiver.received.compactMap { JSONValue.parse($0.body).object?["type"]?.stringValue }
                #expect(types.sorted() == ["execution.progress", "execution.queued", "execution.running", "execution.succeeded"],
                        "each event once (an endpoint takes up to 4 deliveries at once, so their order may vary)")
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("With schedules off the scheduler fires nothing; switched on, the due schedule fires")
    func schedulesPauseAndResume() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let admin = try await adminToken(app)
            _ = try await SkillService(app: app).seedSamples()
            let created = try await send(app, .POST, "/api/v1/schedules", token: admin,
                                         json: #"{"name": "Every 5", "target": {"skillId": "echo"}, "input": {}, "cron": "*/5 * * * *"}"#)
            #expect(created.status == .created)
            try await put(app, admin, "features.schedules", "false")
            clock.advance(by: 600)
            app.schedulerWorker.start(app)
            try await Task.sleep(for: .seconds(2.5))
            let fires: @Sendable () async throws -> Int = { try await Job.query(on: app.db).filter(\.$kind == ScheduleService.fireKind).count() }
            #expect(try await fires() == 0, "nothing fires while schedules are off")
            try await put(app, admin, "features.schedules", "true")
            try await eventually(10, "the due schedule to fire") { try await fires() >= 1 }
        }
    }

    @Test("Read-only mode: unsafe requests get 503 read_only with Retry-After; reads, sign-in and settings work; the console's status shows the message")
    func readOnly() async throws {
        try await withTestApp { app in
            let token = try await adminToken(app)
            try await put(app, token, "maintenance.message", #""Upgrading the database until 18:00 UTC""#)
            try await put(app, token, "maintenance.readOnly", "true")
            let status = JSONValue.parse(try await send(app, .GET, "/api/v1/status").body.string).object
            #expect(status?["readOnly"] == .bool(true) && status?["maintenanceMessage"] == "Upgrading the database until 18:00 UTC")

            let refused = try await send(app, .POST, "/api/v1/skills", token: token,
                                         json: #"{"slug": "ro-skill", "name": "RO", "runner": {"type": "builtin", "name": "echo"}}"#)
            #expect(refused.status == .serviceUnavailable)
            #expect(try refused.problem().code == "read_only")
            #expect(refused.headers.first(name: .retryAfter) == "300")
            let register = try await send(app, .POST, "/api/v1/auth/register",
                                          json: #"{"email": "ro@example.com", "username": "readonly", "password": "Correct-Horse-Battery-9"}"#)
            #expect(register.status == .serviceUnavailable)
            #expect(try await send(app, .GET, "/api/v1/skills", token: token).status == .ok)
            let fresh = try await login(app, email: app.appConfig.adminEmail, password: "Bootstrap-Admin-Pass-1")
            #expect(!fresh.accessToken.isEmpty, "signing in still works")
            #expect(try await User.query(on: app.db).filter(\.$email == "ro@example.com").count() == 0)

            try await put(app, token, "maintenance.readOnly", "false")
            let accepted = try await send(app, .POST, "/api/v1/auth/register",
                                          json: #"{"email": "ro@example.com", "username": "readonly", "password": "Correct-Horse-Battery-9"}"#)
            #expect(accepted.status == .created)
        }
    }

    @Test("A change reaches a second app on the same database without a restart, and the CLI's change reaches both")
    func propagation() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory)
        let second = try await makeTestApp(directory: directory, freshDatabase: false, migrate: false)
        do {
            await second.runtimeSettings.load(second)
            second.settingsWatcher.start(second)
            second.jobNotificationListener?.start(second)
            let token = try await adminToken(first)
            try await put(first, token, "maintenance.message", #""Two apps""#)
            try await eventually(10, "the second app to show the message") {
                JSONValue.parse(try await send(second, .GET, "/api/v1/status").body.string).object?["maintenanceMessage"] == "Two apps"
            }
            try await put(first, token, "features.workflows", "false")
            try await eventually(10, "the second app to switch workflows off") {
                try await send(second, .GET, "/api/v1/workflows", token: token).status == .notFound
            }
            let output = try await first.runCommand(["settings", "set", "features.workflows", "true"])
            #expect(output.contains("features.workflows = true"))
            try await eventually(10, "the second app to switch workflows on") {
                try await send(second, .GET, "/api/v1/workflows", token: token).status == .ok
            }
            #expect(try await first.runCommand(["settings", "unset", "maintenance.message"]).contains("maintenance.message = null"))
            try await eventually(10, "the second app to drop the message") {
                JSONValue.parse(try await send(second, .GET, "/api/v1/status").body.string).object?["maintenanceMessage"] == .null
            }
            let list = try await first.runCommand(["settings", "list"])
            #expect(list.contains("features.workflows = true  (database)"))
            let bad = await #expect(throws: CommandFailure.self) { try await first.runCommand(["settings", "set", "accounts.passwordMinLength", "4"]) }
            #expect(bad?.description.contains("accounts.passwordMinLength") == true)
        } catch {
            try? await second.asyncShutdown()
            try? await first.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
        try await first.asyncShutdown()
    }
}

private enum SettingsRow {
    static func count(_ app: Application) async throws -> Int {
        try await (app.db as! any SQLDatabase).raw("SELECT COUNT(*) AS n FROM settings").first()?.decode(column: "n", as: Int.self) ?? -1
    }
}

extension Sequence {
    /// `map` for an async transform, in order, one at a time.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
