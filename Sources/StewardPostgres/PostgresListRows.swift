import Foundation
import PostgresKit
import PostgresNIO
import SQLKit

/// A SQLKit statement as PostgresNIO's query, when every bind is of a type list reads carry (text, uuid, integers,
/// booleans, timestamps, doubles); nil otherwise, and the caller runs the statement through the driver instead.
/// The binds are encoded as PostgresKit encodes them: by their own `PostgresEncodable` conformance.
package enum PostgresStatement {
    package static func query(_ statement: any SQLExpression, on sql: any SQLDatabase) -> PostgresQuery? {
        let serialized = sql.serialize(statement)
        var bindings = PostgresBindings(capacity: serialized.binds.count)
        for bind in serialized.binds {
            switch bind {
            case let value as String: bindings.append(value)
            case let value as UUID: bindings.append(value)
            case let value as Date: bindings.append(value)
            case let value as Int: bindings.append(value)
            case let value as Int64: bindings.append(value)
            case let value as Int32: bindings.append(value)
            case let value as Bool: bindings.append(value)
            case let value as Double: bindings.append(value)
            default: return nil
            }
        }
        return PostgresQuery(unsafeSQL: serialized.sql, binds: bindings)
    }
}

/// A row of a list read on PostgreSQL, its cells read by their own `PostgresDecodable` conformance.
///
/// PostgresKit's rows read every cell through a `Codable` translation that first builds a coding key by string
/// interpolation, a coding path and a user-info dictionary, then casts the wanted type to `PostgresDecodable` at
/// run time: 11% of the CPU of a list of 20 executions (about 440 cells). The types rows hold are read here
/// directly, and only from the column types whose reading is plain; any other pair (Fluent's enums in
/// user-defined types, numerics, types of the app's own) goes through PostgresKit's row as before, so what a
/// cell reads as never changes.
package struct PostgresListRow: SQLRow {
    private let row: PostgresRow
    private let cells: PostgresRandomAccessRow

    package init(_ row: PostgresRow) {
        self.row = row
        cells = row.makeRandomAccess()
    }

    package var allColumns: [String] { cells.map(\.columnName) }

    package func contains(column: String) -> Bool { cells.contains(column) }

    package func decodeNil(column: String) throws -> Bool {
        !cells.contains(column) || cells[column].bytes == nil
    }

    package func decode<D: Decodable>(column: String, as type: D.Type) throws -> D {
        guard cells.contains(column) else { return try row.sql().decode(column: column, as: D.self) }
        let cell = cells[column]
        if let value = try Self.plain(cell, as: D.self) { return value }
        return try row.sql().decode(column: column, as: D.self)
    }

    /// The cell read as `D` when `D` and the column's type are a plain pair; nil when they are not.
    private static func plain<D: Decodable>(_ cell: PostgresCell, as _: D.Type) throws -> D? {
        switch cell.dataType {
        case .text, .varchar, .name, .bpchar: try read(cell, as: String.self, into: D.self)
        case .uuid: try read(cell, as: UUID.self, into: D.self)
        case .timestamptz, .timestamp: try read(cell, as: Date.self, into: D.self)
        case .int2, .int4, .int8: try read(cell, as: Int.self, into: D.self) ?? read(cell, as: Int64.self, into: D.self)
        case .bool: try read(cell, as: Bool.self, into: D.self)
        case .float4, .float8: try read(cell, as: Double.self, into: D.self)
        default: nil
        }
    }

    /// The cell read as `T` (or `T?`) when `D` is that type; nil when it is neither.
    private static func read<T: PostgresDecodable, D>(_ cell: PostgresCell, as _: T.Type, into _: D.Type) throws -> D?
    where T._DecodableType == T {
        if D.self == T.self { return try cell.decode(T.self) as? D }
        if D.self == T?.self { return try cell.decode(T?.self) as? D }
        return nil
    }
}
