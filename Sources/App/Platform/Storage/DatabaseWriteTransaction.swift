import Fluent
import Foundation
import Vapor
import SQLKit

extension Database {
    /// `transaction`, except that a database already in one runs the body in it at once. (Fluent's async
    /// `transaction` always goes through a new task, which leaves the SQLite writer's thread.)
    func joiningTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        inTransaction ? try await body(self) : try await transaction(body)
    }
}

/// Lets one SQLite writer in at a time, first come first served.
///
/// SQLite has a single write lock. Writers that find it taken sleep inside SQLite's busy handler in growing
/// steps (1, 2, 5 … 100 ms), so under load most of their time is spent asleep. Queueing writers in-process
/// instead hands the lock over without sleeping. PostgreSQL has row locks and needs no gate.
final class WriteGate: @unchecked Sendable {
    private let lock = NSLock()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = lock.withLock { () -> Bool in
                if held { waiters.append(continuation); return false }
                held = true
                return true
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let next = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if waiters.isEmpty { held = false; return nil }
            return waiters.removeFirst()
        }
        next?.resume()
    }
}

extension Application {
    private struct WriteGateKey: StorageKey { typealias Value = WriteGate }

    /// Set in `configure` for SQLite; nil on PostgreSQL.
    var sqliteWriteGate: WriteGate? {
        get { storage[WriteGateKey.self] }
        set { storage[WriteGateKey.self] = newValue }
    }

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

    /// A write transaction: on SQLite queued behind other writers and run on the writer's own connection and thread
    /// (reads stay on the driver's pool beside it); on PostgreSQL a transaction from the pool.
    func writeTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        let result = if let writer = sqliteWriter {
            try await writer.transaction(body)
        } else {
            try await db.transaction(body)
        }
        // Committed: any event it wrote is readable now, so live streams need not wait for their next look.
        eventHubIfPresent?.poke()
        return result
    }

    /// A write statement or a few that need no transaction of their own, such as claiming a job: on SQLite they go
    /// through the writer (committed with a batch of others), on PostgreSQL straight to the pool.
    func writeStatements<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        guard let writer = sqliteWriter else { return try await body(db as! any SQLDatabase) }
        return try await writer.statements(body)
    }

    /// Runs a single write statement (or a few) on the read pool, behind the SQLite write gate.
    func withWriteGate<T>(_ body: () async throws -> T) async throws -> T {
        guard let gate = sqliteWriteGate else { return try await body() }
        await gate.acquire()
        defer { gate.release() }
        return try await body()
    }
}
