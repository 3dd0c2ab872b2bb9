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
/// databases hand each connection here before using it (`prepare`); a connection not seen before gets the
/// pragmas, then joins the list of those that have them.
///
/// The list holds the connections themselves, not their addresses, so a new connection cannot pass for one that
/// closed; closed ones are dropped whenever a new one joins. Checking a known one costs one lock.
package final class SQLitePoolSetup: Sendable {
    private let pragmas: [String]
    private let logger: Logger
    private let prepared = NIOLockedValueBox<[SQLiteConnection]>([])

    package init(synchronous: String, busyTimeoutMilliseconds: Int, logger: Logger) {
        pragmas = [
            "PRAGMA synchronous = \(synchronous)",
            "PRAGMA busy_timeout = \(busyTimeoutMilliseconds)",
            "PRAGMA foreign_keys = ON",
        ]
        self.logger = logger
    }

    /// Makes sure the connection `database` is pinned to has the settings. `database` must be bound to one
    /// connection (inside `withConnection` or a transaction); anything that is not SQLite's passes unchanged.
    package func prepare(_ database: any Database) -> EventLoopFuture<Void> {
        guard let sqlite = database as? any SQLiteDatabase else { return database.eventLoop.makeSucceededVoidFuture() }
        return sqlite.withConnection { connection in self.prepare(connection) }
    }

    private func prepare(_ connection: SQLiteConnection) -> EventLoopFuture<Void> {
        if prepared.withLockedValue({ $0.contains { $0 === connection } }) { return connection.eventLoop.makeSucceededVoidFuture() }
        var done = connection.eventLoop.makeSucceededVoidFuture()
        for pragma in pragmas {
            done = done.flatMap { connection.query(pragma).map { _ in } }
        }
        return done.map {
            self.prepared.withLockedValue { list in
                list.removeAll { $0.isClosed }
                list.append(connection)
            }
            self.logger.debug("SQLite pool connection set up", metadata: ["pragmas": .string(self.pragmas.joined(separator: "; "))])
        }
    }

    /// How many open connections have the settings (for tests).
    package var preparedCount: Int { prepared.withLockedValue { $0.filter { !$0.isClosed }.count } }
}
