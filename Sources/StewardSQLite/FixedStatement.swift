import Foundation
import SQLiteKit
import SQLKit
import StewardFormats

/// A statement run on every execution (its inserts, transitions and job updates), its text made once: `?` where
/// each value goes. On the SQLite writer the text and the values go to SQLite as they are; elsewhere (PostgreSQL)
/// the text is cut at the placeholders and bound through SQLKit. SQLKit's builders and its serializer took longer
/// than SQLite took to run these statements (6.6% of the server's CPU while creating and running executions for
/// the inserts alone). The text must hold no `?` other than its placeholders.
package struct FixedStatement: Sendable {
    /// The statement as SQLite takes it.
    package let sqlite: String
    /// The text around the placeholders: one more piece than there are values.
    private let pieces: [String]

    package init(_ text: String) {
        sqlite = text
        pieces = text.split(separator: "?", omittingEmptySubsequences: false).map(String.init)
    }

    /// `INSERT INTO table (columns) VALUES (?, …)`.
    package static func insert(into table: String, columns: [String]) -> FixedStatement {
        FixedStatement("INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES (\(repeatElement("?", count: columns.count).joined(separator: ", ")))")
    }

    package var placeholders: Int { pieces.count - 1 }

    /// The statement for SQLKit, each value bound in its place.
    fileprivate func query(_ values: [any RowValue]) -> SQLQueryString {
        var query = SQLQueryString(pieces[0])
        for (value, piece) in zip(values, pieces.dropFirst()) {
            query.appendInterpolation(bind: value)
            query.appendInterpolation(unsafeRaw: piece)
        }
        return query
    }
}

/// A value a `FixedStatement` binds. On the SQLite writer it becomes a SQLite value through this protocol, as the
/// driver's encoder would make it (`SQLiteDataConvertible`: text, integer, float, null), without the encoder's
/// dynamic cast to that protocol and its one-off `Encoder` for an optional, which together cost more than the rest
/// of the statement's preparation. Elsewhere (PostgreSQL) it is bound as the `Encodable` it is.
package protocol RowValue: Encodable, Sendable {
    var sqliteValue: SQLiteData { get }
}

extension String: RowValue {
    package var sqliteValue: SQLiteData { .text(self) }
}

extension Int: RowValue {
    package var sqliteValue: SQLiteData { .integer(self) }
}

extension Int64: RowValue {
    package var sqliteValue: SQLiteData { .integer(Int(self)) }
}

extension Double: RowValue {
    package var sqliteValue: SQLiteData { .float(self) }
}

extension Bool: RowValue {
    package var sqliteValue: SQLiteData { .integer(self ? 1 : 0) }
}

extension Date: RowValue {
    package var sqliteValue: SQLiteData { .float(timeIntervalSince1970) }
}

extension UUID: RowValue {
    /// The same upper-case text as `sqliteData` (`UUIDSupport.swift`).
    package var sqliteValue: SQLiteData { .text(uppercasedString) }
}

extension Optional: RowValue where Wrapped: RowValue {
    package var sqliteValue: SQLiteData { self?.sqliteValue ?? .null }
}

extension SQLDatabase {
    /// Runs the statement, a value per placeholder; its rows (if it returns any) are dropped.
    package func run(_ statement: FixedStatement, _ values: [any RowValue]) async throws {
        precondition(statement.placeholders == values.count, "one value per placeholder")
        if let direct = self as? any DirectSQLiteStatements {
            _ = try await direct.run(sqlite: statement.sqlite, values.map(\.sqliteValue), collect: false)
            return
        }
        try await raw(statement.query(values)).run()
    }

    /// Runs the statement and returns its rows.
    package func all(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> [any SQLRow] {
        precondition(statement.placeholders == values.count, "one value per placeholder")
        if let direct = self as? any DirectSQLiteStatements {
            return try await direct.run(sqlite: statement.sqlite, values.map(\.sqliteValue), collect: true)
        }
        return try await raw(statement.query(values)).all()
    }

    /// Runs the statement and returns its first row, if any.
    package func first(_ statement: FixedStatement, _ values: [any RowValue]) async throws -> (any SQLRow)? {
        try await all(statement, values).first
    }
}

/// A database that runs SQLite statement text (with `?` placeholders) as it is: the SQLite writer's.
package protocol DirectSQLiteStatements {
    /// Runs the statement; its rows when `collect` is set, none otherwise.
    func run(sqlite sql: String, _ values: [SQLiteData], collect: Bool) async throws -> [any SQLRow]
}
