import FluentKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SQLiteKit

/// The connection settings every connection of Fluent's SQLite pool must have before it runs a statement.
///
/// SQLite keeps `synchronous`, `busy_timeout` and `foreign_keys` per connection, and the driver gives no hook for a
/// connection it opens: it sets its own busy handler (which waits without limit) and `foreign_keys`, nothing else.
/// It opens one connection per event loop on first use, and a new one whenever one was closed. So the pool's
/// databases hand a pinned connection here before using it (`prepare`); one not seen before gets the pragmas and
/// becomes its loop's known connection.
///
/// Pinning a connection for every statement would cost a task per statement (the driver's pinning is async), so
/// the check before a statement is cheaper: the driver keeps at most one connection per event loop, so while the
/// connection prepared on a loop is open, a statement on that loop can only run on it (`isReady`). Only when it
/// has closed, or none was prepared there yet, is the next statement pinned to a connection and that connection
/// prepared. Should a loop ever show a second open connection (a driver that pools more), every statement is
/// pinned and checked from then on.
package final class SQLitePoolSetup: Sendable {
    private struct State {
        /// The prepared connection of each event loop.
        var byLoop: [ObjectIdentifier: SQLiteConnection] = [:]
        /// A loop had two open connections: check every statement's connection.
        var pinEveryStatement = false
    }

    private let pragmas: [String]
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    package init(synchronous: String, busyTimeoutMilliseconds: Int, logger: Logger) {
        pragmas = [
            "PRAGMA synchronous = \(synchronous)",
            "PRAGMA busy_timeout = \(busyTimeoutMilliseconds)",
            "PRAGMA foreign_keys = ON",
        ]
        self.logger = logger
    }

    /// Whether a statement on `eventLoop` may run without being pinned first: the loop's only connection has the
    /// settings.
    package func isReady(on eventLoop: any EventLoop) -> Bool {
        state.withLockedValue { state in
            guard !state.pinEveryStatement, let connection = state.byLoop[ObjectIdentifier(eventLoop)] else { return false }
            return !connection.isClosed
        }
    }

    /// Makes sure the connection `database` is pinned to has the settings. `database` must be bound to one
    /// connection (inside `withConnection` or a transaction); anything that is not SQLite's passes unchanged.
    package func prepare(_ database: any Database) -> EventLoopFuture<Void> {
        guard let sqlite = database as? any SQLiteDatabase else { return database.eventLoop.makeSucceededVoidFuture() }
        return sqlite.withConnection { connection in self.prepare(connection) }
    }

    private func prepare(_ connection: SQLiteConnection) -> EventLoopFuture<Void> {
        let loop = ObjectIdentifier(connection.eventLoop)
        if state.withLockedValue({ $0.byLoop[loop] === connection }) { return connection.eventLoop.makeSucceededVoidFuture() }
        var done = connection.eventLoop.makeSucceededVoidFuture()
        for pragma in pragmas {
            done = done.flatMap { connection.query(pragma).map { _ in } }
        }
        return done.map {
            let second = self.state.withLockedValue { state -> Bool in
                let second = state.byLoop[loop].map { !$0.isClosed } ?? false
                if second { state.pinEveryStatement = true }
                state.byLoop[loop] = connection
                return second
            }
            if second { self.logger.warning("SQLite pool has two connections on one event loop: every statement is now checked") }
            self.logger.debug("SQLite pool connection set up", metadata: ["pragmas": .string(self.pragmas.joined(separator: "; "))])
        }
    }
}
