import Fluent
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// The job handlers that move executions through their lifecycle.
struct ExecutionJobs: Sendable {
    let app: Application
    /// The worker's offer to take its next job when this one settles (`FollowOnClaim`).
    var followOn: FollowOnClaim? = nil

    /// Registers the `execution.run` and `execution.rollback` handlers.
    static func register(in handlers: JobHandlers) {
        handlers.register(ExecutionService.runKind, RunHandler())
        handlers.register(ExecutionService.rollbackKind, RollbackHandler())
    }

    /// `execution.run`: runs the skill; a retried attempt puts the execution back in the queue, and a job that
    /// gave up fails the execution.
    struct RunHandler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await ExecutionJobs(app: app, followOn: context.followOn).run(job)
        }

        func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws {
            guard let execution = try await ExecutionJobs(app: app).execution(for: job.payload) else { return }
            try await app.writeTransaction { db in
                execution.status = .queued
                try await execution.save(on: db)
                try await ExecutionService(app: app).record(execution, level: "warning", message: "attempt \(job.attempts) failed: \(reason); retrying", on: db)
            }
        }

        func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async {
            do {
                guard let execution = try await ExecutionJobs(app: app).execution(for: payload), !execution.status.isFinished else { return }
                try await app.writeTransaction { db in
                    execution.error = reason
                    try await ExecutionService(app: app).transition(execution, to: .failed, message: "failed: \(reason)", level: "error", on: db)
                }
            } catch {
                app.logger.error("Could not record a failed job: \(String(describing: error))")
            }
        }
    }

    /// `execution.rollback`: runs the skill's undo; a job that gave up says so in the execution's history.
    struct RollbackHandler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await ExecutionJobs(app: app, followOn: context.followOn).rollback(job)
        }

        func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async {
            do {
                guard let execution = try await ExecutionJobs(app: app).execution(for: payload) else { return }
                try await app.writeTransaction { db in
                    try await ExecutionService(app: app).record(execution, level: "error", message: "rollback failed: \(reason)", on: db)
                }
            } catch {
                app.logger.error("Could not record a failed job: \(String(describing: error))")
            }
        }
    }

    private var now: Date { app.wallClock.now() }
    private var service: ExecutionService { ExecutionService(app: app) }

    func execution(for payload: JSONValue) async throws -> Execution? {
        guard case .object(let fields) = payload, case .string(let raw)? = fields["executionId"], let id = UUID(text: raw) else { return nil }
        return try await app.quickFind(Execution.self, where: "id", equals: id, on: app.db)
    }

    /// Runs the skill: running → succeeded | failed | cancelled. Writes are fenced by the job's lease.
    func run(_ job: ClaimedJob) async throws {
        let queue = JobQueue(app: app)
        guard let execution = try await execution(for: job.payload),
              let skill = try await app.quickFind(Skill.self, where: "id", equals: execution.skillID, on: app.db) else {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .failed, error: "execution or skill not found", on: db) }
            return
        }
        if execution.status.isFinished {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .cancelled, on: db) }
            return
        }
        if execution.cancelRequested {
            try await settle(job, execution, skill: skill) { db in
                try await service.transition(execution, to: .cancelled, message: "cancelled before it started", on: db)
            }
            return
        }
        guard let runner = app.runnerRegistry.runner(for: skill.runner) else {
            try await settle(job, execution, skill: skill) { db in
                execution.error = "this server has no runner for the skill's runner settings"
                try await service.transition(execution, to: .failed, message: execution.error!, level: "error", on: db)
            }
            return
        }

        execution.attempt = job.attempts
        execution.startedAt = execution.startedAt ?? now
        let start = DeferredStart(app: app, execution: execution, job: job)
        if case .string("builtin")? = skill.runner.object?["type"] {
            // The `running` transition is written once the run has gone on for `startHold`, or with its outcome if it
            // ends sooner: a quick run costs one commit instead of three.
            start.begin(hold: Self.startHold)
        } else {
            // A remote skill may call back with progress at once, which needs the row `running` already.
            try await start.writeNow()
        }

        let executionID = try execution.requireID()
        let progress = ProgressReporter(app: app, execution: execution, job: job, start: start)
        let context = RunContext(executionID: executionID, input: execution.inputValue, settings: skill.runner) { percent, message in
            try await progress.report(percent, message)
        }
        let task = Task { try await runner.run(context) }
        app.runningExecutions.register(executionID, task)
        defer { app.runningExecutions.remove(executionID) }
        // A cancel on another instance is seen through the row; poll it while the runner works. The database is
        // taken now: once cancelled (the run is over) the poller may still wake once, possibly after the app has
        // shut down, when `app.db` would trap; a stale handle only fails, and the failure is ignored.
        let db = app.db
        let watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                if Task.isCancelled { return }
                if let current = try? await Execution.find(executionID, on: db), current.cancelRequested { task.cancel(); return }
            }
        }
        defer { watcher.cancel() }

        let outcome: RunOutcome
        do {
            outcome = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
        } catch {
            if Task.isCancelled {
                start.abandon()
                throw LeaseLost()
            }
            let cancelled = (try? await Execution.find(executionID, on: app.db))?.cancelRequested ?? false
            if cancelled || error is CancellationError {
                if cancelled {
                    try await settle(job, execution, skill: skill, start: start) { db in
                        try await service.transition(execution, to: .cancelled, message: "cancelled while running", on: db)
                    }
                    return
                }
            }
            // Retried or failed by the job runner in a transaction of its own: the start goes first.
            await start.flush()
            throw error
        }
        var checked: RunOutcome = if case .succeeded(let output) = outcome, output.exceedsNesting(JSONLimits.maximumNesting) {
            .failed("the output is nested more than \(JSONLimits.maximumNesting) levels deep")
        } else {
            outcome
        }
        // A skill that promises an output schema keeps the promise, or its run fails saying where it broke it.
        if case .succeeded(let output) = checked,
           let schemaText = try await app.skillToolFields.fields(for: [(try skill.requireID(), skill.version)], app: app)[try skill.requireID()]?.outputSchema {
            let problems = try await JSONSchemaSubset.validateOffLoop(output, against: JSONValue.parse(schemaText), path: "output")
            if !problems.isEmpty {
                checked = .failed("the output does not match the skill's output schema: "
                                  + problems.prefix(5).map { "\($0.field) \($0.message)" }.joined(separator: "; "))
            }
        }
        let settled = checked
        try await settle(job, execution, skill: skill, start: start) { db in
            switch settled {
            case .succeeded(let output):
                execution.output = try output.canonicalString()
                execution.progress = 100
                try await service.transition(execution, to: .succeeded, message: "succeeded", on: db)
            case .failed(let reason):
                execution.error = reason
                try await service.transition(execution, to: .failed, message: "failed: \(reason)", level: "error", on: db)
            }
        }
    }

    /// Runs the skill's undo for a finished execution; it ends `rolled_back`.
    func rollback(_ job: ClaimedJob) async throws {
        let queue = JobQueue(app: app)
        guard let execution = try await execution(for: job.payload), let skill = try await Skill.find(execution.skillID, on: app.db),
              let runner = app.runnerRegistry.runner(for: skill.runner)
        else {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .failed, error: "nothing to roll back with", on: db) }
            return
        }
        let context = RunContext(executionID: try execution.requireID(), input: execution.inputValue, settings: skill.runner) { _, _ in }
        let note = try await runner.undo(context, output: execution.output.map(JSONValue.parse))
        try await settle(job, execution) { db in
            try await service.record(execution, level: "info", message: "undo: \(note)", on: db)
            try await service.transition(execution, to: .rolledBack, message: "rolled back", on: db)
        }
    }

    /// How long a run's start may wait to be written with its outcome (see `DeferredStart`).
    static let startHold: Duration = .milliseconds(50)

    /// Finishes the job and applies `change` in one transaction, only while this worker holds the lease; a start
    /// not yet written goes first in the same transaction, and the worker's next job is claimed last in it
    /// (`FollowOnClaim`). Once committed, an execution that ended is counted in
    /// `steward_execution_duration_seconds`.
    private func settle(_ job: ClaimedJob, _ execution: Execution, skill: Skill? = nil, start: DeferredStart? = nil,
                        _ change: @escaping @Sendable (any Database) async throws -> Void) async throws {
        let early = await start?.takeForSettle()
        let followOn = self.followOn
        let next = try await app.writeTransaction { db -> ClaimedJob? in
            let queue = JobQueue(app: app)
            guard try await queue.finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            if let early, let start { try await start.write(early, outcomeFollows: true, on: db) }
            // Every change ends in a transition, which writes the whole row.
            try await change(db)
            guard let followOn, followOn.wanted else { return nil }
            return try await queue.claim(worker: followOn.worker, skippingKinds: app.jobHandlers.besideKinds + app.jobHandlers.pausedKinds(app.settings.disabledFeatures), on: db as! any SQLDatabase)
        }
        followOn?.offer(next)
        if let skill, execution.status.isFinished, execution.status != .rolledBack, let milliseconds = execution.durationMs {
            app.metrics.recordExecution(skill: skill.slug, outcome: execution.status.rawValue, duration: .milliseconds(milliseconds))
        }
    }
}

/// Writes progress (0-100, never going back) with its history line and `execution.progress` event. While the
/// run's start is held back (`DeferredStart`), reports are held with it.
private final class ProgressReporter: @unchecked Sendable {
    let app: Application
    let execution: Execution
    let job: ClaimedJob
    let start: DeferredStart
    private let lock = NSLock()
    private var last = 0

    init(app: Application, execution: Execution, job: ClaimedJob, start: DeferredStart) {
        self.app = app
        self.execution = execution
        self.job = job
        self.start = start
    }

    func report(_ percent: Int, _ message: String) async throws {
        try Task.checkCancellation()
        let value = min(100, max(0, percent))
        let accepted = lock.withLock { () -> Bool in
            guard value > last else { return false }
            last = value
            return true
        }
        guard accepted else { return }
        if await start.hold(value, message) { return }
        let executionID = try execution.requireID()
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            // Fenced: a worker that lost its lease cannot move progress.
            let held = try await sql.raw("""
                UPDATE executions SET progress = \(bind: value) WHERE id = \(bind: executionID) AND progress < \(bind: value)
                AND EXISTS (SELECT 1 FROM jobs WHERE id = \(bind: self.job.id) AND lease_token = \(bind: self.job.token) AND status = 'running')
                RETURNING id
                """).first()
            guard held != nil else { return }
            try await Self.recordProgress(value, message, of: self.execution, app: self.app, on: db)
        }
    }

    /// The history line and event of one report, the row's progress already written.
    static func recordProgress(_ value: Int, _ message: String, of execution: Execution, app: Application, on db: any Database) async throws {
        let executionID = try execution.requireID()
        execution.progress = value
        try await ExecutionService(app: app).record(execution, level: "info", message: message, progress: value, on: db)
        try await app.activityRecorder.record(event: EventRecord(
            type: "execution.progress", actorID: execution.$user.id, resourceType: "execution",
            resourceID: executionID.lowercasedString,
            data: ["progress": .number(Double(value)), "message": .string(message),
                   "userId": .string(execution.$user.id.lowercasedString)]), on: db)
    }
}

/// A run's `running` transition, and the progress it reports meanwhile, held back for a moment: if the run ends
/// within the hold they are written in the transaction that records its outcome (one commit instead of one for the
/// start, one per report and one for the end); otherwise they are written when the hold ends, so a long run shows
/// `running` after at most the hold. `started_at` is the real start either way; the history lines carry the time
/// they were written. A cancel request meanwhile is seen as before (the row's flag, or the in-process task).
/// Only for built-in runners: a remote skill's start is written at once (`writeNow`), because its progress arrives
/// through the API, which accepts it only for a `running` row.
private final class DeferredStart: @unchecked Sendable {
    typealias Report = (value: Int, message: String)
    private enum State { case holding([Report]), flushing, written }

    let app: Application
    let execution: Execution
    let job: ClaimedJob
    private let lock = NSLock()
    private var state: State = .holding([])
    private var timer: Task<Void, Never>?

    init(app: Application, execution: Execution, job: ClaimedJob) {
        self.app = app
        self.execution = execution
        self.job = job
    }

    func begin(hold: Duration) {
        let timer = Task { [self] in
            try? await Task.sleep(for: hold)
            if !Task.isCancelled { await flush() }
        }
        lock.withLock { self.timer = timer }
    }

    /// Holds a progress report with the start; false once the start is written (the caller writes it itself).
    func hold(_ value: Int, _ message: String) async -> Bool {
        while true {
            let held = lock.withLock { () -> Bool? in
                switch state {
                case .holding(let reports):
                    state = .holding(reports + [(value, message)])
                    return true
                case .flushing: return nil
                case .written: return false
                }
            }
            if let held { return held }
            await waitForWrite()
        }
    }

    /// Writes the start and the reports held so far in a transaction of their own, unless that is done or under way.
    /// On failure they stay held, for the outcome's transaction.
    func flush() async {
        do {
            try await writeNow()
        } catch {
            if !(error is LeaseLost) { app.logger.warning("Could not record the start of a run: \(String(describing: error))") }
        }
    }

    /// `flush`, throwing its failure (`LeaseLost` when the lease is gone).
    func writeNow() async throws {
        let reports = lock.withLock { () -> [Report]? in
            guard case .holding(let reports) = state else { return nil }
            state = .flushing
            return reports
        }
        guard let reports else { return }
        do {
            try await app.writeTransaction { db in
                guard try await JobQueue(app: self.app).heartbeat(self.job, on: db) else { throw LeaseLost() }
                try await self.write(reports, on: db)
            }
            lock.withLock { state = .written }
        } catch {
            lock.withLock { state = .holding(reports) }
            throw error
        }
    }

    /// Until a write under way (`.flushing`) ends: the timer's task runs it, or else the run's own task, which has
    /// no report or outcome pending meanwhile.
    private func waitForWrite() async {
        if let timer = lock.withLock({ timer }) { await timer.value } else { await Task.yield() }
    }

    /// For the outcome's transaction: the reports to write with the start, or nil when the start is written.
    /// Waits for a flush under way.
    func takeForSettle() async -> [Report]? {
        while true {
            let taken = lock.withLock { () -> [Report]?? in
                switch state {
                case .holding(let reports):
                    state = .written
                    timer?.cancel()
                    return .some(reports)
                case .flushing: return nil
                case .written: return .some(nil)
                }
            }
            if let taken { return taken }
            await waitForWrite()
        }
    }

    /// The run is over without an outcome to write (its lease was lost): nothing more is written.
    func abandon() {
        lock.withLock {
            if case .holding = state { state = .written }
            timer?.cancel()
        }
    }

    /// The `running` transition, then each held report, inside `db`'s transaction. With `outcomeFollows` (the
    /// outcome's transaction) the row itself is left to the outcome's transition, which writes every column of it
    /// (progress included) later in the same transaction; the history lines and events are written either way.
    func write(_ reports: [Report], outcomeFollows: Bool = false, on db: any Database) async throws {
        let service = ExecutionService(app: app)
        try await service.transition(execution, to: .running, message: "started (attempt \(job.attempts) of \(job.maxAttempts))",
                                     writeRow: !outcomeFollows, on: db)
        guard let highest = reports.map(\.value).max() else { return }
        if !outcomeFollows {
            let sql = db as! any SQLDatabase
            try await sql.raw("""
                UPDATE executions SET progress = \(bind: highest) WHERE id = \(bind: try execution.requireID()) AND progress < \(bind: highest)
                """).run()
        }
        for report in reports {
            try await ProgressReporter.recordProgress(report.value, report.message, of: execution, app: app, on: db)
        }
    }
}

extension Application {
    private struct RegistryKey: StorageKey { typealias Value = RunnerRegistry }

    /// The runners this server knows; tests may swap their own in.
    var runnerRegistry: RunnerRegistry {
        get {
            storage[RegistryKey.self] ?? RunnerRegistry(
                builtins: RunnerRegistry.standardBuiltins,
                http: HTTPRunner(client: outboundHTTP, publicURL: appConfig.publicURL, callbackKey: keyMaterial.callbackKey, secretBox: keyMaterial.secretBox))
        }
        set { storage[RegistryKey.self] = newValue }
    }
}
