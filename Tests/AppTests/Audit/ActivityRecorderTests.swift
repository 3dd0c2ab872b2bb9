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
                #expect(result.auditSeq == Int64(index))
                #expect(result.eventSeq == Int64(index))
            }
            let events = try await Event.query(on: app.db).sort(\.$seq).all()
            #expect(events.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(JSONValue.parse(events[0].data) == ["n": 1])
            let logs = try await AuditLog.query(on: app.db).sort(\.$seq).all()
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
            #expect(try await AuditLog.query(on: app.db).filter(\.$action == "doomed").count() == 0)
            #expect(try await Event.query(on: app.db).filter(\.$type == "doomed").count() == 0)

            let next = try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("second"), event: event("second"), on: db) }
            #expect(next.auditSeq == 2)
            #expect(next.eventSeq == 2)
            #expect(try await AuditChain.verify(on: app.db).isIntact)
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
            let seqs = try await Event.query(on: app.db).sort(\.$seq).all().map(\.seq)
            #expect(seqs == Array(1...80))
            let verification = try await AuditChain.verify(on: app.db)
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
            #expect(try await AuditChain.verify(on: app.db).isIntact)

            try await tamper(app, "UPDATE audit_logs SET outcome = 'failure' WHERE seq = 4")
            let result = try await AuditChain.verify(on: app.db)
            #expect(result.firstBroken?.seq == 4)
            #expect(result.checked == 3)
        }
    }

    @Test("The database itself refuses UPDATE on audit entries")
    func immutable() async throws {
        try await withTestApp { app in
            try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("original"), on: db) }
            await #expect(throws: (any Error).self) {
                try await app.writeStatements { sql in try await sql.raw("UPDATE audit_logs SET action = 'rewritten'").run() }
            }
            #expect(try await AuditLog.query(on: app.db).first()?.action == "original")
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
            let remaining = try await AuditLog.query(on: app.db).sort(\.$seq).all().map(\.action)
            #expect(remaining == ["new.1", "new.2", "new.3", "audit.retention"])
            let verification = try await AuditChain.verify(on: app.db)
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
            #expect(try await AuditChain.verify(on: app.db).firstBroken?.seq == 5)

            try await tamper(app, "DELETE FROM audit_logs WHERE seq = 2")
            #expect(try await AuditChain.verify(on: app.db).firstBroken?.seq == 3)
        }
    }

    @Test("Details are stored as canonical JSON and never reordered")
    func canonicalDetails() async throws {
        try await withTestApp { app in
            try await app.writeTransaction { db in try await app.activityRecorder.record(audit: audit("x", details: ["b": 2, "a": "é \"quoted\"", "c": [true, nil]]), on: db) }
            let log = try #require(try await AuditLog.query(on: app.db).first())
            #expect(log.details == #"{"a":"é \"quoted\"","b":2,"c":[true,null]}"#)
        }
    }
}
