import AsyncHTTPClient
import Fluent
import Foundation
import SQLKit
import Testing
import VaporTesting
@testable import App

@Suite("Commands")
struct CommandTests {
    @Test("migrate status prints each migration with applied or pending and the time")
    func migrateStatus() async throws {
        try await withTestApp { app in
            try await MigrationService(app: app).revert(downTo: "0003_CreateEvents")
            let output = try await app.runCommand(["migrate", "status"])
            #expect(output.contains("applied  0001_CreateLedgerHeads"))
            #expect(output.contains("pending  0004_CreateUsers"))
            #expect(output.contains("3 applied, \(AppMigrations.all(app.keyMaterial).count - 3) pending"))
            #expect(output.range(of: #"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"#, options: .regularExpression) != nil)
        }
    }

    @Test("migrate, migrate --revert and migrate down --to work from the command line")
    func migrateCommands() async throws {
        try await withTestApp(migrate: false) { app in
            let up = try await app.runCommand(["migrate"])
            #expect(up.contains("applied 0004_CreateUsers"))
            #expect(try await app.runCommand(["migrate"]).contains("No pending migrations."))

            let down = try await app.runCommand(["migrate", "down", "--to", "CreateLedgerHeads"])
            #expect(down.contains("reverted 0004_CreateUsers"))
            #expect(down.contains("reverted 0002_CreateAuditLogs"))
            #expect(try await MigrationService(app: app).status().filter(\.applied).count == 1)

            _ = try await app.runCommand(["migrate"])
            let revert = try await app.runCommand(["migrate", "--revert"])
            #expect(revert.contains("reverted 0004_CreateUsers"))
            #expect(try await MigrationService(app: app).status().filter(\.applied).count == 1)
        }
    }

    @Test("migrate down without --to fails with a one-line reason")
    func migrateDownNeedsTarget() async throws {
        try await withTestApp { app in
            let error = await #expect(throws: CommandFailure.self) { try await app.runCommand(["migrate", "down"]) }
            #expect(error?.description.contains("--to") == true)
        }
    }

    @Test("db check passes on a healthy database and reports each check")
    func databaseCheck() async throws {
        try await withTestApp { app in
            let output = try await app.runCommand(["db", "check"])
            #expect(output.contains("ok   connectivity"))
            #expect(output.contains("ok   migrations"))
            #expect(output.contains("ok   audit chain"))
            #expect(!output.contains("FAIL"))
        }
    }

    @Test("db check fails, naming the check, when migrations are pending")
    func databaseCheckFails() async throws {
        try await withTestApp { app in
            try await MigrationService(app: app).revert(downTo: "0003_CreateEvents")
            let error = await #expect(throws: CommandFailure.self) { try await app.runCommand(["db", "check"]) }
            #expect(error?.description.contains("migrations") == true)
        }
    }

    @Test("db backup --out writes a private, complete copy while the app is running")
    func databaseBackup() async throws {
        try await withTestApp { app in
            for index in 0..<50 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(event: EventRecord(type: "row", actorID: nil, resourceType: "row", resourceID: "\(index)"), on: db) }
            }
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = directory.path + "/nested/backup.db"
            let output = try await app.runCommand(["db", "backup", "--out", path])
            #expect(output.contains("backup written to \(path)"))

            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            #expect(((attributes[.size] as? Int) ?? 0) > 0)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path + "/nested")
            #expect(leftovers == ["backup.db"])

            if !TestDatabase.isPostgres {
                // The copy opens as a database holding every row.
                let restored = try await makeTestApp(directory: directory, environment: ["DATABASE_URL": "sqlite:\(path)"], freshDatabase: false, migrate: false)
                let count = try await Event.query(on: restored.db).count()
                try await restored.asyncShutdown()
                #expect(count == 50)
            } else {
                let header = try FileHandle(forReadingFrom: URL(fileURLWithPath: path)).readData(ofLength: 5)
                #expect(header == Data("PGDMP".utf8))
            }

            let again = await #expect(throws: CommandFailure.self) { try await app.runCommand(["db", "backup", "--out", path]) }
            #expect(again?.description.contains("already exists") == true)
        }
    }

    @Test("audit verify passes on an intact chain and fails naming the tampered entry")
    func auditVerify() async throws {
        try await withTestApp { app in
            for index in 1...4 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: AuditRecord(action: "a.\(index)", actorID: nil, actorType: .system), on: db) }
            }
            #expect(try await app.runCommand(["audit", "verify"]).contains("audit chain intact: 4 entries"))

            try await tamper(app, "UPDATE audit_logs SET action = 'a.forged' WHERE seq = 3")
            let error = await #expect(throws: CommandFailure.self) { try await app.runCommand(["audit", "verify"]) }
            #expect(error?.description.contains("broken at entry 3") == true)
        }
    }

    @Test("Every command answers --help")
    func help() async throws {
        try await withTestApp { app in
            for command in [["serve"], ["migrate"], ["migrate", "status"], ["migrate", "down"], ["db", "backup"], ["db", "check"], ["audit", "verify"]] {
                let output = try await app.runCommand(command + ["--help"])
                #expect(!output.isEmpty, "\(command) --help printed nothing")
            }
            #expect(try await app.runCommand(["migrate", "down", "--help"]).contains("--to"))
            #expect(try await app.runCommand(["db", "backup", "--help"]).contains("--out"))
        }
    }
}

@Suite("Migrating beside a live server")
struct LiveMigrationTests {
    @Test("steward migrate from a second process beside a live SQLite server: requests before, during and after never answer 500, and cached statements keep working",
          .enabled(if: !TestDatabase.isPostgres), .timeLimit(.minutes(2)))
    func migrateFromSecondProcess() async throws {
        let binary = try stewardBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let secret = String(repeating: "live-migrate-", count: 4)
        let app = try await makeTestApp(directory: directory, environment: ["STEWARD_JWT_SECRET": secret])
        do {
            // As after an upgrade: the newest migrations are pending while the server runs.
            _ = try await MigrationService(app: app).revert(downTo: "0023_CountActiveExecutions")
            let admin = try await adminToken(app)
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                try await app.withLiveServer { port in
                    let base = "http://127.0.0.1:\(port)/api/v1"
                    var created = 0
                    func round() async throws -> [UInt] {
                        created += 1
                        var statuses: [UInt] = []
                        for (method, path, body) in [(HTTPMethod.GET, "/auth/me", nil), (.GET, "/skills?limit=5", nil),
                                                     (.POST, "/skills", #"{"slug": "live-\#(created)", "name": "Live", "runner": {"type": "builtin", "name": "echo"}}"#)] {
                            var request = HTTPClientRequest(url: base + path)
                            request.method = method
                            request.headers.add(name: "Authorization", value: "Bearer \(admin)")
                            if let body {
                                request.headers.add(name: "Content-Type", value: "application/json")
                                request.body = .bytes(ByteBuffer(string: body))
                            }
                            let response = try await client.execute(request, timeout: .seconds(30))
                            statuses.append(response.status.code)
                            _ = try await response.body.collect(upTo: 1 << 20)
                        }
                        return statuses
                    }
                    var statuses = try await round()
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: binary)
                    process.arguments = ["migrate"]
                    process.environment = [
                        "DATABASE_URL": "sqlite:\(directory.path)/steward.sqlite", "STEWARD_DATA_DIR": directory.path,
                        "STEWARD_JWT_SECRET": secret, "STEWARD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin",
                    ]
                    let output = Pipe()
                    process.standardOutput = output
                    process.standardError = output
                    try process.run()
                    while process.isRunning { statuses += try await round() }
                    process.waitUntilExit()
                    let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    #expect(process.terminationStatus == 0, "\(printed)")
                    for _ in 0..<3 { statuses += try await round() }
                    #expect(statuses.allSatisfy { $0 < 500 }, "\(statuses)")
                    #expect(statuses.suffix(9).allSatisfy { $0 < 300 }, "after the migration every request succeeds: \(statuses.suffix(9))")
                    #expect(try await MigrationService(app: app).status().allSatisfy(\.applied))
                    #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
                }
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()
        } catch {
            try? await app.asyncShutdown()
            throw error
        }
        try await app.asyncShutdown()
    }
}
