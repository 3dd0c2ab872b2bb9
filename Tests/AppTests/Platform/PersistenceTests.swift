import Fluent
import FluentSQLiteDriver
import Foundation
import SQLKit
import Testing
import VaporTesting
@testable import App

@Suite("Persistence across restarts")
struct PersistenceTests {
    @Test("After a restart on the same database file every acknowledged row is there")
    func restartKeepsAcknowledgedWrites() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }

        let first = try await makeTestApp(directory: directory)
        var acknowledged: [Int64] = []
        do {
            try await AdminBootstrap(app: first).ensureFirstAdmin()
            for index in 0..<200 {
                let result = try await first.writeTransaction { db in
                    try await first.activityRecorder.record(
                        audit: AuditRecord(action: "write.\(index)", actorID: nil, actorType: .system),
                        event: EventRecord(type: "write", actorID: nil, resourceType: "row", resourceID: "\(index)"),
                        on: db)
                }
                acknowledged.append(try #require(try await first.numbered(result).event))
            }
        } catch {
            try? await first.asyncShutdown()
            throw error
        }
        try await first.asyncShutdown()

        let second = try await makeTestApp(directory: directory, freshDatabase: false)
        do {
            let events = try await Event.query(on: try await second.settledLedger()).filter(\.$type == "write").sort(\.$seq).all()
            #expect(events.map(\.seq) == acknowledged)
            #expect(events.map(\.resourceID) == (0..<200).map { "\($0)" })
            #expect(try await AuditChain.verify(on: try await second.settledLedger(), key: second.auditKeys.chain).isIntact)
            #expect(try await User.query(on: second.db).count() == 1)
            #expect(try await AdminBootstrap(app: second).ensureFirstAdmin() == .alreadyHasUsers)
            let next = try await second.writeTransaction { db in
                try await second.activityRecorder.record(event: EventRecord(type: "after", actorID: nil, resourceType: "row", resourceID: nil), on: db)
            }
            #expect(try await second.numbered(next).event == acknowledged.last! + 1)
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }

    @Test("On SQLite the pool only reads: a write that skips the writer is caught, one through the writer is not",
          .enabled(if: !TestDatabase.isPostgres))
    func oneWriteDoor() async throws {
        try await withTestApp { app in
            let guardian = try #require(app.poolWriteGuard)
            let user = try await makeUser(app, email: "door@example.com")
            #expect(guardian.takeWrites().isEmpty, "registering a user wrote through the writer only")
            try await (app.db as! any SQLDatabase).raw("UPDATE users SET full_name = 'side door' WHERE id = \(bind: user.id!)").run()
            user.fullName = "side door again"
            try await user.save(on: app.db)
            let caught = guardian.takeWrites()
            #expect(caught.count == 2)
            #expect(caught.first?.hasPrefix("UPDATE users SET full_name") == true)
            #expect(caught.last == "fluent update users")
            try await app.writeTransaction { db in
                user.fullName = "front door"
                try await user.save(on: db)
            }
            #expect(guardian.takeWrites().isEmpty)
        }
    }

    @Test("The SQLite file runs in WAL mode with synchronous=FULL and a busy timeout", .enabled(if: !TestDatabase.isPostgres))
    func sqlitePragmas() async throws {
        try await withTestApp { app in
            let checks = try await DatabaseMaintenance(app: app).check()
            let byName = Dictionary(uniqueKeysWithValues: checks.map { ($0.name, $0) })
            #expect(byName["journal mode"]?.detail.lowercased() == "wal")
            #expect(byName["synchronous"]?.detail == "FULL")
            #expect(checks.allSatisfy { $0.ok })
            for eventLoop in app.eventLoopGroup.makeIterator() {
                let db = try #require(app.databases.database(logger: app.logger, on: eventLoop))
                let sql = db as! any SQLDatabase
                let timeout = try await sql.raw("PRAGMA busy_timeout").first()?.decode(column: "timeout", as: Int.self)
                #expect(timeout == 5000)
            }
            // The write transactions' own connection has the same settings.
            let writer = try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                return [
                    try await sql.raw("PRAGMA synchronous").first()?.decode(column: "synchronous", as: Int.self),
                    try await sql.raw("PRAGMA busy_timeout").first()?.decode(column: "timeout", as: Int.self),
                    try await sql.raw("PRAGMA foreign_keys").first()?.decode(column: "foreign_keys", as: Int.self),
                ]
            }
            #expect(writer == [2, 5000, 1])
        }
        try await withTestApp(environment: ["STEWARD_SQLITE_SYNCHRONOUS": "normal"]) { app in
            let checks = try await DatabaseMaintenance(app: app).check()
            #expect(checks.first { $0.name == "synchronous" }?.detail == "NORMAL")
        }
    }

    @Test("A read connection the SQLite driver opens after start gets synchronous, the busy timeout and foreign keys too",
          .enabled(if: !TestDatabase.isPostgres))
    func reopenedPoolConnection() async throws {
        try await withTestApp(environment: ["STEWARD_SQLITE_SYNCHRONOUS": "normal", "STEWARD_SQLITE_BUSY_TIMEOUT_MS": "4321"]) { app in
            for eventLoop in app.eventLoopGroup.makeIterator() {
                let db = try #require(app.databases.database(logger: app.logger, on: eventLoop))
                let sql = db as! any SQLDatabase
                func settings() async throws -> [Int?] {
                    [
                        try await sql.raw("PRAGMA synchronous").first()?.decode(column: "synchronous", as: Int.self),
                        try await sql.raw("PRAGMA busy_timeout").first()?.decode(column: "timeout", as: Int.self),
                        try await sql.raw("PRAGMA foreign_keys").first()?.decode(column: "foreign_keys", as: Int.self),
                    ]
                }
                #expect(try await settings() == [1, 4321, 1])
                // Close the loop's connection underneath the pool, as a failed connection would be: the driver then
                // opens a new one, with its own busy handler (no timeout) and SQLite's default synchronous (FULL).
                try await db.withConnection { pinned in
                    ((pinned as! InstrumentedDatabase).base as! any SQLiteDatabase).withConnection { $0.close() }
                }.get()
                #expect(try await settings() == [1, 4321, 1])
                // Fluent's own queries go through the same door.
                #expect(try await User.query(on: db).count() >= 0)
            }
        }
    }
}
