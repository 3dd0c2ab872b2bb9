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
