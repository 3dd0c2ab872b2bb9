import Fluent
import Foundation
import SQLKit
import SQLiteNIO
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// A built-in runner that succeeds once `gate` finishes.
private struct HeldRunner: SkillRunner {
    let gate: AsyncStream<Void>

    func run(_ context: RunContext) async throws -> RunOutcome {
        for await _ in gate {}
        return .succeeded([:])
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "nothing" }
}

/// Runs due jobs one by one in the test's task until none is left.
func drainJobs(_ app: Application, limit: Int = 200) async throws {
    for _ in 0..<limit {
        guard let job = try await JobQueue(app: app).claim(worker: "test") else { return }
        await JobRunner(app: app).run(job)
    }
}

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// An executor with the sample skills seeded.
private func executor(_ app: Application, email: String = "runner@example.com") async throws -> String {
    _ = try await SkillService(app: app).seedSamples()
    try await makeUser(app, email: email)
    _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: email).requireID(), roles: ["executor"], actor: .cli)
    return try await login(app, email: email).accessToken
}

private func start(_ app: Application, _ token: String, skill: String, input: String = "{}") async throws -> ExecutionResponse {
    let res = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "\#(skill)", "input": \#(input)}"#)
    #expect(res.status == .accepted, "\(res.body.string)")
    return try res.content.decode(ExecutionResponse.self)
}

private func fetch(_ app: Application, _ token: String, _ id: UUID) async throws -> ExecutionResponse {
    try (try await send(app, .GET, "/api/v1/executions/\(id)", token: token)).content.decode(ExecutionResponse.self)
}

/// A runner that fails with an infrastructure error a set number of times, then succeeds.
private final class FlakyRunner: SkillRunner, @unchecked Sendable {
    let lock = NSLock()
    var failuresLeft: Int
    init(failures: Int) { failuresLeft = failures }
    func run(_ context: RunContext) async throws -> RunOutcome {
        let fail = lock.withLock { () -> Bool in defer { failuresLeft -= 1 }; return failuresLeft > 0 }
        if fail { throw URLError(.timedOut) }
        return .succeeded(["ok": true])
    }
    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "none" }
}

@Suite("Executions")
struct ExecutionTests {
    @Test("Echo: 202 queued, then running, then succeeded with its output, history and events in order")
    func echo() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let created = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {"hello": "world"}}"#)
            #expect(created.status == .accepted)
            let execution = try created.content.decode(ExecutionResponse.self)
            #expect(execution.status == "queued")
            #expect(created.headers.first(name: .location) == "/api/v1/executions/\(execution.id.uuidString.lowercased())")

            try await drainJobs(app)
            let done = try await fetch(app, token, execution.id)
            #expect(done.status == "succeeded")
            #expect(done.output == ["hello": "world"])
            #expect(done.progress == 100)
            #expect(done.attempt == 1)
            #expect(done.durationMs != nil)

            let history = try (try await send(app, .GET, "/api/v1/executions/\(execution.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(history.items.map(\.message) == ["queued", "started (attempt 1 of 3)", "echoed", "succeeded"])
            let events = try await Event.query(on: try await app.settledLedger()).filter(\.$resourceID == execution.id.uuidString.lowercased()).sort(\.$seq).all().map(\.type)
            #expect(events == ["execution.queued", "execution.running", "execution.progress", "execution.succeeded"])
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "execution.succeeded").count() == 1)
            // On PostgreSQL the count is added just after the commit (`AfterCommit`).
            try await eventually(5, "the skill's count") { try await SkillService(app: app).find("echo").executionCount == 1 }

            // Each transition's event carries the execution as the API shows it at that moment.
            let body = try JSONDecoder().decode(JSONValue.self, from: Data((try await send(app, .GET, "/api/v1/executions/\(execution.id)", token: token)).body.readableBytesView))
            let succeeded = try #require(try await Event.query(on: try await app.settledLedger()).filter(\.$resourceID == execution.id.uuidString.lowercased())
                .filter(\.$type == "execution.succeeded").first())
            #expect(JSONValue.parse(succeeded.data) == body)
            let queued = try #require(try await Event.query(on: try await app.settledLedger()).filter(\.$resourceID == execution.id.uuidString.lowercased())
                .filter(\.$type == "execution.queued").first())
            let queuedBody = try JSONDecoder().decode(JSONValue.self, from: Data(created.body.readableBytesView))
            #expect(JSONValue.parse(queued.data) == queuedBody)
        }
    }

    @Test("A read is not held up by a write transaction in progress")
    func readsBesideWrites() async throws {
        // A read that waited for the writer would wait out the pool timeout (3 s here) and answer 500. The check is on
        // the answers, not on a stopwatch: under a loaded CI machine sixteen reads can take seconds without waiting.
        try await withTestApp(environment: ["STEWARD_DB_CONNECT_TIMEOUT": "3"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let opened = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            // A write transaction that has written and stays open until the reads are done.
            let writer = Task {
                try await app.writeTransaction { db in
                    try await (db as! any SQLDatabase).raw("UPDATE skills SET execution_count = execution_count + 1 WHERE slug = 'echo'").run()
                    opened.continuation.yield()
                    for await _ in release.stream { break }
                }
            }
            for await _ in opened.stream { break }
            // Several reads on every event loop: none waits for the writer to commit.
            for _ in 0..<8 {
                let me = try await send(app, .GET, "/api/v1/auth/me", token: token)
                #expect(me.status == .ok)
                let skills = try await send(app, .GET, "/api/v1/skills?limit=5", token: token)
                #expect(skills.status == .ok)
            }
            release.continuation.yield()
            try await writer.value
            #expect(try await SkillService(app: app).find("echo").executionCount == 1)
        }
    }

    @Test("A write that finds SQLite locked past the busy timeout is 503 with Retry-After, and leaves nothing behind",
          .enabled(if: !TestDatabase.isPostgres))
    func lockedDatabase() async throws {
        try await withTestApp(environment: ["STEWARD_SQLITE_BUSY_TIMEOUT_MS": "300"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            guard case .sqlite(let path) = app.appConfig.database else { Issue.record("not SQLite"); return }
            // Another process's connection, holding the write lock.
            let other = try await SQLiteConnection.open(storage: .file(path: path), threadPool: app.threadPool, logger: app.logger, on: app.eventLoopGroup.any())
            _ = try await other.query("BEGIN IMMEDIATE", [])
            let refused = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)
            #expect(refused.status == .serviceUnavailable)
            #expect(refused.headers.first(name: "Retry-After") == "1")
            #expect(try refused.problem().code == "unavailable")
            _ = try await other.query("ROLLBACK", [])
            try await other.close()

            let none = try await send(app, .GET, "/api/v1/executions", token: token)
            #expect(try none.content.decode(ListResponse<ExecutionResponse>.self).items.isEmpty)
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status == .accepted)
        }
    }

    @Test("Input is validated against the skill's schema; unknown, disabled and unpermitted runs are refused")
    func refusals() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let bad = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "wait", "input": {"seconds": "ten"}}"#)
            #expect(bad.status == .unprocessableEntity)
            #expect(try bad.problem().errors?.first?.field == "input.seconds")
            let missing = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "wait", "input": {}}"#)
            #expect(try missing.problem().errors?.first?.field == "input.seconds")
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "nope", "input": {}}"#).status == .notFound)
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"input": {}}"#).status == .unprocessableEntity)

            let skill = try await SkillService(app: app).find("echo")
            skill.enabled = false
            try await app.writeTransaction { db in try await skill.save(on: db) }
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status == .conflict)

            try await makeUser(app, email: "looker@example.com")
            let viewer = try await login(app, email: "looker@example.com").accessToken
            #expect(try await send(app, .POST, "/api/v1/executions", token: viewer, json: #"{"skillId": "uppercase", "input": {"text": "x"}}"#).status == .forbidden)
            #expect(try await Execution.query(on: app.db).count() == 0)
        }
    }

    @Test("Create bodies of every shape get the usual answers: extra fields ignored, null or absent input, bad JSON (a trailing comma, bytes that are not UTF-8) 400, wrong shapes 422, other media 415")
    func createBodies() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            func post(_ body: String, contentType: String = "application/json; charset=utf-8") async throws -> TestingHTTPResponse {
                try await app.testing().sendRequest(.POST, "/api/v1/executions", headers: ["Authorization": "Bearer \(token)", "Content-Type": contentType],
                                                    body: .init(string: body))
            }

            // The response is the execution as every other route shows it.
            let created = try await post(#"{"extra": [1, {"x": null}], "skillId": "echo", "input": {"text": "é \"quoted\" / \u0001", "n": [1, 2.5, -3e2, true, null]}}"#)
            #expect(created.status == .accepted, "\(created.body.string)")
            #expect(created.headers.contentType == .json)
            let execution = try created.content.decode(ExecutionResponse.self)
            #expect(execution.input == ["text": "é \"quoted\" / \u{1}", "n": [1, .number(2.5), -300, true, nil]])
            #expect(execution == (try await fetch(app, token, execution.id)))
            #expect(created.headers.first(name: .location) == "/api/v1/executions/\(execution.id.uuidString.lowercased())")

            for body in [#"{"skillId": "echo", "input": null}"#, #"{"skillId": "echo"}"#] {
                let accepted = try await post(body)
                #expect(accepted.status == .accepted, "\(body)")
                #expect(try accepted.content.decode(ExecutionResponse.self).input == [:], "\(body)")
            }
            #expect(try await post(#"{"skillId": "echo", "input": {}}"#, contentType: "application/json").status == .accepted)

            for body in [#"{"skillId": "echo", "input": {"#, #"{"skillId": "echo",}"#, #"{"skillId": 5,}"#, #"{"skillId": "echo", "input": {"n": [1,]}}"#] {
                let malformed = try await post(body)
                #expect(malformed.status == .badRequest, "\(body)")
                #expect(try malformed.problem().code == "bad_request", "\(body)")
            }
            // Bytes that are not UTF-8 are not JSON (RFC 8259): refused, never repaired.
            var invalid = ByteBuffer(string: #"{"skillId": "echo", "input": {"text": ""#)
            invalid.writeBytes([0xFF, 0xC3, 0x28, 0xE0, 0x80, 0x80])
            invalid.writeString(#""}}"#)
            let notUTF8 = try await app.testing().sendRequest(.POST, "/api/v1/executions", headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"], body: invalid)
            #expect(notUTF8.status == .badRequest, "\(notUTF8.body.string)")
            #expect(try notUTF8.problem().code == "bad_request")
            for (body, field) in [(#"{"skillId": 5}"#, "skillId"), (#"{"skillId": null}"#, "skillId"), (#"{"input": {}}"#, "skillId"),
                                  (#"[{"skillId": "echo"}]"#, "body"), (#""echo""#, "body")] {
                let refused = try await post(body)
                #expect(refused.status == .unprocessableEntity, "\(body)")
                #expect(try refused.problem().errors?.first?.field == field, "\(body)")
            }
            #expect(try await post(#"{"skillId": "'; DROP TABLE skills; --", "input": {}}"#).status == .notFound)
            #expect(try await post(#"{"skillId": "\#(String(repeating: "x", count: 65))"}"#).status == .unprocessableEntity)
            #expect(try await post(#"{"skillId": "echo"}"#, contentType: "text/plain").status == .unsupportedMediaType)
            // 4 accepted above: nothing else was written.
            #expect(try await Execution.query(on: app.db).count() == 4)
        }
    }

    @Test("A skill that reports failure ends failed at once, without retries")
    func skillFailure() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "always-fails", input: #"{"message": "boom"}"#)
            try await drainJobs(app)
            let done = try await fetch(app, token, execution.id)
            #expect(done.status == "failed")
            #expect(done.error == "boom")
            #expect(done.attempt == 1)
        }
    }

    @Test("Transform runs its operation")
    func transform() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let upper = try await start(app, token, skill: "uppercase", input: #"{"text": "steward"}"#)
            let sum = try await start(app, token, skill: "add-numbers", input: #"{"numbers": [1, 2, 3.5]}"#)
            try await drainJobs(app)
            #expect(try await fetch(app, token, upper.id).output == ["operation": "uppercase", "result": "STEWARD"])
            #expect(try await fetch(app, token, sum.id).output == ["operation": "sum", "result": .number(6.5)])
        }
    }

    @Test("Infrastructure failures are retried with back-off, then fail after the last attempt")
    func retries() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            var registry = app.runnerRegistry
            registry.builtins["echo"] = FlakyRunner(failures: 2)
            app.runnerRegistry = registry
            let recovering = try await start(app, token, skill: "echo")
            for _ in 0..<3 {
                try await drainJobs(app)
                clock.advance(by: 10)
            }
            let done = try await fetch(app, token, recovering.id)
            #expect(done.status == "succeeded")
            #expect(done.attempt == 3)

            registry.builtins["echo"] = FlakyRunner(failures: 10)
            app.runnerRegistry = registry
            let doomed = try await start(app, token, skill: "echo")
            for _ in 0..<4 {
                try await drainJobs(app)
                clock.advance(by: 10)
            }
            let failed = try await fetch(app, token, doomed.id)
            #expect(failed.status == "failed")
            #expect(failed.error?.contains("timed out") == true || failed.error?.contains("URLError") == true, "\(failed.error ?? "")")
            let history = try (try await send(app, .GET, "/api/v1/executions/\(doomed.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(history.items.filter { $0.message.contains("retrying") }.count == 2)
        }
    }

    @Test("Cancel: a queued execution is cancelled at once; a finished one is 409")
    func cancelQueued() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "echo")
            let cancelled = try await send(app, .POST, "/api/v1/executions/\(execution.id)/cancel", token: token)
            #expect(cancelled.status == .ok)
            #expect(try cancelled.content.decode(ExecutionResponse.self).status == "cancelled")
            try await drainJobs(app)
            #expect(try await fetch(app, token, execution.id).status == "cancelled")
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/cancel", token: token).status == .conflict)
        }
    }

    @Test("A run that goes on shows running and its progress while it runs; a quick one has every step in order")
    func startAndProgressWhileRunning() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            app.jobWorkers.start(app, count: 2)
            // Reports every 150 ms, past the start's hold: the start and each report are written on their own, while it runs.
            // Long enough that a loaded machine (CI builds beside the suite) still polls inside the run.
            let slow = try await start(app, token, skill: "wait", input: #"{"seconds": 1.5}"#)
            var seen: ExecutionResponse?
            for _ in 0..<1000 {
                let now = try await fetch(app, token, slow.id)
                if now.status == "running", now.progress > 0, now.progress < 100 { seen = now; break }
                if now.status == "succeeded" { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(seen != nil, "never seen running with progress before the end")
            for _ in 0..<250 where try await fetch(app, token, slow.id).status != "succeeded" {
                try await Task.sleep(for: .milliseconds(20))
            }
            let history = try (try await send(app, .GET, "/api/v1/executions/\(slow.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(history.items.map(\.message) == ["queued", "started (attempt 1 of 3)"] + (1...10).map { "slept \($0 * 10)%" } + ["succeeded"])
            #expect(history.items.compactMap(\.progress) == (1...10).map { $0 * 10 })
            let events = try await Event.query(on: try await app.settledLedger()).filter(\.$resourceID == slow.id.uuidString.lowercased()).sort(\.$seq).all().map(\.type)
            #expect(events == ["execution.queued", "execution.running"] + Array(repeating: "execution.progress", count: 10) + ["execution.succeeded"])

            // A quick run: its start, progress and outcome are written together, in order.
            let quick = try await start(app, token, skill: "wait", input: #"{"seconds": 0.01}"#)
            for _ in 0..<100 where try await fetch(app, token, quick.id).status != "succeeded" {
                try await Task.sleep(for: .milliseconds(20))
            }
            let quickHistory = try (try await send(app, .GET, "/api/v1/executions/\(quick.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(quickHistory.items.map(\.message) == ["queued", "started (attempt 1 of 3)"] + (1...10).map { "slept \($0 * 10)%" } + ["succeeded"])
            #expect(try await fetch(app, token, quick.id).startedAt != nil)
        }
    }

    @Test("Cancel interrupts a running execution within a second")
    func cancelRunning() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            app.jobWorkers.start(app, count: 2)
            let execution = try await start(app, token, skill: "wait", input: #"{"seconds": 30}"#)
            for _ in 0..<100 where try await fetch(app, token, execution.id).status != "running" {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await fetch(app, token, execution.id).status == "running")
            let asked = ContinuousClock.now
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/cancel", token: token).status == .ok)
            for _ in 0..<40 where try await fetch(app, token, execution.id).status == "running" {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await fetch(app, token, execution.id).status == "cancelled")
            #expect(ContinuousClock.now - asked < .seconds(2))
        }
    }

    @Test("Rollback runs the undo of a finished execution once; unfinished or repeated rollbacks are 409")
    func rollback() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "echo")
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/rollback", token: token).status == .conflict)
            try await drainJobs(app)
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/rollback", token: token).status == .accepted)
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/rollback", token: token).status == .conflict)
            try await drainJobs(app)
            #expect(try await fetch(app, token, execution.id).status == "rolled_back")
            #expect(try await send(app, .POST, "/api/v1/executions/\(execution.id)/rollback", token: token).status == .conflict)
            let history = try (try await send(app, .GET, "/api/v1/executions/\(execution.id)/history", token: token)).content.decode(ListResponse<ExecutionController.HistoryEntry>.self)
            #expect(history.items.contains { $0.message.hasPrefix("undo:") })
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "execution.rolled_back").count() == 1)
        }
    }

    @Test("Another user's execution is 404 to read, cancel or roll back; lists show only one's own")
    func ownership() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let mine = try await executor(app, email: "me@example.com")
            let theirs = try await executor(app, email: "them@example.com")
            let execution = try await start(app, mine, skill: "echo")
            for (method, path) in [(HTTPMethod.GET, ""), (.GET, "/history"), (.POST, "/cancel"), (.POST, "/rollback")] {
                #expect(try await send(app, method, "/api/v1/executions/\(execution.id)\(path)", token: theirs).status == .notFound, "\(method) \(path)")
            }
            let list = try (try await send(app, .GET, "/api/v1/executions", token: theirs)).content.decode(ListResponse<ExecutionResponse>.self)
            #expect(list.items.isEmpty)
            let own = try (try await send(app, .GET, "/api/v1/executions?status=queued", token: mine)).content.decode(ListResponse<ExecutionResponse>.self)
            #expect(own.items.map(\.id) == [execution.id])
            let admin = try await adminToken(app)
            #expect(try await send(app, .GET, "/api/v1/executions/\(execution.id)", token: admin).status == .ok)
            #expect(try await send(app, .GET, "/api/v1/executions?status=sideways", token: mine).status == .unprocessableEntity)
        }
    }

    @Test("Execution ids, and the ids of their jobs, history lines, events and audit entries, are version 7 and grow with time")
    func timeOrderedIDs() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            var ids: [UUID] = []
            for _ in 0..<3 {
                ids.append(try await start(app, token, skill: "echo").id)
                try await Task.sleep(for: .milliseconds(3))
            }
            try await drainJobs(app)
            func isVersion7(_ id: UUID) -> Bool { id.uuid.6 >> 4 == 7 && id.uuid.8 >> 6 == 0b10 }
            #expect(ids.allSatisfy(isVersion7))
            // Stored and listed as text, the ids sort in the order they were made (newest first in the list).
            #expect(ids.map(\.uuidString) == ids.map(\.uuidString).sorted())
            let listed = try (try await send(app, .GET, "/api/v1/executions", token: token)).content.decode(ListResponse<ExecutionResponse>.self)
            #expect(listed.items.map(\.id) == ids.reversed())

            let executions = try await Execution.query(on: app.db).sort(\.$queuedAt).all()
            let jobs = executions.compactMap(\.jobID)
            #expect(jobs.count == 3 && jobs.allSatisfy(isVersion7) && jobs.map(\.uuidString) == jobs.map(\.uuidString).sorted())
            let events = try await Event.query(on: try await app.settledLedger()).filter(\.$resourceType == "execution").sort(\.$seq).all()
            #expect(events.count == 12 && events.allSatisfy { isVersion7($0.id!) })
            let history = try await ExecutionHistoryEntry.query(on: app.db).all()
            #expect(history.count == 12 && history.allSatisfy { isVersion7($0.id!) })
            let audit = try await AuditLog.query(on: try await app.settledLedger()).filter(\.$resourceType == "execution").all()
            #expect(!audit.isEmpty && audit.allSatisfy { isVersion7($0.id!) })
        }
    }

    @Test("The per-user cap on active executions answers 429")
    func concurrencyCap() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "2"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            _ = try await start(app, token, skill: "echo")
            _ = try await start(app, token, skill: "echo")
            let third = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)
            #expect(third.status == .tooManyRequests)
            #expect(try third.problem().code == "rate_limited")
            try await drainJobs(app)
            _ = try await start(app, token, skill: "echo")
        }
    }

    @Test("Concurrent creates at the cap: exactly the cap's number are accepted, the rest are 429 and leave nothing behind")
    func capUnderConcurrency() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "3"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let statuses = try await withThrowingTaskGroup(of: HTTPStatus.self) { group in
                for _ in 0..<16 {
                    group.addTask { try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status }
                }
                return try await group.reduce(into: [HTTPStatus]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .accepted }.count == 3, "\(statuses.map(\.code))")
            #expect(statuses.filter { $0 == .tooManyRequests }.count == 13)
            #expect(try await Execution.query(on: app.db).count() == 3)
            #expect(try await Job.query(on: app.db).filter(\.$kind == ExecutionService.runKind).count() == 3)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "execution.queued").count() == 3)
            // Once they finish, the same user may start again.
            try await drainJobs(app)
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status == .accepted)
        }
    }

    @Test("60 concurrent creates against a cap of 20: exactly 20 are accepted, whether they raced far from the cap or at it")
    func capUnderConcurrencyFarFromIt() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "20", "STEWARD_WORKERS": "0"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let statuses = try await withThrowingTaskGroup(of: HTTPStatus.self) { group in
                for _ in 0..<60 {
                    group.addTask { try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status }
                }
                return try await group.reduce(into: [HTTPStatus]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .accepted }.count == 20, "\(statuses.map(\.code))")
            #expect(statuses.filter { $0 == .tooManyRequests }.count == 40)
            #expect(try await Execution.query(on: app.db).count() == 20)
            // The count the cap reads agrees with the rows, whichever lanes the accepted creates took.
            let sql = app.db as! any SQLDatabase
            let table = sql.dialect.name == "sqlite" ? "execution_active_counts" : "execution_active_shards"
            #expect(try await sql.raw("SELECT coalesce(sum(active), 0) AS n FROM \(unsafeRaw: table)").first()?.decode(column: "n", as: Int.self) == 20)
        }
    }

    @Test("PostgreSQL: a user's create far from the cap does not wait for another one still committing; with every lane taken it waits, then goes on",
          .enabled(if: TestDatabase.isPostgres))
    func capLanesDoNotSerialiseCreates() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "1000", "STEWARD_WORKERS": "0"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let userID = try await UserAdminService(app: app).find(email: "runner@example.com").requireID()
            // Another create of the same user, holding `lanes` of its lanes in a transaction that has not committed.
            func holding(_ lanes: Int, _ body: @escaping @Sendable () async throws -> Void) async throws {
                let held = AsyncBarrier(parties: 2), release = AsyncBarrier(parties: 2)
                let holder = Task {
                    try await app.writeTransaction { db in
                        for lane in 0..<lanes {
                            try await (db as! any SQLDatabase).raw("SELECT pg_advisory_xact_lock(\(bind: ExecutionService.capLockKey(userID, lane: lane)))").run()
                        }
                        await held.arrive()
                        await release.arrive()
                    }
                }
                await held.arrive()
                let outcome = await Task { try await body() }.result
                await release.arrive()
                try await holder.value
                try outcome.get()
            }
            let create = { @Sendable in try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status }
            try await holding(1) {
                let first = Task { try await create() }
                try await eventually(10, "a create beside one still committing") { try await Execution.query(on: app.db).count() == 1 }
                #expect(try await first.value == .accepted)
            }
            try await holding(ExecutionService.capLanes) {
                let blocked = Task { try await create() }
                try await Task.sleep(for: .milliseconds(500))
                let count = try await Execution.query(on: app.db).count()
                #expect(count == 1, "it waits while every lane is taken")
                _ = blocked
            }
            try await eventually(10, "the waiting create goes on once the lanes are free") { try await Execution.query(on: app.db).count() == 2 }
        }
    }

    @Test("PostgreSQL: creating an execution does not wait for another create of the same skill to commit (the skill's count is added after the commit)",
          .enabled(if: TestDatabase.isPostgres))
    func skillRowIsNotHeldToCommit() async throws {
        try await withTestApp(environment: ["STEWARD_WORKERS": "0"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let locked = AsyncBarrier(parties: 2), release = AsyncBarrier(parties: 2)
            // What an update of the skill's row in a create still committing holds.
            let holder = Task {
                try await app.writeTransaction { db in
                    try await (db as! any SQLDatabase).raw("SELECT id FROM skills WHERE slug = 'echo' FOR NO KEY UPDATE").run()
                    await locked.arrive()
                    await release.arrive()
                }
            }
            await locked.arrive()
            let create = Task { try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status }
            let created = await Task { try await eventually(10, "the create beside the held row") { try await Execution.query(on: app.db).count() == 1 } }.result
            await release.arrive()
            try await holder.value
            try created.get()
            #expect(try await create.value == .accepted)
            try await eventually(5, "the count, after the commit") { try await SkillService(app: app).find("echo").executionCount == 1 }
        }
    }

    @Test("PostgreSQL: a graceful stop sends the run counts still owed before the databases close",
          .enabled(if: TestDatabase.isPostgres))
    func stopSendsWhatIsOwed() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let app = try await makeTestApp(directory: directory, environment: ["STEWARD_WORKERS": "0"])
        let other = try await makeTestApp(directory: directory, environment: ["STEWARD_WORKERS": "0"], freshDatabase: false, migrate: false)
        do {
            app.useTestDoubles()
            let token = try await executor(app)
            // Another instance holds the skill's row, so the count owed by the create cannot be sent yet.
            let locked = AsyncBarrier(parties: 2), release = AsyncBarrier(parties: 2)
            let holder = Task {
                try await other.writeTransaction { db in
                    try await (db as! any SQLDatabase).raw("SELECT id FROM skills WHERE slug = 'echo' FOR NO KEY UPDATE").run()
                    await locked.arrive()
                    await release.arrive()
                }
            }
            await locked.arrive()
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#).status == .accepted)
            // A second count, owed while the first is still waiting to be sent.
            try await eventually(5, "the first count waits on the row") {
                try await (other.db as! any SQLDatabase).raw("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                    .first()?.decode(column: "n", as: Int.self) == 1
            }
            #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "always-fails", "input": {}}"#).status == .accepted)
            let stopping = Task { try await app.asyncShutdown() }
            try await Task.sleep(for: .milliseconds(300))
            await release.arrive()
            try await holder.value
            try await stopping.value
            #expect(try await SkillService(app: other).find("echo").executionCount == 1, "the run counted although the stop began before it could be")
            #expect(try await SkillService(app: other).find("always-fails").executionCount == 1, "the count owed behind it too")
        } catch {
            try? await app.asyncShutdown()
            try? await other.asyncShutdown()
            throw error
        }
        try await other.asyncShutdown()
    }

    @Test("The cap follows every way out of queued and running: cancel, success, failure, and a deleted execution")
    func capFollowsTransitions() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "3"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            // The cap reads the count that triggers keep (one row per user on SQLite, a few on PostgreSQL); it must
            // always equal the rows.
            func countsAgree(_ moment: String) async throws {
                let sql = app.db as! any SQLDatabase
                let table = sql.dialect.name == "sqlite" ? "execution_active_counts" : "execution_active_shards"
                let kept = try await sql.raw("SELECT coalesce(sum(active), 0) AS n FROM \(unsafeRaw: table)").first()?.decode(column: "n", as: Int.self)
                let counted = try await Execution.query(on: app.db).filter(\.$status ~~ [.queued, .running]).count()
                #expect(kept == counted, "\(moment)")
            }
            func accepted() async throws -> Bool {
                let res = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)
                #expect([.accepted, .tooManyRequests].contains(res.status))
                return res.status == .accepted
            }
            _ = try await start(app, token, skill: "echo")
            _ = try await start(app, token, skill: "always-fails")
            let third = try await start(app, token, skill: "echo")
            #expect(try await accepted() == false)
            try await countsAgree("three queued")

            #expect(try await send(app, .POST, "/api/v1/executions/\(third.id)/cancel", token: token).status == .ok)
            try await countsAgree("one cancelled")
            #expect(try await accepted())
            #expect(try await accepted() == false)

            try await drainJobs(app)
            #expect(try await Execution.query(on: app.db).filter(\.$status == .failed).count() == 1)
            try await countsAgree("all finished")
            for _ in 0..<3 { #expect(try await accepted()) }
            #expect(try await accepted() == false)

            // A queued execution deleted (as a deleted account's are) no longer counts either.
            let queued = try #require(try await Execution.query(on: app.db).filter(\.$status == .queued).first())
            try await app.writeTransaction { db in try await queued.delete(on: db) }
            try await countsAgree("one deleted")
            #expect(try await accepted())
            try await countsAgree("at the end")
        }
    }

    @Test("Popular ranks skills by executions in the last 30 days")
    func popular() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            for _ in 0..<3 { _ = try await start(app, token, skill: "wait", input: #"{"seconds": 0}"#) }
            try await drainJobs(app)
            clock.advance(by: 31 * 86_400)
            let fresh = try await login(app, email: "runner@example.com").accessToken
            for _ in 0..<2 { _ = try await start(app, fresh, skill: "echo") }
            _ = try await start(app, fresh, skill: "uppercase", input: #"{"text": "a"}"#)
            let popular = try (try await send(app, .GET, "/api/v1/skills/popular", token: fresh)).content.decode(ListResponse<SkillController.PopularSkill>.self)
            #expect(popular.items.map(\.skill.slug) == ["echo", "uppercase"])
            #expect(popular.items.map(\.executionsLast30Days) == [2, 1])
        }
    }

    @Test("Stats count by status and give duration percentiles per skill")
    func stats() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            _ = try await start(app, token, skill: "echo")
            _ = try await start(app, token, skill: "always-fails")
            try await drainJobs(app)
            _ = try await start(app, token, skill: "echo")
            let stats = try (try await send(app, .GET, "/api/v1/executions/stats", token: token)).content.decode(ExecutionService.Stats.self)
            #expect(stats.byStatus["succeeded"] == 1)
            #expect(stats.byStatus["failed"] == 1)
            #expect(stats.byStatus["queued"] == 1)
            #expect(stats.durations.count == 1)
            #expect(stats.durations.first?.count == 1)
        }
    }
}

@Suite("Job queue")
struct JobQueueTests {
    @Test("4 workers on 2,000 jobs claim each exactly once")
    func claimsOnce() async throws {
        try await withTestApp(environment: ["STEWARD_JOB_MAX_ATTEMPTS": "1"]) { app in
            let sql = app.db as! any SQLDatabase
            // Enqueue in bulk: one transaction per 500 jobs.
            for _ in 0..<4 {
                try await app.writeTransaction { db in
                    for _ in 0..<500 { try await JobQueue(app: app).enqueue(kind: "test.unknown", payload: [:], on: db) }
                }
            }
            app.jobWorkers.start(app, count: 4)
            for _ in 0..<600 {
                let open = try await Job.query(on: app.db).filter(\.$status ~~ [.queued, .running]).count()
                if open == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            let rows = try await sql.raw("SELECT attempts, count(*) AS n FROM jobs GROUP BY attempts").all()
            let counts = try rows.map { (try $0.decode(column: "attempts", as: Int.self), try $0.decode(column: "n", as: Int.self)) }
            #expect(counts.count == 1)
            #expect(counts.first?.0 == 1, "every job claimed exactly once")
            #expect(counts.first?.1 == 2000)
            #expect(try await Job.query(on: app.db).filter(\.$lastError == "unknown job kind").count() == 2000)
        }
    }

    @Test("A claim takes the oldest due job, passing over the groups and the kind it is told to skip, hostile group names included")
    func claimFilters() async throws {
        try await withTestApp { app in
            let queue = JobQueue(app: app)
            let now = Date()
            let hostile = "g3'; DROP TABLE jobs; -- ? ?"
            let jobs: [(kind: String, group: String?, runAt: Date)] = [
                ("test.a", "g1", now.addingTimeInterval(-4)), ("test.b", nil, now.addingTimeInterval(-3)),
                ("test.a", "g2", now.addingTimeInterval(-2)), ("test.a", hostile, now.addingTimeInterval(-1)),
                ("test.a", nil, now.addingTimeInterval(3600)),
            ]
            var ids: [UUID] = []
            for (index, job) in jobs.enumerated() {
                ids.append(try await app.writeTransaction { db in
                    try await queue.enqueue(kind: job.kind, payload: ["n": .number(Double(index))], runAt: job.runAt, groupKey: job.group, on: db)
                })
            }
            let first = try await queue.claim(worker: "w", skipping: ["g1", "g2"], skippingKinds: ["test.b"])
            #expect(first?.id == ids[3], "g1, the kind test.b and g2 are passed over")
            #expect(first?.payload == ["n": 3])
            #expect(first?.attempts == 1)
            #expect(try await queue.claim(worker: "w", skipping: ["g1"])?.id == ids[1])
            #expect(try await queue.claim(worker: "w", skippingKinds: ["test.b"])?.id == ids[0])
            let last = try await queue.claim(worker: "w")
            #expect(last?.id == ids[2])
            #expect(last?.kind == "test.a")
            #expect(try await queue.claim(worker: "w") == nil, "the job not yet due stays queued")
            let stored = try #require(try await Job.find(ids[3], on: app.db))
            #expect(stored.groupKey == hostile)
            #expect(stored.status == .running)
            #expect(try await Job.query(on: app.db).filter(\.$status == .queued).count() == 1)
        }
    }

    @Test("4 workers on 400 executions: each runs once and succeeds once, with one start and one outcome each")
    func executionsRunOnce() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "1000"]) { app in
            app.useTestDoubles()
            let token = try await executor(app)
            // Queued first, so the workers go from one to the next (each next job taken with the last one's outcome).
            var ids: [UUID] = []
            for index in 0..<400 { ids.append(try await start(app, token, skill: "echo", input: #"{"n": \#(index)}"#).id) }
            app.jobWorkers.start(app, count: 4)
            for _ in 0..<600 {
                if try await Execution.query(on: app.db).filter(\.$status ~~ [.queued, .running]).count() == 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let executions = try await Execution.query(on: app.db).all()
            #expect(executions.count == 400)
            #expect(executions.allSatisfy { $0.status == .succeeded && $0.attempt == 1 })
            for index in [0, 199, 399] {
                #expect(try await fetch(app, token, ids[index]).output == .object(["n": .number(Double(index))]))
            }
            let jobs = try await Job.query(on: app.db).all()
            #expect(jobs.count == 400)
            #expect(jobs.allSatisfy { $0.status == .succeeded && $0.attempts == 1 }, "every job claimed exactly once")
            for type in ["execution.running", "execution.succeeded"] {
                #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == type).count() == 400)
            }
            let seqs = try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all().map(\.seq)
            #expect(seqs == Array(1...Int64(seqs.count)))
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
        }
    }

    @Test("A job queued behind one that finishes during shutdown stays queued, with no attempt counted, and runs after the restart")
    func shutdownTakesNothingMore() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory, environment: ["STEWARD_SHUTDOWN_GRACE_SECONDS": "30"])
        first.useTestDoubles()
        // The running skill ends when the test says, once shutdown has begun.
        let gate = AsyncStream<Void>.makeStream()
        first.runnerRegistry = RunnerRegistry(builtins: RunnerRegistry.standardBuiltins.merging(["sleep": HeldRunner(gate: gate.stream)]) { $1 })
        let token = try await executor(first)
        let running = try await start(first, token, skill: "wait", input: #"{"seconds": 1}"#)
        first.jobWorkers.start(first, count: 1)
        try await eventually(10, "the first execution running") { try await Execution.find(running.id, on: first.db)?.status == .running }
        let queued = try await start(first, token, skill: "echo", input: #"{"n": 1}"#)
        let shutdown = Task { try await first.asyncShutdown() }
        try await eventually(10, "the workers stopping") { first.jobWorkers.isStopping }
        gate.continuation.finish()
        try await shutdown.value

        let second = try await makeTestApp(directory: directory, freshDatabase: false)
        do {
            second.useTestDoubles()
            #expect(try await Execution.find(running.id, on: second.db)?.status == .succeeded, "the running job finished within the grace period")
            let waiting = try #require(try await Execution.find(queued.id, on: second.db))
            #expect(waiting.status == .queued)
            let job = try #require(try await Job.find(waiting.jobID, on: second.db))
            #expect(job.status == .queued)
            #expect(job.attempts == 0)
            #expect(job.leaseToken == nil)
            try await drainJobs(second)
            #expect(try await Execution.find(queued.id, on: second.db)?.status == .succeeded)
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }

    @Test("An expired lease is rescued, and the old worker's late write is refused")
    func leaseFencing() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "echo")
            let queue = JobQueue(app: app)
            let stale = try #require(try await queue.claim(worker: "dead-worker"))

            clock.advance(by: 31)
            #expect(try await queue.rescueExpired().isEmpty, "requeued, not given up")
            #expect(try await queue.heartbeat(stale) == false)
            let lateWrite = try await app.writeTransaction { db in try await queue.finish(stale, status: .succeeded, on: db) }
            #expect(lateWrite == false)

            let fresh = try #require(try await queue.claim(worker: "live-worker"))
            #expect(fresh.id == stale.id)
            #expect(fresh.attempts == 2)
            await JobRunner(app: app).run(fresh)
            let done = try await fetch(app, token, execution.id)
            #expect(done.status == "succeeded")
            #expect(done.attempt == 2)
        }
    }

    @Test("Running workers rescue a job whose worker died, with nothing new enqueued, and run it again")
    func workersRescueOnTheirOwn() async throws {
        try await withTestApp(environment: ["STEWARD_JOB_HEARTBEAT_SECONDS": "1"]) { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "echo")
            _ = try #require(try await JobQueue(app: app).claim(worker: "dead-worker"))
            app.jobWorkers.start(app, count: 1)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await fetch(app, token, execution.id).status == "queued", "the lease is still held")
            clock.advance(by: 31)
            var done = try await fetch(app, token, execution.id)
            for _ in 0..<100 where done.status != "succeeded" {
                try await Task.sleep(for: .milliseconds(50))
                done = try await fetch(app, token, execution.id)
            }
            #expect(done.status == "succeeded")
            #expect(done.attempt == 2)
        }
    }

    @Test("A lease expiring on the last attempt fails the execution")
    func leaseGivesUp() async throws {
        try await withTestApp(environment: ["STEWARD_JOB_MAX_ATTEMPTS": "1"]) { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            let execution = try await start(app, token, skill: "echo")
            _ = try #require(try await JobQueue(app: app).claim(worker: "dead-worker"))
            clock.advance(by: 31)
            let given = try await JobQueue(app: app).rescueExpired()
            #expect(given.count == 1)
            for job in given { await JobRunner(app: app).gaveUp(kind: job.kind, payload: job.payload, reason: "lease expired") }
            #expect(try await fetch(app, token, execution.id).status == "failed")
        }
    }

    @Test("On shutdown a running job past the grace period is handed back and runs after the restart")
    func shutdownHandsBack() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory, environment: ["STEWARD_SHUTDOWN_GRACE_SECONDS": "1"])
        first.useTestDoubles()
        let token = try await executor(first)
        let execution = try await start(first, token, skill: "wait", input: #"{"seconds": 30}"#)
        first.jobWorkers.start(first, count: 1)
        for _ in 0..<100 where try await Execution.find(execution.id, on: first.db)?.status != .running {
            try await Task.sleep(for: .milliseconds(50))
        }
        let stopping = ContinuousClock.now
        try await first.asyncShutdown()
        #expect(ContinuousClock.now - stopping < .seconds(5), "shutdown waited about the grace period, not the whole job")

        let second = try await makeTestApp(directory: directory, freshDatabase: false)
        do {
            let job = try #require(try await Job.query(on: second.db).first())
            #expect(job.status == .queued)
            #expect(job.attempts == 0, "a handed-back job does not lose an attempt")
            // Make the rerun quick.
            let stored = try #require(try await Execution.find(execution.id, on: second.db))
            stored.input = #"{"seconds":0}"#
            try await second.writeTransaction { db in try await stored.save(on: db) }
            try await drainJobs(second)
            #expect(try await Execution.find(execution.id, on: second.db)?.status == .succeeded)
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }

    @Test("Queued executions survive a restart and run after it")
    func survivesRestart() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory)
        first.useTestDoubles()
        let token = try await executor(first)
        let execution = try await start(first, token, skill: "echo", input: #"{"n": 1}"#)
        try await first.asyncShutdown()

        let second = try await makeTestApp(directory: directory, freshDatabase: false)
        do {
            second.useTestDoubles()
            try await drainJobs(second)
            let done = try await Execution.find(execution.id, on: second.db)
            #expect(done?.status == .succeeded)
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }
}

@Suite("Idempotency-Key")
struct IdempotencyTests {
    private func post(_ app: Application, token: String, key: String, body: String) async throws -> TestingHTTPResponse {
        try await app.testing().sendRequest(.POST, "/api/v1/executions",
                                            headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json", "Idempotency-Key": key],
                                            body: .init(string: body))
    }

    @Test("Same key and body: the first response again, one execution; different body: 422; per user")
    func replay() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app)
            let first = try await post(app, token: token, key: "order-42", body: #"{"skillId": "echo", "input": {"n": 1}}"#)
            #expect(first.status == .accepted)
            let again = try await post(app, token: token, key: "order-42", body: #"{"skillId": "echo", "input": {"n": 1}}"#)
            #expect(again.status == .accepted)
            #expect(again.body.string == first.body.string)
            #expect(again.headers.first(name: "Idempotent-Replayed") == "true")
            #expect(try await Execution.query(on: app.db).count() == 1)

            let different = try await post(app, token: token, key: "order-42", body: #"{"skillId": "echo", "input": {"n": 2}}"#)
            #expect(different.status == .unprocessableEntity)
            #expect(try await Execution.query(on: app.db).count() == 1)

            // Another user may use the same key.
            let other = try await executor(app, email: "other-runner@example.com")
            #expect(try await post(app, token: other, key: "order-42", body: #"{"skillId": "echo", "input": {"n": 1}}"#).status == .accepted)
            #expect(try await Execution.query(on: app.db).count() == 2)

            // A refused request is remembered too, and replayed.
            #expect(try await post(app, token: token, key: "bad-1", body: #"{"skillId": "nope", "input": {}}"#).status == .notFound)
            #expect(try await post(app, token: token, key: "bad-1", body: #"{"skillId": "nope", "input": {}}"#).status == .notFound)
            #expect(try await post(app, token: token, key: String(repeating: "k", count: 300), body: "{}").status == .unprocessableEntity)
        }
    }

    @Test("The same key while the first request is still running is 409; keys expire after 24 hours")
    func inFlightAndExpiry() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app)
            let user = try await UserAdminService(app: app).find(email: "runner@example.com")
            try await app.writeStatements { sql in
                try await sql.raw("""
                    INSERT INTO idempotency_keys (id, user_id, key, request_hash, created_at, expires_at)
                    VALUES (\(bind: UUID()), \(bind: user.id!), 'busy', 'x', \(bind: clock.now()), \(bind: clock.now().addingTimeInterval(86_400)))
                    """).run()
            }
            #expect(try await post(app, token: token, key: "busy", body: #"{"skillId": "echo", "input": {}}"#).status == .conflict)
            clock.advance(by: 86_401)
            let fresh = try await login(app, email: "runner@example.com").accessToken
            #expect(try await post(app, token: fresh, key: "busy", body: #"{"skillId": "echo", "input": {}}"#).status == .accepted)
        }
    }
}

@Suite("Job notifications")
struct JobNotificationTests {
    @Test("On PostgreSQL, a job enqueued on one instance wakes the workers of another", .enabled(if: TestDatabase.isPostgres))
    func crossInstanceWake() async throws {
        let directoryA = try TemporaryDirectory(), directoryB = try TemporaryDirectory()
        defer { directoryA.remove(); directoryB.remove() }
        let a = try await makeTestApp(directory: directoryA)
        let b = try await makeTestApp(directory: directoryB, freshDatabase: false)
        do {
            let listener = try #require(b.jobNotificationListener)
            let before = b.jobSignal.current
            listener.start(b)
            // The listener wakes its workers once when it connects.
            for _ in 0..<100 where b.jobSignal.current == before { try await Task.sleep(for: .milliseconds(50)) }
            #expect(b.jobSignal.current != before, "the listener did not connect")

            let connected = b.jobSignal.current
            _ = try await a.writeTransaction { db in
                try await JobQueue(app: a).enqueue(kind: "test.wake", payload: [:], on: db)
            }
            for _ in 0..<60 where b.jobSignal.current == connected { try await Task.sleep(for: .milliseconds(50)) }
            #expect(b.jobSignal.current != connected, "instance B was not woken by instance A's job")

            // A rolled-back enqueue notifies no one.
            let quiet = b.jobSignal.current
            struct Abort: Error {}
            try? await a.writeTransaction { db in
                try await JobQueue(app: a).enqueue(kind: "test.wake", payload: [:], on: db)
                throw Abort()
            }
            try await Task.sleep(for: .milliseconds(500))
            #expect(b.jobSignal.current == quiet)
        } catch {
            try? await b.asyncShutdown()
            try? await a.asyncShutdown()
            throw error
        }
        try await b.asyncShutdown()
        try await a.asyncShutdown()
    }
}
