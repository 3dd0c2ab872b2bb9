import Fluent
import Foundation
import PostgresKit
import SQLKit
import Testing
import Vapor
@testable import App
import StewardPostgres
import StewardSQLite

/// PostgreSQL plans a statement it is sent unprepared every time; the write path's fixed statements and the
/// pool's list reads are prepared once per connection instead (`PreparedStatements`). What a client sees must not
/// change: the same rows, nulls included, and no failure when a pooler or a migration pulls a prepared statement
/// out from under a connection.
@Suite("Prepared statements on PostgreSQL")
struct PreparedStatementTests {
    @Test("A write transaction's fixed statements are prepared once on its connection; nil binds as its type, so one statement serves values and nils",
          .enabled(if: TestDatabase.isPostgres))
    func fixedStatementsPrepared() async throws {
        try await withTestApp { app in
            let id = UUID()
            let at = Date(timeIntervalSince1970: 1_700_000_000.25)
            let insert = FixedStatement.insert(into: "prepared_probe", columns: ["k", "t", "i", "f", "b", "d", "u"])
            let (rows, prepared) = try await app.writeTransaction { db -> ([any SQLRow], Int) in
                let sql = db as! any SQLDatabase
                try await sql.raw("""
                    CREATE TEMP TABLE prepared_probe (k integer, t text, i integer, f double precision, b boolean, d timestamptz, u uuid) ON COMMIT DROP
                    """).run()
                try await sql.run(insert, [1, String?.none, Int?.none, Double?.none, Bool?.none, Date?.none, UUID?.none])
                try await sql.run(insert, [2, "it's ? 😀", 42, 1.5, true, at, id])
                try await sql.run(insert, [3, String?.some("again"), Int?.none, Double?.some(-0.5), Bool?.some(false), Date?.none, UUID?.some(id)])
                let prepared = try await sql.raw("SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = \(bind: insert.postgres)")
                    .first()?.decode(column: "n", as: Int.self) ?? 0
                return (try await sql.raw("SELECT k, t, i, f, b, d, u FROM prepared_probe ORDER BY k").all(), prepared)
            }
            #expect(prepared == 1, "one prepared statement for the three inserts, nils or not")
            #expect(rows.count == 3)
            #expect(try rows[0].decode(column: "t", as: String?.self) == nil)
            #expect(try rows[0].decode(column: "i", as: Int?.self) == nil)
            #expect(try rows[0].decode(column: "d", as: Date?.self) == nil)
            #expect(try rows[0].decode(column: "u", as: UUID?.self) == nil)
            #expect(try rows[1].decode(column: "t", as: String.self) == "it's ? 😀")
            #expect(try rows[1].decode(column: "i", as: Int.self) == 42)
            #expect(try rows[1].decode(column: "f", as: Double.self) == 1.5)
            #expect(try rows[1].decode(column: "b", as: Bool.self) == true)
            #expect(try rows[1].decode(column: "d", as: Date.self) == at)
            #expect(try rows[1].decode(column: "u", as: UUID.self) == id)
            #expect(try rows[2].decode(column: "t", as: String.self) == "again")
            #expect(try rows[2].decode(column: "b", as: Bool.self) == false)
            #expect(try rows[2].decode(column: "u", as: UUID.self) == id)
        }
    }

    @Test("A connection that lost a write's prepared statement (as behind a pooler in transaction mode) fails that transaction as a write conflict with nothing written; preparing turns off and the next write runs unprepared",
          .enabled(if: TestDatabase.isPostgres))
    func refusedWrite() async throws {
        try await withTestApp { app in
            let preparedStatements = try #require((app.db as? InstrumentedDatabase)?.preparedStatements)
            let task = FixedStatement("INSERT INTO system_tasks (name, cron, next_run_at) VALUES (?, ?, ?)")
            let name = PostgresNamedStatement.Text(sql: task.postgres, types: [.text, .text, .timestamptz]).name
            func names() async throws -> [String] {
                try await (app.db as! any SQLDatabase).raw("SELECT name FROM system_tasks WHERE name LIKE 'prepared-refused-%' ORDER BY name").all()
                    .map { try $0.decode(column: "name", as: String.self) }
            }
            await #expect(throws: WriteConflict.self) {
                try await app.writeTransaction { db in
                    let sql = db as! any SQLDatabase
                    try await sql.run(task, ["prepared-refused-a", "@daily", Date()])
                    // What a pooler does: the next server connection has no statement of that name.
                    try await sql.raw(SQLQueryString("DEALLOCATE \(unsafeRaw: name)")).run()
                    try await sql.run(task, ["prepared-refused-b", "@daily", Date()])
                }
            }
            #expect(try await names().isEmpty, "nothing of the refused transaction stands")
            #expect(!preparedStatements.isEnabled, "the first refusal turns preparing off for the process")
            try await app.writeTransaction { db in
                try await (db as! any SQLDatabase).run(task, ["prepared-refused-c", "@daily", Date()])
            }
            #expect(try await names() == ["prepared-refused-c"])
        }
    }

    @Test("A prepared SELECT * whose table gains a column under it (a migration beside a running server) answers unprepared once, then prepared under a new name; never an error",
          .enabled(if: TestDatabase.isPostgres))
    func resultTypeChanged() async throws {
        try await withTestApp { app in
            let instrumented = try #require(app.db as? InstrumentedDatabase)
            let preparedStatements = try #require(instrumented.preparedStatements)
            let sql = app.db as! any SQLDatabase
            try await sql.raw("DROP TABLE IF EXISTS prepared_probe_reads").run()
            try await sql.raw("CREATE TABLE prepared_probe_reads (k integer PRIMARY KEY, v text)").run()
            try await sql.raw("INSERT INTO prepared_probe_reads (k, v) VALUES (1, 'one')").run()
            let read = SQLQueryString("SELECT * FROM prepared_probe_reads WHERE k = \(bind: 1)")
            let (before, after, again) = try await instrumented.base.withConnection { connection in
                let pinned = connection as! any SQLDatabase, postgres = connection as! any PostgresDatabase
                let before = try await preparedStatements.namedRows(read, on: pinned, postgres: postgres, observer: instrumented.observer)
                try await pinned.raw("ALTER TABLE prepared_probe_reads ADD COLUMN extra text").run()
                let after = try await preparedStatements.namedRows(read, on: pinned, postgres: postgres, observer: instrumented.observer)
                let again = try await preparedStatements.namedRows(read, on: pinned, postgres: postgres, observer: instrumented.observer)
                return (before, after, again)
            }
            #expect(try before?.first?.decode(column: "v", as: String.self) == "one", "read prepared")
            #expect(after == nil, "the changed statement fails prepared: this read is left to the unprepared path")
            #expect(try again?.first?.decode(column: "extra", as: String?.self) == nil, "then prepared again, under a new name")
            #expect(try again?.first?.decode(column: "v", as: String.self) == "one")
            #expect(preparedStatements.isEnabled, "other statements stay prepared")
            let rows = try await app.quickRead("SELECT * FROM prepared_probe_reads WHERE k = ?", [1], on: app.db)
            #expect(rows.count == 1)
            #expect(try rows.first?.decode(column: "extra", as: String?.self) == nil)
            #expect(try rows.first?.decode(column: "v", as: String.self) == "one")
            try await sql.raw("DROP TABLE prepared_probe_reads").run()
        }
    }

    @Test("A write's statement first prepared while its table is missing (a migration beside a running server) fails then, and works once the table is back: its name is retired, not reused on that connection",
          .enabled(if: TestDatabase.isPostgres))
    func preparedBeforeItsTable() async throws {
        try await withTestApp { app in
            let sql = app.db as! any SQLDatabase
            let insert = FixedStatement("INSERT INTO prepared_probe_late (k) VALUES (?)")
            try await sql.raw("DROP TABLE IF EXISTS prepared_probe_late").run()
            // The pool's connections meet the statement while the table is missing.
            for _ in 0..<3 {
                await #expect(throws: (any Error).self) {
                    try await app.writeTransaction { db in try await (db as! any SQLDatabase).run(insert, [1]) }
                }
            }
            try await sql.raw("CREATE TABLE prepared_probe_late (k integer)").run()
            for k in 1...8 {
                try await app.writeTransaction { db in try await (db as! any SQLDatabase).run(insert, [k]) }
            }
            let count = try await sql.raw("SELECT count(*) AS n FROM prepared_probe_late").first()?.decode(column: "n", as: Int.self)
            #expect(count == 8, "every write after the table came back went through")
            try await sql.raw("DROP TABLE prepared_probe_late").run()
        }
    }
}
