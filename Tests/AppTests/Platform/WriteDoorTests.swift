import NIOConcurrencyHelpers
import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
@testable import App
import StewardSQLite

@Suite("Write door")
struct WriteDoorTests {
    // The limit catches a hang (a nested write waiting for itself never ends); it is generous because the whole
    // suite in parallel on two cores has taken this test, migrations included, past one minute without one.
    @Test("A write started inside a write fails at once with a programming error instead of hanging; the outer write rolls back and the door keeps working",
          .timeLimit(.minutes(3)))
    func nestedWrite() async throws {
        try await withTestApp { app in
            let nestings: [(String, @Sendable (Application) async throws -> Void)] = [
                ("transaction in transaction", { app in
                    _ = try await app.writeTransaction { db in
                        try await (db as! any SQLDatabase).raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('nested-a', '@daily', \(bind: Date()))").run()
                        return try await app.writeTransaction { _ in 1 }
                    }
                }),
                ("statements in transaction", { app in
                    _ = try await app.writeTransaction { db in
                        try await (db as! any SQLDatabase).raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('nested-b', '@daily', \(bind: Date()))").run()
                        return try await app.writeStatements { _ in 1 }
                    }
                }),
                ("transaction in statements", { app in
                    _ = try await app.writeStatements { _ in try await app.writeTransaction { _ in 1 } }
                }),
            ]
            for (name, nesting) in nestings {
                await #expect(throws: NestedWriteError.self, "\(name)") { try await nesting(app) }
            }
            let rows = try await (app.db as! any SQLDatabase).raw("SELECT name FROM system_tasks WHERE name LIKE 'nested-%'").all()
            #expect(rows.isEmpty, "the outer transactions rolled back")
            let written = try await app.writeTransaction { db in
                try await (db as! any SQLDatabase).raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('after', '@daily', \(bind: Date()))").run()
                return true
            }
            #expect(written)
        }
    }

    @Test("PostgreSQL: deferrable inserts wait for the transaction's next statement; its own reads see them, the commit sends the rest, and one that fails rolls the whole transaction back",
          .enabled(if: TestDatabase.isPostgres))
    func deferredInserts() async throws {
        try await withTestApp { app in
            let task = FixedStatement.insert(into: "system_tasks", columns: ["name", "cron", "next_run_at"], deferrable: true)
            func names(_ pattern: String) async throws -> [String] {
                try await (app.db as! any SQLDatabase).raw("SELECT name FROM system_tasks WHERE name LIKE \(bind: pattern) ORDER BY name").all()
                    .map { try $0.decode(column: "name", as: String.self) }
            }
            let seenInside = try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                try await sql.run(task, ["deferred-a", "@daily", Date()])
                let seen = try await sql.raw("SELECT count(*) AS n FROM system_tasks WHERE name = 'deferred-a'").first()?.decode(column: "n", as: Int.self)
                // More than wait at once: the ones past the limit go out behind the others, in order.
                for index in 0..<(DeferredStatements.limit + 4) { try await sql.run(task, [String(format: "deferred-n%02d", index), "@daily", Date()]) }
                try await sql.run(task, ["deferred-z", "@daily", Date()])
                return seen
            }
            #expect(seenInside == 1, "a read in the transaction sees the insert before it")

            // A deferrable insert that reads its own table is not sent together with one into it: it sees that row.
            let counting = FixedStatement("""
                INSERT INTO system_tasks (name, cron, next_run_at) \
                VALUES ((SELECT 'deferred-counted-' || count(*) FROM system_tasks WHERE name LIKE 'deferred-r%'), ?, ?)
                """, deferrableInto: "system_tasks", reading: "system_tasks")
            try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                try await sql.run(task, ["deferred-r1", "@daily", Date()])
                try await sql.run(counting, ["@daily", Date()])
            }
            #expect(try await names("deferred-counted-%") == ["deferred-counted-1"])
            #expect(try await names("deferred-n%").count == DeferredStatements.limit + 4, "past the limit, in order")
            #expect(try await names("deferred-z") == ["deferred-z"], "the commit sent what still waited")

            let acceptedAtTheCall = NIOLockedValueBox(false)
            await #expect(throws: (any Error).self) {
                try await app.writeTransaction { db in
                    let sql = db as! any SQLDatabase
                    try await sql.run(task, ["deferred-lost", "@daily", Date()])
                    try await sql.run(task, ["deferred-a", "@daily", Date()])  // the name is taken
                    acceptedAtTheCall.withLockedValue { $0 = true }
                }
            }
            #expect(acceptedAtTheCall.withLockedValue { $0 }, "the failing insert was deferred to the commit")
            #expect(try await names("deferred-lost").isEmpty, "nothing of the failed transaction stands")
        }
    }
}

@Suite("Write conflicts on PostgreSQL")
struct WriteConflictTests {
    @Test("Two transactions forced into a deadlock: one commits, the other fails as 503 write_conflict with Retry-After, never a 500",
          .enabled(if: TestDatabase.isPostgres), .timeLimit(.minutes(1)))
    func deadlock() async throws {
        try await withTestApp { app in
            try await insertLockRows(app)
            let firstLocks = AsyncBarrier(parties: 2)
            // Each locks one row, waits until the other holds its own, then asks for the other's: PostgreSQL breaks the cycle.
            let lock: @Sendable (String, String) async -> Result<Void, any Error> = { mine, theirs in
                do {
                    try await app.writeTransaction { db in
                        let sql = db as! any SQLDatabase
                        try await sql.raw("UPDATE system_tasks SET last_status = 'held' WHERE name = \(bind: mine)").run()
                        await firstLocks.arrive()
                        try await sql.raw("UPDATE system_tasks SET last_status = 'taken' WHERE name = \(bind: theirs)").run()
                    }
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            async let one = lock("lock-a", "lock-b")
            async let two = lock("lock-b", "lock-a")
            let results = await [one, two]
            let failures = results.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(failures.count == 1, "\(failures)")
            let conflict = try #require(failures.first as? WriteConflict)
            #expect(conflict.sqlState == "40P01" && conflict.status == .serviceUnavailable && conflict.headers.first(name: "Retry-After") == "1")
        }
    }
}

@Suite("Requests that lose a write conflict")
struct WriteConflictRetryTests {
    @Test("A request whose transaction is chosen to break a real deadlock runs again and succeeds: one row, one retry",
          .enabled(if: TestDatabase.isPostgres), .timeLimit(.minutes(1)))
    func deadlockedRequestRetried() async throws {
        try await withTestApp { app in
            try await insertLockRows(app)
            let firstLocks = AsyncBarrier(parties: 2)
            let runs = NIOLockedValueBox(0)
            // The route locks a then b; the test locks b then a, and asks for a later, so the route waits first and
            // PostgreSQL's deadlock check (after deadlock_timeout) ends the route's transaction.
            app.grouped(WriteConflictRetryMiddleware()).post("test-probe", "deadlock") { _ async throws -> Response in
                let run = runs.withLockedValue { $0 += 1; return $0 }
                try await app.writeTransaction { db in
                    let sql = db as! any SQLDatabase
                    try await sql.raw("UPDATE system_tasks SET last_status = 'route' WHERE name = 'lock-a'").run()
                    if run == 1 { await firstLocks.arrive() }
                    try await sql.raw("UPDATE system_tasks SET last_status = 'route' WHERE name = 'lock-b'").run()
                    try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('written-by-route', '@daily', \(bind: Date()))").run()
                }
                return Response(status: .created)
            }
            let other = Task {
                try await app.writeTransaction { db in
                    let sql = db as! any SQLDatabase
                    try await sql.raw("UPDATE system_tasks SET last_status = 'test' WHERE name = 'lock-b'").run()
                    await firstLocks.arrive()
                    try await Task.sleep(for: .milliseconds(300))
                    try await sql.raw("UPDATE system_tasks SET last_status = 'test' WHERE name = 'lock-a'").run()
                }
            }
            try await app.live().test(.POST, "/test-probe/deadlock") { res in
                #expect(res.status == .created, "\(res.body.string)")
            }
            try await other.value
            #expect(runs.withLockedValue { $0 } == 2, "the route ran twice: the deadlock victim, then the retry")
            let written = try await (app.db as! any SQLDatabase).raw("SELECT count(*) AS n FROM system_tasks WHERE name = 'written-by-route'").first(decoding: CountRow.self)
            #expect(written?.n == 1)
            #expect(try await metricValue(app, "steward_write_conflict_retries_total") == 1)
        }
    }

    @Test("A run that already committed a write is not run again: its conflict answers 503 write_conflict; a run that never gets through stops after three attempts")
    func retryOnlyWithoutEffects() async throws {
        try await withTestApp { app in
            let runs = NIOLockedValueBox([String: Int]())
            let guarded = app.grouped(WriteConflictRetryMiddleware())
            guarded.post("test-probe", "committed-then-conflict") { _ async throws -> Response in
                runs.withLockedValue { $0["committed", default: 0] += 1 }
                try await app.writeStatements { sql in
                    try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES (\(bind: "committed-\(UUID())"), '@daily', \(bind: Date()))").run()
                }
                // The second write loses: as PostgreSQL reports a serialization failure, rolled back whole.
                try await app.writeTransaction { _ in throw WriteConflict(sqlState: "40001") }
                return Response(status: .created)
            }
            guarded.post("test-probe", "always-conflict") { _ async throws -> Response in
                runs.withLockedValue { $0["always", default: 0] += 1 }
                try await app.writeTransaction { _ in throw WriteConflict(sqlState: "40P01") }
                return Response(status: .created)
            }
            try await app.live().test(.POST, "/test-probe/committed-then-conflict") { res throws in
                #expect(res.status == .serviceUnavailable)
                #expect(try res.problem().code == "write_conflict")
                #expect(res.headers.first(name: "Retry-After") == "1")
            }
            try await app.live().test(.POST, "/test-probe/always-conflict") { res throws in
                #expect(res.status == .serviceUnavailable)
                #expect(try res.problem().code == "write_conflict")
            }
            #expect(runs.withLockedValue { $0 } == ["committed": 1, "always": 3])
        }
    }
}

private struct CountRow: Decodable { var n: Int }

/// Lets `parties` tasks wait for each other once.
actor AsyncBarrier {
    private let parties: Int
    private var arrived = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(parties: Int) { self.parties = parties }

    func arrive() async {
        arrived += 1
        if arrived >= parties {
            for continuation in waiting { continuation.resume() }
            waiting.removeAll()
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }
}

@Suite("SQLite writer durability")
struct SQLiteWriterDurabilityTests {
    @Test("When SQLite rolls a batch's transaction back on its own and the body swallows the error, nothing after it commits alone and the caller hears of it",
          .enabled(if: !TestDatabase.isPostgres))
    func transactionLost() async throws {
        try await withTestApp { app in
            await #expect(throws: SQLiteWriterError.self) {
                try await app.writeStatements { sql in
                    try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('lost-a', '@daily', \(bind: Date()))").run()
                    // What SQLite does by itself on a full disk, an I/O error or out of memory.
                    try await sql.raw("ROLLBACK").run()
                    // A body that swallows errors and goes on.
                    try? await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('lost-b', '@daily', \(bind: Date()))").run()
                }
            }
            let rows = try await (app.db as! any SQLDatabase).raw("SELECT name FROM system_tasks WHERE name LIKE 'lost-%'").all()
            #expect(rows.isEmpty, "no statement after the loss committed on its own")
            try await app.writeStatements { sql in
                try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('after-loss', '@daily', \(bind: Date()))").run()
            }
            #expect(try await (app.db as! any SQLDatabase).raw("SELECT name FROM system_tasks WHERE name = 'after-loss'").all().count == 1)
        }
    }

    @Test("The writer's connection refuses statements from any thread but its own", .enabled(if: !TestDatabase.isPostgres))
    func writerThread() async throws {
        try await withTestApp { app in
            let writer = try #require(app.sqliteWriter)
            #expect(throws: SQLiteWriterError.self) { try writer.run("SELECT 1", [], logger: app.logger) { _ in } }
        }
    }

    @Test("Past STEWARD_SQLITE_WAL_LIMIT the WAL is checkpointed and truncated; its size is a gauge, and journal_size_limit is set",
          .enabled(if: !TestDatabase.isPostgres))
    func walLimit() async throws {
        try await withTestApp(environment: ["STEWARD_SQLITE_WAL_LIMIT": "64kb"]) { app in
            let limit = try await app.writeStatements { sql in
                try await sql.raw("PRAGMA journal_size_limit").first()?.decode(column: "journal_size_limit", as: Int.self)
            }
            #expect(limit == 65_536)
            let filler = String(repeating: "x", count: 4_000)
            for index in 0..<60 {
                try await app.writeStatements { sql in
                    try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at, last_result) VALUES (\(bind: "wal-\(index)"), '@daily', \(bind: Date()), \(bind: filler))").run()
                }
            }
            let before = try #require(SQLiteWAL.size(app))
            #expect(before > 65_536, "the WAL grew to \(before) bytes")
            let scraped = try await MetricsScrape().emit(app)
            #expect(scraped.contains("steward_sqlite_wal_bytes \(before)"), "\(scraped.split(separator: "\n").filter { $0.contains("wal") })")
            #expect(try await SQLiteWAL.checkpointIfLarge(app))
            #expect(SQLiteWAL.size(app) == 0)
            #expect(try await SQLiteWAL.checkpointIfLarge(app) == false, "under the limit nothing runs")
            #expect(try await (app.db as! any SQLDatabase).raw("SELECT count(*) AS n FROM system_tasks WHERE name LIKE 'wal-%'").first()?.decode(column: "n", as: Int.self) == 60)
        }
    }
}

/// Two rows, `lock-a` and `lock-b`, for tests that lock them in opposite orders to make PostgreSQL find a deadlock.
private func insertLockRows(_ app: Application) async throws {
    try await app.writeStatements { sql in
        try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('lock-a', '@daily', \(bind: Date())), ('lock-b', '@daily', \(bind: Date()))").run()
    }
}
