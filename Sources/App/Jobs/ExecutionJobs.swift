import Fluent
import Foundation
import SQLKit
import Vapor

/// The job handlers that move executions through their lifecycle.
struct ExecutionJobs: Sendable {
    let app: Application

    private var now: Date { app.wallClock.now() }
    private var service: ExecutionService { ExecutionService(app: app) }

    func execution(for payload: JSONValue) async throws -> Execution? {
        guard case .object(let fields) = payload, case .string(let raw)? = fields["executionId"], let id = UUID(uuidString: raw) else { return nil }
        return try await Execution.find(id, on: app.db)
    }

    /// Runs the skill: running → succeeded | failed | cancelled. Writes are fenced by the job's lease.
    func run(_ job: ClaimedJob) async throws {
        let queue = JobQueue(app: app)
        guard let execution = try await execution(for: job.payload), let skill = try await Skill.find(execution.skillID, on: app.db) else {
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

        try await app.writeTransaction { db in
            guard try await queue.heartbeat(job, on: db) else { throw LeaseLost() }
            execution.attempt = job.attempts
            execution.startedAt = execution.startedAt ?? now
            try await service.transition(execution, to: .running, message: "started (attempt \(job.attempts) of \(job.maxAttempts))", on: db)
        }

        let executionID = try execution.requireID()
        let progress = ProgressReporter(app: app, execution: execution, job: job)
        let context = RunContext(executionID: executionID, input: JSONValue.parse(execution.input), settings: skill.runner) { percent, message in
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
            if Task.isCancelled { throw LeaseLost() }
            let cancelled = (try? await Execution.find(executionID, on: app.db))?.cancelRequested ?? false
            if cancelled || error is CancellationError {
                if cancelled {
                    try await settle(job, execution, skill: skill) { db in
                        try await service.transition(execution, to: .cancelled, message: "cancelled while running", on: db)
                    }
                    return
                }
            }
            throw error
        }
        try await settle(job, execution, skill: skill) { db in
            switch outcome {
            case .succeeded(let output):
                execution.output = output.canonicalString()
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
        let context = RunContext(executionID: try execution.requireID(), input: JSONValue.parse(execution.input), settings: skill.runner) { _, _ in }
        let note = try await runner.undo(context, output: execution.output.map(JSONValue.parse))
        try await settle(job, execution) { db in
            try await service.record(execution, level: "info", message: "undo: \(note)", on: db)
            try await service.transition(execution, to: .rolledBack, message: "rolled back", on: db)
        }
    }

    /// Finishes the job and applies `change` in one transaction, only while this worker holds the lease.
    /// Once committed, an execution that ended is counted in `steward_execution_duration_seconds`.
    private func settle(_ job: ClaimedJob, _ execution: Execution, skill: Skill? = nil,
                        _ change: @escaping @Sendable (any Database) async throws -> Void) async throws {
        try await app.writeTransaction { db in
            guard try await JobQueue(app: app).finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            try await change(db)
        }
        if let skill, execution.status.isFinished, execution.status != .rolledBack, let milliseconds = execution.durationMs {
            app.metrics.recordExecution(skill: skill.slug, outcome: execution.status.rawValue, duration: .milliseconds(milliseconds))
        }
    }
}

/// Writes progress (0-100, never going back) with its history line and `execution.progress` event.
private final class ProgressReporter: @unchecked Sendable {
    let app: Application
    let execution: Execution
    let job: ClaimedJob
    private let lock = NSLock()
    private var last = 0

    init(app: Application, execution: Execution, job: ClaimedJob) {
        self.app = app
        self.execution = execution
        self.job = job
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
            self.execution.progress = value
            let service = ExecutionService(app: self.app)
            try await service.record(self.execution, level: "info", message: message, progress: value, on: db)
            try await self.app.activityRecorder.record(event: EventRecord(
                type: "execution.progress", actorID: self.execution.$user.id, resourceType: "execution",
                resourceID: executionID.uuidString.lowercased(),
                data: ["progress": .number(Double(value)), "message": .string(message),
                       "userId": .string(self.execution.$user.id.uuidString.lowercased())]), on: db)
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
                http: HTTPRunner(client: outboundHTTP, publicURL: appConfig.publicURL, callbackKey: keyMaterial.callbackKey))
        }
        set { storage[RegistryKey.self] = newValue }
    }
}
