import Foundation
import SQLiteKit
import SQLKit
import StewardFormats

/// A statement run on every execution (its inserts, transitions and job updates), its text made once: `?` where
/// each value goes. On the SQLite writer the text and the values go to SQLite as they are; in a PostgreSQL write
/// transaction the text with numbered placeholders (`postgres`) is prepared once per connection; elsewhere the text
/// is cut at the placeholders and bound through SQLKit. SQLKit's builders and its serializer took longer
/// than SQLite took to run these statements (6.6% of the server's CPU while creating and running executions for
/// the inserts alone). The text must hold no `?` other than its placeholders.
package struct FixedStatement: Sendable {
    /// The statement as SQLite takes it.
    package let sqlite: String
    /// The statement with PostgreSQL's numbered placeholders (`$1` …).
    package let postgres: String
    /// The text around the placeholders: one more piece than there are values.
    private let pieces: [String]
    /// A plain insert whose only possible failure fails its whole transaction: it may be sent later, together with
    /// others, where the database supports that (`StatementDeferring`).
    package let isDeferrable: Bool
    /// A deferrable insert's table.
    package let target: String?
    /// The table a deferrable insert reads (in a subquery): it is never sent together with an insert into that
    /// table, which the parts of one statement cannot see.
    package let reads: String?

    package init(_ text: String) {
        self.init(text, deferrable: false, target: nil, reads: nil)
    }

    /// A deferrable insert into `table` (see `isDeferrable`) that reads `reads`.
    package init(_ text: String, deferrableInto table: String, reading reads: String) {
        self.init(text, deferrable: true, target: table, reads: reads)
    }

    private init(_ text: String, deferrable: Bool, target: String?, reads: String?) {
        self.init(pieces: text.split(separator: "?", omittingEmptySubsequences: false).map(String.init),
                  deferrable: deferrable, target: target, reads: reads)
    }

    private init(pieces: [String], deferrable: Bool, target: String?, reads: String?) {
        self.pieces = pieces
        sqlite = pieces.joined(separator: "?")
        postgres = Self.numbered(pieces, from: 1)
        isDeferrable = deferrable
        self.target = target
        self.reads = reads
    }

    /// `INSERT INTO table (columns) VALUES (?, …)`. `deferrable` for a row with a fresh key, which no caller
    /// expects to fail on its own (see `isDeferrable`).
    package static func insert(into table: String, columns: [String], deferrable: Bool = false) -> FixedStatement {
        FixedStatement("INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES (\(repeatElement("?", count: columns.count).joined(separator: ", ")))",
                       deferrable: deferrable, target: deferrable ? table : nil, reads: nil)
    }

    /// Several statements as one, for PostgreSQL: each but the last a data-modifying `WITH` part, with their values
    /// in order. They all run on one snapshot, and constraints are checked at the end of the whole statement, so a
    /// row may refer to another inserted in the same one; none may read what another writes.
    package static func combined(_ statements: [(FixedStatement, [any RowValue])]) -> (statement: FixedStatement, values: [any RowValue]) {
        precondition(!statements.isEmpty)
        if statements.count == 1 { return statements[0] }
        let last = statements.count - 1
        var pieces = ["WITH "]
        var values: [any RowValue] = []
        values.reserveCapacity(statements.reduce(0) { $0 + $1.1.count })
        for (index, (statement, statementValues)) in statements.enumerated() {
            pieces[pieces.count - 1] += (index == last ? " " : index == 0 ? "s0 AS (" : ", s\(index) AS (") + statement.pieces[0]
            pieces += statement.pieces.dropFirst()
            if index != last { pieces[pieces.count - 1] += ")" }
            values += statementValues
        }
        return (FixedStatement(pieces: pieces, deferrable: false, target: nil, reads: nil), values)
    }

    /// The pieces joined by `$n`, `n` counting from `first`.
    private static func numbered(_ pieces: [String], from first: Int) -> String {
        var text = pieces[0]
        for (offset, piece) in pieces.dropFirst().enumerated() {
            text += "$\(first + offset)"
            text += piece
        }
        return text
    }

    package var placeholders: Int { pieces.count - 1 }

    /// The statement for SQLKit, each value bound in its place.
    package func query(_ values: [any RowValue]) -> SQLQueryString {
        var query = SQLQueryString("")
        append(values, to: &query)
        return query
    }

    private func append(_ values: [any RowValue], to query: inout SQLQueryString) {
        query.appendInterpolation(unsafeRaw: pieces[0])
        for (value, piece) in zip(values, pieces.dropFirst()) {
            query.appendInterpolation(bind: value)
            query.appendInterpolation(unsafeRaw: piece)
        }
    }
}

/// A value a `FixedStatement` binds. On the SQLite writer it becomes a SQLite value through this protocol, as the
/// driver's encoder would make it (`SQLiteDataConvertible`: text, integer, float, null), without the encoder's
/// dynamic cast to that protocol and its one-off `Encoder` for an optional, which together cost more than the rest
/// of the statement's preparation. On PostgreSQL it is bound as its `bound` value, a parameter of its type's
/// `boundKind` (the same for a value and for nil, so one prepared statement serves both), or, where statements are
/// not prepared, as the `Encodable` it is.
package protocol RowValue: Encodable, Sendable {
    var sqliteValue: SQLiteData { get }
    /// The parameter type a placeholder holding this type's values is declared with.
    static var boundKind: BoundKind { get }
    var bound: BoundValue { get }
}

/// What a placeholder holds, for a database whose parameters have types (PostgreSQL: text, int8, float8, bool,
/// timestamptz, uuid).
package enum BoundKind: UInt8, Sendable {
    case text, integer, float, bool, date, uuid
}

/// A `RowValue` as a database with typed parameters binds it.
package enum BoundValue: Sendable, Equatable {
    case text(String), integer(Int), float(Double), bool(Bool), date(Date), uuid(UUID), null
}

extension String: RowValue {
    package var sqliteValue: SQLiteData { .text(self) }
    package static var boundKind: BoundKind { .text }
    package var bound: BoundValue { .text(self) }
}

extension Int: RowValue {
    package var sqliteValue: SQLiteData { .integer(self) }
    package static var boundKind: BoundKind { .integer }
    package var bound: BoundValue { .integer(self) }
}

extension Int64: RowValue {
    package var sqliteValue: SQLiteData { .integer(Int(self)) }
    package static var boundKind: BoundKind { .integer }
    package var bound: BoundValue { .integer(Int(self)) }
}

extension Double: RowValue {
    package var sqliteValue: SQLiteData { .float(self) }
    package static var boundKind: BoundKind { .float }
    package var bound: BoundValue { .float(self) }
}

extension Bool: RowValue {
    package var sqliteValue: SQLiteData { .integer(self ? 1 : 0) }
    package static var boundKind: BoundKind { .bool }
    package var bound: BoundValue { .bool(self) }
}

extension Date: RowValue {
    package var sqliteValue: SQLiteData { .float(timeIntervalSince1970) }
    package static var boundKind: BoundKind { .date }
    package var bound: BoundValue { .date(self) }
}

extension UUID: RowValue {
    /// The same upper-case text as `sqliteData` (`UUIDSupport.swift`).
    package var sqliteValue: SQLiteData { .text(uppercasedString) }
    package static var boundKind: BoundKind { .uuid }
    package var bound: BoundValue { .uuid(self) }
}

extension Optional: RowValue where Wrapped: RowValue {
    package var sqliteValue: SQLiteData { self?.sqliteValue ?? .null }
    package static var boundKind: BoundKind { Wrapped.boundKind }
    package var bound: BoundValue { self?.bound ?? .null }
}

extension SQLDatabase {
    /// Runs the statement, a value per placeholder; its rows (if it returns any) are dropped.
    package func run(_ statement: FixedStatement, _ values: [any RowValue]) async throws {
        precondition(statement.placeholders == values.count, "one value per placeholder")
        if let direct = self as? any DirectSQLiteStatements {
            _ = try await direct.run(sqlite: statement.sqlite, values.map(\.sqliteValue), collect: false)
            return
        }
        if statement.isDeferrable, let deferring = self as? any StatementDeferring, deferring.deferIfOpen(statement, values) { return }
        if let running = self as? any FixedStatementRunning, try await running.runFixed(statement, values) != nil { return }
        try await raw(statement.query(values)).run()
    }

    /// Runs the statement and returns its rows.
    package func all(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> [any SQLRow] {
        precondition(statement.placeholders == values.count, "one value per placeholder")
        if let direct = self as? any DirectSQLiteStatements {
            return try await direct.run(sqlite: statement.sqlite, values.map(\.sqliteValue), collect: true)
        }
        if let running = self as? any FixedStatementRunning, let rows = try await running.runFixed(statement, values) {
            return rows
        }
        return try await raw(statement.query(values)).all()
    }

    /// Runs the statement and returns its first row, if any.
    package func first(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> (any SQLRow)? {
        try await all(statement, values).first
    }
}

/// A database that may hold deferrable statements (`FixedStatement.isDeferrable`) and send them later, together
/// (`FixedStatement.combined`), before its next statement of any kind: a PostgreSQL write transaction, where each
/// statement is a round trip.
package protocol StatementDeferring {
    /// Takes the statement to send later, or returns false to have it run now.
    func deferIfOpen(_ statement: FixedStatement, _ values: [any RowValue]) -> Bool
}

/// A database that runs fixed statements itself, their values bound as they are (`RowValue.bound`): PostgreSQL's
/// write transactions, which prepare each text once per connection.
package protocol FixedStatementRunning {
    /// Runs the statement and returns its rows (none for a statement that returns none), or nil when this database
    /// does not run it here, and the caller sends it through SQLKit as usual.
    func runFixed(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> [any SQLRow]?
}

/// A database that runs SQLite statement text (with `?` placeholders) as it is: the SQLite writer's.
package protocol DirectSQLiteStatements {
    /// Runs the statement; its rows when `collect` is set, none otherwise.
    func run(sqlite sql: String, _ values: [SQLiteData], collect: Bool) async throws -> [any SQLRow]
}
