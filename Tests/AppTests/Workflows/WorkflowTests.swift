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

/// A developer (workflows:write, skills:execute) with the sample skills seeded.
private func developer(_ app: Application, _ email: String = "dev@example.com") async throws -> String {
    _ = try await SkillService(app: app).seedSamples()
    try await makeUser(app, email: email)
    let id = try await UserAdminService(app: app).find(email: email).requireID()
    _ = try await UserAdminService(app: app).setRoles(id, roles: ["developer"], actor: .cli)
    return try await login(app, email: email).accessToken
}

private func createWorkflow(_ app: Application, _ token: String, _ json: String) async throws -> WorkflowResponse {
    let response = try await send(app, .POST, "/api/v1/workflows", token: token, json: json)
    #expect(response.status == .created, "\(response.body.string)")
    return try response.content.decode(WorkflowResponse.self)
}

private func startRun(_ app: Application, _ token: String, _ workflow: String, input: String = "{}") async throws -> WorkflowRunResponse {
    let response = try await send(app, .POST, "/api/v1/workflows/\(workflow)/runs", token: token, json: #"{"input": \#(input)}"#)
    #expect(response.status == .accepted, "\(response.body.string)")
    return try response.content.decode(WorkflowRunResponse.self)
}

private func fetchRun(_ app: Application, _ token: String, _ run: WorkflowRunResponse) async throws -> WorkflowRunResponse {
    try (try await send(app, .GET, "/api/v1/workflows/\(run.workflowId)/runs/\(run.id)", token: token)).content.decode(WorkflowRunResponse.self)
}

private func output(_ app: Application, _ run: WorkflowRunResponse, step: String) async throws -> JSONValue? {
    guard let id = run.steps.first(where: { $0.stepId == step })?.executionId, let execution = try await Execution.find(id, on: app.db) else { return nil }
    return execution.output.map(JSONValue.parse)
}

/// Runs due jobs other than skill executions, leaving the executions queued.
private func runAdvances(_ app: Application) async throws {
    while let job = try await JobQueue(app: app).claim(worker: "test", skippingKinds: [ExecutionService.runKind]) {
        await JobRunner(app: app).run(job)
    }
}

/// Fails its first `failures` runs (as the skill reporting failure), then echoes its input.
private final class FailsFirst: SkillRunner, @unchecked Sendable {
    let lock = NSLock()
    var failuresLeft: Int
    init(_ failures: Int) { failuresLeft = failures }
    func run(_ context: RunContext) async throws -> RunOutcome {
        let fail = lock.withLock { () -> Bool in defer { failuresLeft -= 1 }; return failuresLeft > 0 }
        return fail ? .failed("not yet") : .succeeded(context.input)
    }
    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "none" }
}

private let diamond = #"""
{"slug": "greet", "name": "Greet", "steps": [
  {"id": "start", "skillId": "uppercase", "input": {"text": "${input.name}"}},
  {"id": "left", "skillId": "echo", "input": {"greeting": "hello ${steps.start.output.result}"}, "dependsOn": ["start"]},
  {"id": "right", "skillId": "add-numbers", "input": {"numbers": "${input.numbers}"}, "dependsOn": ["start"]},
  {"id": "join", "skillId": "echo", "dependsOn": ["left", "right"],
   "input": {"left": "${steps.left.output.greeting}", "total": "${steps.right.output.result}", "who": "${steps.start.output.result}"}}
]}
"""#

@Suite("Workflows")
struct WorkflowTests {
    @Test("Workflows are validated as a DAG at save time, with a problem per step; changes bump the version")
    func definitions() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await developer(app)
            let created = try await createWorkflow(app, token, diamond)
            #expect(created.version == 1 && created.steps.count == 4)
            #expect(created.steps[3].dependsOn == ["left", "right"])
            #expect(created.steps[0].retry.maxAttempts == 1 && created.steps[0].timeoutSeconds == 3600 && !created.steps[0].continueOnFailure)

            let refusals: [(String, String, String)] = [
                (#"{"slug": "c1", "name": "x", "steps": [{"id": "a", "skillId": "echo", "dependsOn": ["b"]}, {"id": "b", "skillId": "echo", "dependsOn": ["a"]}]}"#, "steps", "cycle"),
                (#"{"slug": "c2", "name": "x", "steps": [{"id": "a", "skillId": "echo", "dependsOn": ["ghost"]}]}"#, "steps[0].dependsOn", "no step has the id 'ghost'"),
                (#"{"slug": "c3", "name": "x", "steps": [{"id": "a", "skillId": "no-such-skill"}]}"#, "steps[0].skillId", "no such skill"),
                (#"{"slug": "c4", "name": "x", "steps": [{"id": "a", "skillId": "echo"}, {"id": "a", "skillId": "echo"}]}"#, "steps[1].id", "repeats"),
                (#"{"slug": "c5", "name": "x", "steps": [{"id": "a", "skillId": "echo"}, {"id": "b", "skillId": "echo", "input": {"x": "${steps.a.output.y}"}}]}"#, "steps[1].input", "does not depend on"),
                (#"{"slug": "c6", "name": "x", "steps": [{"id": "a", "skillId": "echo", "retry": {"maxAttempts": 0}}]}"#, "steps[0].retry", "maxAttempts"),
                (#"{"slug": "c7", "name": "x", "steps": []}"#, "steps", "1 to 50"),
                (#"{"slug": "c8", "name": "x", "steps": [{"id": "a", "skillId": "echo", "input": {"x": "${secrets.key}"}}]}"#, "steps[0].input", "is not ${input"),
                (#"{"slug": "c9", "name": "x"}"#, "steps", "is required"),
                (#"{"slug": "Bad Slug", "name": "x", "steps": [{"id": "a", "skillId": "echo"}]}"#, "slug", "lower-case"),
                (#"{"slug": "c10", "name": "x", "steps": [{"id": "a b", "skillId": "echo", "timeoutSeconds": 0}]}"#, "steps[0].id", "letters"),
            ]
            for (body, field, message) in refusals {
                let response = try await send(app, .POST, "/api/v1/workflows", token: token, json: body)
                #expect(response.status == .unprocessableEntity, "\(body)")
                #expect(try response.problem().errors?.contains { $0.field == field && $0.message.contains(message) } == true, "\(body): \(response.body.string)")
            }
            #expect(try await send(app, .POST, "/api/v1/workflows", token: token, json: diamond).status == .conflict, "the slug is taken")
            #expect(try await Workflow.query(on: app.db).count() == 1)

            let renamed = try (try await send(app, .PATCH, "/api/v1/workflows/greet", token: token, json: #"{"name": "Greeter"}"#)).content.decode(WorkflowResponse.self)
            #expect(renamed.version == 2 && renamed.name == "Greeter")

            try await makeUser(app, email: "viewer@example.com")
            let viewer = try await login(app, email: "viewer@example.com").accessToken
            #expect(try await send(app, .GET, "/api/v1/workflows/greet", token: viewer).status == .ok, "viewers have workflows:read")
            #expect(try await send(app, .POST, "/api/v1/workflows", token: viewer, json: diamond).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/workflows/greet/runs", token: viewer, json: "{}").status == .forbidden, "running needs skills:execute")
            #expect(try await send(app, .DELETE, "/api/v1/workflows/greet", token: token).status == .noContent)
            #expect(try await send(app, .GET, "/api/v1/workflows/greet", token: token).status == .notFound)
        }
    }

    @Test("A diamond runs its independent steps in parallel and passes data between steps")
    func diamondRun() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await developer(app)
            _ = try await createWorkflow(app, token, diamond)
            let started = try await startRun(app, token, "greet", input: #"{"name": "ada", "numbers": [1, 2, 3]}"#)
            #expect(started.status == "queued" && started.steps.map(\.status) == ["pending", "pending", "pending", "pending"])

            try await drainJobs(app)
            let done = try await fetchRun(app, token, started)
            #expect(done.status == "succeeded" && done.progress == 100)
            #expect(done.steps.map(\.status) == ["succeeded", "succeeded", "succeeded", "succeeded"])
            #expect(try await output(app, done, step: "join") == ["left": "hello ADA", "total": 6, "who": "ADA"])
            let left = try #require(done.steps.first { $0.stepId == "left" }?.executionId)
            let right = try #require(done.steps.first { $0.stepId == "right" }?.executionId)
            let leftJob = try #require(try await Execution.find(left, on: app.db)?.jobID)
            let rightJob = try #require(try await Execution.find(right, on: app.db)?.jobID)
            #expect(leftJob != rightJob)
            // Both branches were started by the same advance, before either ran.
            let startedTogether = try await ExecutionHistoryEntry.query(on: app.db).filter(\.$message == "queued").all()
                .filter { [left, right].contains($0.$execution.id) }.map(\.at)
            #expect(Set(startedTogether).count == 1)
            let types = try await Event.query(on: try await app.settledLedger()).filter(\.$resourceType == "workflow_run").sort(\.$seq).all().map(\.type)
            #expect(types == ["workflow.run.started", "workflow.run.succeeded"])

            let otherToken = try await developer(app, "other@example.com")
            #expect(try await send(app, .GET, "/api/v1/workflows/greet/runs/\(started.id)", token: otherToken).status == .notFound, "runs are the owner's")
        }
    }

    @Test("A workflow's runs list: each user sees their own runs, an admin every run, newest first with their steps, paged to the end")
    func runsList() async throws {
        try await withTestApp { app in
            let owner = try await developer(app)
            _ = try await createWorkflow(app, owner, diamond)
            let other = try await developer(app, "other@example.com")
            _ = try await developer(app, "admin@example.com")
            let adminID = try await UserAdminService(app: app).find(email: "admin@example.com").requireID()
            _ = try await UserAdminService(app: app).setRoles(adminID, roles: ["admin"], actor: .cli)
            let admins = try await login(app, email: "admin@example.com").accessToken
            var mine: [UUID] = [], theirs: [UUID] = []
            for index in 0..<3 {
                mine.append(try await startRun(app, owner, "greet", input: #"{"name": "a\#(index)", "numbers": [1]}"#).id)
                theirs.append(try await startRun(app, other, "greet", input: #"{"name": "b\#(index)", "numbers": [2]}"#).id)
            }
            /// Every page of `GET …/runs?limit=2` for `token`, followed to the last, as the client sees them.
            func walk(_ token: String) async throws -> [WorkflowRunResponse] {
                var runs: [WorkflowRunResponse] = [], cursor: String?, pages = 0
                repeat {
                    let query = cursor.map { "&cursor=\($0)" } ?? ""
                    let response = try await send(app, .GET, "/api/v1/workflows/greet/runs?limit=2\(query)", token: token)
                    #expect(response.status == .ok, "\(response.body.string)")
                    let page = try response.content.decode(ListResponse<WorkflowRunResponse>.self)
                    #expect(page.items.count <= 2)
                    runs += page.items
                    cursor = page.nextCursor
                    pages += 1
                } while cursor != nil && pages < 10
                #expect(cursor == nil, "the last page has no cursor")
                return runs
            }
            let ownerSees = try await walk(owner)
            #expect(ownerSees.map(\.id) == mine.reversed(), "only the owner's runs, newest first")
            #expect(ownerSees.allSatisfy { $0.steps.map(\.stepId).sorted() == ["join", "left", "right", "start"] }, "each run with its steps")
            #expect(try await walk(other).map(\.id) == theirs.reversed())
            let adminSees = try await walk(admins).map(\.id)
            #expect(Set(adminSees) == Set(mine + theirs) && adminSees.count == 6, "an admin sees every run once")
        }
    }

    @Test("A step is retried per its policy, after its back-off, then succeeds")
    func retryThenSuccess() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            var registry = app.runnerRegistry
            registry.builtins["fail"] = FailsFirst(1)
            app.runnerRegistry = registry
            let token = try await developer(app)
            _ = try await createWorkflow(app, token, #"{"slug": "flaky", "name": "Flaky", "steps": [{"id": "once", "skillId": "always-fails", "input": {"message": "x"}, "retry": {"maxAttempts": 2, "backoffSeconds": 30}}]}"#)
            let run = try await startRun(app, token, "flaky")
            try await drainJobs(app)
            let waiting = try await fetchRun(app, token, run)
            #expect(waiting.status == "running" && waiting.steps[0].status == "pending" && waiting.steps[0].attempts == 1)
            #expect(waiting.steps[0].error?.contains("attempt 1 failed") == true)

            clock.advance(by: 31)
            try await drainJobs(app)
            let done = try await fetchRun(app, token, run)
            #expect(done.status == "succeeded")
            #expect(done.steps[0].attempts == 2 && done.steps[0].status == "succeeded")
        }
    }

    @Test("A failed step fails the run and skips its dependents, unless it may continue on failure")
    func failureAndSkip() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await developer(app)
            _ = try await createWorkflow(app, token, #"""
                {"slug": "mixed", "name": "Mixed", "steps": [
                  {"id": "a", "skillId": "always-fails", "input": {"message": "broken"}},
                  {"id": "b", "skillId": "echo", "dependsOn": ["a"]},
                  {"id": "c", "skillId": "always-fails", "continueOnFailure": true},
                  {"id": "d", "skillId": "echo", "input": {"after": "c"}, "dependsOn": ["c"]}
                ]}
                """#)
            let run = try await startRun(app, token, "mixed")
            try await drainJobs(app)
            let done = try await fetchRun(app, token, run)
            #expect(done.status == "failed")
            #expect(done.steps.map(\.status) == ["failed", "skipped", "failed", "succeeded"])
            #expect(done.error?.contains("step a failed: broken") == true)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "workflow.run.failed").count() == 1)
        }
    }

    @Test("Cancelling a run cancels its running steps and the ones waiting")
    func cancel() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await developer(app)
            _ = try await createWorkflow(app, token, #"{"slug": "slow", "name": "Slow", "steps": [{"id": "w", "skillId": "wait", "input": {"seconds": 3600}}, {"id": "after", "skillId": "echo", "dependsOn": ["w"]}]}"#)
            let run = try await startRun(app, token, "slow")
            try await runAdvances(app)  // the first step's execution is queued
            let cancelled = try await send(app, .POST, "/api/v1/workflows/slow/runs/\(run.id)/cancel", token: token)
            #expect(cancelled.status == .ok)
            try await runAdvances(app)
            let after = try await fetchRun(app, token, run)
            #expect(after.status == "cancelled")
            #expect(after.steps.map(\.status) == ["cancelled", "cancelled"])
            let execution = try #require(after.steps[0].executionId)
            #expect(try await Execution.find(execution, on: app.db)?.status == .cancelled)
            #expect(try await send(app, .POST, "/api/v1/workflows/slow/runs/\(run.id)/cancel", token: token).status == .conflict)
        }
    }

    @Test("Only the creator or an admin may change or delete a workflow; another developer gets 403 and nothing changes")
    func ownership() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let owner = try await developer(app)
            let created = try await createWorkflow(app, owner, diamond)
            let other = try await developer(app, "other-dev@example.com")
            #expect(try await send(app, .PATCH, "/api/v1/workflows/greet", token: other, json: #"{"name": "Mine now"}"#).status == .forbidden)
            #expect(try await send(app, .DELETE, "/api/v1/workflows/greet", token: other).status == .forbidden)
            let unchanged = try (try await send(app, .GET, "/api/v1/workflows/greet", token: other)).content.decode(WorkflowResponse.self)
            #expect(unchanged.name == created.name && unchanged.version == created.version)
            #expect(try await send(app, .PATCH, "/api/v1/workflows/greet", token: owner, json: #"{"name": "Owner edit"}"#).status == .ok)
            let admin = try await adminToken(app)
            #expect(try await send(app, .PATCH, "/api/v1/workflows/greet", token: admin, json: #"{"name": "Admin edit"}"#).status == .ok)
            #expect(try await send(app, .DELETE, "/api/v1/workflows/greet", token: admin).status == .noContent)
        }
    }

    @Test("A run interrupted by a crash resumes where it stopped after a restart on the same file database")
    func crashResume() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let env = ["STEWARD_JWT_SECRET": String(repeating: "restart-", count: 5)]
        let first = try await makeTestApp(directory: directory, environment: env)
        let token: String
        let run: WorkflowRunResponse
        do {
            first.useTestDoubles()
            token = try await developer(first)
            _ = try await createWorkflow(first, token, diamond)
            run = try await startRun(first, token, "greet", input: #"{"name": "grace", "numbers": [4, 5]}"#)
            // The first step runs; its completion queues the next advance, and then the process goes away.
            let advance = try #require(try await JobQueue(app: first).claim(worker: "doomed"))
            await JobRunner(app: first).run(advance)
            let execution = try #require(try await JobQueue(app: first).claim(worker: "doomed"))
            await JobRunner(app: first).run(execution)
        } catch {
            try? await first.asyncShutdown()
            throw error
        }
        try await first.asyncShutdown()

        let second = try await makeTestApp(directory: directory, environment: env, freshDatabase: false)
        do {
            second.useTestDoubles()
            try await drainJobs(second)
            let done = try await fetchRun(second, token, run)
            #expect(done.status == "succeeded")
            #expect(try await output(second, done, step: "join") == ["left": "hello GRACE", "total": 9, "who": "GRACE"])
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }

    @Test("A schedule can target a workflow: each occurrence starts a run, and run-now starts one at once")
    func scheduledWorkflow() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            var token = try await developer(app)
            let workflow = try await createWorkflow(app, token, diamond)
            let created = try await send(app, .POST, "/api/v1/schedules", token: token,
                                         json: #"{"name": "Greet hourly", "target": {"workflowId": "greet"}, "input": {"name": "lin", "numbers": [2]}, "cron": "@hourly"}"#)
            #expect(created.status == .created, "\(created.body.string)")
            let schedule = try created.content.decode(ScheduleResponse.self)
            #expect(schedule.target.workflowId == workflow.id)

            clock.advance(by: 3600)
            #expect(try await ScheduleService(app: app).fireDue() == 1)
            try await drainJobs(app)
            token = try await login(app, email: "dev@example.com").accessToken  // the first one expired meanwhile
            let fired = try (try await send(app, .GET, "/api/v1/schedules/\(schedule.id)", token: token)).content.decode(ScheduleResponse.self)
            let runID = try #require(fired.lastRunId)
            #expect(fired.lastExecutionId == nil && fired.lastStatus == "started")
            let run = try #require(try await WorkflowRun.find(runID, on: app.db))
            #expect(run.status == .succeeded && run.$user.id == schedule.userId)
            let shown = try (try await send(app, .GET, "/api/v1/workflows/greet/runs/\(runID)", token: token)).content.decode(WorkflowRunResponse.self)
            #expect(shown.scheduleId == schedule.id && shown.scheduledFor == schedule.nextRunAt, "the run names its schedule and occurrence")

            let now = try await send(app, .POST, "/api/v1/schedules/\(schedule.id)/run-now", token: token)
            #expect(now.status == .accepted)
            let manual = try now.content.decode(WorkflowRunResponse.self)
            #expect(manual.workflowId == workflow.id && manual.input == ["name": "lin", "numbers": [2]])
            #expect(manual.scheduleId == schedule.id && manual.scheduledFor == nil)
        }
    }

    @Test("Rollback undoes every succeeded step in reverse completion order, each recorded in history and audit")
    func rollbackSaga() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let token = try await developer(app)
            _ = try await createWorkflow(app, token, diamond)
            let run = try await startRun(app, token, "greet", input: #"{"name": "kay", "numbers": [1]}"#)
            #expect(try await send(app, .POST, "/api/v1/workflows/greet/runs/\(run.id)/rollback", token: token).status == .conflict, "not while it runs")
            try await drainJobs(app)
            let done = try await fetchRun(app, token, run)
            #expect(done.status == "succeeded")

            let accepted = try await send(app, .POST, "/api/v1/workflows/greet/runs/\(run.id)/rollback", token: token)
            #expect(accepted.status == .accepted)
            try await drainJobs(app)
            let undone = try await fetchRun(app, token, run)
            #expect(undone.status == "rolled_back")
            #expect(undone.steps.allSatisfy { $0.status == "rolled_back" })

            // Completion order was start, left, right, join (the queue runs jobs in order): undo goes the other way.
            let compensated = try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "workflow.run.compensated").sort(\.$seq).all()
                .map { JSONValue.parse($0.details).object?["stepId"]?.stringValue ?? "" }
            #expect(compensated == ["join", "right", "left", "start"])
            #expect(undone.history?.map(\.action) == ["workflow.run.started", "workflow.run.succeeded", "workflow.run.rollback_requested",
                                                       "workflow.run.compensated", "workflow.run.compensated", "workflow.run.compensated",
                                                       "workflow.run.compensated", "workflow.run.rolled_back"], "the run's history")
            #expect(undone.steps.allSatisfy { $0.execution?.status == "rolled_back" }, "each step shows its execution")
            for step in undone.steps {
                let execution = try #require(try await Execution.find(step.executionId!, on: app.db))
                #expect(execution.status == .rolledBack)
                let history = try await ExecutionHistoryEntry.query(on: app.db).filter(\.$execution.$id == execution.id!).all().map(\.message)
                #expect(history.contains { $0.hasPrefix("undo (workflow rollback)") })
            }
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "workflow.run.rolled_back").count() == 1)
            #expect(try await send(app, .POST, "/api/v1/workflows/greet/runs/\(run.id)/rollback", token: token).status == .conflict, "once only")
        }
    }
}
