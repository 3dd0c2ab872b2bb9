import Foundation
import SQLiteKit
import StewardSQLite
import Testing

/// The hot statements bind their values through `RowValue` on the SQLite writer instead of the driver's encoder.
/// Stored values must not change with it: the same rows are read back through Fluent, and audit entries are hashed.
@Suite("Fixed statements")
struct FixedStatementTests {
    @Test("Every value binds as the SQLite driver's encoder binds it: text, integers, floats, booleans, dates, ids and nulls")
    func bindsAsTheDriver() throws {
        let encoder = SQLiteDataEncoder()
        let id = UUID()
        let values: [any RowValue] = [
            "", "text with ? and '; DROP TABLE jobs; --", "é 中文 😀", 0, -1, Int.max, Int.min, Int64.max, Int64(-7), 1.5, -0.0, 1e300,
            true, false, Date(timeIntervalSince1970: 1_700_000_000.123), Date(timeIntervalSince1970: -86_400.5), Date.distantFuture, id,
            String?.none, String?.some("x"), UUID?.none, UUID?.some(id), Date?.none, Date?.some(Date(timeIntervalSince1970: 12)),
            Int?.none, Int?.some(3), Int64?.none, Int64?.some(9), Bool?.some(true), Bool?.none, Double?.some(2.5),
        ]
        for value in values {
            #expect(value.sqliteValue == (try encoder.encode(value)), "\(value)")
        }
        #expect(id.sqliteValue == .text(id.uuidString), "ids are stored as upper-case text, as before")
    }

    @Test("A statement's text is cut at its placeholders, one value for each")
    func placeholders() {
        let insert = FixedStatement.insert(into: "things", columns: ["a", "b", "c"])
        #expect(insert.sqlite == "INSERT INTO things (a, b, c) VALUES (?, ?, ?)")
        #expect(insert.placeholders == 3)
        #expect(FixedStatement("SELECT 1").placeholders == 0)
        #expect(FixedStatement("UPDATE t SET a = ? WHERE b = ? AND c = ?").placeholders == 3)
    }
}
