import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// A remote skill on loopback: a real HTTP server that records what it receives.
final class FakeRunnerServer: @unchecked Sendable {
    let app: Application
    private(set) var port = 0
    private let lock = NSLock()
    private var bodies: [String: [JSONValue]] = [:]
    private var hosts: [String] = []

    var lastHost: String? { lock.withLock { hosts.last } }
    func received(_ path: String) -> [JSONValue] { lock.withLock { bodies[path] ?? [] } }

    init() async throws {
        app = try await Application.make(.testing)
        app.http.server.configuration.hostname = "127.0.0.1"
        app.post("ok") { [self] req async throws -> Response in
            let body = try req.content.decode(JSONValue.self)
            self.store("ok", body, host: req.headers.first(name: .host))
            let answer: JSONValue = ["done": true, "got": body.object?["input"] ?? .null]
            return Response(status: .ok, headers: ["Content-Type": "application/json"], body: .init(string: try answer.canonicalString()))
        }
        app.post("client-error") { _ async throws -> Response in Response(status: .badRequest, body: "no such customer") }
        app.post("nul-error") { _ async throws -> Response in Response(status: .badRequest, body: "no such\u{0}customer") }
        app.post("server-error") { [self] req async throws -> Response in
            self.store("server-error", try req.content.decode(JSONValue.self), host: nil)
            return Response(status: .serviceUnavailable, body: "try later")
        }
        app.post("redirect") { _ async throws -> Response in
            let response = Response(status: .found)
            response.headers.replaceOrAdd(name: .location, value: "http://127.0.0.1:1/elsewhere")
            return response
        }
        app.post("big") { _ async throws -> Response in Response(status: .ok, body: .init(string: "\"" + String(repeating: "x", count: 2 << 20) + "\"")) }
        app.post("deep") { _ async throws -> Response in
            let deep = #"{"a": "# + String(repeating: "[", count: 64) + "1" + String(repeating: "]", count: 64) + "}"
            return Response(status: .ok, headers: ["Content-Type": "application/json"], body: .init(string: deep))
        }
        app.post("undo") { [self] req async throws -> HTTPStatus in
            self.store("undo", try req.content.decode(JSONValue.self), host: nil)
            return .ok
        }
        try await app.server.start(address: .hostname("127.0.0.1", port: 0))
        port = app.http.server.shared.localAddress?.port ?? 0
    }

    private func store(_ path: String, _ body: JSONValue, host: String?) {
        lock.withLock {
            bodies[path, default: []].append(body)
            if let host { hosts.append(host) }
        }
    }

    func stop() async {
        await app.server.shutdown()
        try? await app.asyncShutdown()
    }
}


/// A remote skill's stand-in that reports progress through the callback endpoint's service before it answers.
private struct CallsBackAtOnce: SkillRunner {
    let app: Application

    func run(_ context: RunContext) async throws -> RunOutcome {
        let accepted = try await ExecutionService(app: app).reportProgress(context.executionID, progress: 30, message: "at once")
        return accepted == 30 ? .succeeded(["ok": true]) : .failed("progress refused")
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "nothing" }
}

/// Answers DNS from a table.
struct TableResolver: AddressResolver {
    var table: [String: [String]]
    func resolve(host: String) async throws -> [IPAddress] {
        guard let addresses = table[host] else { throw OutboundError.unresolvable(host) }
        return addresses.compactMap(IPAddress.init)
    }
}

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// A developer who owns an http skill pointing at `url`, and a token.
private func httpSkill(_ app: Application, url: String, extra: String = "") async throws -> String {
    try await makeUser(app, email: "remote@example.com")
    _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "remote@example.com").requireID(), roles: ["developer"], actor: .cli)
    let token = try await login(app, email: "remote@example.com").accessToken
    let created = try await send(app, .POST, "/api/v1/skills", token: token,
                                 json: #"{"slug": "remote", "name": "Remote", "runner": {"type": "http", "url": "\#(url)", "timeoutSeconds": 2\#(extra)}}"#)
    #expect(created.status == .created, "\(created.body.string)")
    return token
}

private func run(_ app: Application, token: String, input: String = #"{"city": "Lyon"}"#) async throws -> ExecutionResponse {
    let res = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "remote", "input": \#(input)}"#)
    #expect(res.status == .accepted, "\(res.body.string)")
    return try res.content.decode(ExecutionResponse.self)
}

private func fetch(_ app: Application, _ token: String, _ id: UUID) async throws -> ExecutionResponse {
    try (try await send(app, .GET, "/api/v1/executions/\(id)", token: token)).content.decode(ExecutionResponse.self)
}

@Suite("HTTP runner")
struct HTTPRunnerTests {
    @Test("POSTs executionId, input, callbackUrl and callbackToken; the 2xx JSON answer is the output")
    func success() async throws {
        let server = try await FakeRunnerServer()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let token = try await httpSkill(app, url: "http://127.0.0.1:\(server.port)/ok")
                let execution = try await run(app, token: token)
                try await drainJobs(app)
                let done = try await fetch(app, token, execution.id)
                #expect(done.status == "succeeded", "\(done.error ?? "")")
                #expect(done.output == ["done": true, "got": ["city": "Lyon"]])

                let sent = try #require(server.received("ok").first?.object)
                #expect(sent["executionId"] == .string(execution.id.uuidString.lowercased()))
                #expect(sent["input"] == ["city": "Lyon"])
                #expect(sent["callbackUrl"] == .string("http://127.0.0.1:8080/api/v1/executions/\(execution.id.uuidString.lowercased())/progress"))
                #expect(sent["callbackToken"]?.stringValue?.isEmpty == false)
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("A remote skill that calls back with progress as soon as it is called finds its execution running")
    func immediateCallback() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
            app.useTestDoubles()
            let token = try await httpSkill(app, url: "http://127.0.0.1:9/unused")
            // In place of the HTTP runner: a skill whose first act is the progress callback (the endpoint's service).
            app.runnerRegistry = RunnerRegistry(builtins: RunnerRegistry.standardBuiltins, http: CallsBackAtOnce(app: app))
            let execution = try await run(app, token: token)
            try await drainJobs(app)
            let done = try await fetch(app, token, execution.id)
            #expect(done.status == "succeeded")
            let history = try (try await send(app, .GET, "/api/v1/executions/\(execution.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(history.items.map(\.message) == ["queued", "started (attempt 1 of 3)", "at once", "succeeded"])
            #expect(history.items.compactMap(\.progress) == [30])
        }
    }

    @Test("Progress callbacks need that execution's token, only while running, and never go back")
    func progressCallback() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            try await makeUser(app, email: "cb@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "cb@example.com").requireID(), roles: ["executor"], actor: .cli)
            let token = try await login(app, email: "cb@example.com").accessToken
            let res = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)
            let execution = try res.content.decode(ExecutionResponse.self)
            let other = try (try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)).content.decode(ExecutionResponse.self)
            let callback = HTTPRunner.callbackToken(for: execution.id, key: app.keyMaterial.callbackKey)
            let wrong = HTTPRunner.callbackToken(for: other.id, key: app.keyMaterial.callbackKey)
            func report(_ value: Int, with bearer: String) async throws -> HTTPStatus {
                let response = try await app.testing().sendRequest(
                    .POST, "/api/v1/executions/\(execution.id)/progress",
                    headers: ["Authorization": "Bearer \(bearer)", "Content-Type": "application/json"],
                    body: .init(string: #"{"progress": \#(value), "message": "working"}"#))
                return response.status
            }
            #expect(try await report(10, with: callback) == .conflict, "not running yet")
            let stored = try #require(try await Execution.find(execution.id, on: app.db))
            stored.status = .running
            try await app.writeTransaction { db in try await stored.save(on: db) }
            #expect(try await report(40, with: wrong) == .unauthorized)
            #expect(try await report(40, with: token) == .unauthorized)
            #expect(try await report(40, with: callback) == .accepted)
            #expect(try await report(20, with: callback) == .accepted)
            #expect(try await report(140, with: callback) == .unprocessableEntity)
            #expect(try await Execution.find(execution.id, on: app.db)?.progress == 40)

            // The worker's copy was read before the callbacks (progress 0); ending the run keeps the 40.
            stored.error = "the runner gave up"
            try await app.writeTransaction { db in
                try await ExecutionService(app: app).transition(stored, to: .failed, message: "failed", level: "error", on: db)
            }
            let ended = try await fetch(app, token, execution.id)
            #expect(ended.status == "failed")
            #expect(ended.progress == 40)
        }
    }

    @Test("4xx and redirects fail at once; 5xx is retried, then fails; oversized answers and answers nested over 64 levels fail")
    func failures() async throws {
        let server = try await FakeRunnerServer()
        do {
            // An answer with the NUL character in it is quoted with U+FFFD in its place (PostgreSQL stores no NUL in text).
            for (path, expectedError, attempts) in [("client-error", "answered 400: no such customer", 1), ("nul-error", "answered 400: no such\u{FFFD}customer", 1),
                                                    ("redirect", "redirects are not followed", 1),
                                                    ("big", "larger than 1 MiB", 1), ("deep", "output is nested more than 64 levels deep", 1),
                                                    ("server-error", "answered 503", 3)] {
                try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                    let (_, clock) = app.useTestDoubles()
                    let token = try await httpSkill(app, url: "http://127.0.0.1:\(server.port)/\(path)")
                    let execution = try await run(app, token: token)
                    for _ in 0..<4 {
                        try await drainJobs(app)
                        clock.advance(by: 10)
                    }
                    let done = try await fetch(app, token, execution.id)
                    #expect(done.status == "failed", "\(path)")
                    #expect(done.error?.contains(expectedError) == true, "\(path): \(done.error ?? "")")
                    #expect(done.attempt == attempts, "\(path)")
                }
            }
            #expect(server.received("server-error").count == 3)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("DNS is checked at delivery: a name that resolves to a private address is blocked (rebinding)")
    func rebinding() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            // At save time the name looks public; at delivery it resolves to loopback.
            let token = try await httpSkill(app, url: "http://rebind.example.com/run")
            app.addressResolver = TableResolver(table: ["rebind.example.com": ["93.184.216.34", "127.0.0.1"]])
            let execution = try await run(app, token: token)
            try await drainJobs(app)
            let done = try await fetch(app, token, execution.id)
            #expect(done.status == "failed")
            #expect(done.error?.contains("blocked_address") == true, "\(done.error ?? "")")
        }
    }

    @Test("The connection goes to the checked address, with the original Host header")
    func pinning() async throws {
        let server = try await FakeRunnerServer()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                app.addressResolver = TableResolver(table: ["runner.example.com": ["127.0.0.1"]])
                let token = try await httpSkill(app, url: "http://runner.example.com:\(server.port)/ok")
                let execution = try await run(app, token: token)
                try await drainJobs(app)
                #expect(try await fetch(app, token, execution.id).status == "succeeded")
                #expect(server.lastHost?.hasPrefix("runner.example.com") == true)
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("Kept outbound clients are bounded: past the capacity the least recently used idle one is closed, and a host reached again gets a new one")
    func clientCacheBound() async throws {
        let server = try await FakeRunnerServer()
        let clients = OutboundClients(capacity: 2)
        let hosts = ["a.example.com", "b.example.com", "c.example.com", "d.example.com"]
        let outbound = OutboundHTTP(guardrail: OutboundGuard(allowed: ["127.0.0.1"], httpsOnly: false),
                                    resolver: TableResolver(table: Dictionary(uniqueKeysWithValues: hosts.map { ($0, ["127.0.0.1"]) })),
                                    userAgent: "test", clients: clients)
        do {
            for host in hosts + [hosts[0]] {
                let answer = try await outbound.post("http://\(host):\(server.port)/ok", json: ["input": .string(host)], headers: [:], timeout: 5)
                #expect(answer.status == 200, "\(host)")
                #expect(server.lastHost?.hasPrefix(host) == true)
                #expect(clients.count <= 2, "after \(host): \(clients.count) clients kept")
            }
            #expect(server.received("ok").count == 5)
        } catch {
            await clients.shutdownAsync(server.app)
            await server.stop()
            throw error
        }
        await clients.shutdownAsync(server.app)
        await server.stop()
    }

    @Test("Rollback POSTs to the undoUrl")
    func undo() async throws {
        let server = try await FakeRunnerServer()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let token = try await httpSkill(app, url: "http://127.0.0.1:\(server.port)/ok", extra: #", "undoUrl": "http://127.0.0.1:\#(server.port)/undo""#)
                let execution = try await run(app, token: token)
                try await drainJobs(app)
                #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/rollback", token: token).status == .accepted)
                try await drainJobs(app)
                #expect(try await fetch(app, token, execution.id).status == "rolled_back")
                let undo = try #require(server.received("undo").first?.object)
                #expect(undo["output"] == ["done": true, "got": ["city": "Lyon"]])
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
