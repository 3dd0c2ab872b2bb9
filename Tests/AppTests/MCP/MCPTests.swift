import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// The MCP endpoint through the real HTTP stack: both protocol revisions, the catalogue per credential, tool calls
/// that become executions, and the answers to bad input and bad credentials.
@Suite("MCP server")
struct MCPTests {
    /// A user with `role`, the sample skills, and a bearer token.
    private func user(_ app: Application, role: String = "executor", email: String = "agent@example.com") async throws -> String {
        _ = try await SkillService(app: app).seedSamples()
        try await makeUser(app, email: email)
        _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: email).requireID(), roles: [role], actor: .cli)
        return try await login(app, email: email).accessToken
    }

    private func modernBody(_ method: String, id: Int = 1, params: [String: JSONValue] = [:], version: String = MCPVersion.modern) -> String {
        var params = params
        var meta: [String: JSONValue] = [:]
        if case .object(let given)? = params["_meta"] { meta = given }
        meta[MCPVersion.metaVersion] = .string(version)
        meta[MCPVersion.metaCapabilities] = [:]
        meta[MCPVersion.metaClientInfo] = ["name": "test-agent", "version": "1.2.3"]
        params["_meta"] = .object(meta)
        return try! JSONValue.object(["jsonrpc": "2.0", "id": .number(Double(id)), "method": .string(method), "params": .object(params)]).canonicalString()
    }

    /// A 2026-07-28 POST with its headers filled from the body.
    private func modern(_ app: Application, _ token: String?, _ method: String, params: [String: JSONValue] = [:],
                        headers extra: [String: String] = [:]) async throws -> TestingHTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                                    "MCP-Protocol-Version": MCPVersion.modern, "Mcp-Method": method]
        if let token { headers.add(name: .authorization, value: "Bearer \(token)") }
        if case .string(let name)? = params["name"] ?? params["uri"] { headers.add(name: "Mcp-Name", value: name) }
        for (name, value) in extra { headers.replaceOrAdd(name: name, value: value) }
        // A JSON answer unless the test asks for a stream.
        if extra["Accept"] == nil { headers.replaceOrAdd(name: .accept, value: "application/json") }
        return try await app.testing().sendRequest(.POST, "/mcp", headers: headers, body: .init(string: modernBody(method, params: params)))
    }

    private func raw(_ app: Application, _ token: String?, body: String, headers extra: HTTPHeaders = [:]) async throws -> TestingHTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "application/json", "Accept": "application/json"]
        if let token { headers.add(name: .authorization, value: "Bearer \(token)") }
        headers.add(contentsOf: extra)
        return try await app.testing().sendRequest(.POST, "/mcp", headers: headers, body: .init(string: body))
    }

    private func json(_ response: TestingHTTPResponse) throws -> [String: JSONValue] {
        guard case .object(let object)? = JSONText.parse(response.body) else { throw TestFailure("not a JSON object: \(response.body.string)") }
        return object
    }

    private struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private func result(_ response: TestingHTTPResponse) throws -> [String: JSONValue] {
        guard case .object(let result)? = try json(response)["result"] else { throw TestFailure("no result: \(response.body.string)") }
        return result
    }

    private func errorCode(_ response: TestingHTTPResponse) throws -> Int? {
        guard case .object(let error)? = try json(response)["error"], case .number(let code)? = error["code"] else { return nil }
        return Int(code)
    }

    private func toolNames(_ result: [String: JSONValue]) -> [String] {
        guard case .array(let tools)? = result["tools"] else { return [] }
        return tools.compactMap { tool in if case .object(let o) = tool, case .string(let name)? = o["name"] { name } else { nil } }
    }

    @Test("2026-07-28: discover, then the catalogue (built-ins first, skills by slug) and a call that runs an execution with origin mcp, recorded in the audit log")
    func modernDiscoverListCall() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 2)

            let discover = try await modern(app, token, "server/discover")
            #expect(discover.status == .ok, "\(discover.body.string)")
            let discovered = try result(discover)
            #expect(discovered["resultType"] == "complete")
            #expect(discovered["supportedVersions"] == .array(MCPVersion.all.map(JSONValue.string)))
            #expect(discover.headers.first(name: "Mcp-Session-Id") == nil, "2026-07-28 has no sessions")

            let list = try result(try await modern(app, token, "tools/list"))
            let names = toolNames(list)
            #expect(Array(names.prefix(4)) == ["steward_search_skills", "steward_get_execution", "steward_cancel_execution", "steward_rollback_execution"])
            #expect(Array(names.dropFirst(4)) == ["add-numbers", "always-fails", "echo", "uppercase", "wait"])
            #expect(list["cacheScope"] == "private")
            #expect(list["ttlMs"] != nil)

            let call = try await modern(app, token, "tools/call", params: ["name": "echo", "arguments": ["greeting": "hello"]])
            #expect(call.status == .ok, "\(call.body.string)")
            let called = try result(call)
            #expect(called["isError"] == false)
            #expect(called["structuredContent"] == ["greeting": "hello"])
            guard case .array(let content)? = called["content"], case .object(let first)? = content.first else { throw TestFailure("no content") }
            #expect(first["text"] == #"{"greeting":"hello"}"#)

            let executions = try await Execution.query(on: app.db).filter(\.$origin == "mcp").all()
            #expect(executions.count == 1)
            #expect(executions.first?.clientName == "test-agent")
            #expect(executions.first?.clientVersion == "1.2.3")
            #expect(executions.first?.status == .succeeded)

            let listed = try await app.testing().sendRequest(.GET, "/api/v1/executions?origin=mcp", headers: bearer(token))
            #expect(listed.status == .ok)
            #expect(listed.body.string.contains(#""origin":"mcp""#))
            #expect(listed.body.string.contains(#""clientName":"test-agent""#))
            let none = try await app.testing().sendRequest(.GET, "/api/v1/executions?origin=schedule", headers: bearer(token))
            #expect(none.body.string.contains(#""items":[]"#))

            let audit = try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "mcp.tools_call").all()
            #expect(audit.count == 1)
            guard case .object(let details) = JSONValue.parse(audit.first?.details ?? "") else { throw TestFailure("no details") }
            #expect(details["tool"] == "echo")
            #expect(details["outcome"] == "succeeded")
            #expect(details["clientName"] == "test-agent")
            #expect(details["argumentsSha256"] == .string(SecureToken.hash(#"{"greeting":"hello"}"#)))
        }
    }

    @Test("A failing skill is a result with isError, not a JSON-RPC error; arguments that break the schema are one too")
    func failingSkill() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 1)
            let failed = try result(try await modern(app, token, "tools/call", params: ["name": "always-fails", "arguments": ["message": "boom"]]))
            #expect(failed["isError"] == true)
            guard case .array(let content)? = failed["content"], case .object(let first)? = content.first, case .string(let text)? = first["text"]
            else { throw TestFailure("no content") }
            #expect(text.contains("boom"))

            let invalid = try result(try await modern(app, token, "tools/call", params: ["name": "wait", "arguments": ["seconds": "soon"]]))
            #expect(invalid["isError"] == true)
            #expect(try await Execution.query(on: app.db).filter(\.$skillID == (try await SkillService(app: app).find("wait")).requireID()).count() == 0,
                    "nothing ran")

            let unknown = try await modern(app, token, "tools/call", params: ["name": "no-such-tool"])
            #expect(try errorCode(unknown) == -32602)
        }
    }

    @Test("In read-only mode a tool call that would start an execution answers a tool error and starts nothing; with features.mcp off /mcp is 404")
    func readOnlyAndSwitchedOff() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            let token = try await adminToken(app)
            _ = try await SettingsService(app: app).set("maintenance.readOnly", to: .bool(true), actor: .cli)
            let refused = try result(try await modern(app, token, "tools/call", params: ["name": "echo", "arguments": ["x": 1]]))
            #expect(refused["isError"] == true)
            guard case .array(let content)? = refused["content"], case .object(let first)? = content.first, case .string(let text)? = first["text"]
            else { throw TestFailure("no content") }
            #expect(text.contains("read-only"))
            #expect(try await Execution.query(on: app.db).count() == 0, "nothing was queued")
            #expect(toolNames(try result(try await modern(app, token, "tools/list"))).contains("echo"), "listing still works")

            _ = try await SettingsService(app: app).set("maintenance.readOnly", to: .bool(false), actor: .cli)
            _ = try await SettingsService(app: app).set("features.mcp", to: .bool(false), actor: .cli)
            let off = try await modern(app, token, "tools/list")
            #expect(off.status == .notFound)
            #expect(off.body.string.contains("feature_disabled"))
        }
    }

    /// `initialize` at 2025-11-25 as "legacy-agent" 0.9: the session id, and the headers a request in it carries.
    private func initializeLegacy(_ app: Application, _ token: String) async throws -> (String, HTTPHeaders) {
        let initialize = try await raw(app, token, body: """
            {"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"legacy-agent","version":"0.9"}}}
            """)
        #expect(initialize.status == .ok, "\(initialize.body.string)")
        #expect(try result(initialize)["protocolVersion"] == "2025-11-25")
        let session = try #require(initialize.headers.first(name: "Mcp-Session-Id"))
        return (session, ["Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"])
    }

    @Test("2025-11-25: initialize opens a session kept in the database; calls in it work; a retried call id runs once; DELETE ends it")
    func legacySession() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 2)
            let (session, sessionHeaders) = try await initializeLegacy(app, token)
            #expect(try await raw(app, token, body: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, headers: sessionHeaders).status == .accepted)

            let list = try await raw(app, token, body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, headers: sessionHeaders)
            #expect(toolNames(try result(list)).contains("echo"))

            let callBody = #"{"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{"name":"echo","arguments":{"n":7}}}"#
            let first = try result(try await raw(app, token, body: callBody, headers: sessionHeaders))
            #expect(first["structuredContent"] == ["n": 7])
            let again = try result(try await raw(app, token, body: callBody, headers: sessionHeaders))
            #expect(again["structuredContent"] == ["n": 7])
            let made = try await Execution.query(on: app.db).filter(\.$origin == "mcp").all()
            #expect(made.count == 1, "the same request id in the same session ran once")
            #expect(made.first?.clientName == "legacy-agent")
            #expect(made.first?.mcpRequestID == "s:call-7")
            // Two calls, two entries: the first written as its execution ended, the retry's when it had followed it.
            let entries = try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "mcp.tools_call").all()
            #expect(entries.count == 2)
            #expect(entries.allSatisfy { $0.resourceID == made.first?.id?.lowercasedString && $0.details.contains(#""outcome":"succeeded""#) })

            // Another credential of the same user does not get the session.
            let otherToken = try await login(app, email: "agent@example.com").accessToken
            let stolen = try await raw(app, otherToken, body: #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, headers: sessionHeaders)
            #expect(stolen.status == .notFound)

            let deleted = try await app.testing().sendRequest(.DELETE, "/mcp", headers: ["Authorization": "Bearer \(token)", "Mcp-Session-Id": session])
            #expect(deleted.status == .noContent)
            let after = try await raw(app, token, body: #"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#, headers: sessionHeaders)
            #expect(after.status == .notFound)
        }
    }

    @Test("No credential: 401 naming the resource metadata, which is served; a viewer sees no tools and may not call one (403 insufficient_scope)")
    func credentials() async throws {
        try await withTestApp { app in
            let anonymous = try await modern(app, nil, "tools/list")
            #expect(anonymous.status == .unauthorized)
            let challenge = try #require(anonymous.headers.first(name: "WWW-Authenticate"))
            #expect(challenge.contains(#"resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp""#) ||
                    challenge.contains("/.well-known/oauth-protected-resource/mcp\""))
            let metadata = try await app.testing().sendRequest(.GET, "/.well-known/oauth-protected-resource/mcp")
            #expect(metadata.status == .ok)
            #expect(try json(metadata)["resource"].map { if case .string(let s) = $0 { s.hasSuffix("/mcp") } else { false } } == true)

            let viewer = try await user(app, role: "viewer", email: "viewer@example.com")
            #expect(toolNames(try result(try await modern(app, viewer, "tools/list"))).isEmpty)
            let refused = try await modern(app, viewer, "tools/call", params: ["name": "echo"])
            #expect(refused.status == .forbidden)
            #expect(refused.headers.first(name: "WWW-Authenticate")?.contains(#"error="insufficient_scope", scope="skills:execute""#) == true)
            #expect(try await Execution.query(on: app.db).count() == 0)
        }
    }

    @Test("Another user's execution is not found as a resource; one's own is read with its history")
    func resources() async throws {
        try await withTestApp { app in
            let owner = try await user(app)
            app.jobWorkers.start(app, count: 1)
            let called = try result(try await modern(app, owner, "tools/call", params: ["name": "echo", "arguments": ["a": 1]]))
            guard case .object(let meta)? = called["_meta"], case .string(let executionID)? = meta["dev.steward/executionId"] else {
                throw TestFailure("no execution id")
            }
            let uri = "steward://executions/\(executionID)"
            let own = try result(try await modern(app, owner, "resources/read", params: ["uri": .string(uri)]))
            guard case .array(let contents)? = own["contents"], case .object(let first)? = contents.first, case .string(let text)? = first["text"]
            else { throw TestFailure("no contents") }
            #expect(text.contains(#""status":"succeeded""#))
            #expect(text.contains(#""history""#))

            let other = try await user(app, email: "other@example.com")
            let theirs = try await modern(app, other, "resources/read", params: ["uri": .string(uri)])
            #expect(try errorCode(theirs) == -32602)
            #expect(!theirs.body.string.contains("succeeded"))
        }
    }

    @Test("Bad input gets the right JSON-RPC error and status, never a 500", arguments: [
        ("not json", #"{"jsonrpc":"2.0","id":1,"#, [String: String](), 400, -32700),
        ("batch", #"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, [:], 400, -32600),
        ("bad version", #"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#, [:], 400, -32600),
        ("huge id", #"{"jsonrpc":"2.0","id":1e300,"method":"tools/list"}"#, [:], 400, -32600),
        ("long id", #"{"jsonrpc":"2.0","id":""# + String(repeating: "x", count: 300) + #"","method":"tools/list"}"#, [:], 400, -32600),
        ("params not an object", #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}"#, [:], 400, -32602),
        ("no version at all", #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, [:], 400, -32600),
        ("unsupported version", #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2024-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
         ["MCP-Protocol-Version": "2024-01-01", "Mcp-Method": "tools/list"], 400, -32022),
        ("header mismatch", #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
         ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"], 400, -32020),
        ("missing capabilities", #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
         ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"], 400, -32602),
        ("unknown method", #"{"jsonrpc":"2.0","id":1,"method":"tools/destroy","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
         ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/destroy"], 404, -32601),
        ("unknown session", #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, ["Mcp-Session-Id": "not-a-session"], 404, -32600),
        ("NUL in a tool name", #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\u0000","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
         ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"], 400, -32600),
    ])
    func malformed(_ name: String, _ body: String, _ headers: [String: String], _ status: Int, _ code: Int) async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            let response = try await raw(app, token, body: body, headers: HTTPHeaders(headers.map { ($0.key, $0.value) }))
            #expect(response.status.code == UInt(status), "\(name): \(response.body.string)")
            #expect(try errorCode(response) == code, "\(name)")
        }
    }

    @Test("A request with an Origin that is not allowed gets 403; GET and DELETE without a session are 405 on 2026-07-28")
    func originAndMethods() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            let hostile = try await modern(app, token, "tools/list", headers: ["Origin": "https://evil.example"])
            #expect(hostile.status == .forbidden)
            let get = try await app.testing().sendRequest(.GET, "/mcp", headers: bearer(token))
            #expect(get.status == .methodNotAllowed)
            #expect(get.headers.first(name: .allow) == "POST")
        }
    }

    @Test("A call answered as a stream carries the wait skill's progress to its own stream, then the result")
    func progressOnTheStream() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 1)
            let response = try await modern(app, token, "tools/call",
                                            params: ["name": "wait", "arguments": ["seconds": .number(1.5)], "_meta": ["progressToken": "p-1"]],
                                            headers: ["Accept": "application/json, text/event-stream"])
            #expect(response.headers.contentType?.subType == "event-stream")
            let frames = response.body.string.components(separatedBy: "\n\n").filter { $0.hasPrefix("event: message") }
            let progress = frames.filter { $0.contains("notifications/progress") }
            #expect(!progress.isEmpty, "\(response.body.string)")
            #expect(progress.allSatisfy { $0.contains(#""progressToken":"p-1""#) })
            #expect(frames.last?.contains(#""isError":false"#) == true)
        }
    }

    /// The `mcp.tools_call` entries, settled.
    private func toolCallEntries(_ app: Application) async throws -> [AuditLog] {
        try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "mcp.tools_call").all()
    }

    @Test("Closing a call's stream cancels its execution; the call's audit entry is written as the execution ends, with outcome cancelled")
    func disconnectCancels() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 1)
            try await app.withLiveServer { port in
                let stream = try await SSEClient.open(port: port, path: "/mcp", headers: [
                    ("Authorization", "Bearer \(token)"), ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
                    ("MCP-Protocol-Version", MCPVersion.modern), ("Mcp-Method", "tools/call"), ("Mcp-Name", "wait"),
                ], post: modernBody("tools/call", id: 9, params: ["name": "wait", "arguments": ["seconds": 20], "_meta": ["progressToken": "p-9"]]))
                let progress = try #require(try await stream.nextEvent(timeout: 10))
                #expect(progress.data.contains("notifications/progress"))
                let execution = try #require(try await Execution.query(on: app.db).filter(\.$origin == "mcp").first())
                let executionID = try execution.requireID()
                #expect(execution.status == .running)
                #expect(try await toolCallEntries(app).isEmpty, "the entry waits for the outcome")

                stream.close()
                try await eventually(10, "the execution cancelled") { try await Execution.find(executionID, on: app.db)?.status == .cancelled }
                let entries = try await toolCallEntries(app)
                #expect(entries.count == 1)
                let entry = try #require(entries.first)
                #expect(entry.resourceType == "execution")
                #expect(entry.resourceID == executionID.lowercasedString)
                #expect(entry.outcome == "failure")
                guard case .object(let details) = JSONValue.parse(entry.details) else { throw TestFailure("no details") }
                #expect(details["outcome"] == "cancelled")
                #expect(details["tool"] == "wait")
                #expect(details["clientName"] == "test-agent")
                #expect(details["requestId"] == 9)
                #expect(details["executionId"] == .string(executionID.lowercasedString))
                #expect(try await Execution.find(executionID, on: app.db)?.mcpCallAudit == nil, "the row no longer keeps the entry")
            }
        }
    }

    @Test("2025-11-25: notifications/cancelled naming a call's request id cancels its execution; the call answers isError and its entry says cancelled")
    func notificationCancels() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            let token = try await adminToken(app)
            app.jobWorkers.start(app, count: 1)
            let (session, sessionHeaders) = try await initializeLegacy(app, token)
            try await app.withLiveServer { port in
                let stream = try await SSEClient.open(port: port, path: "/mcp", headers: [
                    ("Authorization", "Bearer \(token)"), ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
                    ("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Session-Id", session),
                ], post: #"{"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"wait","arguments":{"seconds":20},"_meta":{"progressToken":"q"}}}"#)
                let progress = try #require(try await stream.nextEvent(timeout: 10))
                #expect(progress.data.contains("notifications/progress"))

                let cancel = try await raw(app, token, body: #"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user"}}"#,
                                           headers: sessionHeaders)
                #expect(cancel.status == .accepted)
                let rest = try await stream.untilEnd(timeout: 10)
                let answer = try #require(rest.last { $0.data.contains(#""id":"slow-1""#) })
                #expect(answer.data.contains(#""isError":true"#))
                #expect(answer.data.contains("cancelled"))

                let execution = try #require(try await Execution.query(on: app.db).filter(\.$origin == "mcp").first())
                #expect(execution.status == .cancelled)
                let entries = try await toolCallEntries(app)
                #expect(entries.count == 1)
                #expect(entries.first?.resourceID == execution.id?.lowercasedString)
                #expect(entries.first?.details.contains(#""outcome":"cancelled""#) == true)
                #expect(entries.first?.details.contains(#""sessionId":"\#(session.lowercased())""#) == true)
            }
        }
    }

    private func jsonHeaders(_ token: String) -> HTTPHeaders {
        var headers = bearer(token)
        headers.contentType = .json
        return headers
    }

    /// A skill created through the service, as an admin would.
    private func createSkill(_ app: Application, slug: String) async throws {
        let draft = try SkillService.draft(from: ["slug": .string(slug), "name": .string("Made \(slug)"), "description": "d", "category": "ops",
                                                  "runner": ["type": "builtin", "name": "echo"], "inputSchema": ["type": "object"]])
        _ = try await SkillService(app: app).create(draft, caller: nil, origin: .system)
    }

    @Test("2025-11-25: the session's GET stream says tools/list_changed when a skill is created, with the event's seq as its id; resuming with Last-Event-ID hears of a change made meanwhile")
    func legacyListChanged() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            let initialize = try await raw(app, token, body: """
                {"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}
                """)
            let session = try #require(initialize.headers.first(name: "Mcp-Session-Id"))
            #expect(try result(initialize)["capabilities"] == ["tools": ["listChanged": true], "resources": [:]])
            try await app.withLiveServer { port in
                let headers = [("Authorization", "Bearer \(token)"), ("Mcp-Session-Id", session), ("Accept", "text/event-stream")]
                let stream = try await SSEClient.open(port: port, path: "/mcp", headers: headers)
                #expect(stream.status == .ok)
                try await createSkill(app, slug: "fresh-tool")
                let changed = try #require(try await stream.nextEvent())
                #expect(changed.data.contains(#""method":"notifications/tools/list_changed""#))
                let seen = try #require(changed.seq)
                stream.close()

                try await createSkill(app, slug: "made-while-away")
                let resumed = try await SSEClient.open(port: port, path: "/mcp", headers: headers + [("Last-Event-ID", String(seen))])
                let missed = try #require(try await resumed.nextEvent())
                #expect(missed.data.contains("notifications/tools/list_changed"))
                #expect((missed.seq ?? 0) > seen)
                resumed.close()
            }
        }
    }

    @Test("2026-07-28: subscriptions/listen acknowledges first, then tags each tools/list_changed with the subscription id; without toolsListChanged it sends none")
    func modernSubscription() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            try await app.withLiveServer { port in
                func listen(_ id: Int, tools: Bool) async throws -> SSEClient {
                    let body = modernBody("subscriptions/listen", id: id, params: ["notifications": ["toolsListChanged": .bool(tools)]])
                    return try await SSEClient.open(port: port, path: "/mcp", headers: [
                        ("Authorization", "Bearer \(token)"), ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
                        ("MCP-Protocol-Version", MCPVersion.modern), ("Mcp-Method", "subscriptions/listen"),
                    ], post: body)
                }
                let subscribed = try await listen(41, tools: true)
                let silent = try await listen(42, tools: false)
                let ack = try #require(try await subscribed.nextEvent())
                #expect(ack.data.contains("notifications/subscriptions/acknowledged"))
                #expect(ack.data.contains(#""io.modelcontextprotocol/subscriptionId":41"#))
                #expect(ack.data.contains(#""toolsListChanged":true"#))
                let silentAck = try #require(try await silent.nextEvent())
                #expect(!silentAck.data.contains("toolsListChanged"))

                try await createSkill(app, slug: "newer-tool")
                let changed = try #require(try await subscribed.nextEvent())
                #expect(changed.data.contains("notifications/tools/list_changed"))
                #expect(changed.data.contains(#""io.modelcontextprotocol/subscriptionId":41"#))
                await #expect(throws: TimedOut.self) { _ = try await silent.nextEvent(timeout: 1.5) }
                subscribed.close()
                silent.close()
            }
        }
    }

    @Test("A skill's output schema and annotations are set through the skills API, shown on the tool, and enforced: an output that breaks the schema fails the run")
    func outputSchemaAndAnnotations() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            let admin = try await adminToken(app)
            app.jobWorkers.start(app, count: 1)
            let bad = try await app.testing().sendRequest(.PATCH, "/api/v1/skills/echo", headers: jsonHeaders(admin),
                                                          body: .init(string: #"{"annotations": {"readOnlyHint": "yes", "fastHint": true}, "outputSchema": 3}"#))
            #expect(bad.status == .unprocessableEntity)
            #expect(bad.body.string.contains("annotations.readOnlyHint") && bad.body.string.contains("annotations.fastHint") && bad.body.string.contains("outputSchema"))

            let patched = try await app.testing().sendRequest(.PATCH, "/api/v1/skills/echo", headers: jsonHeaders(admin), body: .init(string: """
                {"annotations": {"readOnlyHint": true, "idempotentHint": true},
                 "outputSchema": {"type": "object", "required": ["greeting"], "properties": {"greeting": {"type": "string"}}}}
                """))
            #expect(patched.status == .ok, "\(patched.body.string)")
            #expect(patched.body.string.contains(#""annotations":{"idempotentHint":true,"readOnlyHint":true}"#))
            #expect(patched.body.string.contains(#""outputSchema":{"properties""#))
            let listed = try await app.testing().sendRequest(.GET, "/api/v1/skills?limit=100", headers: bearer(admin))
            #expect(listed.body.string.contains(#""idempotentHint":true"#), "lists carry the fields too")

            let tools = try result(try await modern(app, token, "tools/list"))
            guard case .array(let all)? = tools["tools"], case .object(let echo)? = all.first(where: { tool in
                if case .object(let o) = tool { o["name"] == "echo" } else { false } }) else { throw TestFailure("no echo tool") }
            #expect(echo["annotations"] == ["readOnlyHint": true, "idempotentHint": true])
            #expect(echo["outputSchema"] != nil)

            let kept = try result(try await modern(app, token, "tools/call", params: ["name": "echo", "arguments": ["greeting": "hi"]]))
            #expect(kept["isError"] == false)
            let broken = try result(try await modern(app, token, "tools/call", params: ["name": "echo", "arguments": ["other": 1]]))
            #expect(broken["isError"] == true)
            #expect(try await Execution.query(on: app.db).filter(\.$status == .failed).first()?.error?.contains("output.greeting") == true)

            let cleared = try await app.testing().sendRequest(.PATCH, "/api/v1/skills/echo", headers: jsonHeaders(admin),
                                                              body: .init(string: #"{"outputSchema": null}"#))
            #expect(cleared.body.string.contains(#""outputSchema":null"#))
            let again = try result(try await modern(app, token, "tools/call", params: ["name": "echo", "arguments": ["other": 1]]))
            #expect(again["isError"] == false, "with the schema gone, any output passes")
        }
    }

    @Test("An API key's tool allow-list (names and tag:) hides every other tool from list and call; bad entries are 422; the key list shows it")
    func keyAllowList() async throws {
        try await withTestApp { app in
            _ = try await user(app)
            // Making keys needs api-keys:manage, which executors lack.
            let token = try await adminToken(app)
            let bad = try await app.testing().sendRequest(.POST, "/api/v1/api-keys", headers: jsonHeaders(token),
                                                          body: .init(string: #"{"name": "bad", "scopes": ["skills:read"], "tools": ["Not A Slug", "tag:"]}"#))
            #expect(bad.status == .unprocessableEntity)
            #expect(bad.body.string.contains("tools[0]") && bad.body.string.contains("tools[1]"))

            let created = try await app.testing().sendRequest(.POST, "/api/v1/api-keys", headers: jsonHeaders(token), body: .init(string: """
                {"name": "narrow", "scopes": ["skills:read", "skills:execute", "executions:read"], "tools": ["echo", "tag:math"]}
                """))
            #expect(created.status == .created, "\(created.body.string)")
            guard case .string(let key)? = try json(created)["key"] else { throw TestFailure("no key") }
            #expect(try json(created)["tools"] == ["echo", "tag:math"])
            let keys = try await app.testing().sendRequest(.GET, "/api/v1/api-keys", headers: bearer(token))
            #expect(keys.body.string.contains(#""tools":["echo","tag:math"]"#))

            #expect(toolNames(try result(try await modern(app, key, "tools/list"))) == ["add-numbers", "echo"])
            let hidden = try await modern(app, key, "tools/call", params: ["name": "uppercase", "arguments": ["text": "x"]])
            #expect(try errorCode(hidden) == -32602)
            let hiddenBuiltIn = try await modern(app, key, "tools/call", params: ["name": "steward_search_skills", "arguments": ["query": "echo"]])
            #expect(try errorCode(hiddenBuiltIn) == -32602)
            #expect(try await Execution.query(on: app.db).count() == 0)

            // The user's own token, and a key without a list, still see everything.
            #expect(toolNames(try result(try await modern(app, token, "tools/list"))).contains("uppercase"))
        }
    }
}
