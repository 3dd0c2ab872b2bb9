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

    @Test("PostgreSQL's text numbers the placeholders; statements sent as one are numbered on, their values in order")
    func postgresText() {
        let job = FixedStatement.insert(into: "jobs", columns: ["id", "kind"], deferrable: true)
        let line = FixedStatement.insert(into: "lines", columns: ["id", "job_id", "at"], deferrable: true)
        let last = FixedStatement("UPDATE t SET a = ? WHERE b = ?")
        #expect(job.postgres == "INSERT INTO jobs (id, kind) VALUES ($1, $2)")
        #expect(last.postgres == "UPDATE t SET a = $1 WHERE b = $2")
        #expect(FixedStatement("SELECT 1").postgres == "SELECT 1")

        let (single, singleValues) = FixedStatement.combined([(job, ["j1", "run"])])
        #expect(single.postgres == job.postgres)
        #expect(singleValues.map(\.sqliteValue) == [.text("j1"), .text("run")])

        let (combined, values) = FixedStatement.combined([(job, ["j1", "run"]), (line, ["l1", "j1", 7]), (last, [true, Int?.none])])
        #expect(combined.postgres == """
            WITH s0 AS (INSERT INTO jobs (id, kind) VALUES ($1, $2)), s1 AS (INSERT INTO lines (id, job_id, at) VALUES ($3, $4, $5)) \
            UPDATE t SET a = $6 WHERE b = $7
            """)
        #expect(values.map(\.sqliteValue) == [.text("j1"), .text("run"), .text("l1"), .text("j1"), .integer(7), .integer(1), .null])
    }

    @Test("A value binds with its type's kind, and nil with its wrapped type's, so one prepared statement serves both")
    func boundKinds() {
        let id = UUID()
        let at = Date(timeIntervalSince1970: 1_700_000_000.5)
        let cases: [(any RowValue, BoundKind)] = [
            ("x", .text), (String?.none, .text), (3, .integer), (Int64(4), .integer), (Int?.none, .integer), (Int64?.none, .integer),
            (1.5, .float), (Double?.none, .float), (true, .bool), (Bool?.none, .bool), (at, .date), (Date?.none, .date),
            (id, .uuid), (UUID?.none, .uuid),
        ]
        for (value, kind) in cases {
            #expect(type(of: value).boundKind == kind, "\(value)")
        }
        let bound: [BoundValue] = [("x" as String).bound, 3.bound, Int64(4).bound, true.bound, at.bound, id.bound, UUID?.none.bound]
        #expect(bound == [.text("x"), .integer(3), .integer(4), .bool(true), .date(at), .uuid(id), .null])
    }
}
