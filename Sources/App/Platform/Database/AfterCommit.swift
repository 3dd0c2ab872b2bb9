import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardFormats
import Vapor

/// What a PostgreSQL write transaction leaves for after its commit: the notifications it owes other instances, and
/// the runs it adds to skills' `execution_count`. Both would otherwise make every writer wait on the one before.
///
/// - A transaction that runs `NOTIFY` takes, at commit, a lock PostgreSQL holds for the whole database until the
///   commit is done (it keeps the notification queue in commit order): every notifying transaction in the cluster
///   would commit after the one before, flush included.
/// - Adding to a skill's `execution_count` locks the skill's row to the commit: every execution of one skill would
///   be created one commit after another (measured: 17.7 ms of lock wait per create at 32 concurrent creates).
///
/// So writers only note what they owe (`note`, `countRun`), and the door, after the commit, hands it to the
/// process's `AfterCommitSender`, which sends it from transactions of its own,
/// coalescing whatever is owed meanwhile: a burst of commits costs one `NOTIFY` per channel and one update per
/// skill, not one per commit.
///
/// A notification is a wake-up, never data: listeners read the tables, and one lost in a crash between the commit
/// and the send delays its listeners until their next poll. A run count lost that way (a kill -9 within
/// milliseconds of the commit) leaves `execution_count`, a popularity figure, short by that many runs.
enum AfterCommit {
    /// What the current write transaction owes; set by the door around a PostgreSQL transaction's body.
    @TaskLocal static var owed: Owed?

    final class Owed: Sendable {
        let channels = NIOLockedValueBox<Set<String>>([])
        let skillRuns = NIOLockedValueBox<[UUID: Int]>([:])
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

    /// Adds one run to the skill's `execution_count`: after the commit on PostgreSQL, in the transaction elsewhere
    /// (SQLite's single writer has no row lock to queue on).
    static func countRun(of skillID: UUID, on sql: any SQLDatabase) async throws {
        if let owed {
            owed.skillRuns.withLockedValue { $0[skillID, default: 0] += 1 }
        } else {
            try await sql.raw("UPDATE skills SET execution_count = execution_count + 1 WHERE id = \(bind: skillID)").run()
        }
    }
}

/// Sends what committed transactions owe (`AfterCommit.Owed`): one round at a time, the notifications in one
/// statement and one update per skill, coalescing whatever is owed while a round is in flight into the next.
/// On the way down it sends what is still owed before the databases close (`shutdownAsync`).
final class AfterCommitSender: LifecycleHandler, Sendable {
    /// How long shutdown waits for what is owed, at most.
    static let drainLimit: Duration = .seconds(10)

    private struct Pending {
        var channels: Set<String> = []
        var skillRuns: [UUID: Int] = [:]
        var isEmpty: Bool { channels.isEmpty && skillRuns.isEmpty }
    }

    private let state = NIOLockedValueBox<(pending: Pending, sending: Bool, closed: Bool)>((Pending(), false, false))

    func send(_ owed: AfterCommit.Owed, app: Application) {
        let owed = Pending(channels: owed.channels.withLockedValue { $0 }, skillRuns: owed.skillRuns.withLockedValue { $0 })
        guard !owed.isEmpty else { return }
        let start = state.withLockedValue { state -> Bool in
            // After the stop nothing may reach for the closed databases; what is owed then is lost as in a crash.
            if state.closed { return false }
            state.pending.channels.formUnion(owed.channels)
            state.pending.skillRuns.merge(owed.skillRuns, uniquingKeysWith: +)
            if state.sending { return false }
            state.sending = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                let round = state.withLockedValue { state -> Pending in
                    defer { state.pending = Pending() }
                    if state.pending.isEmpty || state.closed { state.sending = false; return Pending() }
                    return state.pending
                }
                if round.isEmpty { return }
                await Self.send(round, app: app)
            }
        }
    }

    /// Waits until every round owed so far is sent (or `drainLimit` has passed): a graceful stop loses no run count
    /// and no notification. Registered after the databases and before the loops that write, so it runs after they
    /// stopped and before the pools close.
    func shutdownAsync(_ application: Application) async {
        let deadline = ContinuousClock.now + Self.drainLimit
        while state.withLockedValue({ $0.sending }) {
            guard ContinuousClock.now < deadline else {
                application.logger.warning("Stopped with notifications or run counts still owed after \(Self.drainLimit)")
                break
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        state.withLockedValue { $0.closed = true }
    }

    private static func send(_ round: Pending, app: Application) async {
        let sql = app.db as! any SQLDatabase
        if !round.channels.isEmpty {
            let calls = SQLList(round.channels.sorted().map { SQLFunction("pg_notify", args: SQLBind($0), SQLLiteral.string("")) })
            do {
                try await sql.select().column(calls).run()
            } catch {
                app.logger.debug("Could not notify \(round.channels.sorted()): \(String(describing: error)); listeners catch up on their next poll")
            }
        }
        for (skillID, runs) in round.skillRuns {
            do {
                try await sql.raw("UPDATE skills SET execution_count = execution_count + \(bind: runs) WHERE id = \(bind: skillID)").run()
            } catch {
                app.logger.warning("Could not add \(runs) runs to skill \(skillID.lowercasedString)'s count: \(String(describing: error))")
            }
        }
    }
}

extension Application {
    private struct SenderKey: StorageKey { typealias Value = AfterCommitSender }

    /// Set in `configure` on PostgreSQL.
    var afterCommitSender: AfterCommitSender? {
        get { storage[SenderKey.self] }
        set { storage[SenderKey.self] = newValue }
    }
}
