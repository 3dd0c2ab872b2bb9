import Foundation
import PostgresKit
import PostgresNIO
import SQLKit
import StewardFormats

/// A SQLKit statement as PostgresNIO's query, when every bind is of a type list reads carry (text, uuid, integers,
/// booleans, timestamps, doubles); nil otherwise, and the caller runs the statement through the driver instead.
/// The binds are encoded as PostgresKit encodes them: by their own `PostgresEncodable` conformance.
package enum PostgresStatement {
    package static func query(_ statement: any SQLExpression, on sql: any SQLDatabase) -> PostgresQuery? {
        let serialized = sql.serialize(statement)
        guard let (bindings, _) = bind(serialized.binds) else { return nil }
        return PostgresQuery(unsafeSQL: serialized.sql, binds: bindings)
    }

    /// The statement as a named statement (`PostgresNamedStatement`), its parameters typed as `query` binds them;
    /// nil for the same binds as `query`.
    package static func named(_ statement: any SQLExpression, on sql: any SQLDatabase) -> (PostgresNamedStatement.Text, PostgresBindings)? {
        let serialized = sql.serialize(statement)
        guard let (bindings, types) = bind(serialized.binds) else { return nil }
        return (PostgresNamedStatement.Text(sql: serialized.sql, types: types), bindings)
    }

    private static func bind(_ binds: [any Encodable & Sendable]) -> (PostgresBindings, [PostgresDataType])? {
        var bindings = PostgresBindings(capacity: binds.count)
        var types: [PostgresDataType] = []
        types.reserveCapacity(binds.count)
        for bind in binds {
            switch bind {
            case let value as String: bindings.append(value); types.append(.text)
            case let value as UUID: bindings.append(value); types.append(.uuid)
            case let value as Date: bindings.append(value); types.append(.timestamptz)
            case let value as Int: bindings.append(value); types.append(.int8)
            case let value as Int64: bindings.append(value); types.append(.int8)
            case let value as Int32: bindings.append(value); types.append(.int4)
            case let value as Bool: bindings.append(value); types.append(.bool)
            case let value as Double: bindings.append(value); types.append(.float8)
            default: return nil
            }
        }
        return (bindings, types)
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
///
/// As in SQLite's direct rows, a column is found through the result's `ColumnPositions`, made once per result, and a
/// value is handed back as `D` by a bit cast once `D` is known to be its type: an `as? D` cast, or an optional of
/// a generic type, costs a runtime type lookup per cell (7% of a list's CPU when this row did so).
package struct PostgresListRow: SQLRow {
    private let row: PostgresRow
    private let cells: PostgresRandomAccessRow
    private let columns: ColumnPositions

    private init(_ row: PostgresRow, columns: ColumnPositions) {
        self.row = row
        cells = row.makeRandomAccess()
        self.columns = columns
    }

    /// A result's rows, sharing one column table.
    package static func rows(_ rows: [PostgresRow]) -> [PostgresListRow] {
        guard let first = rows.first else { return [] }
        let columns = ColumnPositions(first.map(\.columnName))
        return rows.map { PostgresListRow($0, columns: columns) }
    }

    package var allColumns: [String] { columns.names }

    package func contains(column: String) -> Bool { columns.position(of: column) != nil }

    package func decodeNil(column: String) throws -> Bool {
        guard let position = columns.position(of: column) else { return true }
        return cells[position].bytes == nil
    }

    package func decode<D: Decodable>(column: String, as type: D.Type) throws -> D {
        guard let position = columns.position(of: column) else { return try row.sql().decode(column: column, as: D.self) }
        columns.read(position)
        let cell = cells[position]
        switch cell.dataType {
        case .text, .varchar, .name, .bpchar:
            if D.self == String.self { return unsafeBitCast(try cell.decode(String.self), to: D.self) }
            if D.self == String?.self { return unsafeBitCast(try cell.decode(String?.self), to: D.self) }
        case .uuid:
            if D.self == UUID.self { return unsafeBitCast(try cell.decode(UUID.self), to: D.self) }
            if D.self == UUID?.self { return unsafeBitCast(try cell.decode(UUID?.self), to: D.self) }
        case .timestamptz, .timestamp:
            if D.self == Date.self { return unsafeBitCast(try cell.decode(Date.self), to: D.self) }
            if D.self == Date?.self { return unsafeBitCast(try cell.decode(Date?.self), to: D.self) }
        case .int2, .int4, .int8:
            if D.self == Int.self { return unsafeBitCast(try cell.decode(Int.self), to: D.self) }
            if D.self == Int64.self { return unsafeBitCast(try cell.decode(Int64.self), to: D.self) }
            if D.self == Int?.self { return unsafeBitCast(try cell.decode(Int?.self), to: D.self) }
            if D.self == Int64?.self { return unsafeBitCast(try cell.decode(Int64?.self), to: D.self) }
        case .bool:
            if D.self == Bool.self { return unsafeBitCast(try cell.decode(Bool.self), to: D.self) }
            if D.self == Bool?.self { return unsafeBitCast(try cell.decode(Bool?.self), to: D.self) }
        case .float4, .float8:
            if D.self == Double.self { return unsafeBitCast(try cell.decode(Double.self), to: D.self) }
            if D.self == Double?.self { return unsafeBitCast(try cell.decode(Double?.self), to: D.self) }
        default:
            break
        }
        return try row.sql().decode(column: column, as: D.self)
    }
}
