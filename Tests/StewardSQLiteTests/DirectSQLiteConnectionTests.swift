import Foundation
import SQLiteKit
import StewardSQLite
import Testing

@Suite("Direct SQLite connections")
struct DirectSQLiteConnectionTests {
    /// Without the query planner stability guarantee SQLite prepares a kept statement again when its bound LIMIT
    /// changes, or when an integer compared to a column moves between 0-1 and other values (as FTS5's own segment
    /// lookup does on every search). Each of those runs below would then have prepared it again.
    @Test("A kept statement is prepared once, whatever its runs bind, and each run answers for its own values")
    func keptPlanWhateverIsBound() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("steward-direct-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let connection = try DirectSQLiteConnection(path: directory.appendingPathComponent("t.sqlite").path, busyTimeoutMilliseconds: 1_000)
        defer { connection.close() }
        try connection.execute("CREATE TABLE things (kind INTEGER NOT NULL, name TEXT NOT NULL)", []) { _ in }
        try connection.execute("CREATE INDEX things_kind ON things (kind, name)", []) { _ in }
        for kind in 0..<6 {
            for number in 0..<5 { try connection.execute("INSERT INTO things VALUES (?, ?)", [.integer(kind), .text("n\(number)")]) { _ in } }
        }

        let sql = "SELECT name FROM things WHERE kind = ? ORDER BY name LIMIT ?"
        for (kind, limit) in [(1, 2), (5, 2), (0, 4), (3, 1), (1, 5), (4, 3)] {
            var names: [String] = []
            try connection.execute(sql, [.integer(kind), .integer(limit)]) { names.append(try! $0.decode(column: "name", as: String.self)) }
            #expect(names == (0..<limit).map { "n\($0)" }, "kind \(kind), limit \(limit)")
        }
        #expect(connection.timesPreparedAgain(sql) == 0)
    }

    @Test("A row finds its columns by name in any order; a repeated name means its first column")
    func columnsByName() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("steward-direct-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let connection = try DirectSQLiteConnection(path: directory.appendingPathComponent("t.sqlite").path, busyTimeoutMilliseconds: 1_000)
        defer { connection.close() }
        var rows: [any SQLRow] = []
        try connection.execute("SELECT 1 AS a, 'x' AS b, NULL AS c, 2 AS d, 3 AS a", []) { rows.append($0) }
        let row = try #require(rows.first)
        #expect(try row.decode(column: "a", as: Int.self) == 1 && row.decode(column: "b", as: String.self) == "x")
        #expect(try row.decodeNil(column: "c") && row.decode(column: "c", as: String?.self) == nil && row.decode(column: "d", as: Int.self) == 2)
        // Right after `d`, the column before the second `a`: still the first.
        #expect(try row.decode(column: "a", as: Int.self) == 1, "the first of two columns named a")
        #expect(try row.decode(column: "d", as: Int.self) == 2 && row.decode(column: "b", as: String.self) == "x")
        #expect(throws: DecodingError.self) { try row.decode(column: "e", as: Int.self) }
    }
}
