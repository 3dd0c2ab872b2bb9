import Foundation
import StewardFormats
import Vapor

/// What the worker that claimed a job hands its handler.
struct JobContext: Sendable {
    /// The worker's offer to take its next job in the transaction that settles this one (`FollowOnClaim`); nil
    /// outside the worker loop.
    var followOn: FollowOnClaim?
    /// Bounds the requests in flight to one webhook endpoint (deliveries only).
    var slots: AsyncSemaphore?

    static let none = JobContext()
}

/// How a feature runs the jobs of one kind. Features register their handlers at boot (`configure`), so the
/// workers and the queue know no domain.
protocol JobHandler: Sendable {
    /// Runs one claimed job; a thrown error is a failed attempt (retried with back-off, or failed at the last).
    func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws
    /// The attempt failed and the job will run again after its back-off.
    func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws
    /// The job failed for good: its last attempt failed, or its worker was lost during the last attempt.
    func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async
}

extension JobHandler {
    func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws {}
    func gaveUp(kind: String, payload: JSONValue, reason: String, app: Application) async {}
}

/// The job kinds this process runs, each with its handler.
final class JobHandlers: @unchecked Sendable {
    private let lock = NSLock()
    private var handlers: [String: any JobHandler] = [:]

    /// Registers `handler` for `kind`; a kind has one handler.
    func register(_ kind: String, _ handler: any JobHandler) {
        lock.withLock {
            precondition(handlers[kind] == nil, "job kind \(kind) is registered twice")
            handlers[kind] = handler
        }
    }

    func handler(for kind: String) -> (any JobHandler)? {
        lock.withLock { handlers[kind] }
    }

    var kinds: [String] { lock.withLock { handlers.keys.sorted() } }
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
