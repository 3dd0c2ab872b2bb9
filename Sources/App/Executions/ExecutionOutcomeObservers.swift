import Fluent
import Foundation
import Vapor

/// Features that act when an execution finishes, inside the transaction that finishes it (workflows wake the run
/// the execution is a step of). Registered at boot, so executions know nothing of the features that use them.
final class ExecutionOutcomeObservers: @unchecked Sendable {
    typealias Observer = @Sendable (Execution, Application, any Database) async throws -> Void

    private let lock = NSLock()
    private var observers: [Observer] = []

    func add(_ observer: @escaping Observer) {
        lock.withLock { observers.append(observer) }
    }

    /// Tells every observer, in the caller's transaction; an error rolls the transaction back.
    func executionFinished(_ execution: Execution, app: Application, on db: any Database) async throws {
        for observer in lock.withLock({ observers }) { try await observer(execution, app, db) }
    }
}

extension Application {
    private struct ObserversKey: StorageKey { typealias Value = ExecutionOutcomeObservers }

    /// Filled at boot (`configure`).
    var executionOutcomeObservers: ExecutionOutcomeObservers {
        if let existing = storage[ObserversKey.self] { return existing }
        let created = ExecutionOutcomeObservers()
        storage[ObserversKey.self] = created
        return created
    }
}
