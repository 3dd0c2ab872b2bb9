import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
@testable import App

@Suite("Write door")
struct WriteDoorTests {
    @Test("A write started inside a write fails at once with a programming error instead of hanging; the outer write rolls back and the door keeps working",
          .timeLimit(.minutes(1)))
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
}

@Suite("Write conflicts on PostgreSQL")
struct WriteConflictTests {
    @Test("Two transactions forced into a deadlock: one commits, the other fails as 503 write_conflict with Retry-After, never a 500",
          .enabled(if: TestDatabase.isPostgres), .timeLimit(.minutes(1)))
    func deadlock() async throws {
        try await withTestApp { app in
            try await app.writeStatements { sql in
                try await sql.raw("INSERT INTO system_tasks (name, cron, next_run_at) VALUES ('lock-a', '@daily', \(bind: Date())), ('lock-b', '@daily', \(bind: Date()))").run()
            }
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
