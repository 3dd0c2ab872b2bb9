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
        /// `steward_w` and the digest of the text and types: the name of the statement's first generation.
        package let digest: String
        /// Which of the names (`PreparedStatementNames`) the statement is prepared under: 1 for the digest alone.
        package private(set) var generation = 1
        package let sql: String
        package let types: [PostgresDataType]

        package var name: String { generation == 1 ? digest : digest + "_\(generation)" }

        package init(sql: String, types: [PostgresDataType]) {
            self.sql = sql
            self.types = types
            self.digest = Self.digest(sql: sql, types: types)
        }

        /// The same statement under the name of another generation.
        package func named(generation: Int) -> Text {
            var text = self
            text.generation = generation
            return text
        }

        /// 64-bit FNV-1a over the text's bytes and the types' OIDs, in hex: short, and the same in every process.
        private static func digest(sql: String, types: [PostgresDataType]) -> String {
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

/// The names a process prepares its run-time texts under, up to a limit: statements built from a count of values
/// (a claim skipping some groups) could otherwise add a prepared statement per count to every connection, without
/// end.
///
/// A name can also be retired. PostgresNIO remembers a failed preparation on its connection and fails every later
/// use of that name there with the same error, without asking the server: a statement first prepared while its
/// table was missing (a migration running beside the server) would fail on that connection for good. And a
/// prepared `SELECT *` whose table gained a column fails with "cached plan must not change result type" on every
/// connection that has it. So a use that fails for such a reason retires its name, and the next use prepares the
/// same text under a new one (`_2`, `_3` …); after `generations` names, the text is no longer prepared at all.
package final class PreparedStatementNames: @unchecked Sendable {
    package static let limit = 512
    package static let generations = 8

    private let lock = NSLock()
    /// Each admitted text's digest and the generation its next use prepares under.
    private var generation: [String: Int] = [:]

    package init() {}

    /// `text` under the name to prepare it under now, or nil when it is not to be prepared: beyond the limit, or
    /// retired too often.
    package func admit(_ text: PostgresNamedStatement.Text) -> PostgresNamedStatement.Text? {
        lock.withLock { () -> PostgresNamedStatement.Text? in
            let current: Int
            if let known = generation[text.digest] {
                current = known
            } else {
                guard generation.count < Self.limit else { return nil }
                generation[text.digest] = 1
                current = 1
            }
            guard current <= Self.generations else { return nil }
            return text.named(generation: current)
        }
    }

    /// The text's name as `admit` gave it is not used again; its next use prepares under the next one.
    package func retire(_ text: PostgresNamedStatement.Text) {
        lock.withLock {
            guard generation[text.digest] == text.generation else { return }
            generation[text.digest] = text.generation + 1
        }
    }

    /// Whether a failure of a prepared statement calls for its name to be retired: an object the statement names
    /// is missing or changed (class 42, such as 42P01 undefined table or 42703 undefined column), or its cached
    /// plan's result type changed (0A000).
    package static func retires(sqlState: String?) -> Bool {
        guard let sqlState else { return false }
        return sqlState.hasPrefix("42") || sqlState == "0A000"
    }
}
