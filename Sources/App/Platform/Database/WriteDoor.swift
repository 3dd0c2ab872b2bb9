import Fluent
import NIOConcurrencyHelpers
import PostgresNIO
import SQLKit
import StewardSQLite
import Vapor

/// The one door for writes. Every change goes through `writeTransaction`, or `writeStatements` for statements that
/// need no transaction of their own (claiming a job, a rate-limit counter, a clean-up delete). On SQLite both queue
/// for the writer (`SQLiteWriter`: its thread, its connection, group commit); the driver's pool only reads, which
/// `PoolWriteGuard` checks. On PostgreSQL both go to the pool.
extension Application {
    private struct SQLiteWriterKey: StorageKey { typealias Value = SQLiteWriter }

    /// Set in `configure` for SQLite: the connection and thread that write transactions run on.
    var sqliteWriter: SQLiteWriter? {
        get { storage[SQLiteWriterKey.self] }
        set { storage[SQLiteWriterKey.self] = newValue }
    }

    private struct SQLiteReadersKey: StorageKey { typealias Value = SQLiteReaders }

    /// Set in `configure` for SQLite: direct read connections for the caller lookup on every request.
    var sqliteReaders: SQLiteReaders? {
        get { storage[SQLiteReadersKey.self] }
        set { storage[SQLiteReadersKey.self] = newValue }
    }

    private struct CommitListenersKey: StorageKey { typealias Value = CommitListeners }

    /// Told after each commit made through the door (the live-stream hub looks at the log at once).
    var commitListeners: CommitListeners {
        if let listeners = storage[CommitListenersKey.self] { return listeners }
        let listeners = CommitListeners()
        storage[CommitListenersKey.self] = listeners
        return listeners
    }

    /// A write transaction: on SQLite queued behind other writers and run on the writer's own connection and thread
    /// (reads stay on the driver's pool beside it); on PostgreSQL a transaction on a pooled connection that ends
    /// when the connection does (`PostgresTransaction`).
    func writeTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        try WriteNesting.refuseInsideWrite()
        let body = WriteNesting.marked(body)
        // The writer tells the listeners after each batch's commit.
        if let writer = sqliteWriter {
            let result = try await writer.transaction(body)
            RequestEffects.note()
            return result
        }
        let owed = AfterCommit.Owed()
        // Bound inside the body: the pool runs it in a task of its own, which does not inherit task-local values.
        let result = try await WriteConflict.translating {
            try await PostgresTransaction.run(on: db) { db in try await AfterCommit.$owed.withValue(owed) { try await body(db) } }
        }
        RequestEffects.note()
        if owed.channels.withLockedValue({ $0.contains(LedgerSequencer.channel) }) { ledgerSequencerLoop?.signal.notify() }
        afterCommitSender?.send(owed, app: self)
        commitListeners.committed()
        return result
    }

    /// A write statement or a few that need no transaction of their own, such as claiming a job: on SQLite they go
    /// through the writer (committed with a batch of others), on PostgreSQL straight to the pool.
    func writeStatements<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        try WriteNesting.refuseInsideWrite()
        let body = WriteNesting.marked(body)
        guard let writer = sqliteWriter else {
            let result = try await WriteConflict.translating { try await body(db as! any SQLDatabase) }
            RequestEffects.note()
            return result
        }
        let result = try await writer.statements(body)
        RequestEffects.note()
        return result
    }

    /// `SQLiteReaders.quickRead` through this app's readers.
    func quickRead(_ template: String, _ values: [any Encodable & Sendable], on db: any Database) async throws -> [any SQLRow] {
        try await SQLiteReaders.quickRead(template, values, readers: sqliteReaders, on: db)
    }

    /// The one row of `M` whose `column` equals `value`, through `quickRead`, filled without reflection.
    func quickFind<M: ListedProperties>(_ type: M.Type, where column: String, equals value: any Encodable & Sendable,
                                        on db: any Database) async throws -> M? {
        guard let row = try await quickRead("SELECT * FROM \(M.schema) WHERE \(column) = ? LIMIT 1", [value], on: db).first else {
            return nil
        }
        return try M.read(from: row)
    }
}

/// A write started from inside another write's body would, on SQLite, queue behind the batch that is running it
/// and wait for itself forever (on PostgreSQL it would commit apart from the transaction around it). Every body
/// runs marked, in debug and release alike, and the door refuses a write from a marked task at once.
enum WriteNesting {
    @TaskLocal static var insideWrite = false

    static func refuseInsideWrite() throws {
        if insideWrite { throw NestedWriteError() }
    }

    static func marked<D: Sendable, T: Sendable>(_ body: @escaping @Sendable (D) async throws -> T) -> @Sendable (D) async throws -> T {
        { database in try await $insideWrite.withValue(true) { try await body(database) } }
    }
}

/// PostgreSQL ends a transaction that lost a serialization check (SQLSTATE 40001) or was chosen to break a deadlock
/// (40P01) by rolling it back: nothing of it was written, and the same request sent again usually succeeds. Such
/// a failure answers 503 `write_conflict` with `Retry-After`, not 500, once `WriteConflictRetryMiddleware` has
/// run the request again as often as it may.
///
/// The door does not re-run the body itself: Fluent models keep the state a rolled-back body gave them (a model
/// created in it counts as existing), so a second run could turn an insert into an update of a row that is not
/// there and lose the write without an error. The middleware runs the whole handler again instead.
struct WriteConflict: ProblemError {
    var sqlState: String

    var status: HTTPResponseStatus { .serviceUnavailable }
    var code: String { "write_conflict" }
    var reason: String { "The change collided with another one and was not made; send it again." }
    var headers: HTTPHeaders { ["Retry-After": "1"] }

    static func translating<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PSQLError {
            if let state = error.serverInfo?[.sqlState], state == "40001" || state == "40P01" { throw WriteConflict(sqlState: state) }
            throw error
        }
    }
}

/// A programming error: see `WriteNesting`.
struct NestedWriteError: Error, CustomStringConvertible {
    var description: String {
        "a write was started inside another write's body, where it would wait for itself; write through the body's own database, or after it returns"
    }
}

/// Actions run after a write commits, registered at boot.
final class CommitListeners: Sendable {
    private let actions = NIOLockedValueBox<[@Sendable () -> Void]>([])

    func add(_ action: @escaping @Sendable () -> Void) {
        actions.withLockedValue { $0.append(action) }
    }

    func committed() {
        for action in actions.withLockedValue({ $0 }) { action() }
    }
}
