import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// What a client that is not Swift sees: the exact text of ids, nulls and cursors, read as JSON text and never
/// through Swift's forgiving decoders.
@Suite("Contract conformance")
struct ContractConformanceTests {
    /// Every UUID in `text` that has an upper-case hex digit.
    static func upperCaseIDs(in text: String) -> [String] {
        let pattern = try! NSRegularExpression(pattern: "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
        return pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            let id = String(text[Range(match.range, in: text)!])
            return id.contains(where: { ("A"..."F").contains($0) }) ? id : nil
        }
    }

    private struct Call {
        let app: Application
        let token: String

        @discardableResult
        func send(_ method: HTTPMethod, _ path: String, _ json: String? = nil, expect status: HTTPStatus? = nil,
                  sourceLocation: SourceLocation = #_sourceLocation) async throws -> TestingHTTPResponse {
            var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
            if json != nil { headers.add(name: .contentType, value: "application/json") }
            let response = try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
            if let status { #expect(response.status == status, "\(method) \(path): \(response.body.string)", sourceLocation: sourceLocation) }
            return response
        }

        func object(_ method: HTTPMethod, _ path: String, _ json: String? = nil, expect status: HTTPStatus,
                    sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: JSONValue] {
            let response = try await send(method, path, json, expect: status, sourceLocation: sourceLocation)
            return try #require(JSONText.parse(response.body.string)?.object, "\(method) \(path): \(response.body.string)")
        }
    }

    /// One of each resource, made through the API as a client would, with ids sent back in upper case.
    private struct World {
        var ids: [String: String] = [:]
    }

    private func makeWorld(_ app: Application, _ call: Call) async throws -> World {
        var world = World()
        let me = try await call.object(.GET, "/api/v1/auth/me", expect: .ok)
        world.ids["user"] = try #require(me["user"]?.object?["id"]?.stringValue)
        let skill = try await call.object(.POST, "/api/v1/skills", #"""
            {"slug": "conformance", "name": "Conformance", "tags": ["a"], "runner": {"type": "builtin", "name": "echo"},
             "inputSchema": {"type": "object"}}
            """#, expect: .created)
        let skillID = try #require(skill["id"]?.stringValue)
        world.ids["skill"] = skillID
        try await call.send(.POST, "/api/v1/skills/\(skillID.uppercased())/favorite", expect: .noContent)
        // An id sent in upper case is the same id.
        let execution = try await call.object(.POST, "/api/v1/executions", #"{"skillId": "\#(skillID.uppercased())", "input": {"n": 1}}"#,
                                              expect: .accepted)
        world.ids["execution"] = try #require(execution["id"]?.stringValue)
        let workflow = try await call.object(.POST, "/api/v1/workflows", #"""
            {"slug": "conformance-flow", "name": "Flow", "steps": [{"id": "one", "skillId": "\#(skillID.uppercased())"}]}
            """#, expect: .created)
        let workflowID = try #require(workflow["id"]?.stringValue)
        world.ids["workflow"] = workflowID
        let run = try await call.object(.POST, "/api/v1/workflows/\(workflowID.uppercased())/runs", #"{"input": {}}"#, expect: .accepted)
        world.ids["run"] = try #require(run["id"]?.stringValue)
        try await drainJobs(app)
        let schedule = try await call.object(.POST, "/api/v1/schedules", #"""
            {"name": "nightly", "target": {"skillId": "\#(skillID.uppercased())"}, "cron": "@daily", "enabled": false}
            """#, expect: .created)
        world.ids["schedule"] = try #require(schedule["id"]?.stringValue)
        let key = try await call.object(.POST, "/api/v1/api-keys", #"{"name": "ci", "scopes": ["skills:read"]}"#, expect: .created)
        world.ids["apiKey"] = try #require(key["id"]?.stringValue)
        // Last, and no job runs after it: its test delivery stays pending, so nothing leaves the process.
        let hook = try await call.object(.POST, "/api/v1/webhooks", #"{"url": "https://hooks.example.com/in", "events": ["execution.*"]}"#,
                                         expect: .created)
        let hookID = try #require(hook["id"]?.stringValue)
        world.ids["webhook"] = hookID
        try await call.send(.POST, "/api/v1/webhooks/\(hookID)/test", expect: .accepted)
        let deliveries = try await call.object(.GET, "/api/v1/webhooks/\(hookID)/deliveries", expect: .ok)
        world.ids["delivery"] = try #require(deliveries["items"]?.arrayValue?.first?.object?["id"]?.stringValue)
        return world
    }

    /// The documented GET paths with their parameters filled in from `world`.
    private func documentedGets(_ world: World) -> [String] {
        let skipped: Set<String> = [
            "/api/v1/events/stream", // a stream that does not end; its frames are checked by the realtime tests
            "/api/v1/ws", // WebSocket only
            "/metrics", "/openapi.yaml", // not JSON
            "/mcp", // a 2025 MCP session's stream (405 without one); the MCP tests cover it
            // Browser redirects of a provider sign-in (302, no JSON); the identity-provider tests cover them.
            "/api/v1/auth/oauth/{provider}/start", "/api/v1/auth/oauth/{provider}/callback",
        ]
        let fills: [String: String] = [
            "/api/v1/users/{id}": "user", "/api/v1/skills/{skill}": "skill", "/api/v1/executions/{id}": "execution",
            "/api/v1/workflows/{id}": "workflow", "/api/v1/schedules/{id}": "schedule", "/api/v1/webhooks/{id}": "webhook",
            "/api/v1/api-keys/{id}": "apiKey",
        ]
        return documentedOperations(in: EmbeddedResources.openAPIDocument).filter { $0.hasPrefix("GET ") }.map { String($0.dropFirst(4)) }
            .filter { !skipped.contains($0) }.sorted().map { path in
                var filled = path
                for (prefix, kind) in fills where filled.hasPrefix(prefix) {
                    filled = filled.replacingOccurrences(of: prefix, with: prefix.replacingOccurrences(of: prefix.split(separator: "/").last!, with: world.ids[kind]!))
                }
                filled = filled.replacingOccurrences(of: "{runId}", with: world.ids["run"]!)
                    .replacingOccurrences(of: "{deliveryId}", with: world.ids["delivery"]!)
                    .replacingOccurrences(of: "/users/{id}/", with: "/users/\(world.ids["user"]!)/")
                    .replacingOccurrences(of: "/settings/{key}", with: "/settings/maintenance.message")
                // A route whose answer needs a query.
                if filled == "/api/v1/schedules/preview" { filled += "?cron=0%209%20*%20*%20MON-FRI&timezone=Europe/Berlin" }
                return filled
            }
    }

    @Test("Every documented GET, with one of each resource made, writes ids in lower case and lists always carry nextCursor")
    func idsAndNulls() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let call = Call(app: app, token: try await adminToken(app))
            let world = try await makeWorld(app, call)
            let paths = documentedGets(world)
            #expect(paths.count >= 25, "the document's GET routes: \(paths)")
            for path in paths {
                #expect(!path.contains("{"), "a parameter was not filled in: \(path)")
                let response = try await call.send(.GET, path)
                #expect(response.status == .ok, "GET \(path): \(response.status) \(response.body.string)")
                let body = response.body.string
                #expect(Self.upperCaseIDs(in: body).isEmpty, "GET \(path) writes upper-case ids: \(Self.upperCaseIDs(in: body))")
                for (name, value) in response.headers {
                    #expect(Self.upperCaseIDs(in: value).isEmpty, "GET \(path) header \(name): \(value)")
                }
                if let object = JSONText.parse(body)?.object, object["items"] != nil {
                    #expect(object.keys.contains("nextCursor"), "GET \(path) leaves out nextCursor: \(body.prefix(200))")
                }
            }

            // Nullable fields are present as null, not left out.
            let execution = try await call.object(.GET, "/api/v1/executions/\(world.ids["execution"]!)", expect: .ok)
            #expect(execution["error"] == .null, "error is present and null: \(execution)")
            let delivery = try #require(try await call.object(.GET, "/api/v1/webhooks/\(world.ids["webhook"]!)/deliveries", expect: .ok)["items"]?
                .arrayValue?.first?.object)
            for field in ["responseStatus", "durationMs", "error", "responseBody"] {
                #expect(delivery[field] == .null, "delivery \(field) is present and null: \(delivery)")
            }
            let schedule = try await call.object(.GET, "/api/v1/schedules/\(world.ids["schedule"]!)", expect: .ok)
            for field in ["nextRunAt", "lastRunAt", "lastStatus", "lastError", "lastExecutionId", "lastRunId"] {
                #expect(schedule[field] == .null, "a disabled schedule's \(field) is present and null: \(schedule)")
            }
            let problem = try await call.object(.GET, "/api/v1/executions/\(UUID().uuidString)", expect: .notFound)
            #expect(problem["errors"] == .null && problem.keys.contains("errors"), "\(problem)")

            // The token's subject and session are the ids the API shows, in the same text.
            let login = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                body: .init(string: #"{"email": "\#(app.appConfig.adminEmail)", "password": "Bootstrap-Admin-Pass-1"}"#))
            let pair = try #require(JSONText.parse(login.body.string)?.object)
            let accessToken = try #require(pair["accessToken"]?.stringValue)
            let claims = try #require(Self.claims(of: accessToken))
            #expect(claims["sub"] == pair["user"]?.object?["id"])
            let sessions = try await Call(app: app, token: accessToken).object(.GET, "/api/v1/auth/sessions", expect: .ok)
            let current = sessions["items"]?.arrayValue?.first { $0.object?["current"] == .bool(true) }?.object
            #expect(current?["id"] != nil && current?["id"] == claims["sid"], "the current session's id is the token's sid")

            // An audit entry names the resource by the id its create call returned; filters take any case.
            let audit = try await call.object(.GET, "/api/v1/audit-logs?resourceId=\(world.ids["execution"]!.uppercased())", expect: .ok)
            let entries = audit["items"]?.arrayValue ?? []
            #expect(!entries.isEmpty && entries.allSatisfy { $0.object?["resourceId"]?.stringValue == world.ids["execution"] })
            let events = try await call.object(.GET, "/api/v1/events?resourceId=\(world.ids["execution"]!.uppercased())", expect: .ok)
            #expect(events["items"]?.arrayValue?.count == 4, "queued, running, progress, succeeded: \(events)")
            let bySkill = try await call.object(.GET, "/api/v1/executions?skillId=\(world.ids["skill"]!.uppercased())", expect: .ok)
            #expect(bySkill["items"]?.arrayValue?.count == 2, "the execution and the workflow step's")
        }
    }

    @Test("With one of each resource made, the fast read of every list gives the same models and responses as Fluent's own read")
    func listedReadsMatch() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let call = Call(app: app, token: try await adminToken(app))
            _ = try await makeWorld(app, call)
            let db = try await app.settledLedger()
            #expect(TestDatabase.isPostgres || app.sqliteReaders != nil, "SQLite reads lists on direct readers")
            try await ListedReadTests.sameRows(User.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(UserSession.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(UserRole.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(APIKey.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(Skill.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(SkillFavorite.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(Execution.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(ExecutionHistoryEntry.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(Event.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(AuditLog.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(Webhook.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(WebhookDelivery.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(WebhookAttempt.self, on: db, readers: app.sqliteReaders, atLeast: 0)
            try await ListedReadTests.sameRows(Workflow.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(WorkflowRun.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(WorkflowRunStep.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameRows(Schedule.self, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(Skill.self, as: SkillResponse.self, from: SkillResponse.init, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(Execution.self, as: ExecutionResponse.self, from: ExecutionResponse.init, on: db,
                                                readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(AuditLog.self, as: AuditLogController.Entry.self, from: AuditLogController.Entry.init, on: db,
                                                readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(Event.self, as: EventResponse.self, from: EventResponse.init, on: db, readers: app.sqliteReaders)
            // A user's item reads its roles in the same statement (`AdminUserResponse.extraColumns`).
            let rolesOf = Dictionary(grouping: try await UserRole.query(on: db).all(), by: { $0.$user.id }).mapValues { $0.map(\.role).sorted() }
            #expect(rolesOf.values.contains(["admin"]))
            try await ListedReadTests.sameItems(User.self, as: AdminUserResponse.self, from: { AdminUserResponse($0, roles: rolesOf[$0.id!] ?? []) }, on: db,
                                                readers: app.sqliteReaders)
            try ListedReadTests.writesAsCodable(try await User.query(on: db).listed().map { AdminUserResponse($0, roles: ["admin", "viewer"]) })
            try ListedReadTests.writesAsCodable(try await User.query(on: db).listed().map {
                MeResponse(user: UserResponse($0), roles: ["admin", "viewer"], permissions: ["skills:read", "users:read"])
            })
            let skills = try await Skill.query(on: db).listed().map(SkillResponse.init)
            try ListedReadTests.writesAsCodable([ListResponse(items: skills, nextCursor: "eyJvIjoyMH0"), ListResponse(items: [], nextCursor: nil)])
            try await ListedReadTests.sameItems(Workflow.self, as: WorkflowResponse.self, from: WorkflowResponse.init, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(Schedule.self, as: ScheduleResponse.self, from: ScheduleResponse.init, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(APIKey.self, as: APIKeyResponse.self, from: APIKeyResponse.init, on: db, readers: app.sqliteReaders)
            try await ListedReadTests.sameItems(Webhook.self, as: WebhookResponse.self, from: { WebhookResponse($0) }, on: db, readers: app.sqliteReaders)
            try ListedReadTests.writesAsCodable(try await Workflow.query(on: db).listed().map(WorkflowResponse.init))
            try ListedReadTests.writesAsCodable(try await Schedule.query(on: db).listed().map(ScheduleResponse.init))
            try ListedReadTests.writesAsCodable(try await APIKey.query(on: db).listed().map(APIKeyResponse.init))
            try ListedReadTests.writesAsCodable(try await Webhook.query(on: db).listed().flatMap { [WebhookResponse($0), WebhookResponse($0, secret: "whsec_x")] })
        }
    }

    @Test("Every list route pages to its end, with and without filters, repeating no item")
    func pagingEnds() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let call = Call(app: app, token: try await adminToken(app))
            let world = try await makeWorld(app, call)
            let execution = world.ids["execution"]!
            let lists = [
                "/api/v1/auth/sessions", "/api/v1/api-keys", "/api/v1/users", "/api/v1/users?role=admin", "/api/v1/roles",
                "/api/v1/skills", "/api/v1/skills?q=conformance", "/api/v1/skills?tag=a", "/api/v1/skills/favorites",
                "/api/v1/skills/popular", "/api/v1/executions", "/api/v1/executions?status=succeeded",
                "/api/v1/executions/\(execution)/history", "/api/v1/events", "/api/v1/events?types=execution.*",
                "/api/v1/events?resourceId=\(execution)", "/api/v1/events?types=execution.succeeded&resourceId=\(execution.uppercased())",
                "/api/v1/events?types=webhook.disabled", "/api/v1/audit-logs", "/api/v1/audit-logs?resourceId=\(execution)",
                "/api/v1/audit-logs?action=execution.created", "/api/v1/webhooks", "/api/v1/webhooks/\(world.ids["webhook"]!)/deliveries",
                "/api/v1/workflows", "/api/v1/workflows/\(world.ids["workflow"]!)/runs", "/api/v1/schedules",
            ]
            for list in lists {
                var seen: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let separator = list.contains("?") ? "&" : "?"
                    let page = try await call.object(.GET, "\(list)\(separator)limit=1" + (cursor.map { "&cursor=\($0)" } ?? ""), expect: .ok)
                    #expect(page.keys.contains("nextCursor"), "\(list): \(page)")
                    for item in page["items"]?.arrayValue ?? [] {
                        seen.append(try item.object?["id"]?.stringValue ?? item.object?["seq"].map { "\($0)" } ?? (try item.canonicalString()))
                    }
                    let next = page["nextCursor"]?.stringValue
                    #expect(next == nil || next != cursor, "\(list) hands back the cursor it was given")
                    cursor = next
                    pages += 1
                } while cursor != nil && pages < 300
                #expect(pages < 300, "\(list) never ends")
                #expect(Set(seen).count == seen.count, "\(list) repeats items")
            }
        }
    }

    /// The claims of a JWT, read as any client reads them.
    static func claims(of token: String) -> [String: JSONValue]? {
        let parts = token.split(separator: ".")
        guard parts.count == 3, let data = AccessTokens.base64URLDecode(String(parts[1])) else { return nil }
        return JSONText.parse(String(decoding: data, as: UTF8.self))?.object
    }
}

extension JSONValue {
    /// The items of a JSON array (for reading answers in tests).
    var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }
}

@Suite("Contract conformance: what the document promises about input")
struct DocumentedInputTests {
    private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String? = nil, json: String? = nil) async throws -> TestingHTTPResponse {
        var headers: HTTPHeaders = [:]
        if let token { headers.add(name: .authorization, value: "Bearer \(token)") }
        if json != nil { headers.add(name: .contentType, value: "application/json") }
        return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
    }

    @Test("q longer than 500 characters is 422 on skills and users; 500 is fine")
    func longQuery() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await adminToken(app)
            for path in ["/api/v1/skills", "/api/v1/users"] {
                let long = try await send(app, .GET, "\(path)?q=\(String(repeating: "a", count: 501))", token: token)
                #expect(long.status == .unprocessableEntity, "\(path): \(long.body.string)")
                #expect(try long.problem().errors?.first?.field == "q")
                #expect(try await send(app, .GET, "\(path)?q=\(String(repeating: "a", count: 500))", token: token).status == .ok)
            }
        }
    }

    @Test("inputSchema true or false is 422 on create and update: a skill's schema is an object")
    func booleanInputSchema() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await adminToken(app)
            for schema in ["true", "false"] {
                let created = try await send(app, .POST, "/api/v1/skills", token: token, json: #"""
                    {"slug": "s-\#(schema)", "name": "S", "runner": {"type": "builtin", "name": "echo"}, "inputSchema": \#(schema)}
                    """#)
                #expect(created.status == .unprocessableEntity, "\(schema): \(created.body.string)")
                #expect(try created.problem().errors?.first?.field == "inputSchema")
            }
            let created = try await send(app, .POST, "/api/v1/skills", token: token, json: #"""
                {"slug": "plain", "name": "S", "runner": {"type": "builtin", "name": "echo"}}
                """#)
            #expect(created.status == .created)
            let patched = try await send(app, .PATCH, "/api/v1/skills/plain", token: token, json: #"{"inputSchema": false}"#)
            #expect(patched.status == .unprocessableEntity, "\(patched.body.string)")
            let after = try await send(app, .GET, "/api/v1/skills/plain", token: token)
            #expect(JSONText.parse(after.body.string)?.object?["inputSchema"] == ["type": "object"], "nothing changed")
        }
    }

    @Test("Login with an empty email or password is 422 and does not count toward the lockout")
    func emptyLogin() async throws {
        try await withTestApp(environment: ["STEWARD_LOCKOUT_THRESHOLD": "3"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "kim@example.com")
            for body in [#"{"email": "kim@example.com", "password": ""}"#, #"{"email": "", "password": ""}"#, #"{"email": " ", "password": "x"}"#,
                         #"{"email": "kim@example.com", "password": ""}"#, #"{"email": "kim@example.com", "password": ""}"#] {
                let res = try await send(app, .POST, "/api/v1/auth/login", json: body)
                #expect(res.status == .unprocessableEntity, "\(body): \(res.body.string)")
            }
            // Five empty attempts against a threshold of three: the account is not locked.
            let real = try await send(app, .POST, "/api/v1/auth/login", json: #"{"email": "kim@example.com", "password": "\#(strongPassword)"}"#)
            #expect(real.status == .ok, "\(real.body.string)")
        }
    }
}
