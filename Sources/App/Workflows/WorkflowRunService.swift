import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats
import StewardSQLite

/// A run as the API shows it.
struct WorkflowRunResponse: Content {
    struct Step: Content {
        var stepId: String
        var status: String
        var attempts: Int
        var executionId: UUID?
        var error: String?
        var startedAt: Date?
        var completedAt: Date?
        /// The step's current execution, on the single-run answer.
        var execution: ExecutionResponse?
    }

    /// One line of the run's history: its start and end, each compensation, and who asked for what.
    struct HistoryEntry: Content {
        var at: Date
        var action: String
        var details: JSONValue
    }

    var id: UUID
    var workflowId: UUID
    var workflowVersion: Int
    var userId: UUID
    var status: String
    var progress: Int
    var input: JSONValue
    var error: String?
    var steps: [Step]
    var createdAt: Date
    var startedAt: Date?
    var finishedAt: Date?
    var scheduleId: UUID?
    var scheduledFor: Date?
    /// On the single-run answer.
    var history: [HistoryEntry]?

    init(_ run: WorkflowRun, steps: [WorkflowRunStep], executions: [UUID: Execution]? = nil, history: [AuditLog]? = nil) {
        id = run.id!
        workflowId = run.$workflow.id
        workflowVersion = run.workflowVersion
        userId = run.$user.id
        status = run.status.rawValue
        progress = run.progress
        input = JSONValue.parse(run.input)
        error = run.error
        self.steps = steps.sorted { $0.ordinal < $1.ordinal }.map {
            Step(stepId: $0.stepID, status: $0.status.rawValue, attempts: $0.attempts, executionId: $0.executionID, error: $0.error,
                 startedAt: $0.startedAt, completedAt: $0.completedAt,
                 execution: $0.executionID.flatMap { executions?[$0] }.map(ExecutionResponse.init))
        }
        createdAt = run.createdAt
        startedAt = run.startedAt
        finishedAt = run.finishedAt
        scheduleId = run.scheduleID
        scheduledFor = run.scheduledFor
        self.history = history?.map { HistoryEntry(at: $0.at, action: $0.action, details: JSONValue.parse($0.details)) }
    }

    var json: JSONValue {
        (try? APIJSON.string(self)).flatMap(JSONText.parse) ?? .null
    }
}

/// Workflow runs. A run advances in `workflow.advance` jobs: one is enqueued when the run starts, whenever one of
/// its step executions finishes (in that execution's final transaction), and when a retry's back-off or a step's
/// timeout is due. Each advance looks at the steps afresh: it records finished executions, retries or fails
/// them, starts every step whose dependencies are done (independent steps in parallel), skips steps below a
/// failure, and settles the run. Everything it needs is in the database, so a crash at any point resumes.
struct WorkflowRunService: Sendable {
    static let advanceKind = "workflow.advance"
    static let rollbackKind = "workflow.rollback"

    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    // MARK: - Start and read

    func start(_ reference: String, input: JSONValue, caller: AuthenticatedCaller, origin: RequestOrigin,
               trigger: ScheduleTrigger? = nil) async throws -> (WorkflowRun, [WorkflowRunStep]) {
        let workflow = try await WorkflowService(app: app).find(reference)
        guard workflow.enabled else { throw HTTPProblem.conflict("The workflow '\(workflow.slug)' is disabled.") }
        guard case .object = input else { throw HTTPProblem.validation([FieldProblem(field: "input", message: "must be a JSON object")]) }
        if let problem = JSONLimits.nestingProblem(input, field: "input") { throw HTTPProblem.validation([problem]) }
        let run = WorkflowRun()
        run.id = UUID.timeOrdered()
        run.$workflow.id = try workflow.requireID()
        run.workflowVersion = workflow.version
        run.$user.id = caller.user.id
        run.status = .queued
        run.progress = 0
        run.input = try input.canonicalString()
        run.stepsJSON = workflow.stepsJSON
        run.createdAt = now
        run.scheduleID = trigger?.scheduleID
        run.scheduledFor = trigger?.occurrence
        let steps = workflow.steps.enumerated().map { index, step in
            let row = WorkflowRunStep()
            row.id = UUID.timeOrdered()
            row.$run.id = run.id!
            row.stepID = step.id
            row.ordinal = index
            row.status = .pending
            row.attempts = 0
            return row
        }
        try await app.writeTransaction { db in
            try await run.create(on: db)
            for row in steps { try await row.create(on: db) }
            try await app.activityRecorder.record(
                audit: AuditRecord(action: "workflow.run.started", actorID: caller.user.id, actorType: caller.actorType, resourceType: "workflow_run",
                                   resourceID: run.id!.lowercasedString, origin: origin, details: ["workflowId": .string(run.$workflow.id.lowercasedString)]),
                event: EventRecord(type: "workflow.run.started", actorID: caller.user.id, resourceType: "workflow_run",
                                   resourceID: run.id!.lowercasedString, data: WorkflowRunResponse(run, steps: steps).json),
                on: db)
            _ = try await JobQueue(app: app).enqueue(kind: Self.advanceKind, payload: ["runId": .string(run.id!.lowercasedString)], on: db)
        }
        return (run, steps)
    }

    func find(_ workflowReference: String, runID: UUID, caller: AuthenticatedCaller) async throws -> (WorkflowRun, [WorkflowRunStep]) {
        let workflow = try await WorkflowService(app: app).find(workflowReference)
        guard let run = try await WorkflowRun.query(on: reads).visible(to: caller, ownedThrough: \.$user)
            .filter(\.$id == runID).filter(\.$workflow.$id == workflow.requireID()).first()
        else { throw HTTPProblem.notFound("No such run.") }
        return (run, try await steps(of: runID, on: reads))
    }

    /// The run with each step's execution and the run's history (from the audit log).
    func detail(_ workflowReference: String, runID: UUID, caller: AuthenticatedCaller) async throws -> WorkflowRunResponse {
        let (run, rows) = try await find(workflowReference, runID: runID, caller: caller)
        let ids = rows.compactMap(\.executionID)
        let executions = ids.isEmpty ? [] : try await Execution.query(on: reads).filter(\.$id ~~ ids).listed()
        let history = try await AuditLog.query(on: try await app.settledLedger()).filter(\.$resourceType == "workflow_run")
            .filter(\.$resourceID == runID.lowercasedString).sort(\.$seq).listed()
        return WorkflowRunResponse(run, steps: rows, executions: Dictionary(uniqueKeysWithValues: executions.map { ($0.id!, $0) }), history: history)
    }

    func list(_ workflowReference: String, page: PageRequest, caller: AuthenticatedCaller) async throws -> ([WorkflowRunResponse], String?) {
        let workflow = try await WorkflowService(app: app).find(workflowReference)
        let (runs, next) = try await WorkflowRun.query(on: reads).visible(to: caller, ownedThrough: \.$user)
            .filter(\.$workflow.$id == workflow.requireID())
            // A member's page skips other users' runs of the workflow, which may take a scan: read off the event loop.
            .newestFirst(by: "created_at", { $0.createdAt }, page: page, through: app.sqliteReaders,
                         offLoopOn: caller.seesEveryOwner ? nil : app.threadPool)
        let ids = runs.compactMap(\.id)
        let rows = ids.isEmpty ? [] : try await WorkflowRunStep.query(on: reads).filter(\.$run.$id ~~ ids).listed(through: app.sqliteReaders)
        return (runs.map { run in WorkflowRunResponse(run, steps: rows.filter { $0.$run.id == run.id }) }, next)
    }

    private func steps(of runID: UUID, on db: any Database) async throws -> [WorkflowRunStep] {
        try await WorkflowRunStep.query(on: db).filter(\.$run.$id == runID).sort(\.$ordinal).all()
    }

    // MARK: - Cancel

    /// Cancels the run: waiting steps are cancelled, running ones are asked to stop.
    func cancel(_ workflowReference: String, runID: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> (WorkflowRun, [WorkflowRunStep]) {
        let (run, _) = try await find(workflowReference, runID: runID, caller: caller)
        guard !run.status.isFinished else { throw HTTPProblem.conflict("The run has already finished (\(run.status.rawValue)).") }
        let running = try await app.writeTransaction { db -> [UUID] in
            let rows = try await steps(of: runID, on: db)
            for row in rows where row.status == .pending {
                row.status = .cancelled
                row.completedAt = now
                try await row.save(on: db)
            }
            try await finish(run, status: .cancelled, error: nil, actor: caller, origin: origin, on: db)
            return rows.filter { $0.status == .running }.compactMap(\.executionID)
        }
        for execution in running {
            _ = try? await ExecutionService(app: app).cancel(execution, caller: caller, origin: origin)
        }
        return (run, try await steps(of: runID, on: reads))
    }

    // MARK: - Rollback

    /// Queues the saga: every succeeded step's undo, newest completion first. 409 while the run or one of its
    /// steps is still going, or once it was rolled back.
    func rollback(_ workflowReference: String, runID: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> (WorkflowRun, [WorkflowRunStep]) {
        let (run, rows) = try await find(workflowReference, runID: runID, caller: caller)
        guard run.status.isFinished, run.status != .rolledBack, !rows.contains(where: { $0.status == .running }) else {
            throw HTTPProblem.conflict(run.status == .rolledBack ? "The run was rolled back already." : "The run is still going; cancel it or wait for it to end.")
        }
        try await app.writeTransaction { db in
            try await app.activityRecorder.record(audit: AuditRecord(
                action: "workflow.run.rollback_requested", actorID: caller.user.id, actorType: caller.actorType, resourceType: "workflow_run",
                resourceID: runID.lowercasedString, origin: origin), on: db)
            _ = try await JobQueue(app: app).enqueue(kind: Self.rollbackKind, payload: ["runId": .string(runID.lowercasedString)], on: db)
        }
        return (run, rows)
    }

    /// The `workflow.rollback` job. Undoes one step at a time, each in its own transaction (history line, the
    /// execution's `rolled_back` transition, an audit entry), so a retry after a failure resumes with the steps
    /// not yet undone.
    func rollback(_ job: ClaimedJob) async throws {
        guard let runID = job.payload.object?["runId"]?.stringValue.flatMap(UUID.init(uuidString:)),
              let run = try await WorkflowRun.find(runID, on: reads), run.status != .rolledBack
        else {
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .succeeded, on: db) }
            return
        }
        // Completion order is the order of the executions' `execution.succeeded` events in the log.
        try await LedgerSequencer.settle(app)
        let rows = try await steps(of: runID, on: reads).filter { $0.status == .succeeded }
        var order: [(WorkflowRunStep, Int64)] = []
        for row in rows {
            guard let executionID = row.executionID else { continue }
            let seq = try await Event.query(on: reads).filter(\.$resourceType == "execution").filter(\.$type == "execution.succeeded")
                .filter(\.$resourceID == executionID.lowercasedString).max(\.$seq) ?? 0
            order.append((row, seq))
        }
        for (row, _) in order.sorted(by: { $0.1 > $1.1 }) {
            guard let executionID = row.executionID, let execution = try await Execution.find(executionID, on: reads),
                  let skill = try await Skill.find(execution.skillID, on: reads)
            else { continue }
            guard let runner = app.runnerRegistry.runner(for: skill.runner) else {
                throw HTTPProblem.conflict("no runner for step \(row.stepID)'s skill")
            }
            let context = RunContext(executionID: executionID, input: JSONValue.parse(execution.input), settings: skill.runner) { _, _ in }
            let note = try await runner.undo(context, output: execution.output.map(JSONValue.parse))
            try await app.writeTransaction { db in
                let service = ExecutionService(app: app)
                try await service.record(execution, level: "info", message: "undo (workflow rollback): \(note)", on: db)
                try await service.transition(execution, to: .rolledBack, message: "rolled back", on: db)
                row.status = .rolledBack
                try await row.save(on: db)
                try await app.activityRecorder.record(audit: AuditRecord(
                    action: "workflow.run.compensated", actorID: run.$user.id, actorType: .system, resourceType: "workflow_run",
                    resourceID: runID.lowercasedString,
                    details: ["stepId": .string(row.stepID), "executionId": .string(executionID.lowercasedString), "note": .string(note)]), on: db)
            }
        }
        try await app.writeTransaction { db in
            guard try await JobQueue(app: app).finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            try await finish(run, status: .rolledBack, error: run.error, actor: nil, origin: .system, on: db)
        }
    }

    // MARK: - Advancing

    /// Called in the transaction that finishes an execution: wakes the run that execution belongs to, if any.
    static func executionFinished(_ execution: Execution, app: Application, on db: any Database) async throws {
        // Only a run's steps are started by workflows (migration 0031 marked the older ones): every other execution
        // ends without the lookup.
        guard execution.origin == Execution.Origin.workflow.rawValue else { return }
        let sql = db as! any SQLDatabase
        guard let row = try await sql.raw("SELECT run_id FROM workflow_run_steps WHERE execution_id = \(bind: execution.requireID())").first()
        else { return }
        let runID = try row.decode(column: "run_id", as: UUID.self)
        _ = try await JobQueue(app: app).enqueue(kind: advanceKind, payload: ["runId": .string(runID.lowercasedString)], on: db)
    }

    /// The `workflow.advance` job.
    func advance(_ job: ClaimedJob) async throws {
        guard let runID = job.payload.object?["runId"]?.stringValue.flatMap(UUID.init(uuidString:)) else {
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .failed, error: "no runId", on: db) }
            return
        }
        try await app.writeTransaction { db in
            guard try await JobQueue(app: app).finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            try await advance(runID, on: db)
        }
    }

    /// One look at a run, inside one transaction (so two advances of one run never interleave on PostgreSQL:
    /// the first locks the run's row).
    func advance(_ runID: UUID, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        if sql.dialect.name == "postgresql" {
            try await sql.raw("SELECT id FROM workflow_runs WHERE id = \(bind: runID) FOR UPDATE").run()
        }
        guard let run = try await WorkflowRun.find(runID, on: db), let owner = try await User.find(run.$user.id, on: db) else { return }
        let definition = Dictionary(uniqueKeysWithValues: run.steps.map { ($0.id, $0) })
        let rows = try await steps(of: runID, on: db)
        let byID = Dictionary(uniqueKeysWithValues: rows.map { ($0.stepID, $0) })
        let executionIDs = rows.compactMap(\.executionID)
        let executions = executionIDs.isEmpty ? [:] : Dictionary(uniqueKeysWithValues: try await Execution.query(on: db).filter(\.$id ~~ executionIDs).all().map { ($0.id!, $0) })
        let now = self.now

        // 1. Running steps: record what their executions did; retry, time out or fail them.
        for row in rows where row.status == .running {
            guard let step = definition[row.stepID], let executionID = row.executionID, let execution = executions[executionID] else { continue }
            switch execution.status {
            case .succeeded:
                row.status = .succeeded
                row.completedAt = now
            case .failed, .cancelled, .rolledBack:
                let reason = execution.error ?? "the execution ended \(execution.status.rawValue)"
                if !run.status.isFinished, row.attempts < step.retry.maxAttempts {
                    row.status = .pending
                    row.retryAt = now.addingTimeInterval(TimeInterval(step.retry.backoffSeconds))
                    row.error = "attempt \(row.attempts) failed: \(reason)"
                    _ = try await JobQueue(app: app).enqueue(kind: Self.advanceKind, payload: ["runId": .string(runID.lowercasedString)], runAt: row.retryAt, on: db)
                } else {
                    row.status = run.status == .cancelled ? .cancelled : .failed
                    row.error = reason
                    row.completedAt = now
                }
            case .queued, .running:
                if let started = row.startedAt, now.timeIntervalSince(started) >= TimeInterval(step.timeoutSeconds) {
                    execution.cancelRequested = true
                    execution.error = "timed out after \(step.timeoutSeconds) s"
                    try await execution.save(on: db)
                    row.status = .failed
                    row.error = "timed out after \(step.timeoutSeconds) s"
                    row.completedAt = now
                }
            }
            try await row.save(on: db)
        }

        // 2. Waiting steps: skip those below a failure, start those whose dependencies are done.
        if !run.status.isFinished {
            var changed = true
            while changed {
                changed = false
                for row in rows where row.status == .pending {
                    guard let step = definition[row.stepID] else { continue }
                    let dependencies = step.dependsOn.compactMap { byID[$0] }
                    let blocked = dependencies.contains { dependency in
                        dependency.status == .skipped || dependency.status == .cancelled
                            || (dependency.status == .failed && !(definition[dependency.stepID]?.continueOnFailure ?? false))
                    }
                    if blocked {
                        row.status = .skipped
                        row.error = "a step it depends on did not succeed"
                        row.completedAt = now
                        try await row.save(on: db)
                        changed = true
                        continue
                    }
                    let ready = dependencies.allSatisfy { $0.status == .succeeded || $0.status == .failed }
                    guard ready, row.retryAt.map({ $0 <= now }) ?? true else { continue }
                    try await startStep(row, step: step, run: run, owner: owner, executions: executions, rows: rows, on: db)
                    changed = true
                }
            }
        }

        // 3. The run: progress, and its end once every step has one.
        let isDone: (WorkflowRunStep) -> Bool = { ![.pending, .running].contains($0.status) }
        var progress = 0
        for row in rows {
            if isDone(row) { progress += 100 }
            else if row.status == .running, let id = row.executionID, let execution = executions[id] { progress += execution.progress }
        }
        run.progress = rows.isEmpty ? 100 : progress / rows.count
        if run.status == .queued, rows.contains(where: { $0.status != .pending }) {
            run.status = .running
            run.startedAt = now
        }
        if !run.status.isFinished, rows.allSatisfy(isDone) {
            let failed = rows.first { $0.status == .failed && !(definition[$0.stepID]?.continueOnFailure ?? false) }
            try await finish(run, status: failed == nil ? .succeeded : .failed,
                             error: failed.map { "step \($0.stepID) failed: \($0.error ?? "")" }, actor: nil, origin: .system, on: db)
        } else {
            try await run.save(on: db)
        }
    }

    /// Starts a step's next attempt as the run's owner, with its input resolved against the run so far.
    private func startStep(_ row: WorkflowRunStep, step: WorkflowStep, run: WorkflowRun, owner: User, executions: [UUID: Execution],
                           rows: [WorkflowRunStep], on db: any Database) async throws {
        var outputs: [String: JSONValue] = [:]
        for other in rows where other.status == .succeeded {
            if let id = other.executionID, let execution = executions[id] {
                outputs[other.stepID] = ["output": execution.output.map(JSONValue.parse) ?? .null]
            }
        }
        row.attempts += 1
        row.retryAt = nil
        row.startedAt = now
        do {
            let input = try WorkflowDefinition.resolve(step.input, context: ["input": JSONValue.parse(run.input), "steps": .object(outputs)])
            let grants = try await UserRole.grants(of: try owner.requireID(), on: db)
            let caller = AuthenticatedCaller(user: CallerUser(owner), session: nil, apiKey: nil, method: .schedule, grants: grants)
            guard owner.status == .active, caller.can(.skillsExecute) else { throw HTTPProblem.conflict("the run's owner may no longer run skills") }
            let execution = try await ExecutionService(app: app).prepare(skillReference: step.skillId.uuidString, input: input, caller: caller, on: db)
            execution.origin = Execution.Origin.workflow.rawValue
            try await ExecutionService(app: app).insert(execution, caller: caller, origin: .system, on: db)
            row.executionID = execution.id
            row.status = .running
            // Wake the run when the step's time is up, in case its execution never ends by itself.
            _ = try await JobQueue(app: app).enqueue(kind: Self.advanceKind, payload: ["runId": .string(run.id!.lowercasedString)],
                                                     runAt: now.addingTimeInterval(TimeInterval(step.timeoutSeconds)), on: db)
        } catch let refusal as any AbortError where refusal.status.code < 500 {
            row.status = .failed
            row.error = refusal.reason
            row.completedAt = now
        } catch let unresolved as WorkflowDefinition.UnresolvedReference {
            row.status = .failed
            row.error = unresolved.description
            row.completedAt = now
        }
        try await row.save(on: db)
    }

    private func finish(_ run: WorkflowRun, status: WorkflowRun.Status, error: String?, actor: AuthenticatedCaller?, origin: RequestOrigin, on db: any Database) async throws {
        run.status = status
        run.error = error
        run.finishedAt = now
        if status == .succeeded { run.progress = 100 }
        try await run.save(on: db)
        let id = run.id!.lowercasedString
        let rows = try await steps(of: run.requireID(), on: db)
        try await app.activityRecorder.record(
            audit: AuditRecord(action: "workflow.run.\(status.rawValue)", actorID: actor?.user.id ?? run.$user.id, actorType: actor?.actorType ?? .system,
                               resourceType: "workflow_run", resourceID: id, outcome: status == .failed ? .failure : .success, origin: origin,
                               details: ["workflowId": .string(run.$workflow.id.lowercasedString), "error": error.map { .string($0) } ?? .null]),
            event: EventRecord(type: "workflow.run.\(status.rawValue)", actorID: actor?.user.id ?? run.$user.id, resourceType: "workflow_run",
                               resourceID: id, data: WorkflowRunResponse(run, steps: rows).json),
            on: db)
    }
}

extension WorkflowRunService {
    /// Registers the `workflow.advance` and `workflow.rollback` handlers, and wakes a run when one of its step
    /// executions finishes.
    static func register(in handlers: JobHandlers, observing executions: ExecutionOutcomeObservers) {
        handlers.register(advanceKind, AdvanceHandler(), pausedWith: .workflows)
        handlers.register(rollbackKind, RollbackHandler(), pausedWith: .workflows)
        executions.add { execution, app, db in try await executionFinished(execution, app: app, on: db) }
    }

    struct AdvanceHandler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await WorkflowRunService(app: app).advance(job)
        }
    }

    struct RollbackHandler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await WorkflowRunService(app: app).rollback(job)
        }
    }
}
