import FluentKit
import Foundation
import NIOCore
import SQLiteKit
import SQLKit
// sqlite-nio's C target (the same SQLite library the driver links); it has no product of its own.
import VaporCSQLite
import StewardSQLiteConfig
import StewardFormats

/// A SQLite error from a connection of our own (the writer's, or a reader's), with SQLite's extended result code.
package struct SQLiteDirectError: Error, CustomStringConvertible, DatabaseError {
    package let code: Int32
    package let message: String

    package var primaryCode: Int32 { code & 0xff }
    package var description: String { "SQLite error \(code): \(message)" }

    /// The database stayed locked past the busy timeout.
    package var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }

    package var isSyntaxError: Bool { primaryCode == SQLITE_ERROR && message.contains("syntax error") }
    package var isConstraintFailure: Bool { primaryCode == SQLITE_CONSTRAINT }
    package var isConnectionClosed: Bool { primaryCode == SQLITE_MISUSE }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One sqlite3 handle and its prepared statements, called directly (no thread pool). Not thread-safe: one
/// thread at a time uses it (the writer's thread, or whoever holds a reader, see `SQLiteReaders`).
package final class DirectSQLiteConnection: @unchecked Sendable {
    private var handle: OpaquePointer?
    private var statements: [String: Prepared] = [:]
    /// Statements are cached by SQL text; past this many (SQL with literals written in), the cache starts again.
    private let cacheLimit = 256

    /// `readOnly`: opened read-only, and `query_only` too, so nothing can write through it.
    package init(path: String, busyTimeoutMilliseconds: Int, readOnly: Bool = false) throws {
        let access = readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE
        let flags = access | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_URI | SQLITE_OPEN_EXRESCODE
        let opened = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
        guard opened == SQLITE_OK else {
            close()
            throw SQLiteDirectError(code: opened, message: "cannot open \(path)")
        }
        sqlite_nio_sqlite3_busy_timeout(handle, Int32(clamping: busyTimeoutMilliseconds))
        // A kept statement keeps its plan whatever is bound to it. Without this, SQLite marks a statement for a new
        // plan when a bound LIMIT changes, or when an integer bound where a column is compared moves between 0-1 and
        // other values; FTS5's own segment lookup (`segid = ?`) does the latter on every search whose index has a
        // segment 1, so each search prepared that statement again, several times (18% of the search statement's
        // time over 1,000 skills). Every statement Steward keeps is written for one plan; the plan tests hold them.
        let stable = steward_sqlite_enable_qpsg(UnsafeMutableRawPointer(handle))
        guard stable == SQLITE_OK else {
            close()
            throw SQLiteDirectError(code: stable, message: "cannot enable the query planner stability guarantee on \(path)")
        }
        if readOnly { try execute("PRAGMA query_only = ON", []) { _ in } }
    }

    deinit { close() }

    /// True when no transaction is open: after SQLite rolled one back on its own (disk full, I/O error, out of
    /// memory), or before BEGIN.
    package var isAutocommit: Bool { handle.map { sqlite_nio_sqlite3_get_autocommit($0) != 0 } ?? true }

    package func close() {
        for prepared in statements.values { sqlite_nio_sqlite3_finalize(prepared.statement) }
        statements.removeAll()
        if let handle { sqlite_nio_sqlite3_close_v2(handle) }
        handle = nil
    }

    private func error(_ code: Int32) -> SQLiteDirectError {
        let message = sqlite_nio_sqlite3_errmsg(handle).map { String(cString: $0) } ?? "unknown error"
        return SQLiteDirectError(code: sqlite_nio_sqlite3_extended_errcode(handle) == 0 ? code : sqlite_nio_sqlite3_extended_errcode(handle), message: message)
    }

    /// A prepared statement, and its result columns once read. They are the same on every run unless a schema
    /// change made SQLite prepare the statement again, which its re-prepare counter tells.
    private final class Prepared {
        let statement: OpaquePointer
        var columns: ColumnPositions?
        var columnsPrepareCount: Int32 = -1
        init(_ statement: OpaquePointer) { self.statement = statement }
    }

    private func prepared(_ sql: String) throws -> Prepared {
        if let prepared = statements[sql] { return prepared }
        guard handle != nil else { throw SQLiteDirectError(code: SQLITE_MISUSE, message: "the connection is closed") }
        var statement: OpaquePointer?
        let result = sqlite_nio_sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard result == SQLITE_OK, let statement else { throw error(result) }
        if statements.count >= cacheLimit {
            for cached in statements.values { sqlite_nio_sqlite3_finalize(cached.statement) }
            statements.removeAll()
        }
        let prepared = Prepared(statement)
        statements[sql] = prepared
        return prepared
    }

    /// How often SQLite has prepared the kept statement for `sql` again since it was first prepared; nil when none
    /// is kept. Only a schema change should.
    package func timesPreparedAgain(_ sql: String) -> Int32? {
        statements[sql].map { sqlite_nio_sqlite3_stmt_status($0.statement, SQLITE_STMTSTATUS_REPREPARE, 0) }
    }

    /// Prepares (or reuses), binds, steps to the end and hands each row over.
    package func execute(_ sql: String, _ binds: [SQLiteData], _ onRow: (any SQLRow) -> Void) throws {
        let prepared = try prepared(sql)
        let statement = prepared.statement
        // Reset ends the statement's read transaction. Bindings are not cleared: every run binds every parameter
        // again (checked here), and clearing them would make SQLite re-prepare any statement whose plan looked at a
        // bound value, a join on it for one, on every run.
        defer { sqlite_nio_sqlite3_reset(statement) }
        guard binds.count == Int(sqlite_nio_sqlite3_bind_parameter_count(statement)) else {
            throw SQLiteDirectError(code: SQLITE_RANGE, message: "\(binds.count) values for \(sqlite_nio_sqlite3_bind_parameter_count(statement)) parameters")
        }
        for (offset, value) in binds.enumerated() {
            let index = Int32(offset + 1)
            let result: Int32 = switch value {
            case .integer(let number): sqlite_nio_sqlite3_bind_int64(statement, index, Int64(number))
            case .float(let number): sqlite_nio_sqlite3_bind_double(statement, index, number)
            case .text(let text): sqlite_nio_sqlite3_bind_text64(statement, index, text, UInt64(text.utf8.count), transient, UInt8(SQLITE_UTF8))
            case .blob(let buffer):
                buffer.withUnsafeReadableBytes {
                    sqlite_nio_sqlite3_bind_blob64(statement, index, $0.baseAddress, UInt64($0.count), transient)
                }
            case .null: sqlite_nio_sqlite3_bind_null(statement, index)
            }
            guard result == SQLITE_OK else { throw error(result) }
        }
        while true {
            let step = sqlite_nio_sqlite3_step(statement)
            if step == SQLITE_DONE { return }
            guard step == SQLITE_ROW else { throw error(step) }
            let names: ColumnPositions
            let prepareCount = sqlite_nio_sqlite3_stmt_status(statement, SQLITE_STMTSTATUS_REPREPARE, 0)
            if let columns = prepared.columns, prepared.columnsPrepareCount == prepareCount {
                names = columns
            } else {
                names = try Self.columns(of: statement)
                prepared.columns = names
                prepared.columnsPrepareCount = prepareCount
            }
            var values: [SQLiteData] = []
            values.reserveCapacity(names.names.count)
            for index in 0..<Int32(names.names.count) { values.append(try Self.value(of: statement, at: index)) }
            onRow(DirectSQLiteRow(columns: names, values: values))
        }
    }

    private static func columns(of statement: OpaquePointer) throws -> ColumnPositions {
        let count = sqlite_nio_sqlite3_column_count(statement)
        var names: [String] = []
        for index in 0..<count {
            guard let name = sqlite_nio_sqlite3_column_name(statement, index) else {
                throw SQLiteDirectError(code: SQLITE_ERROR, message: "column \(index) has no name")
            }
            names.append(String(cString: name))
        }
        return ColumnPositions(names)
    }

    private static func value(of statement: OpaquePointer, at index: Int32) throws -> SQLiteData {
        switch sqlite_nio_sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER: return .integer(Int(sqlite_nio_sqlite3_column_int64(statement, index)))
        case SQLITE_FLOAT: return .float(sqlite_nio_sqlite3_column_double(statement, index))
        case SQLITE_TEXT:
            guard let text = sqlite_nio_sqlite3_column_text(statement, index) else {
                throw SQLiteDirectError(code: SQLITE_NOMEM, message: "column \(index) has no text")
            }
            return .text(String(cString: text))
        case SQLITE_BLOB:
            let length = Int(sqlite_nio_sqlite3_column_bytes(statement, index))
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            if let bytes = sqlite_nio_sqlite3_column_blob(statement, index) {
                buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: length))
            }
            return .blob(buffer)
        default: return .null
        }
    }
}

/// A result row, read the way SQLiteKit reads the driver's.
package struct DirectSQLiteRow: SQLRow {
    private static let decoder = SQLiteDataDecoder()

    package let columns: ColumnPositions
    package let values: [SQLiteData]

    package var allColumns: [String] { columns.names }
    package func contains(column: String) -> Bool { columns.position(of: column) != nil }

    package func decodeNil(column: String) throws -> Bool {
        guard let position = columns.position(of: column) else { return true }
        return values[position] == .null
    }

    package func decode<D: Decodable>(column: String, as type: D.Type) throws -> D {
        guard let position = columns.position(of: column) else {
            throw DecodingError.keyNotFound(DirectSQLiteColumn(column), .init(codingPath: [], debugDescription: "No column \(column)."))
        }
        columns.read(position)
        let value = values[position]
        // The column types of nearly every field, converted as `SQLiteDataDecoder` converts them (their
        // `SQLiteDataConvertible` initialisers) but without its protocol lookup per value, which was most of the cost
        // of reading a list's rows. Each value is handed back as `D` by a bit cast once `D` is known to be its type:
        // an `as? D` cast, or an optional of `D`, costs a runtime type lookup per column of every row. Any other
        // type, or a value these cannot convert, goes to the decoder.
        if D.self == String.self, let text = String(sqliteData: value) { return unsafeBitCast(text, to: D.self) }
        if D.self == UUID.self, let id = UUID(sqliteData: value) { return unsafeBitCast(id, to: D.self) }
        if D.self == Date.self, let date = Date(sqliteData: value) { return unsafeBitCast(date, to: D.self) }
        if D.self == Int.self, let number = Int(sqliteData: value) { return unsafeBitCast(number, to: D.self) }
        if D.self == Int64.self, let number = Int64(sqliteData: value) { return unsafeBitCast(number, to: D.self) }
        if D.self == Bool.self, let flag = Bool(sqliteData: value) { return unsafeBitCast(flag, to: D.self) }
        if D.self == Double.self, let number = Double(sqliteData: value) { return unsafeBitCast(number, to: D.self) }
        return try Self.decoder.decode(D.self, from: value)
    }
}

private struct DirectSQLiteColumn: CodingKey {
    package var stringValue: String
    package var intValue: Int? { nil }
    package init(_ name: String) { stringValue = name }
    package init?(stringValue: String) { self.stringValue = stringValue }
    package init?(intValue: Int) { nil }
}
