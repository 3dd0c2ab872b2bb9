import Foundation
import NIOConcurrencyHelpers
import SQLKit
import Vapor

/// PostgreSQL notifications a write transaction owes other instances, sent after it commits.
///
/// A transaction that runs `NOTIFY` takes, at commit, a lock PostgreSQL holds for the whole database until the
/// commit is done (it keeps the notification queue in commit order). Every notifying transaction in the cluster then
/// commits after the one before, flush included: the lock convoy the sequencer removed from `ledger_heads`, back
/// again. So writers only note the channels they owe (`note`), and the door, after the commit, hands them to the
/// process's sender, which sends them from a transaction of its own, coalescing whatever is owed meanwhile into the
/// next statement: a burst of commits costs one `NOTIFY` per channel, not one per commit.
///
/// A notification is a wake-up, never data: listeners read the tables. One lost in a crash between the commit and
/// the send delays its listeners until their next poll.
enum PostCommitNotifications {
    /// The channels the current write transaction owes; set by the door around a PostgreSQL transaction's body.
    @TaskLocal static var owed: Owed?

    final class Owed: Sendable {
        let channels = NIOLockedValueBox<Set<String>>([])
    }

    /// Notes that `channel` is owed when the current transaction commits. Outside the door (a transaction it did
    /// not open), sends `NOTIFY` in the transaction itself, so the notification still comes only with the commit.
    static func note(_ channel: String, on sql: any SQLDatabase) async throws {
        if let owed {
            owed.channels.withLockedValue { _ = $0.insert(channel) }
        } else {
            try await sql.raw("SELECT pg_notify(\(bind: channel), '')").run()
        }
    }
}

/// Sends owed notifications, one statement at a time, coalescing what is owed while one is in flight.
final class NotificationSender: Sendable {
    private let state = NIOLockedValueBox<(owed: Set<String>, sending: Bool)>(([], false))

    func send(_ channels: Set<String>, app: Application) {
        guard !channels.isEmpty else { return }
        let start = state.withLockedValue { state -> Bool in
            state.owed.formUnion(channels)
            if state.sending { return false }
            state.sending = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                let batch = state.withLockedValue { state -> Set<String> in
                    defer { state.owed = [] }
                    if state.owed.isEmpty { state.sending = false }
                    return state.owed
                }
                if batch.isEmpty { return }
                let calls = SQLList(batch.sorted().map { SQLFunction("pg_notify", args: SQLBind($0), SQLLiteral.string("")) })
                do {
                    try await (app.db as! any SQLDatabase).select().column(calls).run()
                } catch {
                    app.logger.debug("Could not notify \(batch.sorted()): \(String(describing: error)); listeners catch up on their next poll")
                }
            }
        }
    }
}

extension Application {
    private struct SenderKey: StorageKey { typealias Value = NotificationSender }

    /// Set in `configure` on PostgreSQL.
    var notificationSender: NotificationSender? {
        get { storage[SenderKey.self] }
        set { storage[SenderKey.self] = newValue }
    }
}
