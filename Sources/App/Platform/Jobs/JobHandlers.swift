import Foundation
import StewardFormats
import Vapor

/// What the worker that claimed a job hands its handler.
struct JobContext: Sendable {
    /// The worker's offer to take its next job in the transaction that settles this one (`FollowOnClaim`); nil
    /// outside the worker loop.
    var followOn: FollowOnClaim?
    /// Bounds the jobs of this job's group running at once (kinds admitted `.beside` the loops only).
    var slots: AsyncSemaphore?

    static let none = JobContext()
}

/// How a feature runs the jobs of one kind. Features register their handlers at boot (`configure`), so the
/// workers and the queue know no domain.
protocol JobHandler: Sendable {
    /// How the worker loops take this kind's jobs; `.inLoop` unless the handler says otherwise.
    var admission: JobAdmission { get }
    /// Runs one claimed job; a thrown error is a failed attempt (retried with back-off, or failed at the last).
    func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws
    /// The attempt failed and the job will run again after its back-off.
    func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws
    /// The job failed for good: its last attempt failed, or its worker was lost during the last attempt.
    func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async
}

/// How the worker loops take a kind's jobs.
enum JobAdmission: Sendable, Equatable {
    /// A loop runs the job to its end, then claims the next.
    case inLoop
    /// For jobs that mostly wait on someone else (a webhook endpoint): the loop starts the job beside itself and
    /// claims again at once. Jobs of one group (`ClaimedJob.groupKey`) share `perGroup` slots (`JobContext.slots`);
    /// up to `admittedPerGroup` of a group are admitted (the rest of those waiting in memory for a slot), and
    /// `total` of the kind in all. Beyond that the job is handed back for a second, its attempt not counted, and
    /// the loops skip the group (or the kind) until there is room.
    case beside(perGroup: Int, admittedPerGroup: Int, total: Int)
}

extension JobHandler {
    var admission: JobAdmission { .inLoop }
    func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws {}
    func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async {}
}

/// The job kinds this process runs, each with its handler.
final class JobHandlers: @unchecked Sendable {
    private let lock = NSLock()
    private var handlers: [String: any JobHandler] = [:]
    private var features: [String: Feature] = [:]

    /// Registers `handler` for `kind`; a kind has one handler. While `feature` is switched off, no worker takes
    /// the kind's jobs: they wait in the queue, and run once it is on again.
    func register(_ kind: String, _ handler: any JobHandler, pausedWith feature: Feature? = nil) {
        lock.withLock {
            precondition(handlers[kind] == nil, "job kind \(kind) is registered twice")
            handlers[kind] = handler
            features[kind] = feature
        }
    }

    /// The kinds paused while `disabled` are switched off.
    func pausedKinds(_ disabled: Set<Feature>) -> [String] {
        guard !disabled.isEmpty else { return [] }
        return lock.withLock { features.filter { disabled.contains($0.value) }.keys.sorted() }
    }

    func handler(for kind: String) -> (any JobHandler)? {
        lock.withLock { handlers[kind] }
    }

    var kinds: [String] { lock.withLock { handlers.keys.sorted() } }

    /// The kinds admitted `.beside` the loops: a loop's follow-on claim, which runs in the loop, skips them.
    var besideKinds: [String] { lock.withLock { handlers.filter { $0.value.admission != .inLoop }.keys.sorted() } }
}

extension Application {
    private struct JobHandlersKey: StorageKey { typealias Value = JobHandlers }

    /// Filled at boot by each feature (`configure`).
    var jobHandlers: JobHandlers {
        if let existing = storage[JobHandlersKey.self] { return existing }
        let created = JobHandlers()
        storage[JobHandlersKey.self] = created
        return created
    }
}
