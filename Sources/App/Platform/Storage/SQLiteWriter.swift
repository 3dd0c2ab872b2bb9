import FluentKit
import FluentSQL
import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteKit
import SQLKit
// sqlite-nio's C target (the same SQLite library the driver links); it has no product of its own.
import VaporCSQLite

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
/// The ledger heads (the audit chain's and the event log's next number) are read once per batch, counted on in
/// memory by each write's audit entries and events (`LedgerHeadCache`; a write rolled back to its savepoint gives
/// its numbers back), and written back once, just before the commit.
///
/// `Application.writeTransaction` and `writeStatements` use it. Each batch holds the write gate, which the few
/// writes still made through the driver's pool also take. Reads stay on the pool. PostgreSQL does not use this.
final class SQLiteWriter: Sendable {
    let executor: SQLiteThread
    private let connection: DirectSQLiteConnection
    private let context: DatabaseContext
    private let observer: QueryObserver?
    private let gate: WriteGate
    private let queue = WriteQueue()
    /// The most transactions one commit covers.
    static let batchLimit = 64

    /// Opens the connection (on the writer's thread) with the same settings as the driver's connections.
    static func open(path: String, busyTimeoutMilliseconds: Int, synchronous: String, configuration: any DatabaseConfiguration,
                     logger: Logger, pageSizeLimit: Int?, observer: QueryObserver?, gate: WriteGate) async throws -> SQLiteWriter {
        let executor = SQLiteThread()
        let context = DatabaseContext(configuration: configuration, logger: logger, eventLoop: executor.eventLoop, pageSizeLimit: pageSizeLimit)
        do {
            let connection = try await executor.run {
                let connection = try DirectSQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
                // Savepoint and statement journals in memory: every write of a batch opens a savepoint, and these
                // journals are thrown away at its release, so a temporary file only adds system calls.
                for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = \(synchronous)", "PRAGMA foreign_keys = ON",
                               "PRAGMA temp_store = MEMORY"] {
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

    private init(executor: SQLiteThread, connection: DirectSQLiteConnection, context: DatabaseContext, observer: QueryObserver?, gate: WriteGate) {
        self.executor = executor
        self.connection = connection
        self.context = context
        self.observer = observer
        self.gate = gate
    }

    /// Runs the body in a transaction (see the type's notes on batching) and returns once it is committed; throws
    /// the body's error (its work rolled back) or the commit's. The body runs on the writer's thread, in a task of
    /// the writer's: anything it awaits elsewhere comes back to it. It must not wait for another write.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        let result = ResultBox<T>()
        let write = PendingWrite(perform: { db in result.value = try await body(db) })
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            write.continuation = continuation
            if queue.add(write) { Task(executorPreference: executor) { await self.drain() } }
        }
        return result.value!
    }

    /// Writes queued for the next batch.
    var waiting: Int { queue.count }

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
        let ledger = LedgerHeadCache()
        let db = WriterDatabase(writer: self, context: context, ledgerHeads: ledger)
        let savepoints = batch.count > 1
        do {
            try run("BEGIN IMMEDIATE", [], logger: logger) { _ in }
        } catch {
            return batch.forEach { $0.finish(error) }
        }
        var failures: [(any Error)?] = []
        for write in batch {
            do {
                if savepoints {
                    try run("SAVEPOINT w", [], logger: logger) { _ in }
                    ledger.mark()
                }
                try await write.perform(db)
                if savepoints { try run("RELEASE w", [], logger: logger) { _ in } }
                failures.append(nil)
            } catch {
                failures.append(error)
                do {
                    guard savepoints else { throw error }
                    try run("ROLLBACK TO w", [], logger: logger) { _ in }
                    ledger.restore()
                    try run("RELEASE w", [], logger: logger) { _ in }
                } catch let lost {
                    // The transaction itself is gone: nothing in the batch was written.
                    try? run("ROLLBACK", [], logger: logger) { _ in }
                    for (index, write) in batch.enumerated() {
                        write.finish(index < failures.count ? failures[index] ?? lost : lost)
                    }
                    return
                }
            }
        }
        do {
            try ledger.flush { name, seq, hash in
                try run("UPDATE ledger_heads SET seq = ?, last_hash = ? WHERE name = ?", [.integer(Int(seq)), .text(hash), .text(name)],
                        logger: logger) { _ in }
            }
            try run("COMMIT", [], logger: logger) { _ in }
        } catch {
            try? run("ROLLBACK", [], logger: logger) { _ in }
            return batch.forEach { $0.finish(error) }
        }
        for (write, failure) in zip(batch, failures) { write.finish(failure) }
    }

    /// Statements with no transaction of their own (claiming a job, say): queued and committed like a transaction,
    /// usually in a batch with others.
    func statements<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        try await transaction { db in try await body(db as! any SQLDatabase) }
    }

    /// One statement on the writer's connection, timed like the driver's. Runs at once on the writer's thread,
    /// or moves there first.
    fileprivate func execute(_ sql: String, _ binds: [SQLiteData], logger: Logger, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        if executor.isCurrent {
            try run(sql, binds, logger: logger, onRow)
        } else {
            try await executor.run { try self.run(sql, binds, logger: logger, onRow) }
        }
    }

    fileprivate func run(_ sql: String, _ binds: [SQLiteData], logger: Logger, _ onRow: (any SQLRow) -> Void) throws {
        let started = ContinuousClock.now
        defer { observer?.finished(InstrumentedDatabase.redacted(sql), started: started, logger: logger) }
        try connection.execute(sql, binds, onRow)
    }

    /// Closes the connection and ends the thread. Nothing may use the writer afterwards.
    func close() async {
        try? await executor.run { self.connection.close() }
        await executor.stop()
    }

    /// `close`, for a synchronous shutdown (not from an event loop).
    func closeBlocking() {
        try? executor.eventLoop.submit { self.connection.close() }.wait()
        executor.stopBlocking()
    }
}

// MARK: - The queue

/// A write waiting for its batch, and the caller waiting for its commit.
private final class PendingWrite: @unchecked Sendable {
    let perform: @Sendable (any Database) async throws -> Void
    /// Set before the write is queued; resumed once, after the commit (or the failure).
    var continuation: CheckedContinuation<Void, any Error>?

    init(perform: @escaping @Sendable (any Database) async throws -> Void) {
        self.perform = perform
    }

    func finish(_ error: (any Error)?) {
        if let error { continuation?.resume(throwing: error) } else { continuation?.resume() }
        continuation = nil
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Writes waiting for the writer, first come first served.
private final class WriteQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var waiting: [PendingWrite] = []
    private var draining = false

    /// Queues the write; true when no drainer is running and the caller must start one.
    func add(_ write: PendingWrite) -> Bool {
        lock.withLock {
            waiting.append(write)
            defer { draining = true }
            return !draining
        }
    }

    var count: Int { lock.withLock { waiting.count } }

    /// Up to `limit` writes; none (and the drainer ends) when the queue is empty.
    func take(_ limit: Int) -> [PendingWrite] {
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

// MARK: - The thread

/// A thread of its own (the writer's, the readers'), an event loop, that also runs the jobs of tasks preferring it
/// (`withTaskExecutorPreference`).
/// Being an event loop, futures completed on it resolve on it, so Fluent's future-based calls stay on the thread.
final class SQLiteThread: TaskExecutor, @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let eventLoop: any EventLoop
    private let lock = NSLock()
    private var stopped = false

    init() {
        eventLoop = group.next()
    }

    var isCurrent: Bool { eventLoop.inEventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        // After `stop` nothing is dropped: a late job runs on the thread that enqueued it.
        guard lock.withLock({ !stopped }) else { return job.runSynchronously(on: executor) }
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    /// Runs synchronous work on this thread.
    func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withTaskExecutorPreference(self) { try work() }
    }

    func stop() async {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        try? await group.shutdownGracefully()
    }

    func stopBlocking() {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        try? group.syncShutdownGracefully()
    }
}

// MARK: - Fluent and SQLKit over the writer

/// What a write transaction's body sees: a Fluent database and a SQLKit database on the writer's connection,
/// already inside the transaction (nested transactions join it).
private struct WriterDatabase: Database, SQLDatabase, LedgerHeadCarrier, DirectSQLiteStatements {
    let writer: SQLiteWriter
    let context: DatabaseContext
    let ledgerHeads: LedgerHeadCache

    private static let encoder = SQLiteDataEncoder()

    // MARK: SQLDatabase

    var logger: Logger { context.logger }
    var eventLoop: any EventLoop { context.eventLoop }
    var dialect: any SQLDialect { SQLiteDialect() }
    var queryLogLevel: Logger.Level? { .trace }

    /// The statement's SQL text and its binds as SQLite values, encoded as the driver encodes them.
    private func statement(_ query: any SQLExpression) throws -> (sql: String, binds: [SQLiteData]) {
        let (sql, rawBinds) = serialize(query)
        logger.trace("Executing query", metadata: ["sql": .string(sql)])
        return (sql, try rawBinds.map { try Self.encoder.encode($0) })
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        let (sql, binds) = try statement(query)
        try await writer.execute(sql, binds, logger: logger, onRow)
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        guard writer.executor.isCurrent else { return eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) } }
        // On the writer's thread (Fluent's calls from a transaction body): run now, answer with a finished future.
        do {
            let (sql, binds) = try statement(query)
            try writer.run(sql, binds, logger: logger, onRow)
            return eventLoop.makeSucceededVoidFuture()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    func run(sqlite sql: String, _ values: [SQLiteData], collect: Bool) async throws -> [any SQLRow] {
        logger.trace("Executing query", metadata: ["sql": .string(sql)])
        guard collect else {
            try await writer.execute(sql, values, logger: logger) { _ in }
            return []
        }
        let rows = CollectedRows()
        try await writer.execute(sql, values, logger: logger) { rows.rows.append($0) }
        return rows.rows
    }

    func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await closure(self)
    }

    // MARK: Database

    var inTransaction: Bool { true }

    func execute(query: DatabaseQuery, onOutput: @escaping @Sendable (any DatabaseOutput) -> Void) -> EventLoopFuture<Void> {
        var expression = SQLQueryConverter(delegate: WriterConverterDelegate()).convert(query)
        // As the driver does: a create returns the ids it made, unless the model says it has none to return.
        if case .create = query.action, query.customIDKey != .some(.string("")) {
            expression = SQLList([expression, SQLReturning(.init((query.customIDKey ?? .id).description))], separator: SQLRaw(" "))
        }
        return execute(sql: expression) { onOutput(WriterOutput(row: $0, schema: nil)) }
    }

    func execute(schema: DatabaseSchema) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(SQLiteDirectError(code: SQLITE_MISUSE, message: "schema changes belong in migrations, not write transactions"))
    }

    func execute(enum: DatabaseEnum) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededFuture(())
    }

    func transaction<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        closure(self)
    }

    func withConnection<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        closure(self)
    }
}

/// Rows handed over one by one on the writer's thread, for the caller once the statement is done.
private final class CollectedRows: @unchecked Sendable {
    var rows: [any SQLRow] = []
}

/// The SQLite driver's type mapping (its delegate is internal to it): only schema conversion consults it.
private struct WriterConverterDelegate: SQLConverterDelegate {
    func customDataType(_ dataType: DatabaseSchema.DataType) -> (any SQLExpression)? {
        switch dataType {
        case .string, .enum: SQLRaw("TEXT")
        case .datetime: SQLRaw("REAL")
        case .int64: SQLRaw("INTEGER")
        default: nil
        }
    }
}

/// A row as Fluent reads it, with the table prefix Fluent asks for on joins.
private struct WriterOutput: DatabaseOutput {
    let row: any SQLRow
    let schema: String?

    var description: String { String(describing: row) }

    private func column(_ key: FieldKey) -> String {
        (schema.map { .prefix(.prefix(.string($0), "_"), key) } ?? key).description
    }

    func schema(_ schema: String) -> any DatabaseOutput { WriterOutput(row: row, schema: schema) }
    func contains(_ key: FieldKey) -> Bool { row.contains(column: column(key)) }
    func decodeNil(_ key: FieldKey) throws -> Bool { try row.decodeNil(column: column(key)) }
    func decode<T: Decodable>(_ key: FieldKey, as type: T.Type) throws -> T { try row.decode(column: column(key), as: T.self) }
}
