import Fluent
import NIOConcurrencyHelpers
import NIOCore
import PostgresKit
import PostgresNIO
import SQLKit
import StewardPostgres
import StewardSQLite

/// A read whose SQL text never changes, with its PostgreSQL placeholders (`$1` …): the text a connection prepares
/// once and then only binds and executes. Its result columns are named, never `*`, so a migration that adds a
/// column does not change the prepared statement's result type under a running server.
protocol FixedPostgresRead: SendableMetatype {
    /// Unique per text, within Steward's prepared statements.
    static var name: String { get }
    static var sql: String { get }
}

/// Reads on the hot path (the caller lookup of every request) as statements prepared once per PostgreSQL
/// connection. Unprepared, each one is parsed and planned again: measured, planning took 0.149 ms of PostgreSQL's
/// CPU per request against 0.039 ms to execute.
///
/// A pooler in transaction mode (PgBouncer before 1.21, or with `max_prepared_statements = 0`) hands each
/// transaction whichever server connection is free, so a statement prepared on one is missing on the next. The
/// first such failure ("prepared statement does not exist", or "already exists") turns the fast path off for the
/// process, with a warning naming `STEWARD_DATABASE_PREPARED_STATEMENTS`, and the read runs unprepared; nothing fails.
final class PreparedReads: Sendable {
    private let enabled: NIOLockedValueBox<Bool>

    init(enabled: Bool) {
        self.enabled = NIOLockedValueBox(enabled)
    }

    var isEnabled: Bool { enabled.withLockedValue { $0 } }

    /// The rows of `Read` bound to `bindings`, or nil when the fast path does not apply here (not PostgreSQL, turned
    /// off, or the server refused the prepared statement): the caller then runs the statement as usual.
    ///
    /// Never inside a transaction: behind a pooler the refusal would abort it. `db` is the pool's database or a
    /// connection pinned from it outside any `BEGIN` (Fluent marks both kinds of pinned database `inTransaction`,
    /// so `InstrumentedDatabase.preparedRows` only takes the pool's).
    func rows<Read: FixedPostgresRead>(_: Read.Type, _ bindings: PostgresBindings, on db: any Database,
                                       observer: QueryObserver) async throws -> [any SQLRow]? {
        guard isEnabled, let postgres = db as? any PostgresDatabase else { return nil }
        let statement = Statement<Read>(bindings: bindings)
        let logger = db.logger
        let started = ContinuousClock.now
        defer { observer.finished("prepared \(Read.name)", started: started, logger: logger) }
        do {
            return PostgresListRow.rows(try await Self.collect(on: postgres) { connection in
                try await connection.execute(statement, logger: logger)
            })
        } catch let error as PSQLError where Self.poolerRefusal(error) {
            let wasEnabled = enabled.withLockedValue { enabled in
                defer { enabled = false }
                return enabled
            }
            if wasEnabled {
                logger.warning("""
                    PostgreSQL refused a prepared statement (\(error.serverInfo?[.message] ?? "")): DATABASE_URL seems to \
                    go through a pooler in transaction mode that does not keep them. Reads run unprepared from now on; \
                    set STEWARD_DATABASE_PREPARED_STATEMENTS=false to say so at start.
                    """)
            }
            return nil
        }
    }

    /// Every row `rows` gives on a connection of `postgres`'s pool, raced against the connection's close
    /// (`PostgresTransaction.untilCut`).
    static func collect<Rows: AsyncSequence>(on postgres: any PostgresDatabase,
                                             _ rows: @escaping @Sendable (PostgresConnection) async throws -> Rows) async throws -> [PostgresRow]
    where Rows.Element == PostgresRow {
        try await postgres.withConnection { connection in
            connection.eventLoop.makeFutureWithTask {
                try await PostgresTransaction.untilCut(connection) {
                    var collected: [PostgresRow] = []
                    for try await row in try await rows(connection) { collected.append(row) }
                    return collected
                }
            }
        }.get()
    }

    /// 26000 (`invalid_sql_statement_name`): prepared on another server connection; 42P05
    /// (`duplicate_prepared_statement`): this server connection already has it from another client connection.
    private static func poolerRefusal(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "26000" || state == "42P05"
    }

    private struct Statement<Read: FixedPostgresRead>: PostgresPreparedStatement {
        typealias Row = PostgresRow
        static var name: String { "steward_" + Read.name }
        static var sql: String { Read.sql }

        let bindings: PostgresBindings

        func makeBindings() -> PostgresBindings { bindings }
        func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
    }
}

extension InstrumentedDatabase {
    /// `PreparedReads.rows` on the driver's database, timed like every other statement; nil where it does not apply.
    func preparedRows<Read: FixedPostgresRead>(_ read: Read.Type, _ bindings: PostgresBindings) async throws -> [any SQLRow]? {
        guard let preparedReads, !base.inTransaction else { return nil }
        return try await preparedReads.rows(read, bindings, on: base, observer: observer)
    }
}

extension InstrumentedDatabase: DirectRowReading {
    /// A list's rows on PostgreSQL's pool, read as `PostgresListRow`s and timed like every other statement; nil on
    /// SQLite, inside a transaction, or for a bind of a type the fast path does not encode.
    func directRows(_ statement: any SQLExpression) async throws -> [any SQLRow]? {
        guard !base.inTransaction, deferred == nil, let postgres = base as? any PostgresDatabase,
              let query = PostgresStatement.query(statement, on: base as! any SQLDatabase) else { return nil }
        let logger = base.logger
        let started = ContinuousClock.now
        defer { observer.finished(Self.redacted(query.sql), started: started, logger: logger) }
        return PostgresListRow.rows(try await PreparedReads.collect(on: postgres) { connection in
            try await connection.query(query, logger: logger)
        })
    }
}
