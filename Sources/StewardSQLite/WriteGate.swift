import FluentKit
import Foundation

extension Database {
    /// `transaction`, except that a database already in one runs the body in it at once. (Fluent's async
    /// `transaction` always goes through a new task, which leaves the SQLite writer's thread.)
    package func joiningTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        inTransaction ? try await body(self) : try await transaction(body)
    }
}

/// Lets one SQLite writer in at a time, first come first served.
///
/// SQLite has a single write lock. Writers that find it taken sleep inside SQLite's busy handler in growing
/// steps (1, 2, 5 … 100 ms), so under load most of their time is spent asleep. Queueing writers in-process
/// instead hands the lock over without sleeping. PostgreSQL has row locks and needs no gate.
package final class WriteGate: @unchecked Sendable {
    private let lock = NSLock()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    package init() {}

    package func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = lock.withLock { () -> Bool in
                if held { waiters.append(continuation); return false }
                held = true
                return true
            }
            if granted { continuation.resume() }
        }
    }

    package func release() {
        let next = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if waiters.isEmpty { held = false; return nil }
            return waiters.removeFirst()
        }
        next?.resume()
    }
}

