import Fluent
import NIOConcurrencyHelpers
import Foundation
import StewardFormats
import Testing
import Vapor
@testable import App

@Suite("Job handlers")
struct JobHandlersTests {
    /// A kind only this test registers: it records what the worker handed it.
    private struct Probe: JobHandler {
        let seen: NIOLockedValueBox<[String]>

        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            seen.withLockedValue { $0.append("ran \(job.payload.object?["n"]?.intValue ?? -1)") }
            if job.attempts < 2 { throw Abort(.serviceUnavailable) }
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .succeeded, on: db) }
        }

        func willRetry(_ job: ClaimedJob, reason: String, app: Application) async throws {
            seen.withLockedValue { $0.append("retrying") }
        }
    }

    @Test("Every feature's job kind has its handler at boot; a kind registered by a feature runs through the generic worker")
    func registry() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            #expect(app.jobHandlers.kinds == ["execution.rollback", "execution.run", "maintenance.run", "schedule.fire",
                                              "webhook.deliver", "workflow.advance", "workflow.rollback"])
            let seen = NIOLockedValueBox<[String]>([])
            app.jobHandlers.register("test.probe", Probe(seen: seen))
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).enqueue(kind: "test.probe", payload: ["n": 7], on: db) }
            // The first attempt fails and is retried after its back-off; the second succeeds.
            let first = try #require(try await JobQueue(app: app).claim(worker: "test"))
            await JobRunner(app: app).run(first)
            #expect(seen.withLockedValue { $0 } == ["ran 7", "retrying"])
            let job = try #require(try await Job.find(first.id, on: app.db))
            job.runAt = Date(timeIntervalSince1970: 0)
            try await app.writeTransaction { db in try await job.save(on: db) }
            let second = try #require(try await JobQueue(app: app).claim(worker: "test"))
            await JobRunner(app: app).run(second)
            #expect(seen.withLockedValue { $0 } == ["ran 7", "retrying", "ran 7"])
            #expect(try await Job.find(first.id, on: app.db)?.status == .succeeded)
        }
    }
}
