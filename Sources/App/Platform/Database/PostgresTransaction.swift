import Fluent
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import SQLKit
import StewardSQLite
import Vapor

/// PostgreSQL write transactions that end when their connection ends.
///
/// PostgresNIO 1.33 hands a statement to its channel without a write promise. When the session has already been
/// cut (a fast shutdown, a failover, `pg_terminate_backend`), the statement never reaches the connection's state
/// machine and its answer never comes: the `ROLLBACK` that Fluent sends after the failed statement waits forever,
/// with its pooled connection. Under load every restart of PostgreSQL left a few requests hanging, and the pool
/// smaller by one connection each (issue 27's "request hung for more than 20 s").
///
/// So the door runs PostgreSQL transactions itself, on a connection pinned from the pool: `BEGIN`, the body and
/// `COMMIT` (or `ROLLBACK`), raced as one against the connection's close. A transaction still unanswered
/// `closeGrace` after its connection closed fails with `DatabaseConnectionCut` (503 `unavailable`), and the
/// connection goes back to the pool, which drops it. The session's end rolled the transaction back already, unless
/// `COMMIT` had reached the server: then the write may have landed, as with any commit whose answer is lost; the
/// client learns that it must check or retry (with an `Idempotency-Key`).
enum PostgresTransaction {
    /// How long a transaction may stay unanswered after its connection closed. A statement the connection knew of
    /// is failed at the close itself; only the lost ones wait this long.
    static let closeGrace: TimeAmount = .milliseconds(500)

    static func run<T: Sendable>(on db: any Database, _ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        try await db.withConnection { pinned in
            let connection = try await Self.connection(of: pinned)
            let sql = pinned as! any SQLDatabase
            // The body's deferrable inserts go out together, before its next statement or the COMMIT.
            let deferred = DeferredStatements()
            let transaction: any Database
            if var instrumented = pinned as? InstrumentedDatabase {
                instrumented.deferred = deferred
                instrumented.transactionConnection = connection
                transaction = instrumented
            } else {
                transaction = pinned
            }
            return try await Self.untilCut(connection) {
                try await sql.raw("BEGIN").run()
                do {
                    let result = try await body(transaction)
                    try await (transaction as! any SQLDatabase).raw("COMMIT").run()
                    return result
                } catch {
                    _ = deferred.take()
                    // On a cut connection the server has already rolled back; the ROLLBACK only ends a live one.
                    if !connection.isClosed { try? await sql.raw("ROLLBACK").run() }
                    throw error
                }
            }
        }
    }

    /// The PostgresNIO connection under a database pinned by `withConnection`.
    private static func connection(of pinned: any Database) async throws -> PostgresConnection {
        let driver = (pinned as? InstrumentedDatabase)?.base ?? pinned
        guard let postgres = driver as? any PostgresDatabase else {
            preconditionFailure("PostgresTransaction needs a PostgreSQL database, got \(type(of: driver))")
        }
        return try await postgres.withConnection { $0.eventLoop.makeSucceededFuture($0) }.get()
    }

    /// `operation`'s outcome, or `DatabaseConnectionCut` once the connection has been closed for `closeGrace`
    /// with `operation` still waiting. A waiting operation is left behind; it holds no pooled connection.
    static func untilCut<R: Sendable>(_ connection: PostgresConnection, _ operation: @escaping @Sendable () async throws -> R) async throws -> R {
        try await untilCutFuture(connection, operation).get()
    }

    /// The same race as a future, for a caller on the event loop (a read leasing a pooled connection): `operation`
    /// runs in a Task of its own, and nothing waits for it but the future.
    static func untilCutFuture<R: Sendable>(_ connection: PostgresConnection,
                                            _ operation: @escaping @Sendable () async throws -> R) -> EventLoopFuture<R> {
        let eventLoop = connection.eventLoop
        if connection.isClosed { return eventLoop.makeFailedFuture(DatabaseConnectionCut()) }
        let outcome = OncePromise(eventLoop.makePromise(of: R.self))
        let stopWatching = CloseWatch.shared.watch(connection) {
            eventLoop.scheduleTask(in: closeGrace) { outcome.complete(with: .failure(DatabaseConnectionCut())) }
        }
        Task {
            let result: Result<R, any Error>
            do { result = .success(try await operation()) } catch { result = .failure(error) }
            stopWatching()
            outcome.complete(with: result)
        }
        return outcome.futureResult
    }
}

/// One `closeFuture` callback per connection, however many transactions it carries. A pooled connection lives as
/// long as the process; a callback per transaction would pile up on it until it closed.
private final class CloseWatch: Sendable {
    static let shared = CloseWatch()

    /// The waiters of every watched connection that is still open, by connection.
    private let state = NIOLockedValueBox<(next: Int, waiters: [ObjectIdentifier: [Int: @Sendable () -> Void]])>((0, [:]))

    /// Calls `onClose` when `connection` closes (at once if it has), unless the returned function is called first.
    func watch(_ connection: PostgresConnection, onClose: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let key = ObjectIdentifier(connection)
        let (id, first) = state.withLockedValue { state -> (Int, Bool) in
            state.next += 1
            let first = state.waiters[key] == nil
            state.waiters[key, default: [:]][state.next] = onClose
            return (state.next, first)
        }
        if first {
            // The entry stays (empty between transactions) until the close, so this is registered once.
            connection.closeFuture.whenComplete { [self] _ in
                let waiting = state.withLockedValue { $0.waiters.removeValue(forKey: key) } ?? [:]
                for onClose in waiting.values { onClose() }
            }
        }
        return { [self] in state.withLockedValue { _ = $0.waiters[key]?.removeValue(forKey: id) } }
    }
}

/// Completes a promise once, whichever of several racers comes first.
private final class OncePromise<R: Sendable>: Sendable {
    private let promise: EventLoopPromise<R>
    private let done = NIOLockedValueBox(false)

    init(_ promise: EventLoopPromise<R>) {
        self.promise = promise
    }

    var futureResult: EventLoopFuture<R> { promise.futureResult }

    func complete(with result: Result<R, any Error>) {
        let first = done.withLockedValue { done in
            defer { done = true }
            return !done
        }
        if first { promise.completeWith(result) }
    }
}

/// The database connection closed under a statement that never got its answer. Nothing of an unfinished
/// transaction stays; the request may be sent again.
struct DatabaseConnectionCut: ProblemError {
    var status: HTTPResponseStatus { .serviceUnavailable }
    var code: String { "unavailable" }
    var reason: String { "The database connection was lost; retry shortly." }
    var headers: HTTPHeaders { ["Retry-After": "2"] }
}

/// The deferrable inserts of one PostgreSQL write transaction not yet sent (`InstrumentedDatabase.deferred`). A
/// create of an execution writes five rows (its job, itself, its first history line, its event and its audit
/// entry); sent as one statement they are one round trip instead of five, each of which cost a
/// few tenths of a millisecond of the server's and PostgreSQL's CPU. A failure of one of them fails the statement
/// that sends them (the next one of the transaction, at the latest its `COMMIT`), and with it the transaction.
final class DeferredStatements: Sendable {
    /// At most this many wait; the next deferrable one runs at once (after them).
    static let limit = 16

    private let pending = NIOLockedValueBox<[(FixedStatement, [any RowValue])]>([])

    /// Keeps the statement for later, or false when enough wait already, or when it reads a table a waiting one
    /// inserts into (it runs at once, after them, and sees their rows).
    func add(_ statement: FixedStatement, _ values: [any RowValue]) -> Bool {
        pending.withLockedValue { pending in
            guard pending.count < Self.limit else { return false }
            if let reads = statement.reads, pending.contains(where: { $0.0.target == reads }) { return false }
            pending.append((statement, values))
            return true
        }
    }

    /// The waiting statements, in order, now no longer waiting; nil when none wait.
    func take() -> [(FixedStatement, [any RowValue])]? {
        pending.withLockedValue { pending in
            guard !pending.isEmpty else { return nil }
            defer { pending.removeAll() }
            return pending
        }
    }
}
