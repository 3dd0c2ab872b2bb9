import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Thrown by a handler whose lease was lost: it must write nothing more.
struct LeaseLost: Error {}

/// Runs jobs: `STEWARD_WORKERS` loops claim jobs, run their handler under a heartbeating lease, and stop cleanly on
/// shutdown (stop claiming, let running jobs finish within the grace period, hand back the rest).
final class JobWorkers: LifecycleHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var loops: [Task<Void, Never>] = []
    private var stopping = false
    private var activeLoops = 0
    private var inFlight: [UUID: ClaimedJob] = [:]
    /// Jobs admitted beside the loops (`JobAdmission.beside`): per kind, and per group of each kind with the
    /// group's slots.
    private var besideRunning: [String: Int] = [:]
    private var besideGroups: [BesideGroup: (admitted: Int, slots: AsyncSemaphore)] = [:]
    /// Told once, at shutdown: wakes the rescue loop (which does not listen to enqueues).
    private let stopSignal = JobSignal()

    private struct BesideGroup: Hashable {
        var kind: String
        var group: String
    }
    private let identity = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(6))"

    func start(_ app: Application, count: Int? = nil) {
        lock.withLock {
            guard loops.isEmpty else { return }
            stopping = false
            let workers = count ?? app.appConfig.workers
            activeLoops = workers + 1
            loops = (0..<workers).map { index in
                Task {
                    await self.loop(app, name: "\(self.identity)-w\(index)")
                    self.lock.withLock { self.activeLoops -= 1 }
                }
            }
            loops.append(Task {
                await self.rescueLoop(app)
                self.lock.withLock { self.activeLoops -= 1 }
            })
        }
    }

    /// True from the start of shutdown: loops claim nothing more.
    var isStopping: Bool { lock.withLock { stopping } }

    private func loop(_ app: Application, name: String) async {
        var idle: Duration = .milliseconds(50)
        // A job claimed in the transaction that settled the previous one (`FollowOnClaim`).
        var next: ClaimedJob?
        while !isStopping {
            let seen = app.jobSignal.current
            do {
                let claimed: ClaimedJob? = if let handed = next { handed } else {
                    try await claimRoom(app, worker: name)
                }
                next = nil
                if let job = claimed {
                    idle = .milliseconds(50)
                    if case .beside(let perGroup, let admittedPerGroup, let total) = app.jobHandlers.handler(for: job.kind)?.admission {
                        try await startBeside(job, app, perGroup: perGroup, admittedPerGroup: admittedPerGroup, total: total)
                        continue
                    }
                    lock.withLock { inFlight[job.id] = job }
                    let followOn = FollowOnClaim(worker: name) { [weak self] in self.map { !$0.isStopping } ?? false }
                    await JobRunner(app: app).run(job, context: JobContext(followOn: followOn))
                    next = followOn.take()
                    lock.withLock { _ = inFlight.removeValue(forKey: job.id) }
                    continue
                }
            } catch {
                app.logger.warning("Job claim failed: \(String(describing: error))")
            }
            // Nothing due: wait for an enqueue in this process, or poll with back-off (other instances' jobs, retries).
            await app.jobSignal.wait(after: seen, timeout: idle)
            idle = min(idle * 2, .seconds(1))
        }
        // Stopping with a job taken for the next turn: it goes back at once, its attempt not counted.
        if let next { try? await JobQueue(app: app).release(next) }
    }

    /// Claims the oldest due job there is room for: groups of `.beside` kinds with all their places taken in this
    /// process are skipped, and so are those kinds once they reach their total.
    private func claimRoom(_ app: Application, worker: String) async throws -> ClaimedJob? {
        let handlers = app.jobHandlers
        let (saturated, full) = lock.withLock { () -> ([String], [String]) in
            var saturated: [String] = []
            for (key, state) in besideGroups {
                if case .beside(_, let admitted, _) = handlers.handler(for: key.kind)?.admission, state.admitted >= admitted {
                    saturated.append(key.group)
                }
            }
            let full = besideRunning.filter { kind, running in
                if case .beside(_, _, let total) = handlers.handler(for: kind)?.admission { return running >= total }
                return false
            }.map(\.key)
            return (saturated, full)
        }
        return try await JobQueue(app: app).claim(worker: worker, skipping: saturated,
                                                  skippingKinds: full + handlers.pausedKinds(app.settings.disabledFeatures))
    }

    /// Runs a job of a `.beside` kind in a task of its own (see `JobAdmission.beside`), or hands it back for a
    /// second, its attempt not counted, when its group or its kind has no room left.
    private func startBeside(_ job: ClaimedJob, _ app: Application, perGroup: Int, admittedPerGroup: Int, total: Int) async throws {
        let key = BesideGroup(kind: job.kind, group: job.groupKey ?? "")
        let slots = lock.withLock { () -> AsyncSemaphore? in
            guard (besideGroups[key]?.admitted ?? 0) < admittedPerGroup, (besideRunning[job.kind] ?? 0) < total else { return nil }
            let slots = besideGroups[key]?.slots ?? AsyncSemaphore(limit: perGroup)
            besideGroups[key] = ((besideGroups[key]?.admitted ?? 0) + 1, slots)
            besideRunning[job.kind, default: 0] += 1
            inFlight[job.id] = job
            return slots
        }
        guard let slots else {
            try await JobQueue(app: app).release(job, after: 1)
            return
        }
        Task {
            await JobRunner(app: app).run(job, context: JobContext(slots: slots))
            self.lock.withLock {
                if let state = self.besideGroups[key], state.admitted > 1 {
                    self.besideGroups[key] = (state.admitted - 1, state.slots)
                } else {
                    self.besideGroups[key] = nil
                }
                self.besideRunning[job.kind, default: 1] -= 1
                if self.besideRunning[job.kind] == 0 { self.besideRunning[job.kind] = nil }
                _ = self.inFlight.removeValue(forKey: job.id)
            }
            // The group has room again: idle loops may claim its next job now rather than after back-off.
            app.jobSignal.notify()
        }
    }

    private func rescueLoop(_ app: Application) async {
        while !isStopping {
            let seen = stopSignal.current
            do {
                for given in try await JobQueue(app: app).rescueExpired() {
                    await JobRunner(app: app).gaveUp(kind: given.kind, payload: given.payload, reason: "its worker stopped answering (lease expired) on the last attempt")
                }
            } catch {
                app.logger.warning("Lease rescue failed: \(String(describing: error))")
            }
            // A lease expires only after heartbeats stopped for a while, so looking once per heartbeat interval is
            // never late. Not on every enqueue: under load that took SQLite's write lock hundreds of times a second.
            await stopSignal.wait(after: seen, timeout: .seconds(max(1, app.appConfig.jobHeartbeatSeconds)))
        }
    }

    func shutdownAsync(_ application: Application) async {
        let running = lock.withLock { () -> [Task<Void, Never>] in
            stopping = true
            return loops
        }
        guard !running.isEmpty else { return }
        application.jobSignal.notify()
        stopSignal.notify()
        // Let running jobs finish within the grace period.
        if await waitForLoops(within: .seconds(application.appConfig.shutdownGraceSeconds)) == false {
            // Hand back what is still running (its lease token is cleared, so any late write is refused), then stop it.
            let left = lock.withLock { Array(inFlight.values) }
            for job in left { try? await JobQueue(app: application).release(job) }
            for task in running { task.cancel() }
            _ = await waitForLoops(within: .seconds(5))
        }
        lock.withLock { loops = [] }
    }

    /// True once every loop has exited, false if `limit` passes first.
    private func waitForLoops(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if lock.withLock({ activeLoops == 0 && besideRunning.isEmpty }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return lock.withLock { activeLoops == 0 && besideRunning.isEmpty }
    }
}

/// Runs one claimed job with its heartbeat, and settles it: done, retried with back-off, or failed.
struct JobRunner: Sendable {
    let app: Application

    /// Runs the job with its kind's handler (`JobHandlers`), heartbeating its lease meanwhile; a failure is retried
    /// or, at the last attempt, reported to the handler.
    func run(_ job: ClaimedJob, context: JobContext = .none) async {
        let queue = JobQueue(app: app)
        let work = Task { try await handle(job, context: context) }
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(max(1, app.appConfig.jobHeartbeatSeconds)))
                if Task.isCancelled { return }
                if (try? await queue.heartbeat(job)) == false {
                    work.cancel()
                    return
                }
            }
        }
        defer { heartbeat.cancel() }
        do {
            // Stopping the worker (shutdown) stops the handler too.
            try await withTaskCancellationHandler { try await work.value } onCancel: { work.cancel() }
        } catch is LeaseLost {
            app.logger.warning("Job \(job.id) lost its lease; its result was not written")
        } catch {
            let reason = String(describing: error).prefix(500).description
            do {
                let outcome = try await app.writeTransaction { db in try await queue.retryOrFail(job, error: reason, on: db) }
                switch outcome {
                case true?: try await retried(job, reason: reason)
                case false?: await gaveUp(kind: job.kind, payload: job.payload, reason: reason)
                case nil: break
                }
            } catch {
                app.logger.error("Could not settle job \(job.id): \(String(describing: error))")
            }
        }
    }

    /// Runs the job's handler, timed by kind for `/metrics` whatever its outcome.
    private func handle(_ job: ClaimedJob, context: JobContext) async throws {
        let started = ContinuousClock.now
        defer { app.metrics.recordJobRun(kind: job.kind, duration: ContinuousClock.now - started) }
        guard let handler = app.jobHandlers.handler(for: job.kind) else {
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .failed, error: "unknown job kind", on: db) }
            return
        }
        try await handler.run(job, context: context, app: app)
    }

    private func retried(_ job: ClaimedJob, reason: String) async throws {
        try await app.jobHandlers.handler(for: job.kind)?.willRetry(job, reason: reason, app: app)
    }

    /// A job failed for good: its handler says what that means for the work it served.
    func gaveUp(kind: String, payload: JSONValue, reason: String) async {
        await app.jobHandlers.handler(for: kind)?.gaveUp(kind: kind, payload: payload, reason: reason, app: app)
    }
}

/// A counting semaphore for async code: first come, first served.
final class AsyncSemaphore: @unchecked Sendable {
    private let lock = NSLock()
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        available = limit
    }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = lock.withLock { () -> Bool in
                if available > 0 { available -= 1; return true }
                waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let next = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if waiters.isEmpty { available += 1; return nil }
            return waiters.removeFirst()
        }
        next?.resume()
    }
}

extension Application {
    private struct WorkersKey: StorageKey { typealias Value = JobWorkers }
    private struct SignalKey: StorageKey { typealias Value = JobSignal }
    private struct RunningKey: StorageKey { typealias Value = RunningExecutions }

    /// Set once in `configure`; started by `serve`.
    var jobWorkers: JobWorkers {
        get { storage[WorkersKey.self]! }
        set { storage[WorkersKey.self] = newValue }
    }

    var jobSignal: JobSignal {
        get { storage[SignalKey.self]! }
        set { storage[SignalKey.self] = newValue }
    }

    var runningExecutions: RunningExecutions {
        get { storage[RunningKey.self]! }
        set { storage[RunningKey.self] = newValue }
    }
}
