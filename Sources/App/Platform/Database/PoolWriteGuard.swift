import Fluent
import NIOConcurrencyHelpers
import Vapor

/// Checks the one-door rule on SQLite: the driver's pool only reads; every write goes through the writer
/// (`writeTransaction`, `writeStatements`). A write on the pool would skip the writer's queue and wait in SQLite's
/// busy handler instead, and would land outside the batch that keeps the ledger heads.
///
/// Unarmed it costs one lock read per pool statement. The tests arm it after migrating (migrations are the pool's
/// only rightful writes), and a test app that saw a pool write fails its test when it shuts down.
final class PoolWriteGuard: Sendable {
    private struct State {
        var armed = false
        var migrating = 0
        var writes: [String] = []
        var checking: Bool { armed && migrating == 0 }
    }

    private let state = NIOLockedValueBox(State())

    func arm() { state.withLockedValue { $0.armed = true } }

    /// Runs migrations, the pool's rightful writes (schema and seed rows), unchecked.
    func migrating<T>(_ body: () async throws -> T) async rethrows -> T {
        state.withLockedValue { $0.migrating += 1 }
        defer { state.withLockedValue { $0.migrating -= 1 } }
        return try await body()
    }

    /// The pool writes seen while armed since the last call (each a statement's first words), forgotten once taken.
    func takeWrites() -> [String] {
        state.withLockedValue { state in
            defer { state.writes.removeAll() }
            return state.writes
        }
    }

    /// A Fluent query run on the pool.
    func check(_ query: DatabaseQuery) {
        switch query.action {
        case .create, .update, .delete: record { "fluent \(query.action) \(query.schema)" }
        default: break
        }
    }

    /// A SQL statement run on the pool; `text` serializes it, only when armed.
    func check(sql text: () -> String) {
        guard state.withLockedValue({ $0.checking }) else { return }
        let sql = text()
        let verb = sql.drop(while: { $0 == " " || $0 == "\n" || $0 == "(" }).prefix(8).uppercased()
        guard ["INSERT", "UPDATE", "DELETE", "REPLACE"].contains(where: { verb.hasPrefix($0) }) else { return }
        record { String(sql.prefix(120)) }
    }

    private func record(_ describe: () -> String) {
        guard state.withLockedValue({ $0.checking }) else { return }
        let description = describe()
        state.withLockedValue { $0.writes.append(description) }
    }
}

extension Application {
    private struct PoolWriteGuardKey: StorageKey { typealias Value = PoolWriteGuard }

    /// Set in `configure` for SQLite.
    var poolWriteGuard: PoolWriteGuard? {
        get { storage[PoolWriteGuardKey.self] }
        set { storage[PoolWriteGuardKey.self] = newValue }
    }
}
