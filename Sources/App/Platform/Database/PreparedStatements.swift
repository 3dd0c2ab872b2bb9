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

/// Statements prepared once per PostgreSQL connection: the caller lookup of every request (`rows`), the pool's list
/// and lookup reads (`namedRows`), and every fixed statement of a write transaction (`fixedRows`: an execution's
/// inserts, transitions, job claims and finishes, the ledger sequencer's pass). Unprepared, each one is parsed and planned again: measured, planning took 0.149 ms of
/// PostgreSQL's CPU per request against 0.039 ms to execute the caller lookup, and 1.0 ms per execution against
/// 1.8 ms over creating and running executions.
///
/// A pooler in transaction mode (PgBouncer before 1.21, or with `max_prepared_statements = 0`) hands each
/// transaction whichever server connection is free, so a statement prepared on one is missing on the next. The
/// first such failure ("prepared statement does not exist", or "already exists") turns prepared statements off for
/// the process, with a warning naming `STEWARD_DATABASE_PREPARED_STATEMENTS`. A read then runs unprepared and
/// nothing fails; a write transaction, which the failure aborted, fails with `WriteConflict` (nothing of it was
/// written), so a request runs again, unprepared, and a job's attempt is retried.
final class PreparedStatements: Sendable {
    private let enabled: NIOLockedValueBox<Bool>
    /// The names of the run-time texts prepared so far (at most `PreparedStatementNames.limit`).
    private let names = PreparedStatementNames()

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
            turnOff(after: error, logger: logger)
            return nil
        } catch let error as PSQLError where PreparedStatementNames.retires(sqlState: error.serverInfo?[.sqlState]) {
            // Prepared while the schema was behind (before `steward migrate`): PostgresNIO fails the name on this
            // connection for good, so this read, and later ones there, run unprepared.
            return nil
        }
    }

    /// A fixed statement's rows (`FixedStatement.postgres`, or several combined) inside a write transaction on
    /// `connection`, prepared there on first use; nil when prepared statements are off, or when the process has
    /// prepared `PreparedStatementNames.limit` texts already (the caller then runs it unprepared).
    func fixedRows(_ sql: String, _ values: [any RowValue], on connection: PostgresConnection, observer: QueryObserver,
                   logger: Logger) async throws -> [any SQLRow]? {
        guard isEnabled else { return nil }
        var bindings = PostgresBindings(capacity: values.count)
        var types: [PostgresDataType] = []
        types.reserveCapacity(values.count)
        for value in values {
            types.append(Self.dataType(type(of: value).boundKind))
            switch value.bound {
            case .text(let text): bindings.append(text)
            case .integer(let integer): bindings.append(integer)
            case .float(let float): bindings.append(float)
            case .bool(let bool): bindings.append(bool)
            case .date(let date): bindings.append(date)
            case .uuid(let uuid): bindings.append(uuid)
            case .null: bindings.appendNull()
            }
        }
        guard let text = names.admit(PostgresNamedStatement.Text(sql: sql, types: types)) else { return nil }
        let started = ContinuousClock.now
        defer { observer.finished(InstrumentedDatabase.redacted(sql), started: started, logger: logger) }
        do {
            return PostgresListRow.rows(try await PostgresNamedStatement.rows(text, bindings, on: connection, logger: logger))
        } catch let error as PSQLError where Self.poolerRefusal(error) {
            turnOff(after: error, logger: logger)
            // The refusal aborted the transaction: nothing of it stands, and a request is run again (unprepared).
            throw WriteConflict(sqlState: error.serverInfo?[.sqlState] ?? "26000")
        } catch let error as PSQLError where PreparedStatementNames.retires(sqlState: error.serverInfo?[.sqlState]) {
            // The transaction fails as it would have unprepared; the name, which its connection may now refuse
            // for good, is not used again.
            names.retire(text)
            throw error
        }
    }

    /// A list's or a `quickRead`'s rows on the pool, as a statement prepared once per connection under a name made
    /// from its text (`PostgresNamedStatement`); nil where that does not apply (prepared statements off, a bind of
    /// another type, too many texts, a refusal), and the caller runs it unprepared.
    func namedRows(_ statement: any SQLExpression, on sql: any SQLDatabase, postgres: any PostgresDatabase,
                   observer: QueryObserver) async throws -> [any SQLRow]? {
        guard isEnabled, let (named, bindings) = PostgresStatement.named(statement, on: sql), let text = names.admit(named) else { return nil }
        let logger = sql.logger
        let started = ContinuousClock.now
        defer { observer.finished(InstrumentedDatabase.redacted(text.sql), started: started, logger: logger) }
        do {
            return PostgresListRow.rows(try await Self.collect(on: postgres) { connection in
                try await PostgresNamedStatement.rows(text, bindings, on: connection, logger: logger)
            })
        } catch let error as PSQLError where Self.poolerRefusal(error) {
            turnOff(after: error, logger: logger)
            return nil
        } catch let error as PSQLError where PreparedStatementNames.retires(sqlState: error.serverInfo?[.sqlState]) {
            // A table missing or changed under the prepared statement (see `PreparedStatementNames`): this read runs
            // unprepared, and the next prepares under a new name.
            names.retire(text)
            return nil
        }
    }

    /// The parameter type a placeholder of `kind` is prepared with: the type PostgresNIO binds the value as.
    private static func dataType(_ kind: BoundKind) -> PostgresDataType {
        switch kind {
        case .text: .text
        case .integer: .int8
        case .float: .float8
        case .bool: .bool
        case .date: .timestamptz
        case .uuid: .uuid
        }
    }

    /// Turns prepared statements off for the process, with a warning the first time.
    private func turnOff(after error: PSQLError, logger: Logger) {
        let wasEnabled = enabled.withLockedValue { enabled in
            defer { enabled = false }
            return enabled
        }
        if wasEnabled {
            logger.warning("""
                PostgreSQL refused a prepared statement (\(error.serverInfo?[.message] ?? "")): DATABASE_URL seems to \
                go through a pooler in transaction mode that does not keep them. Statements run unprepared from now on; \
                set STEWARD_DATABASE_PREPARED_STATEMENTS=false to say so at start.
                """)
        }
    }

    /// Every row `rows` gives on a connection of `postgres`'s pool, raced against the connection's close
    /// (`PostgresTransaction.untilCutFuture`: one Task per read).
    static func collect<Rows: AsyncSequence>(on postgres: any PostgresDatabase,
                                             _ rows: @escaping @Sendable (PostgresConnection) async throws -> Rows) async throws -> [PostgresRow]
    where Rows.Element == PostgresRow {
        try await collect(on: postgres) { connection -> [PostgresRow] in
            var collected: [PostgresRow] = []
            for try await row in try await rows(connection) { collected.append(row) }
            return collected
        }
    }

    /// The rows `rows` reads on a connection of `postgres`'s pool, raced against the connection's close.
    static func collect(on postgres: any PostgresDatabase,
                        _ rows: @escaping @Sendable (PostgresConnection) async throws -> [PostgresRow]) async throws -> [PostgresRow] {
        try await postgres.withConnection { connection in
            PostgresTransaction.untilCutFuture(connection) { try await rows(connection) }
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
    /// `PreparedStatements.rows` on the driver's database, timed like every other statement; nil where it does not apply.
    func preparedRows<Read: FixedPostgresRead>(_ read: Read.Type, _ bindings: PostgresBindings) async throws -> [any SQLRow]? {
        guard let preparedStatements, !base.inTransaction else { return nil }
        return try await preparedStatements.rows(read, bindings, on: base, observer: observer)
    }
}

extension InstrumentedDatabase: DirectRowReading {
    /// A list's rows on PostgreSQL's pool, read as `PostgresListRow`s (prepared where `namedRows` applies) and timed
    /// like every other statement; nil on SQLite, inside a transaction, or for a bind of a type the fast path does not
    /// encode.
    func directRows(_ statement: any SQLExpression) async throws -> [any SQLRow]? {
        guard !base.inTransaction, deferred == nil, let postgres = base as? any PostgresDatabase else { return nil }
        if let preparedStatements,
           let rows = try await preparedStatements.namedRows(statement, on: base as! any SQLDatabase, postgres: postgres, observer: observer) {
            return rows
        }
        guard let query = PostgresStatement.query(statement, on: base as! any SQLDatabase) else { return nil }
        let logger = base.logger
        let started = ContinuousClock.now
        defer { observer.finished(Self.redacted(query.sql), started: started, logger: logger) }
        return PostgresListRow.rows(try await PreparedStatements.collect(on: postgres) { connection in
            try await connection.query(query, logger: logger)
        })
    }
}
