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

    /// A kind admitted beside the loops: each job holds one of its group's slots until the test lets it go.
    private struct Waiter: JobHandler {
        let state: NIOLockedValueBox<(running: [String: Int], most: [String: Int], admitted: Int, mostAdmitted: Int, done: Int)>
        /// Jobs the test has let go and no job has taken yet.
        let gate: NIOLockedValueBox<Int>
        var admission: JobAdmission { .beside(perGroup: 2, admittedPerGroup: 3, total: 4) }

        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            let group = job.groupKey ?? ""
            state.withLockedValue { $0.admitted += 1; $0.mostAdmitted = max($0.mostAdmitted, $0.admitted) }
            let slots = try #require(context.slots)
            await slots.acquire()
            state.withLockedValue { state in
                state.running[group, default: 0] += 1
                state.most[group] = max(state.most[group] ?? 0, state.running[group]!)
            }
            while !gate.withLockedValue({ open in
                guard open > 0 else { return false }
                open -= 1
                return true
            }) {
                try await Task.sleep(for: .milliseconds(10))
            }
            state.withLockedValue { $0.running[group, default: 1] -= 1; $0.admitted -= 1 }
            slots.release()
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .succeeded, on: db) }
            state.withLockedValue { $0.done += 1 }
        }
    }

    private struct Quick: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            _ = try await app.writeTransaction { db in try await JobQueue(app: app).finish(job, status: .succeeded, on: db) }
        }
    }

    @Test("A kind admitted beside the loops keeps a single loop free, holds its per-group and total limits, and loses no job")
    func besideAdmission() async throws {
        try await withTestApp { app in
            let state = NIOLockedValueBox((running: [String: Int](), most: [String: Int](), admitted: 0, mostAdmitted: 0, done: 0))
            let gate = NIOLockedValueBox(0)
            app.jobHandlers.register("test.wait", Waiter(state: state, gate: gate))
            app.jobHandlers.register("test.quick", Quick())
            #expect(app.jobHandlers.besideKinds == ["test.wait", "webhook.deliver"])
            let quick = try await app.writeTransaction { db in
                let queue = JobQueue(app: app)
                for _ in 0..<5 { _ = try await queue.enqueue(kind: "test.wait", payload: [:], groupKey: "a", on: db) }
                for _ in 0..<2 { _ = try await queue.enqueue(kind: "test.wait", payload: [:], groupKey: "b", on: db) }
                return try await queue.enqueue(kind: "test.quick", payload: [:], runAt: Date().addingTimeInterval(0.2), on: db)
            }
            app.jobWorkers.start(app, count: 1)
            // The one loop is not held by the waiting jobs: the quick job runs while they wait.
            for _ in 0..<100 where try await Job.find(quick, on: app.db)?.status != .succeeded { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await Job.find(quick, on: app.db)?.status == .succeeded)
            #expect(state.withLockedValue { $0.mostAdmitted } == 4, "the kind's total")
            #expect(state.withLockedValue { $0.most["a"] ?? 0 } == 2, "a group's slots")
            // Let them go one by one: every job runs, none beyond the limits.
            for _ in 0..<60 {
                gate.withLockedValue { $0 += 1 }
                if state.withLockedValue({ $0.done }) == 7 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(state.withLockedValue { $0.done } == 7)
            #expect(state.withLockedValue { $0.mostAdmitted } <= 4)
            #expect(state.withLockedValue { $0.most.values.max() ?? 0 } <= 2)
            #expect(try await Job.query(on: app.db).filter(\.$kind == "test.wait").filter(\.$status == .succeeded).count() == 7)
        }
    }
}
