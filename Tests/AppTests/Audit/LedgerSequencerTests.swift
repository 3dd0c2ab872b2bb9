import Fluent
import Foundation
import SQLKit
import Testing
import VaporTesting
@testable import App

/// The PostgreSQL sequencer (`LedgerSequencer`): writers leave events and audit entries pending, and passes number
/// them after the commit. SQLite numbers inside its single writer (`ActivityRecorderTests` covers both).
@Suite("Ledger sequencer (PostgreSQL)", .enabled(if: TestDatabase.isPostgres, "needs PostgreSQL (runs in the PostgreSQL leg)"))
struct LedgerSequencerTests {
    private func audit(_ action: String) -> AuditRecord {
        AuditRecord(action: action, actorID: nil, actorType: .system, resourceType: "thing", resourceID: "t-1")
    }

    private func event(_ type: String) -> EventRecord {
        EventRecord(type: type, actorID: nil, resourceType: "thing", resourceID: "t-1", data: ["n": 1])
    }

    /// Every event in `seq` order, as a reader sees it: "seq id type".
    private func log(_ app: Application) async throws -> [String] {
        try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all().map { "\($0.seq) \($0.id!) \($0.type)" }
    }

    @Test("A write whose transaction is still open while later ones commit is numbered once it commits, after them: none is skipped, no gap, and numbers once read never change")
    func openTransactionIsNotSkipped() async throws {
        try await withTestApp { app in
            let recorder = app.activityRecorder
            let written = AsyncBarrier(parties: 2)
            let release = AsyncBarrier(parties: 2)
            let slow = Task {
                try await app.writeTransaction { db in
                    let recorded = try await recorder.record(audit: audit("slow"), event: event("slow"), on: db)
                    await written.arrive()
                    await release.arrive()
                    return recorded
                }
            }
            await written.arrive()
            for index in 0..<3 {
                try await app.writeTransaction { db in try await recorder.record(audit: audit("quick.\(index)"), event: event("quick"), on: db) }
            }
            let before = try await log(app)
            #expect(before.count >= 3)
            #expect(!before.contains { $0.hasSuffix(" slow") }, "an uncommitted write is not numbered")
            #expect(before.map { Int64($0.split(separator: " ")[0])! } == Array(1...Int64(before.count)))

            await release.arrive()
            let slowWrite = try await slow.value
            let after = try await log(app)
            #expect(after.count == before.count + 1)
            #expect(Array(after.prefix(before.count)) == before, "what was read is unchanged")
            #expect(after.last == "\(before.count + 1) \(try #require(slowWrite.eventID)) slow", "numbered after the writes that committed first")
            let entries = try await AuditLog.query(on: try await app.settledLedger()).sort(\.$seq).all()
            #expect(entries.last?.action == "slow")
            #expect(entries.map(\.seq) == Array(1...Int64(entries.count)))
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
        }
    }

    @Test("200 writes from 20 connections at once all commit, are numbered without a gap in order, and the chain verifies")
    func concurrentWriters() async throws {
        try await withTestApp { app in
            let recorder = app.activityRecorder
            let start = try await EventHub.maxSeq(on: try await app.settledLedger())
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<20 {
                    group.addTask {
                        for item in 0..<10 {
                            try await app.writeTransaction { db in
                                try await recorder.record(audit: audit("w\(worker).\(item)"), event: event("w"), on: db)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seqs = try await Event.query(on: try await app.settledLedger()).filter(\.$type == "w").sort(\.$seq).all().map(\.seq)
            #expect(seqs == Array((start + 1)...(start + 200)))
            let verification = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
            #expect(verification.isIntact)
            #expect(try await AuditLog.query(on: app.db).filter(\.$action ~~ (0..<20).flatMap { w in (0..<10).map { "w\(w).\($0)" } }).count() == 200)
        }
    }

    @Test("With no sequencer running, a read that settles numbers the writes committed before it itself, and finds nothing pending afterwards")
    func settleNumbersWithoutTheLoop() async throws {
        try await withTestApp { app in
            let loop = try #require(app.ledgerSequencerLoop)
            await loop.shutdownAsync(app)
            let recorder = app.activityRecorder
            var ids: [UUID] = []
            for index in 0..<3 {
                let recorded = try await app.writeTransaction { db in
                    try await recorder.record(audit: audit("unsequenced.\(index)"), event: event("unsequenced"), on: db)
                }
                ids.append(try #require(recorded.eventID))
            }
            let sql = app.db as! any SQLDatabase
            let waiting = try await sql.raw("SELECT count(*) AS n FROM pending_events").first()?.decode(column: "n", as: Int.self)
            #expect(waiting == 3, "nobody numbered them yet")

            let numbered = try await Event.query(on: try await app.settledLedger()).filter(\.$type == "unsequenced").sort(\.$seq).all()
            #expect(numbered.map(\.id) == ids, "all three, in commit order")
            let entries = try await AuditLog.query(on: app.db).filter(\.$action ~~ (0..<3).map { "unsequenced.\($0)" }).count()
            #expect(entries == 3)
            let left = try await sql.raw("SELECT count(*) AS n FROM pending_events").first()?.decode(column: "n", as: Int.self)
            #expect(left == 0)
        }
    }

    @Test("One instance holds the sequencer lease; when it stops, another takes it over with the next term within the lease time and goes on numbering")
    func leaseFailover() async throws {
        let directoryA = try TemporaryDirectory()
        let directoryB = try TemporaryDirectory()
        defer { directoryA.remove(); directoryB.remove() }
        let a = try await makeTestApp(directory: directoryA)
        var aRunning = true
        let b = try await makeTestApp(directory: directoryB, freshDatabase: false, migrate: false)
        do {
            b.ledgerSequencerLoop?.start(b)
            let loopA = try #require(a.ledgerSequencerLoop), loopB = try #require(b.ledgerSequencerLoop)
            try await eventually(5, "A holds the lease") { loopA.term != nil }
            try await Task.sleep(for: LedgerSequencerLoop.renewEvery * 2)
            #expect(loopB.term == nil, "only one holder")
            let termA = try #require(loopA.term)

            // Written on B, numbered by A's loop: nobody settles here.
            let first = try await b.writeTransaction { db in try await b.activityRecorder.record(event: event("on.b"), on: db) }
            try await eventually(5, "A's loop numbers B's write") { try await Event.find(first.eventID, on: b.db) != nil }

            try await a.asyncShutdown()
            aRunning = false
            try await eventually(Double(LedgerSequencerLoop.leaseSeconds) + 3, "B takes the lease over") { loopB.term != nil }
            #expect(try #require(loopB.term) > termA)
            let second = try await b.writeTransaction { db in try await b.activityRecorder.record(event: event("on.b"), on: db) }
            try await eventually(5, "B's loop numbers it") { try await Event.find(second.eventID, on: b.db) != nil }
            let seqs = try await Event.query(on: b.db).filter(\.$type == "on.b").sort(\.$seq).all().map(\.seq)
            #expect(seqs.count == 2 && seqs[1] > seqs[0])
        } catch {
            try? await b.asyncShutdown()
            if aRunning { try? await a.asyncShutdown() }
            throw error
        }
        try await b.asyncShutdown()
    }
}
