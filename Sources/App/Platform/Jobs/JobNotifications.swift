import Foundation
import Logging
import NIOCore
import PostgresNIO
import Vapor

/// Wakes this instance's workers when another instance enqueues a job, its event hub when the sequencer numbers
/// events, and its sequencer (when it holds the lease) when another instance leaves events or audit entries
/// pending: PostgreSQL LISTEN/NOTIFY on a dedicated connection (never one from the pool). Writers owe
/// `steward_jobs` and `steward_ledger` and send them after their commit (`AfterCommit`); the
/// sequencer sends `steward_events, '<last seq>'` in each pass. A lost connection is re-established with back-off, and
/// each reconnect wakes the workers and the hub once to catch up on anything missed meanwhile.
final class JobNotificationListener: LifecycleHandler, @unchecked Sendable {
    static let channel = "steward_jobs"

    private let configuration: PostgresConnection.Configuration
    private let lock = NSLock()
    private var task: Task<Void, Never>?

    init(configuration: PostgresConnection.Configuration) {
        self.configuration = configuration
    }

    func start(_ app: Application) {
        lock.withLock {
            guard task == nil else { return }
            let configuration = self.configuration
            task = Task {
                var delay: Duration = .milliseconds(200)
                var logger = Logger(label: "steward.jobs.listen")
                logger.logLevel = app.logger.logLevel
                while !Task.isCancelled {
                    do {
                        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
                        defer { Task { try? await connection.close() } }
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask {
                                try await connection.listen(on: Self.channel) { notifications in
                                    app.jobSignal.notify()
                                    for try await _ in notifications { app.jobSignal.notify() }
                                }
                            }
                            group.addTask {
                                try await connection.listen(on: LedgerSequencer.channel) { notifications in
                                    app.ledgerSequencerLoop?.signal.notify()
                                    for try await _ in notifications { app.ledgerSequencerLoop?.signal.notify() }
                                }
                            }
                            group.addTask {
                                try await connection.listen(on: ActivityRecorder.eventChannel) { notifications in
                                    app.eventHubIfPresent?.poke()
                                    for try await notification in notifications {
                                        if let seq = Int64(notification.payload) {
                                            app.eventHubIfPresent?.expect(seq: seq)
                                        } else {
                                            app.eventHubIfPresent?.poke()
                                        }
                                    }
                                }
                            }
                            group.addTask {
                                try await connection.listen(on: RuntimeSettings.channel) { notifications in
                                    for try await _ in notifications {
                                        do { try await app.runtimeSettings.reload(from: app.db, logger: app.logger) } catch {
                                            app.logger.warning("Settings not re-read after a change: \(String(describing: error))")
                                        }
                                    }
                                }
                            }
                            delay = .milliseconds(200)
                            try await group.next()
                            group.cancelAll()
                        }
                    } catch {
                        if Task.isCancelled { return }
                        app.logger.warning("Job notifications interrupted; reconnecting: \(String(describing: error))")
                    }
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(10))
                }
            }
        }
    }

    func shutdownAsync(_ application: Application) async {
        let running = lock.withLock { () -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        await running?.value
    }
}

extension Application {
    private struct ListenerKey: StorageKey { typealias Value = JobNotificationListener }

    /// Set in `configure` on PostgreSQL; started with the workers.
    var jobNotificationListener: JobNotificationListener? {
        get { storage[ListenerKey.self] }
        set { storage[ListenerKey.self] = newValue }
    }
}
