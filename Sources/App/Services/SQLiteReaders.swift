import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLiteKit

/// Read-only SQLite connections for the few small reads on every request's path (who the caller is), run
/// synchronously on the thread that asks, with prepared statements kept.
///
/// Through the driver, a read goes to a thread pool and its answer comes back to an event loop: two thread
/// switches, a statement prepared again each time, and the result copied into rows twice. For a primary-key read
/// of one row that overhead is most of the cost. Here the calling thread runs the statement itself, which takes
/// microseconds: WAL readers never wait for the writer, and a read that would wait (`SQLITE_BUSY`, only while
/// SQLite recovers or resets the log) is not waited for: `read` answers nil and the caller goes through the
/// driver, whose connections have the busy timeout.
///
/// Connections are taken from an idle list and put back after each read, opened on demand up to `limit`
/// (one per thread that reads at once); with all in use, `read` answers nil too. Every statement is reset after its
/// last row, so no read transaction stays open between reads to hold back checkpoints.
final class SQLiteReaders: Sendable {
    private struct State {
        var idle: [DirectSQLiteConnection] = []
        var open = 0
        var closed = false
    }

    private let path: String
    private let limit: Int
    private let observer: QueryObserver?
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    init(path: String, limit: Int, observer: QueryObserver?, logger: Logger) {
        self.path = path
        self.limit = limit
        self.observer = observer
        self.logger = logger
    }

    /// The rows of one read-only statement (`?` placeholders, SQLite's values), or nil when no connection was free
    /// or the database was busy: the caller then reads through the driver instead.
    func read(_ sql: String, _ binds: [SQLiteData]) throws -> [DirectSQLiteRow]? {
        guard let connection = try checkOut() else { return nil }
        var rows: [DirectSQLiteRow] = []
        let started = ContinuousClock.now
        do {
            try connection.execute(sql, binds) { rows.append($0 as! DirectSQLiteRow) }
        } catch let error as SQLiteDirectError where error.isBusy {
            checkIn(connection)
            return nil
        } catch {
            checkIn(connection)
            throw error
        }
        checkIn(connection)
        observer?.finished(InstrumentedDatabase.redacted(sql), started: started, logger: logger)
        return rows
    }

    private func checkOut() throws -> DirectSQLiteConnection? {
        enum Next { case use(DirectSQLiteConnection), open, none }
        let next: Next = state.withLockedValue { state in
            guard !state.closed else { return .none }
            if let connection = state.idle.popLast() { return .use(connection) }
            guard state.open < limit else { return .none }
            state.open += 1
            return .open
        }
        switch next {
        case .use(let connection): return connection
        case .none: return nil
        case .open:
            do {
                // No busy wait: a reader that would wait hands the read to the driver instead (see above).
                return try DirectSQLiteConnection(path: path, busyTimeoutMilliseconds: 0, readOnly: true)
            } catch {
                state.withLockedValue { $0.open -= 1 }
                throw error
            }
        }
    }

    private func checkIn(_ connection: DirectSQLiteConnection) {
        let keep = state.withLockedValue { state in
            if state.closed {
                state.open -= 1
                return false
            }
            state.idle.append(connection)
            return true
        }
        if !keep { connection.close() }
    }

    /// Closes the idle connections; one still in use is closed when it comes back. Reads answer nil afterwards.
    func close() {
        let idle = state.withLockedValue { state in
            state.closed = true
            defer { state.idle.removeAll() }
            state.open -= state.idle.count
            return state.idle
        }
        for connection in idle { connection.close() }
    }
}
