import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Maintenance tasks on the scheduler")
struct MaintenanceTaskTests {
    @Test("Each task runs once per occurrence: old sessions go, live ones stay, and SQLite gets a nightly backup keeping the newest N")
    func tasksRun() async throws {
        try await withTestApp(environment: ["STEWARD_BACKUP_KEEP": "3"]) { app in
            let (_, clock) = app.useTestDoubles()  // 2026-11-18T11:06:40Z
            let tasks = MaintenanceTasks(app: app)
            #expect(try await tasks.fireDue().isEmpty, "the first pass only records when each task is next due")

            try await makeUser(app, email: "old@example.com")
            _ = try await login(app, email: "old@example.com")
            _ = try await login(app, email: "old@example.com")
            let sessions = try await UserSession.query(on: app.db).all()
            #expect(sessions.count == 2)
            try await app.writeStatements { sql in
                try await sql.raw("UPDATE sessions SET revoked_at = \(bind: clock.now().addingTimeInterval(-40 * 86_400)) WHERE id = \(bind: sessions[0].id!)").run()
            }

            let backups = app.appConfig.dataDirectory + "/backups"
            try FileManager.default.createDirectory(atPath: backups, withIntermediateDirectories: true)
            for stamp in ["20200101T000000Z", "20200102T000000Z", "20200103T000000Z", "20200104T000000Z"] {
                FileManager.default.createFile(atPath: "\(backups)/steward-\(stamp).sqlite", contents: Data("old".utf8))
            }

            clock.advance(by: 86_400)  // 2026-11-19T11:06:40Z: every task is due
            // A job that finished long ago, and one that finished just now.
            let old = try await app.writeTransaction { db in try await JobQueue(app: app).enqueue(kind: "test.old", payload: [:], on: db) }
            let recent = try await app.writeTransaction { db in try await JobQueue(app: app).enqueue(kind: "test.recent", payload: [:], on: db) }
            try await app.writeStatements { sql in
                try await sql.raw("UPDATE jobs SET status = 'succeeded', finished_at = \(bind: clock.now().addingTimeInterval(-10 * 86_400)) WHERE id = \(bind: old)").run()
                try await sql.raw("UPDATE jobs SET status = 'succeeded', finished_at = \(bind: clock.now()) WHERE id = \(bind: recent)").run()
            }

            var expected: Set<String> = ["sessions.cleanup", "tokens.cleanup", "jobs.cleanup", "audit.retention", "webhooks.history"]
            if !TestDatabase.isPostgres { expected.insert("sqlite.backup") }
            #expect(Set(try await tasks.fireDue()) == expected)
            #expect(try await tasks.fireDue().isEmpty, "an occurrence is claimed once")
            try await drainJobs(app)

            let left = try await UserSession.query(on: app.db).all().map(\.id)
            #expect(left == [sessions[1].id], "the session revoked 40 days ago is gone, the live one stays")
            #expect(try await Job.find(old, on: app.db) == nil, "a job finished 10 days ago is gone")
            #expect(try await Job.find(recent, on: app.db) != nil)
            let statuses = try await (app.db as! any SQLDatabase).raw("SELECT name, last_status FROM system_tasks").all().map {
                (try $0.decode(column: "name", as: String.self), try $0.decode(column: "last_status", as: String?.self))
            }
            #expect(statuses.count == expected.count)
            #expect(statuses.allSatisfy { $0.1 == "succeeded" }, "\(statuses)")
            if !TestDatabase.isPostgres {
                let kept = try FileManager.default.contentsOfDirectory(atPath: backups).sorted()
                #expect(kept == ["steward-20200103T000000Z.sqlite", "steward-20200104T000000Z.sqlite", "steward-20261119T110640Z.sqlite"])
                let copy = try Data(contentsOf: URL(fileURLWithPath: "\(backups)/steward-20261119T110640Z.sqlite"))
                #expect(copy.starts(with: Data("SQLite format 3".utf8)), "a real SQLite file")
            }
            let listed = try await app.runCommand(["schedule", "list"])
            #expect(listed.contains("system  sessions.cleanup") && listed.contains("last=succeeded"))
        }
    }

    @Test("Two schedulers on one database claim each maintenance occurrence once")
    func racing() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let a = try await makeTestApp(directory: directory)
        let b = try await makeTestApp(directory: directory, freshDatabase: false, migrate: false)
        do {
            let clock = TestClock()
            a.useTestDoubles(clock: clock); b.useTestDoubles(clock: clock)
            _ = try await MaintenanceTasks(app: a).fireDue()
            clock.advance(by: 86_400)
            async let first = MaintenanceTasks(app: a).fireDue()
            async let second = MaintenanceTasks(app: b).fireDue()
            let claimed = try await first + second
            #expect(claimed.count == Set(claimed).count, "no task claimed twice: \(claimed)")
            #expect(claimed.count == MaintenanceTasks.all(a.appConfig).count)
            let jobs = try await Job.query(on: a.db).filter(\.$kind == MaintenanceTasks.runKind).count()
            #expect(jobs == claimed.count)
        } catch {
            try? await b.asyncShutdown(); try? await a.asyncShutdown()
            throw error
        }
        try await b.asyncShutdown()
        try await a.asyncShutdown()
    }
}
