import FluentKit
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import SQLiteKit
import SQLKit

/// Read-only SQLite connections for the small reads on a request's path (who the caller is, the skill to run, how
/// many runs the caller has going, one page of a list), run synchronously on the thread that asks, with prepared
/// statements kept. Only reads of a row or a count by key or index, or a page read through an index in its order
/// (`listed(through:)`), belong here: anything that could take longer would hold up an event loop.
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
///
/// SQLite can still make a reader retry, with short sleeps, while the writer resets the log at that very moment.
/// Running these reads on a thread of their own instead was measured: it cost a third of `/me`'s throughput, and
/// the start-latency tails seen under load come from the writer's commits, not from these reads.
package final class SQLiteReaders: Sendable {
    private struct State {
        var idle: [DirectSQLiteConnection] = []
        var open = 0
        var closed = false
    }

    private let path: String
    private let limit: Int
    private let observer: (any SQLStatementObserver)?
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    /// `limit` 0 sends every read to the driver.
    package init(path: String, limit: Int, observer: (any SQLStatementObserver)?, logger: Logger) {
        self.path = path
        self.limit = limit
        self.observer = observer
        self.logger = logger
    }

    /// The rows of one read-only statement (`?` placeholders, SQLite's values), or nil when no connection was free
    /// or the database was busy: the caller then reads through the driver instead.
    package func read(_ sql: String, _ binds: [SQLiteData]) throws -> [DirectSQLiteRow]? {
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
        observer?.statementFinished(sql, started: started, logger: logger)
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
    package func close() {
        let idle = state.withLockedValue { state in
            state.closed = true
            defer { state.idle.removeAll() }
            state.open -= state.idle.count
            return state.idle
        }
        for connection in idle { connection.close() }
    }
}

extension SQLiteReaders {
    /// A short read on a request's path (a row or a count by key or index): on SQLite through a direct reader when
    /// one is free and `db` is not inside a transaction, otherwise through `db`. `template` is SQL with one `?` per
    /// value and no other `?`; values are bound, never written into the text.
    package static func quickRead(_ template: String, _ values: [any Encodable & Sendable], readers: SQLiteReaders?,
                          on db: any Database) async throws -> [any SQLRow] {
        if !db.inTransaction, let readers {
            let encoder = SQLiteDataEncoder()
            if let rows = try readers.read(template, try values.map { try encoder.encode($0) }) { return rows }
        }
        var query: SQLQueryString = ""
        for (index, part) in template.split(separator: "?", omittingEmptySubsequences: false).enumerated() {
            if index > 0 { query.appendInterpolation(bind: values[index - 1]) }
            query.appendInterpolation(unsafeRaw: String(part))
        }
        return try await DirectRowReadingFallback.rows(query, on: db)
    }
}

extension SQLiteReaders {
    /// A statement built with SQLKit, serialized for SQLite and run on a direct reader: on the calling thread, or on
    /// one of `pool`'s threads when given. Nil when no reader was free or the database was busy.
    package func read(_ statement: any SQLExpression, of sql: any SQLDatabase, offLoopOn pool: NIOThreadPool?) async throws -> [DirectSQLiteRow]? {
        var serializer = SQLSerializer(database: sql)
        statement.serialize(to: &serializer)
        let encoder = SQLiteDataEncoder()
        let text = serializer.sql, binds = try serializer.binds.map { try encoder.encode($0) }
        guard let pool else { return try read(text, binds) }
        return try await pool.runIfActive { try self.read(text, binds) }
    }

    /// A read whose cost grows with the data, such as a search that ranks every match before taking a page: on
    /// SQLite, outside a transaction, a direct reader runs it on a thread of `pool`, so the event loop never waits
    /// for it, while the statement stays prepared between reads and its rows are read without the driver's
    /// decoding. On PostgreSQL it goes through `db`'s own rows (`DirectRowReading`) where those apply; otherwise (a
    /// transaction, no free reader, a busy database) through `db`.
    package static func offLoopRead(_ query: SQLQueryString, readers: SQLiteReaders?, pool: NIOThreadPool,
                                    on db: any Database) async throws -> [any SQLRow] {
        let sql = db as! any SQLDatabase
        if let readers, !db.inTransaction, sql.dialect.name == "sqlite",
           let rows = try await readers.read(query, of: sql, offLoopOn: pool) {
            return rows
        }
        return try await DirectRowReadingFallback.rows(query, on: db)
    }
}

/// A SQL row as a Fluent model reads it: each field from the column of its name, after `prefix` (for a joined
/// row whose columns were aliased).
package struct SQLRowOutput: DatabaseOutput {
    package let row: any SQLRow
    package var prefix = ""

    package init(row: any SQLRow, prefix: String = "") {
        self.row = row
        self.prefix = prefix
    }

    package var description: String { "\(row)" }
    package func schema(_ schema: String) -> any DatabaseOutput { self }
    package func contains(_ key: FieldKey) -> Bool { row.contains(column: column(key)) }
    package func decodeNil(_ key: FieldKey) throws -> Bool { try row.decodeNil(column: column(key)) }
    package func decode<T: Decodable>(_ key: FieldKey, as type: T.Type) throws -> T { try row.decode(column: column(key), as: T.self) }

    private func column(_ key: FieldKey) -> String { prefix.isEmpty ? key.description : prefix + key.description }
}
