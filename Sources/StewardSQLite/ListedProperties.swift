import FluentKit
import FluentSQL
import NIOConcurrencyHelpers
import NIOPosix
import SQLiteKit
import SQLKit

/// A model that lists its stored properties by hand, so a row can be read into it without Fluent's reflection.
/// Fluent finds a model's properties with `Mirror` on every read of every row: measured on the skill list, that
/// was 37% of the server's CPU. A test checks each list against the model's keys, so a new field cannot be missed.
///
/// A model with a soft-delete timestamp must not conform: `listed()` does not add Fluent's "not deleted" filter.
package protocol ListedProperties: Model {
    var listedProperties: [any AnyDatabaseProperty] { get }
}

extension ListedProperties {
    /// What Fluent's `output(from:)` does: each property reads its column, and the model now exists.
    package func hydrate(from output: any DatabaseOutput) throws {
        for property in listedProperties { try property.output(from: output) }
    }

    /// A model read from a SQL row whose columns are the model's keys, after `prefix` (for a joined row whose
    /// columns were aliased).
    package static func read(from row: any SQLRow, prefix: String = "") throws -> Self {
        let model = Self()
        try model.hydrate(from: SQLRowOutput(row: row, prefix: prefix))
        return model
    }

    /// The select list of a read of this model, `"schema"."key", …` in the order of `listedProperties`: written
    /// once per model, where Fluent serialises each column with an alias on every query.
    package static var selectList: SQLRaw {
        let key = ObjectIdentifier(Self.self)
        if let cached = selectLists.withLockedValue({ $0[key] }) { return SQLRaw(cached) }
        let table = quoted(schemaOrAlias)
        let list = Self().listedProperties.flatMap(\.keys).map { "\(table).\(quoted($0.description))" }.joined(separator: ", ")
        selectLists.withLockedValue { $0[key] = list }
        return SQLRaw(list)
    }

    private static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

private let selectLists = NIOLockedValueBox<[ObjectIdentifier: String]>([:])

/// A value read straight from one row of a model's table, with no model in between: a list's response item. The
/// row holds every column of the model's property list, named by key. A list that answers with such values skips
/// building a model per row (a Fluent model is one object per property) only to copy it into its response.
package protocol RowReadable: Sendable {
    init(row: any SQLRow) throws
    /// Columns the item reads besides the model's, each an aliased expression over the model's row (a correlated
    /// subquery, say), selected in the same statement: none unless the item says so.
    static var extraColumns: [any SQLExpression] { get }
}

extension RowReadable {
    package static var extraColumns: [any SQLExpression] { [] }
}

extension SQLRow {
    /// The column's value, or nil when it is NULL.
    package func optional<T: Decodable>(_ column: String, as type: T.Type) throws -> T? {
        try decodeNil(column: column) ? nil : decode(column: column, as: T.self)
    }
}

extension QueryBuilder where Model: ListedProperties {
    /// The fast read of every list: what `all()` answers, without reflection. Fluent's `all()` walks the model's
    /// properties with `Mirror` to name the columns, to look for a soft-delete timestamp, and again for every row
    /// it hydrates; here the model names them (`ListedProperties`) and each row is read straight into its
    /// properties. It selects every listed column (any `field` chosen on the builder is ignored), and eager loads
    /// (`with`) are not run: a list that needs related rows reads them itself.
    ///
    /// With `readers` (SQLite, outside a transaction) the statement runs on a direct reader on the calling thread,
    /// like the caller lookup, instead of a hop to the driver's thread pool and back. Pass them only for a query
    /// that reads its rows through an index in its order and stops after a page (the list plan test asserts that
    /// for the lists), never for one that may scan: it would hold up the event loop for the whole scan. A query
    /// that may scan passes them with `offLoopOn`, a thread pool: the direct reader then runs it on one of the pool's
    /// threads, as the driver would, but with the statement kept prepared and the rows read without its decoding.
    package func listed(through readers: SQLiteReaders? = nil, offLoopOn pool: NIOThreadPool? = nil) async throws -> [Model] {
        try await selectedRows(through: readers, offLoopOn: pool, adding: []).map { try Model.read(from: $0) }
    }

    /// The same read, each row read into a `Row` instead of a model.
    package func listed<Row: RowReadable>(as: Row.Type, through readers: SQLiteReaders? = nil,
                                          offLoopOn pool: NIOThreadPool? = nil) async throws -> [Row] {
        try await selectedRows(through: readers, offLoopOn: pool, adding: Row.extraColumns).map { try Row(row: $0) }
    }

    /// The statement `listed(as:)` runs, for a read that wraps it in a larger one and reads the rows itself.
    package func listedStatement<Row: RowReadable>(as: Row.Type) -> any SQLExpression {
        statement(adding: Row.extraColumns)
    }

    private func statement(adding extra: [any SQLExpression]) -> any SQLExpression {
        var query = self.query
        query.fields = [.custom(Model.selectList)] + extra.map { .custom($0) }
        return SQLQueryConverter(delegate: SelectConverter()).convert(query)
    }

    private func selectedRows(through readers: SQLiteReaders?, offLoopOn pool: NIOThreadPool?,
                              adding extra: [any SQLExpression]) async throws -> [any SQLRow] {
        let sql = database as! any SQLDatabase
        let statement = statement(adding: extra)
        if let readers, !database.inTransaction, sql.dialect.name == "sqlite",
           let rows = try await readers.read(statement, of: sql, offLoopOn: pool) {
            return rows
        }
        return try await DirectRowReadingFallback.rows(statement, on: database)
    }
}

/// Converts a Fluent read to SQL. Only schema changes need the driver's data types, and a read has none.
private struct SelectConverter: SQLConverterDelegate {
    func customDataType(_ dataType: DatabaseSchema.DataType) -> (any SQLExpression)? { nil }
}

/// A database that can read a statement's rows itself, cheaper than through its driver's rows (the app's PostgreSQL
/// databases, with `StewardPostgres`'s rows); nil when it does not apply there, and the driver reads them.
package protocol DirectRowReading {
    func directRows(_ statement: any SQLExpression) async throws -> [any SQLRow]?
}

/// Where a read goes when no SQLite reader took it.
package enum DirectRowReadingFallback {
    /// `statement`'s rows on `db`: its own rows where it has them (`DirectRowReading`), else the driver's.
    package static func rows(_ statement: any SQLExpression, on db: any Database) async throws -> [any SQLRow] {
        if let direct = db as? any DirectRowReading, let rows = try await direct.directRows(statement) { return rows }
        let rows = NIOLockedValueBox<[any SQLRow]>([])
        try await (db as! any SQLDatabase).execute(sql: statement) { row in rows.withLockedValue { $0.append(row) } }
        return rows.withLockedValue { $0 }
    }
}
