import Fluent
import SQLKit
import Testing
import VaporTesting
@testable import App

@Suite("MigrationService")
struct MigrationServiceTests {
    @Test("status lists every migration applied, in order, with the time it was applied")
    func status() async throws {
        try await withTestApp { app in
            let states = try await MigrationService(app: app).status()
            #expect(states.count == AppMigrations.all(app.keyMaterial).count)
            #expect(states.allSatisfy { $0.applied && $0.appliedAt != nil && $0.batch == 1 })
            #expect(states.map(\.position) == Array(1...AppMigrations.all(app.keyMaterial).count))
            #expect(states.first?.version == "0001_CreateLedgerHeads")
        }
    }

    @Test("down --to, then up, round-trips: tables go and come back, status follows")
    func downAndUp() async throws {
        try await withTestApp { app in
            let service = MigrationService(app: app)
            let reverted = try await service.revert(downTo: "0002_CreateAuditLogs")
            let expected = try await service.status().filter { $0.position > 2 }.map(\.version).reversed()
            #expect(reverted == Array(expected))
            #expect(reverted.last == "0003_CreateEvents")

            let afterDown = try await service.status()
            #expect(afterDown.filter(\.applied).map(\.version) == ["0001_CreateLedgerHeads", "0002_CreateAuditLogs"])
            #expect(try await tableExists("events", app) == false)
            #expect(try await tableExists("users", app) == false)
            #expect(try await tableExists("audit_logs", app) == true)

            let applied = try await service.migrate()
            #expect(applied.count == AppMigrations.all(app.keyMaterial).count - 2)
            let allApplied = try await service.status().allSatisfy { $0.applied }
            #expect(allApplied)
            #expect(try await tableExists("events", app) == true)
            // The recorder works on the rebuilt schema.
            let result = try await app.writeTransaction { db in try await app.activityRecorder.record(event: EventRecord(type: "test.event", actorID: nil, resourceType: "test", resourceID: nil), on: db) }
            #expect(try await app.numbered(result).event == 1)
        }
    }

    @Test("--revert undoes the last batch only")
    func revertLastBatch() async throws {
        try await withTestApp { app in
            let service = MigrationService(app: app)
            let newest = try #require(try await service.status().last?.version)
            let penultimate = try #require(try await service.status().dropLast().last?.version)
            try await service.revert(downTo: penultimate)
            #expect(try await service.migrate() == [newest])
            // Batch 2 holds only the newest migration.
            let reverted = try await service.revertLastBatch()
            #expect(reverted == [newest])
            let states = try await service.status()
            #expect(states.filter(\.applied).count == AppMigrations.all(app.keyMaterial).count - 1)
        }
    }

    @Test("down --to 0 reverts everything and up rebuilds it")
    func downToZero() async throws {
        try await withTestApp { app in
            let service = MigrationService(app: app)
            try await service.revert(downTo: "0")
            #expect(try await service.status().allSatisfy { !$0.applied })
            #expect(try await tableExists("ledger_heads", app) == false)
            #expect(try await service.migrate().count == AppMigrations.all(app.keyMaterial).count)
        }
    }

    @Test("down --to an unknown name fails and changes nothing")
    func unknownTarget() async throws {
        try await withTestApp { app in
            let service = MigrationService(app: app)
            await #expect(throws: MigrationServiceError.self) { try await service.revert(downTo: "0099_Nothing") }
            let allApplied = try await service.status().allSatisfy { $0.applied }
            #expect(allApplied)
        }
    }

    private func tableExists(_ name: String, _ app: Application) async throws -> Bool {
        let sql = app.db as! any SQLDatabase
        let query: SQLQueryString = TestDatabase.isPostgres
            ? "SELECT 1 AS present FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = \(bind: name)"
            : "SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = \(bind: name)"
        return try await sql.raw(query).first() != nil
    }
}
