import Foundation
import Logging
import PostgresNIO

/// Statements whose text is known only at run time, prepared once per connection under a name made from their
/// text and parameter types, then only bound and executed.
///
/// Unprepared, PostgreSQL parses and plans every statement again: measured over creating and running executions,
/// planning took 1.0 ms of PostgreSQL's time per execution against 1.8 ms to execute (pg_stat_statements with
/// `track_planning`). PostgresNIO prepares a `PostgresPreparedStatement` on a connection the first time it meets
/// the statement's name there, and keeps it; that protocol takes its name, text and parameter types from the type,
/// not the value. So one type serves every text: its static requirements read the statement being executed from a
/// task-local value, bound around the one call that reads them (`rows`).
///
/// The parameter types are declared at preparation, from the values' kinds (nil of a type counts as that type),
/// so a value always binds in the format its parameter was prepared with. The name covers the types as well as
/// the text: the same text with other kinds is another statement.
package enum PostgresNamedStatement {
    /// One statement: its name (`steward_` and a digest of the text and types), text and parameter types.
    package struct Text: Sendable {
        package let name: String
        package let sql: String
        package let types: [PostgresDataType]

        package init(sql: String, types: [PostgresDataType]) {
            self.sql = sql
            self.types = types
            self.name = Self.name(sql: sql, types: types)
        }

        /// 64-bit FNV-1a over the text's bytes and the types' OIDs, in hex: short, and the same in every process.
        private static func name(sql: String, types: [PostgresDataType]) -> String {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            func mix(_ byte: UInt8) {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
            for byte in sql.utf8 { mix(byte) }
            for type in types {
                mix(0)
                for shift in stride(from: 0, to: 32, by: 8) { mix(UInt8(truncatingIfNeeded: type.rawValue >> UInt32(shift))) }
            }
            let digits = String(hash, radix: 16)
            return "steward_w" + String(repeating: "0", count: 16 - digits.count) + digits
        }
    }

    /// The statement's rows on `connection`, preparing it there first if this connection has not yet.
    package static func rows(_ text: Text, _ bindings: PostgresBindings, on connection: PostgresConnection,
                             logger: Logger) async throws -> [PostgresRow] {
        try await $current.withValue(text) {
            var rows: [PostgresRow] = []
            for try await row in try await connection.execute(Statement(bindings: bindings), logger: logger) { rows.append(row) }
            return rows
        }
    }

    /// The statement `rows` is executing, for `Statement`'s static requirements.
    @TaskLocal private static var current: Text?

    private struct Statement: PostgresPreparedStatement {
        typealias Row = PostgresRow
        static var name: String { current!.name }
        static var sql: String { current!.sql }
        static var bindingDataTypes: [PostgresDataType] { current!.types }

        let bindings: PostgresBindings

        func makeBindings() -> PostgresBindings { bindings }
        func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
    }
}

/// The names a process has prepared, up to a limit: statements built from a count of values (a claim skipping
/// some groups) could otherwise add a prepared statement per count to every connection, without end.
package final class PreparedStatementNames: @unchecked Sendable {
    package static let limit = 512

    private let lock = NSLock()
    private var names: Set<String> = []
    private var refused: Set<String> = []

    package init() {}

    /// True when `name` may be prepared: known already, or within the limit, and not refused.
    package func admit(_ name: String) -> Bool {
        lock.withLock {
            if names.contains(name) { return !refused.contains(name) }
            guard names.count < Self.limit else { return false }
            names.insert(name)
            return true
        }
    }

    /// Never prepares `name` again in this process: a `SELECT *` whose table gained a column under it (a migration
    /// beside a running server) fails as prepared ("cached plan must not change result type") on every connection
    /// that has it, and runs unprepared from then on.
    package func refuse(_ name: String) {
        lock.withLock { _ = refused.insert(name) }
    }
}
