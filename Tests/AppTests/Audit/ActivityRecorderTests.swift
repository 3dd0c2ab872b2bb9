import Crypto
import Fluent
import Foundation
import SQLKit
import Testing
import VaporTesting
@testable import App
import StewardFormats

private struct Rollback: Error {}

@Suite("ActivityRecorder")
struct ActivityRecorderTests {
    private func audit(_ action: String, details: JSONValue = [:]) -> AuditRecord {
        AuditRecord(action: action, actorID: UUID(), actorType: .user, resourceType: "thing", resourceID: "t-1",
                    origin: RequestOrigin(ipAddress: "203.0.113.9", userAgent: "tests", requestID: "req-1"), details: details)
    }

    private func event(_ type: String) -> EventRecord {
        EventRecord(type: type, actorID: UUID(), resourceType: "thing", resourceID: "t-1", data: ["n": 1])
    }

    @Test("Audit entries and events get strictly increasing seq numbers starting at 1")
    func sequences() async throws {
        try await withTestApp { app in
            for index in 1...5 {
                let result = try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("thing.changed"), event: event("thing.changed"), on: db) }
                let seqs = try await app.numbered(result)
                #expect(seqs.audit == Int64(index))
                #expect(seqs.event == Int64(index))
            }
            let events = try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all()
            #expect(events.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(JSONValue.parse(events[0].data) == ["n": 1])
            let logs = try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq).all()
            #expect(logs.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(logs[0].ipAddress == "203.0.113.9")
            #expect(logs[0].requestID == "req-1")
            #expect(logs[0].outcome == "success")
        }
    }

    @Test("A rolled-back transaction leaves neither audit entry nor event, and no gap in seq")
    func rollbackLeavesNothing() async throws {
        try await withTestApp { app in
            try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("first"), event: event("first"), on: db) }
            await #expect(throws: Rollback.self) {
                try await app.writeTransaction { db in
                    try await app.activityRecorder.record(audit: self.audit("doomed"), event: self.event("doomed"), on: db)
                    throw Rollback()
                }
            }
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "doomed").count() == 0)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "doomed").count() == 0)

            let next = try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("second"), event: event("second"), on: db) }
            let seqs = try await app.numbered(next)
            #expect(seqs.audit == 2)
            #expect(seqs.event == 2)
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
        }
    }

    @Test("Concurrent writers never share or skip a seq, and the chain stays intact")
    func concurrentWriters() async throws {
        try await withTestApp { app in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for item in 0..<10 {
                            try await app.writeTransaction { db in
                                try await app.activityRecorder.record(
                                    audit: AuditRecord(action: "w\(worker).\(item)", actorID: nil, actorType: .system),
                                    event: EventRecord(type: "w.\(worker)", actorID: nil, resourceType: "w", resourceID: "\(item)"),
                                    on: db)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seqs = try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all().map(\.seq)
            #expect(seqs == Array(1...80))
            let verification = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
            #expect(verification.isIntact)
            #expect(verification.checked == 80)
        }
    }

    @Test("The hash chain detects an entry altered in SQL and names the first broken link")
    func tamperedContent() async throws {
        try await withTestApp { app in
            for index in 1...6 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("action.\(index)", details: ["index": .number(Double(index))]), on: db) }
            }
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)

            try await tamper(app, "UPDATE audit_logs SET outcome = 'failure' WHERE seq = 4")
            let result = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
            #expect(result.firstBroken?.seq == 4)
            #expect(result.checked == 3)
        }
    }

    @Test("Someone with write access but not the key who edits an entry and recomputes every link and the head is caught")
    func recomputedChain() async throws {
        try await withTestApp { app in
            for index in 1...6 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("action.\(index)"), on: db) }
            }
            try await tamper(app, "UPDATE audit_logs SET outcome = 'failure' WHERE seq = 4")
            // The attacker re-links everything as the chain was once linked (plain SHA-256), or under a key of their own.
            for link in [{ (entry: AuditChain.Entry, previous: String) in AuditChain.unkeyedHash(of: entry, previous: previous) },
                         { (entry: AuditChain.Entry, previous: String) in AuditChain.hash(of: entry, previous: previous, key: SymmetricKey(size: .bits256)) }] {
                var previous = AuditChain.genesisHash
                for log in try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq).all() {
                    let hash = link(AuditChain.Entry(log), previous)
                    try await tamper(app, "UPDATE audit_logs SET prev_hash = \(bind: previous), hash = \(bind: hash) WHERE seq = \(bind: log.seq)")
                    previous = hash
                }
                try await tamper(app, "UPDATE ledger_heads SET last_hash = \(bind: previous) WHERE name = 'audit'")
                let result = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
                #expect(result.firstBroken?.seq == 1 && result.firstBroken?.reason == "content does not match its hash", "\(String(describing: result.firstBroken))")
            }
        }
    }

    @Test("A signed checkpoint proves the history up to it: the newest entries deleted with the head rewound pass the chain but not the checkpoint; a forged one is refused")
    func checkpoints() async throws {
        try await withTestApp { app in
            let admin = try await adminToken(app)
            let res = try await app.testing().sendRequest(.GET, "/api/v1/audit/checkpoint", headers: ["Authorization": "Bearer \(admin)"])
            #expect(res.status == .ok && res.headers.first(name: .cacheControl) == "no-store")
            let checkpoint = try res.content.decode(AuditCheckpoint.self)
            let newest = try #require(try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq, .descending).first())
            #expect(checkpoint.seq == newest.seq && checkpoint.hash == newest.hash)
            #expect(checkpoint.publicKey == app.auditKeys.checkpointPublicKey)
            let key = try Curve25519.Signing.PublicKey(rawRepresentation: try #require(Data(base64Encoded: checkpoint.publicKey)))
            #expect(checkpoint.isSigned(by: key))

            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let file = directory.path + "/checkpoint.json"
            let printed = try await app.runCommand(["audit", "checkpoint"])
            try Data(printed.utf8).write(to: URL(fileURLWithPath: file))
            let fromCLI = try JSONDecoder.api.decode(AuditCheckpoint.self, from: Data(printed.utf8))
            #expect(fromCLI.seq == checkpoint.seq && fromCLI.isSigned(by: key))
            for index in 1...3 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("later.\(index)"), on: db) }
            }
            #expect(try await app.runCommand(["audit", "verify", "--checkpoint", file]).contains("up to the checkpoint at entry \(checkpoint.seq) is unchanged"))

            // Cut the tail from the checkpoint's entry on and rewind the head: the chain alone still verifies.
            let kept = try #require(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$seq == checkpoint.seq - 1).first())
            try await tamper(app, "DELETE FROM audit_logs WHERE seq >= \(bind: checkpoint.seq)")
            try await tamper(app, "UPDATE ledger_heads SET seq = \(bind: kept.seq), last_hash = \(bind: kept.hash) WHERE name = 'audit'")
            #expect(try await app.runCommand(["audit", "verify"]).contains("audit chain intact"))
            do {
                _ = try await app.runCommand(["audit", "verify", "--checkpoint", file])
                Issue.record("a truncated history passed the checkpoint")
            } catch let failure as CommandFailure {
                #expect(failure.description.contains("entry \(checkpoint.seq), which the checkpoint names, is missing"), "\(failure)")
            }

            // A checkpoint edited to name another link no longer verifies with the instance's key.
            var forged = checkpoint
            forged.hash = kept.hash
            try Data(try APIJSON.string(forged).utf8).write(to: URL(fileURLWithPath: file))
            do {
                _ = try await app.runCommand(["audit", "verify", "--checkpoint", file])
                Issue.record("a forged checkpoint was accepted")
            } catch let failure as CommandFailure {
                #expect(failure.description.contains("signature does not verify"), "\(failure)")
            }
        }
    }

    @Test("Migration 0025 re-links an existing unkeyed chain with the key, and its revert links it with SHA-256 again")
    func keyingMigration() async throws {
        try await withTestApp { app in
            for index in 1...4 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("action.\(index)"), on: db) }
            }
            #expect(try await MigrationService(app: app).revert(downTo: "0024_SealHeaderValues").contains("0025_KeyAuditChain"))
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).firstBroken?.seq == 1, "unkeyed links fail the keyed check")
            var previous = AuditChain.genesisHash
            for log in try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq).all() {
                #expect(log.prevHash == previous && log.hash == AuditChain.unkeyedHash(of: AuditChain.Entry(log), previous: previous))
                previous = log.hash
            }
            try await MigrationService(app: app).migrate()
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
        }
    }

    @Test("The database itself refuses UPDATE on audit entries")
    func immutable() async throws {
        try await withTestApp { app in
            try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("original"), on: db) }
            _ = try await app.settledLedger()
            await #expect(throws: (any Error).self) {
                try await app.writeStatements { sql in try await sql.raw("UPDATE audit_logs SET action = 'rewritten'").run() }
            }
            #expect(try await AuditLog.query(on: try await app.settledLedger()).first()?.action == "original")
        }
    }

    @Test("Retention deletes old entries, records what it removed, and the remaining chain still verifies")
    func retention() async throws {
        try await withTestApp(environment: ["STEWARD_AUDIT_RETENTION_DAYS": "30"]) { app in
            let clock = TestClock()
            app.wallClock = clock
            for index in 1...5 { try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("old.\(index)"), on: db) } }
            clock.advance(by: 40 * 86_400)
            for index in 1...3 { try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("new.\(index)"), on: db) } }

            #expect(try await AuditLogService(app: app).applyRetention() == 5)
            let remaining = try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq).all().map(\.action)
            #expect(remaining == ["new.1", "new.2", "new.3", "audit.retention"])
            let verification = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
            #expect(verification.isIntact)
            #expect(verification.checked == 4)
            #expect(try await AuditLogService(app: app).applyRetention() == 0)
        }
    }

    @Test("The hash chain detects a deleted entry in the middle and at the end")
    func deletedEntries() async throws {
        try await withTestApp { app in
            for index in 1...5 {
                try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("action.\(index)"), on: db) }
            }
            try await tamper(app, "DELETE FROM audit_logs WHERE seq = 5")
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).firstBroken?.seq == 5)

            try await tamper(app, "DELETE FROM audit_logs WHERE seq = 2")
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).firstBroken?.seq == 3)
        }
    }

    @Test("Details are stored as canonical JSON and never reordered")
    func canonicalDetails() async throws {
        try await withTestApp { app in
            try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("x", details: ["b": 2, "a": "é \"quoted\"", "c": [true, nil]]), on: db) }
            let log = try #require(try await AuditLog.query(on: try await app.settledLedger()).first())
            #expect(log.details == #"{"a":"é \"quoted\"","b":2,"c":[true,null]}"#)
        }
    }
}
