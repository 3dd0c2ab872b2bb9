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

    private static let textTypes: Set<PostgresDataType> = [.text, .varchar, .name, .bpchar]
    private static let integerTypes: Set<PostgresDataType> = [.int2, .int4, .int8]

    /// The cell read as `D` when `D` and the column's type are a plain pair; nil when they are not.
    private static func plain<D: Decodable>(_ cell: PostgresCell, as _: D.Type) throws -> D? {
        let type = cell.dataType
        if D.self == String.self || D.self == String?.self {
            guard textTypes.contains(type) else { return nil }
            return try (D.self == String.self ? cell.decode(String.self) as? D : cell.decode(String?.self) as? D)
        }
        if D.self == UUID.self || D.self == UUID?.self {
            guard type == .uuid else { return nil }
            return try (D.self == UUID.self ? cell.decode(UUID.self) as? D : cell.decode(UUID?.self) as? D)
        }
        if D.self == Date.self || D.self == Date?.self {
            guard type == .timestamptz || type == .timestamp else { return nil }
            return try (D.self == Date.self ? cell.decode(Date.self) as? D : cell.decode(Date?.self) as? D)
        }
        if D.self == Int.self || D.self == Int?.self {
            guard integerTypes.contains(type) else { return nil }
            return try (D.self == Int.self ? cell.decode(Int.self) as? D : cell.decode(Int?.self) as? D)
        }
        if D.self == Int64.self || D.self == Int64?.self {
            guard integerTypes.contains(type) else { return nil }
            return try (D.self == Int64.self ? cell.decode(Int64.self) as? D : cell.decode(Int64?.self) as? D)
        }
        if D.self == Bool.self || D.self == Bool?.self {
            guard type == .bool else { return nil }
            return try (D.self == Bool.self ? cell.decode(Bool.self) as? D : cell.decode(Bool?.self) as? D)
        }
        if D.self == Double.self || D.self == Double?.self {
            guard type == .float8 || type == .float4 else { return nil }
            return try (D.self == Double.self ? cell.decode(Double.self) as? D : cell.decode(Double?.self) as? D)
        }
        return nil
    }
}
