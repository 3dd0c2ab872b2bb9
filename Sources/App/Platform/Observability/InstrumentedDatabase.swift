import Fluent
import Foundation
import NIOCore
import PostgresNIO
import SQLKit
import StewardSQLite
import Vapor

/// What the instrumented database reports to: query durations and the slow-query threshold.
struct QueryObserver: Sendable {
    let metrics: AppMetrics
    /// nil: slow queries are not logged (`STEWARD_SLOW_QUERY_MS=0`).
    let slowThreshold: Duration?
    /// The SQLite pool's: told each statement, to check that the pool only reads.
    var poolWrites: PoolWriteGuard? = nil

    /// Records one statement; over the threshold, logs a warning with its duration and redacted SQL.
    func finished(_ describe: @autoclosure () -> String, started: ContinuousClock.Instant, logger: Logger) {
        let elapsed = ContinuousClock.now - started
        let slow = slowThreshold.map { elapsed >= $0 } ?? false
        metrics.recordQuery(elapsed, slow: slow)
        guard slow else { return }
        logger.warning("slow query", metadata: [
            "durationMs": .string(String(format: "%.1f", Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)),
            "sql": .string(describe()),
        ])
    }
}

extension InstrumentedDatabase: FixedStatementRunning {
    /// In a PostgreSQL write transaction (`PostgresTransaction`), a fixed statement runs prepared on the
    /// transaction's connection, after the deferred inserts; elsewhere, or with prepared statements off, nil.
    func runFixed(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> [any SQLRow]? {
        guard let transactionConnection, let preparedStatements else { return nil }
        try await flush()
        return try await preparedStatements.fixedRows(statement.postgres, values, on: transactionConnection, observer: observer, logger: logger)
    }
}

extension QueryObserver: SQLStatementObserver {
    /// A statement on one of the direct SQLite connections (the writer's, the readers').
    func statementFinished(_ sql: String, started: ContinuousClock.Instant, logger: Logger) {
        finished(InstrumentedDatabase.redacted(sql), started: started, logger: logger)
    }
}

/// Wraps the configured Fluent database so every statement, Fluent's and raw SQLKit's alike, is timed:
/// a duration histogram for `/metrics` and a warning for slow ones. It forwards everything else unchanged,
/// including transactions and pinned connections, whose databases are wrapped in turn.
struct InstrumentedDatabaseConfiguration: DatabaseConfiguration {
    var base: any DatabaseConfiguration
    let observer: QueryObserver
    /// PostgreSQL: statements prepared once per connection (nil on SQLite, whose writer and readers keep their own).
    var preparedStatements: PreparedStatements? = nil
    /// SQLite: the settings each pool connection gets before its first statement.
    var poolSetup: SQLitePoolSetup? = nil

    var middleware: [any AnyModelMiddleware] {
        get { base.middleware }
        set { base.middleware = newValue }
    }

    func makeDriver(for databases: Databases) -> any DatabaseDriver {
        InstrumentedDatabaseDriver(base: base.makeDriver(for: databases), observer: observer, preparedStatements: preparedStatements,
                                   poolSetup: poolSetup)
    }
}

struct InstrumentedDatabaseDriver: DatabaseDriver {
    let base: any DatabaseDriver
    let observer: QueryObserver
    let preparedStatements: PreparedStatements?
    let poolSetup: SQLitePoolSetup?

    func makeDatabase(with context: DatabaseContext) -> any Database {
        InstrumentedDatabase(base: base.makeDatabase(with: context), observer: observer, preparedStatements: preparedStatements,
                             poolSetup: poolSetup)
    }

    func shutdown() { base.shutdown() }
    func shutdownAsync() async { await base.shutdownAsync() }
}

struct InstrumentedDatabase: Database, SQLDatabase {
    let base: any Database
    let observer: QueryObserver
    var preparedStatements: PreparedStatements? = nil
    /// SQLite's pool (not a connection already pinned): a statement on a loop whose connection is not known to have
    /// the pool's settings first pins one and has it set up (`SQLitePoolSetup`).
    var poolSetup: SQLitePoolSetup? = nil
    /// A PostgreSQL write transaction's connection (`PostgresTransaction`): deferrable inserts wait here and go out
    /// as one statement before the next statement of any kind, the transaction's `COMMIT` included.
    var deferred: DeferredStatements? = nil
    /// That transaction's connection, where its fixed statements run prepared (`runFixed`).
    var transactionConnection: PostgresConnection? = nil

    private var sql: any SQLDatabase { base as! any SQLDatabase }

    /// Sends the deferred inserts, if any, as one statement: prepared where the transaction's fixed statements are.
    private func flush() async throws {
        guard let pending = deferred?.take() else { return }
        let (statement, values) = FixedStatement.combined(pending)
        if let transactionConnection, let preparedStatements,
           try await preparedStatements.fixedRows(statement.postgres, values, on: transactionConnection, observer: observer, logger: logger) != nil {
            return
        }
        try await TimedSQLDatabase(base: sql, observer: observer).execute(sql: statement.query(values)) { _ in }
    }

    /// `body` once the deferred inserts, if any, have gone out.
    private func flushed<T>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        guard let pending = deferred?.take() else { return body() }
        let (statement, values) = FixedStatement.combined(pending)
        return TimedSQLDatabase(base: sql, observer: observer).execute(sql: statement.query(values)) { _ in }.flatMap { body() }
    }

    /// Runs `body` on `base`, or, on SQLite's pool, on one connection of it that has the pool's settings.
    private func onPrepared<T: Sendable>(_ body: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        guard let poolSetup, !poolSetup.isReady(on: base.eventLoop) else { return body(base) }
        return base.withConnection { pinned in poolSetup.prepare(pinned).flatMap { body(pinned) } }
    }

    // MARK: Database

    var context: DatabaseContext { base.context }
    var inTransaction: Bool { base.inTransaction }

    func execute(query: DatabaseQuery, onOutput: @escaping @Sendable (any DatabaseOutput) -> ()) -> EventLoopFuture<Void> {
        let started = ContinuousClock.now
        let observer = observer, logger = base.logger
        observer.poolWrites?.check(query)
        return flushed { self.onPrepared { $0.execute(query: query, onOutput: onOutput) } }.always { _ in
            observer.finished(Self.describe(query), started: started, logger: logger)
        }
    }

    func execute(schema: DatabaseSchema) -> EventLoopFuture<Void> {
        let base = base
        return flushed { base.execute(schema: schema) }
    }

    func execute(enum: DatabaseEnum) -> EventLoopFuture<Void> {
        let base = base
        return flushed { base.execute(enum: `enum`) }
    }

    func transaction<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        let observer = observer, preparedStatements = preparedStatements, poolSetup = poolSetup, deferred = deferred, base = base
        let transactionConnection = transactionConnection
        return flushed {
            base.transaction { inner in
                Self.prepared(inner, poolSetup).flatMap {
                    closure(InstrumentedDatabase(base: inner, observer: observer, preparedStatements: preparedStatements, deferred: deferred,
                                                     transactionConnection: transactionConnection))
                }
            }
        }
    }

    func withConnection<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        let observer = observer, preparedStatements = preparedStatements, poolSetup = poolSetup, deferred = deferred, base = base
        let transactionConnection = transactionConnection
        return flushed {
            base.withConnection { inner in
                Self.prepared(inner, poolSetup).flatMap {
                    closure(InstrumentedDatabase(base: inner, observer: observer, preparedStatements: preparedStatements, deferred: deferred,
                                                     transactionConnection: transactionConnection))
                }
            }
        }
    }

    /// A connection just pinned from SQLite's pool, once it has the pool's settings.
    private static func prepared(_ pinned: any Database, _ poolSetup: SQLitePoolSetup?) -> EventLoopFuture<Void> {
        poolSetup?.prepare(pinned) ?? pinned.eventLoop.makeSucceededVoidFuture()
    }

    // MARK: SQLDatabase

    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { sql.version }
    var dialect: any SQLDialect { sql.dialect }
    var queryLogLevel: Logger.Level? { sql.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> ()) -> EventLoopFuture<Void> {
        let observer = observer
        return flushed { self.onPrepared { TimedSQLDatabase(base: $0 as! any SQLDatabase, observer: observer).execute(sql: query, onRow) } }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> ()) async throws {
        let observer = observer
        try await flush()
        guard let poolSetup, !poolSetup.isReady(on: base.eventLoop) else {
            return try await TimedSQLDatabase(base: sql, observer: observer).execute(sql: query, onRow)
        }
        try await base.withConnection { pinned in
            try await poolSetup.prepare(pinned).get()
            try await TimedSQLDatabase(base: pinned as! any SQLDatabase, observer: observer).execute(sql: query, onRow)
        }
    }

    func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        let observer = observer
        try await flush()
        guard let poolSetup else {
            return try await sql.withSession { inner in try await closure(TimedSQLDatabase(base: inner, observer: observer)) }
        }
        // SQLite's pool: the session is one connection, set up first.
        let result = SessionResult<R>()
        try await base.withConnection { pinned in
            try await poolSetup.prepare(pinned).get()
            result.value = try await closure(TimedSQLDatabase(base: pinned as! any SQLDatabase, observer: observer))
        }
        return result.value!
    }

    /// A Fluent query named by action and table: its SQL is built inside the driver, and its values stay out of logs.
    static func describe(_ query: DatabaseQuery) -> String {
        "fluent \(query.action) \(query.schema)"
    }

    /// SQL text with every literal replaced by `?`. Bound values never appear in it; literals written into the
    /// statement itself (numbers, quoted strings) might carry data, so they go too. Long statements are cut.
    static func redacted(_ sql: String) -> String {
        var output = ""
        output.reserveCapacity(min(sql.utf8.count, 1024))
        var inString = false
        var previous: Character = " "
        var index = sql.startIndex
        while index < sql.endIndex {
            let character = sql[index]
            if inString {
                if character == "'" {
                    let next = sql.index(after: index)
                    if next < sql.endIndex, sql[next] == "'" { index = sql.index(after: next); continue }
                    inString = false
                }
            } else if character == "'" {
                inString = true
                output.append("?")
            } else if character.isNumber, !(previous.isLetter || previous.isNumber || previous == "_" || previous == "$" || previous == "\"") {
                output.append("?")
                while index < sql.endIndex, sql[index].isNumber || sql[index] == "." { index = sql.index(after: index) }
                previous = "?"
                continue
            } else {
                output.append(character)
            }
            previous = character
            index = sql.index(after: index)
            if output.count >= 1000 { return output + "…" }
        }
        return output
    }
}

extension InstrumentedDatabase: StatementDeferring {
    func deferIfOpen(_ statement: FixedStatement, _ values: [any RowValue]) -> Bool {
        deferred?.add(statement, values) ?? false
    }
}

/// A session's answer, carried out of the pinned connection's closure (the answer need not be Sendable).
private final class SessionResult<R>: @unchecked Sendable {
    var value: R?
}

/// A SQLKit database whose statements are timed: the pool's, a transaction's or one session's connection.
private struct TimedSQLDatabase: SQLDatabase {
    let base: any SQLDatabase
    let observer: QueryObserver

    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { base.version }
    var dialect: any SQLDialect { base.dialect }
    var queryLogLevel: Logger.Level? { base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> ()) -> EventLoopFuture<Void> {
        let started = ContinuousClock.now
        let observer = observer, database = base
        observer.poolWrites?.check { database.serialize(query).sql }
        return base.execute(sql: query, onRow).always { _ in
            observer.finished(InstrumentedDatabase.redacted(database.serialize(query).sql), started: started, logger: database.logger)
        }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> ()) async throws {
        let started = ContinuousClock.now
        observer.poolWrites?.check { base.serialize(query).sql }
        defer { observer.finished(InstrumentedDatabase.redacted(base.serialize(query).sql), started: started, logger: base.logger) }
        try await base.execute(sql: query, onRow)
    }
}
