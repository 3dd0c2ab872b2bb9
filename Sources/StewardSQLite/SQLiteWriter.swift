import FluentKit
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SQLiteKit
import SQLKit

/// SQLite's write transactions, run start to finish on one thread of their own.
///
/// The driver runs every statement on a thread pool and hands the result back to an event loop: two thread
/// switches per statement, and under load the way back waits behind whatever that loop is serving. A write
/// transaction of ten statements held SQLite's one write lock for all of those waits. Here the transaction's task
/// runs on the writer's own thread (a task executor), and each statement calls SQLite directly, so a transaction
/// costs two thread switches in all, and the lock is held only while SQLite works. Prepared statements are kept
/// and reused.
///
/// Group commit: transactions that arrive while one is running are queued, and the next batch runs them one after
/// another inside a single SQLite transaction, each in a savepoint of its own, then commits once. A body that
/// throws rolls back to its savepoint and fails alone; the others commit. No caller hears back before the commit
/// that holds its work is durable, so durability is as before, while the fsync (most of a commit's cost) is
/// shared by the batch.
///
/// Batch participants (`WriteBatchParticipant`) are state kept for one batch by whoever registered them at boot,
/// told of each savepoint, of each rollback to one, and of the coming commit. After each commit the writer calls
/// `afterCommit`. The writer knows nothing of what either does.
///
/// Each batch holds the write gate. Reads stay on the driver's pool, which (apart from migrations) never writes.
/// What the writer refuses.
package enum SQLiteWriterError: Error, CustomStringConvertible {
    /// A statement was sent to the writer's connection from another thread.
    case offWriterThread
    /// SQLite rolled back the batch's transaction on its own (disk full, I/O error, out of memory).
    case transactionLost

    package var description: String {
        switch self {
        case .offWriterThread: "a statement reached the SQLite writer's connection off the writer's thread"
        case .transactionLost: "SQLite rolled the write transaction back on its own (disk full, I/O error or out of memory); nothing in it was written"
        }
    }
}

package final class SQLiteWriter: Sendable {
    package let executor: SQLiteThread
    private let connection: DirectSQLiteConnection
    private let context: DatabaseContext
    private let observer: (any SQLStatementObserver)?
    private let gate: WriteGate
    private let queue = WriteQueue()
    private let hooks = NIOLockedValueBox(Hooks())
    /// Whether a batch's transaction should be open; read and written only on the writer's thread.
    private let inBatch = NIOLockedValueBox(false)

    private struct Hooks {
        var participants: [@Sendable () -> any WriteBatchParticipant] = []
        var afterCommit: [@Sendable () -> Void] = []
    }
    /// The most transactions one commit covers.
    package static let batchLimit = 64

    /// Opens the connection (on the writer's thread) with the same settings as the driver's connections.
    /// `journalSizeLimit`: the bytes the WAL is cut back to after a checkpoint (`PRAGMA journal_size_limit`).
    package static func open(path: String, busyTimeoutMilliseconds: Int, synchronous: String, journalSizeLimit: Int = 64 << 20,
                     configuration: any DatabaseConfiguration, logger: Logger, pageSizeLimit: Int?,
                     observer: (any SQLStatementObserver)?, gate: WriteGate) async throws -> SQLiteWriter {
        let executor = SQLiteThread()
        let context = DatabaseContext(configuration: configuration, logger: logger, eventLoop: executor.eventLoop, pageSizeLimit: pageSizeLimit)
        do {
            let connection = try await executor.run {
                let connection = try DirectSQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
                // Savepoint and statement journals in memory: every write of a batch opens a savepoint, and these
                // journals are thrown away at its release, so a temporary file only adds system calls.
                for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = \(synchronous)", "PRAGMA foreign_keys = ON",
                               "PRAGMA temp_store = MEMORY", "PRAGMA journal_size_limit = \(journalSizeLimit)"] {
                    try connection.execute(pragma, []) { _ in }
                }
                return connection
            }
            return SQLiteWriter(executor: executor, connection: connection, context: context, observer: observer, gate: gate)
        } catch {
            await executor.stop()
            throw error
        }
    }

    private init(executor: SQLiteThread, connection: DirectSQLiteConnection, context: DatabaseContext, observer: (any SQLStatementObserver)?, gate: WriteGate) {
        self.executor = executor
        self.connection = connection
        self.context = context
        self.observer = observer
        self.gate = gate
    }

    /// Adds a participant to every batch from now on: `make` gives the state for one batch. Register at boot,
    /// before the first write.
    package func addBatchParticipant(_ make: @escaping @Sendable () -> any WriteBatchParticipant) {
        hooks.withLockedValue { $0.participants.append(make) }
    }

    /// Calls `action` after every commit (once per batch), once the batch's writes are durable and readable,
    /// before their callers hear back.
    package func afterCommit(_ action: @escaping @Sendable () -> Void) {
        hooks.withLockedValue { $0.afterCommit.append(action) }
    }

    /// Runs the body in a transaction (see the type's notes on batching) and returns once it is committed; throws
    /// the body's error (its work rolled back) or the commit's. The body runs on the writer's thread, in a task of
    /// the writer's: anything it awaits elsewhere comes back to it. It must not wait for another write.
    package func transaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        let result = ResultBox<T>()
        let write = PendingWrite(perform: { db in result.value = try await body(db) })
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            write.continuation = continuation
            if queue.add(write) { Task(executorPreference: executor) { await self.drain() } }
        }
        return result.value!
    }

    /// Writes queued for the next batch.
    package var waiting: Int { queue.count }

    /// Runs batches until the queue is empty. One drainer at a time (`WriteQueue.add` says when to start one).
    private func drain() async {
        while true {
            await gate.acquire()
            let batch = queue.take(Self.batchLimit)
            if batch.isEmpty {
                gate.release()
                return
            }
            await commit(batch)
            gate.release()
        }
    }

    /// One SQLite transaction for the batch: each write in a savepoint (none for a batch of one), then one commit.
    private func commit(_ batch: [PendingWrite]) async {
        let logger = context.logger
        let hooks = hooks.withLockedValue { $0 }
        let participants = hooks.participants.map { $0() }
        let db = WriterDatabase(writer: self, context: context, participants: participants)
        let savepoints = batch.count > 1
        do {
            try run("BEGIN IMMEDIATE", [], logger: logger) { _ in }
        } catch {
            return batch.forEach { $0.finish(error) }
        }
        inBatch.withLockedValue { $0 = true }
        defer { inBatch.withLockedValue { $0 = false } }
        var failures: [(any Error)?] = []
        for write in batch {
            do {
                if savepoints {
                    try run("SAVEPOINT w", [], logger: logger) { _ in }
                    participants.forEach { $0.savepoint() }
                }
                try await write.perform(db)
                // A body that swallowed the error of a statement SQLite answered by rolling back everything.
                if connection.isAutocommit { throw SQLiteWriterError.transactionLost }
                if savepoints { try run("RELEASE w", [], logger: logger) { _ in } }
                failures.append(nil)
            } catch {
                failures.append(error)
                do {
                    guard savepoints else { throw error }
                    try run("ROLLBACK TO w", [], logger: logger) { _ in }
                    participants.forEach { $0.rolledBackToSavepoint() }
                    try run("RELEASE w", [], logger: logger) { _ in }
                } catch let lost {
                    // The transaction itself is gone: nothing in the batch was written (statements after the loss
                    // were refused, see `run`).
                    try? run("ROLLBACK", [], logger: logger) { _ in }
                    for (index, write) in batch.enumerated() {
                        write.finish(index < failures.count ? failures[index] ?? lost : lost)
                    }
                    return
                }
            }
        }
        do {
            for participant in participants {
                try participant.beforeCommit { sql, binds in try run(sql, binds, logger: logger) { _ in } }
            }
            if connection.isAutocommit { throw SQLiteWriterError.transactionLost }
            try run("COMMIT", [], logger: logger) { _ in }
        } catch {
            try? run("ROLLBACK", [], logger: logger) { _ in }
            return batch.forEach { $0.finish(error) }
        }
        for action in hooks.afterCommit { action() }
        for (write, failure) in zip(batch, failures) { write.finish(failure) }
    }

    /// Statements with no transaction of their own (claiming a job, say): queued and committed like a transaction,
    /// usually in a batch with others.
    package func statements<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        try await transaction { db in try await body(db as! any SQLDatabase) }
    }

    /// One statement on the writer's connection, timed like the driver's. Runs at once on the writer's thread,
    /// or moves there first.
    package func execute(_ sql: String, _ binds: [SQLiteData], logger: Logger, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        if executor.isCurrent {
            try run(sql, binds, logger: logger, onRow)
        } else {
            try await executor.run { try self.run(sql, binds, logger: logger, onRow) }
        }
    }

    /// Refuses to run anywhere but on the writer's thread (the connection is not thread-safe), and, inside a
    /// batch, after SQLite rolled the batch's transaction back on its own: each statement would otherwise commit
    /// alone while its caller is told the batch failed.
    package func run(_ sql: String, _ binds: [SQLiteData], logger: Logger, _ onRow: (any SQLRow) -> Void) throws {
        guard executor.isCurrent else { throw SQLiteWriterError.offWriterThread }
        if inBatch.withLockedValue({ $0 }), connection.isAutocommit, sql != "ROLLBACK" {
            throw SQLiteWriterError.transactionLost
        }
        let started = ContinuousClock.now
        defer { observer?.statementFinished(sql, started: started, logger: logger) }
        try connection.execute(sql, binds, onRow)
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` between batches (it holds the write gate): copies the WAL into the
    /// database and truncates it. Returns false when a reader kept it from finishing (it is tried again later).
    package func checkpoint(logger: Logger) async throws -> Bool {
        await gate.acquire()
        defer { gate.release() }
        return try await executor.run {
            let busy = NIOLockedValueBox(0)
            try self.run("PRAGMA wal_checkpoint(TRUNCATE)", [], logger: logger) { row in
                busy.withLockedValue { $0 = (try? row.decode(column: "busy", as: Int.self)) ?? 0 }
            }
            return busy.withLockedValue { $0 } == 0
        }
    }

    /// Closes the connection and ends the thread. Nothing may use the writer afterwards.
    package func close() async {
        try? await executor.run { self.connection.close() }
        await executor.stop()
    }

    /// `close`, for a synchronous shutdown (not from an event loop).
    package func closeBlocking() {
        try? executor.eventLoop.submit { self.connection.close() }.wait()
        executor.stopBlocking()
    }
}

// MARK: - The queue

/// A write waiting for its batch, and the caller waiting for its commit.
private final class PendingWrite: @unchecked Sendable {
    package let perform: @Sendable (any Database) async throws -> Void
    /// Set before the write is queued; resumed once, after the commit (or the failure).
    package var continuation: CheckedContinuation<Void, any Error>?

    package init(perform: @escaping @Sendable (any Database) async throws -> Void) {
        self.perform = perform
    }

    package func finish(_ error: (any Error)?) {
        if let error { continuation?.resume(throwing: error) } else { continuation?.resume() }
        continuation = nil
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    package var value: T?
}

/// Writes waiting for the writer, first come first served.
private final class WriteQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var waiting: [PendingWrite] = []
    private var draining = false

    /// Queues the write; true when no drainer is running and the caller must start one.
    package func add(_ write: PendingWrite) -> Bool {
        lock.withLock {
            waiting.append(write)
            defer { draining = true }
            return !draining
        }
    }

    package var count: Int { lock.withLock { waiting.count } }

    /// Up to `limit` writes; none (and the drainer ends) when the queue is empty.
    package func take(_ limit: Int) -> [PendingWrite] {
        lock.withLock {
            guard !waiting.isEmpty else {
                draining = false
                return []
            }
            let batch = Array(waiting.prefix(limit))
            waiting.removeFirst(batch.count)
            return batch
        }
    }
}


// MARK: - Hooks

/// State one write batch keeps beside its transaction, such as counters read once and written back once. A fresh
/// one is made for each batch (`SQLiteWriter.addBatchParticipant`); it is used only on the writer's thread. A
/// write's body finds it with `WriteBatchDatabase.participant(_:)`.
package protocol WriteBatchParticipant: AnyObject, Sendable {
    /// A write's savepoint was opened (batches of more than one write): remember the state.
    func savepoint()
    /// That write failed and was rolled back to its savepoint: return to the remembered state.
    func rolledBackToSavepoint()
    /// The batch is about to commit: write back what it kept, with `execute` (SQL with `?` placeholders).
    func beforeCommit(_ execute: (String, [SQLiteData]) throws -> Void) throws
}

/// The database a write's body is given inside a writer's batch.
package protocol WriteBatchDatabase {
    /// This batch's participant of type `P`, if one was registered.
    func participant<P: WriteBatchParticipant>(_ type: P.Type) -> P?
}

/// Told each statement that a direct connection ran (the writer's, the readers'), with its time: for metrics and
/// slow-query logs.
package protocol SQLStatementObserver: Sendable {
    func statementFinished(_ sql: String, started: ContinuousClock.Instant, logger: Logger)
}
