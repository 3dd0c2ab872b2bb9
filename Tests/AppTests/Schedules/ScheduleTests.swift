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

/// A signed-in executor (skills:execute, executions:read) with the sample skills seeded.
private func executor(_ app: Application, _ email: String) async throws -> String {
    _ = try await SkillService(app: app).seedSamples()
    try await makeUser(app, email: email)
    let id = try await UserAdminService(app: app).find(email: email).requireID()
    _ = try await UserAdminService(app: app).setRoles(id, roles: ["executor"], actor: .cli)
    return try await login(app, email: email).accessToken
}

private func create(_ app: Application, _ token: String, _ json: String) async throws -> ScheduleResponse {
    let response = try await send(app, .POST, "/api/v1/schedules", token: token, json: json)
    #expect(response.status == .created, "\(response.body.string)")
    return try response.content.decode(ScheduleResponse.self)
}

private func fetch(_ app: Application, _ token: String, _ id: UUID) async throws -> ScheduleResponse {
    try (try await send(app, .GET, "/api/v1/schedules/\(id)", token: token)).content.decode(ScheduleResponse.self)
}

private func fireJobs(_ app: Application, for id: UUID) async throws -> Int {
    try await Job.query(on: app.db).filter(\.$kind == ScheduleService.fireKind).all()
        .filter { JSONValue.parse($0.payload).object?["scheduleId"]?.stringValue.flatMap(UUID.init(uuidString:)) == id }.count
}

/// Runs the queued `schedule.fire` jobs only, leaving the executions they start queued.
private func runFireJobs(_ app: Application) async throws {
    while let job = try await JobQueue(app: app).claim(worker: "test", skippingKinds: [ExecutionService.runKind]) {
        #expect(job.kind == ScheduleService.fireKind)
        await JobRunner(app: app).run(job)
    }
}

/// RFC 3339 text of a date, for comparing fire times.
private enum iso {
    static func string(from date: Date) -> String { ISO8601DateFormatter().string(from: date) }
}

@Suite("Schedules")
struct ScheduleTests {
    @Test("POST /api/v1/schedules computes the next run in the schedule's zone; bad fields are 422 per field; others get 404")
    func crud() async throws {
        try await withTestApp { app in
            app.useTestDoubles()  // 2026-11-18T11:06:40Z
            let token = try await executor(app, "sched@example.com")
            let created = try await create(app, token, #"{"name": "Nightly", "target": {"skillId": "echo"}, "input": {"a": 1}, "cron": "0 3 * * *", "timezone": "Europe/Berlin"}"#)
            #expect(created.nextRunAt.map(iso.string(from:)) == "2026-11-19T02:00:00Z", "03:00 in Berlin (CET) is 02:00 UTC")
            #expect(created.overlapPolicy == "skip" && created.catchUp == "last" && created.enabled)
            #expect(created.input == ["a": 1])
            #expect(created.target.skillId != nil && created.lastStatus == nil)

            let refusals: [(String, String)] = [
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "61 * * * *"}"#, "cron"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "* * *"}"#, "cron"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "@hourly", "timezone": "Mars/Olympus"}"#, "timezone"),
                (#"{"name": "x", "target": {"workflowId": "6f0d7c8e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"}, "cron": "@hourly"}"#, "target.workflowId"),
                (#"{"name": "x", "target": {"skillId": "echo", "workflowId": "greet"}, "cron": "@hourly"}"#, "target"),
                (#"{"name": "x", "target": {"skillId": "no-such-skill"}, "cron": "@hourly"}"#, "target.skillId"),
                (#"{"name": "x", "target": {"skillId": "wait"}, "input": {}, "cron": "@hourly"}"#, "input.seconds"),
                (#"{"target": {"skillId": "echo"}, "cron": "@hourly"}"#, "name"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": 5}"#, "cron"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "@hourly", "overlapPolicy": "sometimes"}"#, "overlapPolicy"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "@hourly", "owner": "me"}"#, "owner"),
                (#"{"name": "x", "target": {"skillId": "echo"}, "cron": "0 0 30 2 *"}"#, "cron"),
            ]
            for (body, field) in refusals {
                let response = try await send(app, .POST, "/api/v1/schedules", token: token, json: body)
                #expect(response.status == .unprocessableEntity, "\(body)")
                #expect(try response.problem().errors?.contains { $0.field == field } == true, "\(body): \(response.body.string)")
            }
            let badCron = try await send(app, .POST, "/api/v1/schedules", token: token, json: #"{"name": "x", "target": {"skillId": "echo"}, "cron": "0 9 * * FUNDAY"}"#)
            #expect(try badCron.problem().errors?.first?.message.contains("at position 9") == true, "the error names where")
            #expect(try await Schedule.query(on: app.db).count() == 1, "nothing refused was stored")

            let other = try await executor(app, "other@example.com")
            #expect(try await send(app, .GET, "/api/v1/schedules/\(created.id)", token: other).status == .notFound)
            #expect(try await send(app, .PATCH, "/api/v1/schedules/\(created.id)", token: other, json: #"{"enabled": false}"#).status == .notFound)
            let othersList = try (try await send(app, .GET, "/api/v1/schedules", token: other)).content.decode(ListResponse<ScheduleResponse>.self)
            #expect(othersList.items.isEmpty)

            let paused = try (try await send(app, .PATCH, "/api/v1/schedules/\(created.id)", token: token, json: #"{"enabled": false}"#)).content.decode(ScheduleResponse.self)
            #expect(!paused.enabled && paused.nextRunAt == nil)
            let moved = try (try await send(app, .PATCH, "/api/v1/schedules/\(created.id)", token: token,
                                            json: #"{"enabled": true, "cron": "30 8 * * MON", "timezone": "America/New_York"}"#)).content.decode(ScheduleResponse.self)
            #expect(moved.nextRunAt.map(iso.string(from:)) == "2026-11-23T13:30:00Z", "Monday 08:30 EST")
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "schedule.updated").count() == 2)

            #expect(try await send(app, .DELETE, "/api/v1/schedules/\(created.id)", token: token).status == .noContent)
            #expect(try await send(app, .GET, "/api/v1/schedules/\(created.id)", token: token).status == .notFound)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "schedule.deleted").count() == 1)
        }
    }

    @Test("A due occurrence fires once, through the job queue, as the owner; the next one is scheduled")
    func fires() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app, "fire@example.com")
            let schedule = try await create(app, token, #"{"name": "Every five", "target": {"skillId": "echo"}, "input": {"n": 7}, "cron": "*/5 * * * *"}"#)
            #expect(schedule.nextRunAt.map(iso.string(from:)) == "2026-11-18T11:10:00Z")
            #expect(try await ScheduleService(app: app).fireDue() == 0, "nothing is due yet")

            clock.advance(by: 240)  // 11:10:40
            #expect(try await ScheduleService(app: app).fireDue() == 1)
            #expect(try await ScheduleService(app: app).fireDue() == 0, "an occurrence is claimed once")
            try await drainJobs(app)

            let after = try await fetch(app, token, schedule.id)
            #expect(after.lastStatus == "started")
            #expect(after.nextRunAt.map(iso.string(from:)) == "2026-11-18T11:15:00Z")
            let executionID = try #require(after.lastExecutionId)
            let execution = try (try await send(app, .GET, "/api/v1/executions/\(executionID)", token: token)).content.decode(ExecutionResponse.self)
            #expect(execution.status == "succeeded")
            #expect(execution.output == ["n": 7])
            #expect(execution.userId == schedule.userId, "it ran as the schedule's owner")
            #expect(execution.scheduleId == schedule.id, "it names the schedule that started it")
            #expect(execution.scheduledFor.map(iso.string(from:)) == "2026-11-18T11:10:00Z", "and the occurrence, not the firing time")
            let direct = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {}}"#)
            #expect(direct.body.string.contains(#""scheduleId":null"#) && direct.body.string.contains(#""scheduledFor":null"#))
        }
    }

    @Test("Two schedulers racing on one database fire each occurrence once")
    func racingInstances() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let env = ["STEWARD_JWT_SECRET": String(repeating: "shared-", count: 6)]
        let a = try await makeTestApp(directory: directory, environment: env)
        let b = try await makeTestApp(directory: directory, environment: env, freshDatabase: false, migrate: false)
        do {
            let clock = TestClock()
            a.useTestDoubles(clock: clock); b.useTestDoubles(clock: clock)
            let token = try await executor(a, "race@example.com")
            var ids: [UUID] = []
            for index in 0..<5 {
                ids.append(try await create(a, token, #"{"name": "race \#(index)", "target": {"skillId": "echo"}, "cron": "* * * * *", "overlapPolicy": "allow"}"#).id)
            }
            for _ in 0..<3 {
                clock.advance(by: 60)
                async let first = ScheduleService(app: a).fireDue()
                async let second = ScheduleService(app: b).fireDue()
                let claimed = try await first + second
                #expect(claimed == 5, "each of the five schedules claimed by exactly one instance")
            }
            for id in ids { #expect(try await fireJobs(a, for: id) == 3, "one job per occurrence") }
        } catch {
            try? await b.asyncShutdown(); try? await a.asyncShutdown()
            throw error
        }
        try await b.asyncShutdown()
        try await a.asyncShutdown()
    }

    @Test("After downtime, missed occurrences follow catchUp: none fires nothing, last fires one, all fires each")
    func catchUp() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app, "catchup@example.com")
            var ids: [String: UUID] = [:]
            for mode in ["none", "last", "all"] {
                ids[mode] = try await create(app, token, #"{"name": "\#(mode)", "target": {"skillId": "echo"}, "cron": "*/10 * * * *", "catchUp": "\#(mode)", "overlapPolicy": "allow"}"#).id
            }
            clock.advance(by: 35 * 60)  // 11:41:40: 11:10, 11:20, 11:30 and 11:40 were all missed
            #expect(try await ScheduleService(app: app).fireDue() == 3)
            #expect(try await fireJobs(app, for: ids["none"]!) == 0)
            #expect(try await fireJobs(app, for: ids["last"]!) == 1)
            #expect(try await fireJobs(app, for: ids["all"]!) == 4)
            let fresh = try await login(app, email: "catchup@example.com").accessToken  // the old token expired meanwhile
            let none = try await fetch(app, fresh, ids["none"]!)
            #expect(none.lastStatus == "missed")
            #expect(none.nextRunAt.map(iso.string(from:)) == "2026-11-18T11:50:00Z", "back on the clock after the gap")
        }
    }

    @Test("Overlap: skip drops an occurrence while the last run is unfinished; queue waits for it to finish")
    func overlap() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app, "overlap@example.com")
            let skip = try await create(app, token, #"{"name": "skip", "target": {"skillId": "echo"}, "cron": "*/5 * * * *", "overlapPolicy": "skip"}"#)
            let queue = try await create(app, token, #"{"name": "queue", "target": {"skillId": "echo"}, "cron": "*/5 * * * *", "overlapPolicy": "queue"}"#)
            clock.advance(by: 240)  // 11:10:40
            #expect(try await ScheduleService(app: app).fireDue() == 2)
            try await runFireJobs(app)  // both start an execution, which stays queued

            clock.advance(by: 300)  // 11:15:40, the first runs are still queued
            #expect(try await ScheduleService(app: app).fireDue() == 1, "skip claims and drops; queue waits")
            #expect(try await fetch(app, token, skip.id).lastStatus == "skipped")
            #expect(try await fireJobs(app, for: skip.id) == 1)
            let waiting = try await fetch(app, token, queue.id)
            #expect(waiting.nextRunAt.map(iso.string(from:)) == "2026-11-18T11:15:00Z", "the queued occurrence is kept")

            let previous = try #require(waiting.lastExecutionId)
            #expect(try await send(app, .POST, "/api/v1/executions/\(previous)/cancel", token: token).status == .ok)
            #expect(try await ScheduleService(app: app).fireDue() == 1, "it fires once the previous run ended")
            #expect(try await fireJobs(app, for: queue.id) == 2)
        }
    }

    @Test("A schedule whose owner lost skills:execute records the refusal instead of running")
    func ownerDemoted() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let token = try await executor(app, "demoted@example.com")
            let schedule = try await create(app, token, #"{"name": "demoted", "target": {"skillId": "echo"}, "cron": "*/5 * * * *"}"#)
            let owner = try await UserAdminService(app: app).find(email: "demoted@example.com").requireID()
            _ = try await UserAdminService(app: app).setRoles(owner, roles: ["viewer"], actor: .cli)
            clock.advance(by: 240)
            #expect(try await ScheduleService(app: app).fireDue() == 1)
            try await runFireJobs(app)
            let after = try #require(try await Schedule.find(schedule.id, on: app.db))
            #expect(after.lastStatus == .failed)
            #expect(after.lastError?.contains("skills:execute") == true)
            await #expect(throws: (any Error).self, "nor from the command line") {
                _ = try await app.runCommand(["schedule", "run-now", schedule.id.uuidString.lowercased()])
            }
            #expect(try await Execution.query(on: app.db).count() == 0)
        }
    }

    @Test("run-now starts the target at once without moving the next run; the CLI lists and runs schedules")
    func runNowAndCLI() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await executor(app, "now@example.com")
            let schedule = try await create(app, token, #"{"name": "Report", "target": {"skillId": "echo"}, "input": {"r": true}, "cron": "@daily"}"#)
            let started = try await send(app, .POST, "/api/v1/schedules/\(schedule.id)/run-now", token: token)
            #expect(started.status == .accepted)
            let execution = try started.content.decode(ExecutionResponse.self)
            #expect(execution.input == ["r": true] && execution.status == "queued")
            #expect(execution.scheduleId == schedule.id && execution.scheduledFor == nil, "run-now is no occurrence")
            let after = try await fetch(app, token, schedule.id)
            #expect(after.nextRunAt == schedule.nextRunAt)
            #expect(after.lastExecutionId == execution.id)
            #expect(try await send(app, .POST, "/api/v1/schedules/\(UUID())/run-now", token: token).status == .notFound)

            let listed = try await app.runCommand(["schedule", "list"])
            #expect(listed.contains(schedule.id.uuidString.lowercased()) && listed.contains("Report") && listed.contains("\"@daily\" UTC"))
            let printed = try await app.runCommand(["schedule", "run-now", schedule.id.uuidString.lowercased()])
            let cliExecution = try #require(UUID(uuidString: printed.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(try await Execution.find(cliExecution, on: app.db)?.$user.id == schedule.userId)
        }
    }
}
