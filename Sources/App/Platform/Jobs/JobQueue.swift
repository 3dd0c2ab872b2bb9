import Fluent
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// A job a worker holds under a lease. Every write about it is fenced by `token`.
struct ClaimedJob: Sendable {
    var id: UUID
    var kind: String
    var payload: JSONValue
    var attempts: Int
    var maxAttempts: Int
    var token: UUID
    /// Jobs of one group (a webhook endpoint, say) can be held back together (`claim(skipping:)`).
    var groupKey: String?
}

/// The durable queue: jobs are rows, enqueued in the same transaction as the row they serve, claimed atomically
/// (`UPDATE … RETURNING` on SQLite, `FOR UPDATE SKIP LOCKED` on PostgreSQL), held under a lease that heartbeats
/// extend, and rescued when a lease expires. A worker that lost its lease cannot write a result.
struct JobQueue: Sendable {
    let app: Application

    private var now: Date { app.wallClock.now() }
    private var config: AppConfig { app.appConfig }

    private static let insert = FixedStatement.insert(
        into: Job.schema,
        columns: ["id", "kind", "payload", "status", "run_at", "attempts", "max_attempts", "group_key", "created_at", "updated_at"],
        deferrable: true)

    /// Adds a job inside the caller's transaction and wakes this process's workers.
    @discardableResult
    func enqueue(kind: String, payload: JSONValue, maxAttempts: Int? = nil, runAt: Date? = nil, groupKey: String? = nil,
                 on db: any Database) async throws -> UUID {
        let id = UUID.timeOrdered()
        let now = self.now
        // Plain SQL rather than a Fluent model: every execution, delivery and schedule firing enqueues inside a
        // write transaction.
        let sql = db as! any SQLDatabase
        try await sql.run(Self.insert, [
            id, kind, payload.canonicalString(), Job.Status.queued.rawValue, runAt ?? now, 0, maxAttempts ?? config.jobMaxAttempts, groupKey, now, now,
        ])
        // Other instances hear of it when the transaction commits (and not at all if it rolls back).
        if sql.dialect.name == "postgresql" {
            try await AfterCommit.note(JobNotificationListener.channel, on: sql)
        }
        app.jobSignal.notify()
        return id
    }

    /// Claims the oldest due job, or nil. One statement, so two workers never claim the same job.
    /// `skipping` names groups this worker cannot run now; `skippingKinds` kinds it cannot take at all.
    func claim(worker: String, skipping groups: [String] = [], skippingKinds kinds: [String] = []) async throws -> ClaimedJob? {
        try await app.writeStatements { sql in try await claim(worker: worker, skipping: groups, skippingKinds: kinds, on: sql) }
    }

    /// `claim`, inside `sql`'s transaction (see `FollowOnClaim`).
    func claim(worker: String, skipping groups: [String] = [], skippingKinds kinds: [String] = [], on sql: any SQLDatabase) async throws -> ClaimedJob? {
        let now = self.now
        let token = UUID.pooledRandom()
        let expires = now.addingTimeInterval(TimeInterval(config.jobLeaseSeconds))
        let statement = Self.claimStatement(groups: groups.count, kinds: kinds.count, postgres: sql.dialect.name == "postgresql")
        let values: [any RowValue] = [worker, token, expires, now, now] + groups + kinds
        guard let row = try await sql.first(statement, values) else { return nil }
        return ClaimedJob(
            id: try row.decode(column: "id", as: UUID.self), kind: try row.decode(column: "kind", as: String.self),
            payload: JSONValue.parse(try row.decode(column: "payload", as: String.self)),
            attempts: try row.decode(column: "attempts", as: Int.self), maxAttempts: try row.decode(column: "max_attempts", as: Int.self),
            token: token, groupKey: try row.decode(column: "group_key", as: String?.self))
    }

    /// The claim: the oldest due job, not in one of `groups` groups, not of one of `kinds` kinds, locked for this
    /// transaction (and skipped by others') on PostgreSQL. The statements without groups and with at most one
    /// kind skipped, the usual ones, are made once.
    private static func claimStatement(groups: Int, kinds: Int, postgres: Bool) -> FixedStatement {
        if groups == 0, kinds <= 1 { return claimStatements[kinds + (postgres ? 2 : 0)] }
        return claimText(groups: groups, kinds: kinds, postgres: postgres)
    }

    private static let claimStatements = [(0, false), (1, false), (0, true), (1, true)].map {
        claimText(groups: 0, kinds: $0, postgres: $1)
    }

    private static func claimText(groups: Int, kinds: Int, postgres: Bool) -> FixedStatement {
        func placeholders(_ count: Int) -> String { repeatElement("?", count: count).joined(separator: ", ") }
        var filters = groups == 0 ? "" : " AND (group_key IS NULL OR group_key NOT IN (\(placeholders(groups))))"
        if kinds > 0 { filters += " AND kind NOT IN (\(placeholders(kinds)))" }
        return FixedStatement("""
            UPDATE jobs SET status = 'running', lease_owner = ?, lease_token = ?, lease_expires_at = ?, attempts = attempts + 1, updated_at = ?
            WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= ?\(filters) ORDER BY run_at, created_at LIMIT 1\(postgres ? " FOR UPDATE SKIP LOCKED" : ""))
              AND status = 'queued'
            RETURNING id, kind, payload, attempts, max_attempts, group_key
            """)
    }

    /// Extends the lease; false when the lease was lost (rescued, or the job finished elsewhere).
    func heartbeat(_ job: ClaimedJob, on db: (any Database)? = nil) async throws -> Bool {
        let expires = now.addingTimeInterval(TimeInterval(config.jobLeaseSeconds))
        let extend: @Sendable (any SQLDatabase) async throws -> Bool = { sql in
            try await sql.raw("""
                UPDATE jobs SET lease_expires_at = \(bind: expires) WHERE id = \(bind: job.id) AND lease_token = \(bind: job.token) AND status = 'running'
                RETURNING id
                """).first() != nil
        }
        if let db { return try await extend(db as! any SQLDatabase) }
        return try await app.writeStatements(extend)
    }

    private static let finish = FixedStatement("""
        UPDATE jobs SET status = ?, last_error = ?, finished_at = ?, updated_at = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
        WHERE id = ? AND lease_token = ? AND status = 'running'
        RETURNING id
        """)

    /// Marks the job done, inside `db`'s transaction, only if this worker still holds it.
    func finish(_ job: ClaimedJob, status: Job.Status, error: String? = nil, on db: any Database) async throws -> Bool {
        let sql = db as! any SQLDatabase
        let now = self.now
        return try await sql.first(Self.finish, [status.rawValue, error, now, now, job.id, job.token]) != nil
    }

    /// Puts a failed attempt back in the queue with exponential back-off and jitter, or fails it for good.
    /// Returns true when it was requeued.
    func retryOrFail(_ job: ClaimedJob, error: String, on db: any Database) async throws -> Bool? {
        let sql = db as! any SQLDatabase
        let now = self.now
        if job.attempts >= job.maxAttempts {
            let finished = try await finish(job, status: .failed, error: error, on: db)
            return finished ? false : nil
        }
        let runAt = now.addingTimeInterval(Self.backoff(attempt: job.attempts))
        let requeued = try await sql.raw("""
            UPDATE jobs SET status = 'queued', run_at = \(bind: runAt), last_error = \(bind: error), updated_at = \(bind: now),
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = \(bind: job.id) AND lease_token = \(bind: job.token) AND status = 'running'
            RETURNING id
            """).first() != nil
        return requeued ? true : nil
    }

    /// Hands a job back without counting the attempt (shutdown, or an endpoint at its limit), to run again
    /// after `delay` seconds.
    func release(_ job: ClaimedJob, after delay: TimeInterval = 0) async throws {
        let runAt = now.addingTimeInterval(delay)
        try await app.writeStatements { sql in
            try await sql.raw("""
                UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = \(bind: runAt), lease_owner = NULL, lease_token = NULL,
                    lease_expires_at = NULL WHERE id = \(bind: job.id) AND lease_token = \(bind: job.token) AND status = 'running'
                """).run()
        }
    }

    /// Jobs whose lease expired (their worker died): requeued with attempt+1 counted, or failed after the last.
    /// Returns the jobs given up on, so their owners can be told.
    func rescueExpired() async throws -> [(id: UUID, kind: String, payload: JSONValue)] {
        let sql = app.db as! any SQLDatabase
        let now = self.now
        // A read first: the updates take SQLite's write lock even when they change nothing.
        let expired = try await sql.raw("""
            SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < \(bind: now) LIMIT 1
            """).first()
        guard expired != nil else { return [] }
        return try await app.writeStatements { sql in try await rescue(now: now, on: sql) }
    }

    private func rescue(now: Date, on sql: any SQLDatabase) async throws -> [(id: UUID, kind: String, payload: JSONValue)] {
        let requeued = try await sql.raw("""
            UPDATE jobs SET status = 'queued', run_at = \(bind: now), last_error = 'lease expired', updated_at = \(bind: now),
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE status = 'running' AND lease_expires_at < \(bind: now) AND attempts < max_attempts
            RETURNING id
            """).all()
        // Idle workers here take them at once rather than at their next poll.
        if !requeued.isEmpty { app.jobSignal.notify() }
        let failed = try await sql.raw("""
            UPDATE jobs SET status = 'failed', last_error = 'lease expired after the last attempt', finished_at = \(bind: now),
                updated_at = \(bind: now), lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE status = 'running' AND lease_expires_at < \(bind: now) AND attempts >= max_attempts
            RETURNING id, kind, payload
            """).all()
        return try failed.map {
            (try $0.decode(column: "id", as: UUID.self), try $0.decode(column: "kind", as: String.self),
             JSONValue.parse(try $0.decode(column: "payload", as: String.self)))
        }
    }

    /// 1 s, 2 s, 4 s … capped at 5 minutes, ±20% jitter.
    static func backoff(attempt: Int) -> TimeInterval {
        let base = min(300, pow(2, Double(max(0, attempt - 1))))
        return base * Double.random(in: 0.8...1.2)
    }
}

/// A worker's offer to take its next job in the transaction that settles the one it is running, rather than in a
/// write of its own afterwards: with SQLite's group commit, each job then waits for one commit instead of two.
/// The worker loop hands it to the job (`JobContext.followOn`); an execution's settle claims inside its
/// transaction, and hands the job over only once that transaction committed. Jobs of `.beside` kinds (webhook
/// deliveries) are never taken this way: the loop admits those against their limits.
final class FollowOnClaim: @unchecked Sendable {
    let worker: String
    /// False once the worker is stopping: it takes nothing more.
    private let open: @Sendable () -> Bool
    private let lock = NSLock()
    private var job: ClaimedJob?

    init(worker: String, open: @escaping @Sendable () -> Bool) {
        self.worker = worker
        self.open = open
    }

    var wanted: Bool { open() }

    /// A job claimed in a committed transaction.
    func offer(_ job: ClaimedJob?) { lock.withLock { self.job = job } }

    /// The job offered, once.
    func take() -> ClaimedJob? {
        lock.withLock {
            defer { job = nil }
            return job
        }
    }
}

/// Wakes idle workers in this process when a job is enqueued (other instances find work by polling, or by
/// LISTEN/NOTIFY once that lands).
final class JobSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var generation = 0
    private var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    /// Waits whose timeout fired before they registered: they must not block.
    private var expired: Set<UUID> = []

    var current: Int { lock.withLock { generation } }

    func notify() {
        let woken = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            generation &+= 1
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }

    /// Returns at the first notification after `seen`, or after `timeout`.
    func wait(after seen: Int, timeout: Duration) async {
        // Under load the notification has usually come already: return without arming a timer (each one is a
        // task group, a Dispatch timer and its cancellation).
        if lock.withLock({ generation != seen }) { return }
        let id = UUID.pooledRandom()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.lock.withLock { () -> Bool in
                        if self.generation != seen || self.expired.remove(id) != nil { return true }
                        self.waiters[id] = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                self.expire(id)
            }
            await group.next()
            group.cancelAll()
            await group.waitForAll()
        }
        lock.withLock { _ = expired.remove(id) }
    }

    private func expire(_ id: UUID) {
        let waiter = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if let waiter = waiters.removeValue(forKey: id) { return waiter }
            expired.insert(id)
            return nil
        }
        waiter?.resume()
    }
}
