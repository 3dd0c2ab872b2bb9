import NIOConcurrencyHelpers
import Vapor

/// What one run of a request has done that running it again would repeat: a committed write, or a call that left
/// the process. Bound per run by `WriteConflictRetryMiddleware`, noted by the write door and the outbound clients.
final class RequestEffects: Sendable {
    @TaskLocal static var current: RequestEffects?

    private let count = NIOLockedValueBox(0)

    /// Notes an effect of the current request's run, if there is one.
    static func note() {
        current?.count.withLockedValue { $0 += 1 }
    }

    var none: Bool { count.withLockedValue { $0 == 0 } }
}

/// A request that lost a PostgreSQL write conflict (`WriteConflict`: a serialization failure or a deadlock, rolled
/// back whole) runs again, up to `attempts` times with a growing, jittered pause, when nothing of its failed run
/// stands: no write of it had committed and it had called nothing outside. The whole handler runs again, so
/// each run builds its own models from the request (a write transaction cannot simply be re-run: a Fluent model
/// that a rolled-back body created still counts as existing). When the attempts run out, or the failed run had
/// effects, the client gets the 503 `write_conflict` with `Retry-After`. SQLite has one writer and no conflicts.
struct WriteConflictRetryMiddleware: AsyncMiddleware {
    var attempts = 3

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        var attempt = 1
        while true {
            let effects = RequestEffects()
            do {
                return try await RequestEffects.$current.withValue(effects) { try await next.respond(to: request) }
            } catch let conflict as WriteConflict {
                guard attempt < attempts, effects.none else { throw conflict }
                request.logger.info("Write conflict (SQLSTATE \(conflict.sqlState)); running the request again", metadata: ["attempt": "\(attempt + 1)"])
                request.application.metrics.writeConflictRetried()
                try await Task.sleep(for: .milliseconds(Int.random(in: 5...15) << attempt))
                attempt += 1
            }
        }
    }
}
