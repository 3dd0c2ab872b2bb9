import Fluent
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// The built-in maintenance tasks, run by the scheduler on UTC cron expressions through the job queue: session,
/// token and finished-job cleanup, audit retention, webhook history retention, and (on SQLite) a nightly backup
/// into the data directory keeping the newest `STEWARD_BACKUP_KEEP`.
struct MaintenanceTasks: Sendable {
    static let runKind = "maintenance.run"
    /// Ended sessions and used or expired tokens are kept this long (for the sessions list and investigations).
    static let endedRetention: TimeInterval = 30 * 86_400
    /// Finished jobs are kept this long (their results live on in executions, deliveries and runs).
    static let jobRetention: TimeInterval = 7 * 86_400

    struct Task: Sendable {
        let name: String
        let cron: String
        /// Does the work; returns a one-line summary.
        let run: @Sendable (Application) async throws -> String
    }

    let app: Application

    private var now: Date { app.wallClock.now() }

    /// The tasks this configuration runs.
    static func all(_ config: AppConfig) -> [Task] {
        var tasks = [
            Task(name: "sessions.cleanup", cron: "17 * * * *") { app in
                let cutoff = app.wallClock.now().addingTimeInterval(-endedRetention)
                let removed = try await app.writeStatements { sql in
                    try await sql.raw("""
                        DELETE FROM sessions WHERE expires_at < \(bind: cutoff) OR idle_expires_at < \(bind: cutoff) OR revoked_at < \(bind: cutoff)
                        RETURNING id
                        """).all().count
                }
                return "removed \(removed) sessions ended over 30 days ago"
            },
            Task(name: "tokens.cleanup", cron: "23 * * * *") { app in
                let now = app.wallClock.now()
                let cutoff = now.addingTimeInterval(-endedRetention)
                let removed = try await app.writeStatements { sql in
                    var removed = 0
                    for statement: SQLQueryString in [
                        "DELETE FROM one_time_tokens WHERE expires_at < \(bind: cutoff) RETURNING id",
                        "DELETE FROM mfa_challenges WHERE expires_at < \(bind: cutoff) RETURNING id",
                        "DELETE FROM oauth_states WHERE expires_at < \(bind: now) RETURNING id",
                        "DELETE FROM oauth_login_codes WHERE expires_at < \(bind: now) RETURNING id",
                        "DELETE FROM idempotency_keys WHERE expires_at < \(bind: now) RETURNING user_id",
                    ] {
                        removed += try await sql.raw(statement).all().count
                    }
                    return removed
                }
                try await StreamTickets.pruneExpired(app: app)
                try await DatabaseRateLimitStore.prune(app: app)
                return "removed \(removed) expired tokens, challenges and idempotency keys"
            },
            Task(name: "jobs.cleanup", cron: "41 * * * *") { app in
                let cutoff = app.wallClock.now().addingTimeInterval(-jobRetention)
                let removed = try await app.writeStatements { sql in
                    try await sql.raw("""
                        DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < \(bind: cutoff) RETURNING id
                        """).all().count
                }
                return "removed \(removed) jobs finished over 7 days ago"
            },
            Task(name: "audit.retention", cron: "0 3 * * *") { app in
                "removed \(try await AuditLogService(app: app).applyRetention()) audit entries past retention"
            },
            Task(name: "webhooks.history", cron: "30 3 * * *") { app in
                let cutoff = app.wallClock.now().addingTimeInterval(-TimeInterval(app.appConfig.webhookHistoryDays) * 86_400)
                let removed = try await app.writeStatements { sql in
                    try await sql.raw("DELETE FROM webhook_deliveries WHERE created_at < \(bind: cutoff) AND status != 'pending' RETURNING id").all().count
                }
                return "removed \(removed) webhook deliveries past history"
            },
        ]
        if case .sqlite = config.database, let cron = config.backupCron {
            tasks.append(Task(name: "sqlite.backup", cron: cron) { app in
                let backup = try await DatabaseMaintenance(app: app).backup(to: nil)
                let pruned = try MaintenanceTasks.pruneBackups(in: (backup.path as NSString).deletingLastPathComponent, keep: app.appConfig.backupKeep)
                return "wrote \(backup.path) (\(backup.bytes) bytes); removed \(pruned) older backups"
            })
        }
        return tasks
    }

    /// Keeps the newest `keep` `steward-<time>.sqlite` files (their names sort by time); returns how many went.
    static func pruneBackups(in directory: String, keep: Int) throws -> Int {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasPrefix("steward-") && $0.hasSuffix(".sqlite") }.sorted()
        let excess = names.dropLast(keep)
        for name in excess { try FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(name)) }
        return excess.count
    }

    /// Adds missing tasks (and follows a changed cron), then claims each due occurrence and enqueues its run.
    /// Missed occurrences (downtime) run once. Returns the names claimed.
    @discardableResult
    func fireDue() async throws -> [String] {
        let now = self.now
        let utc = TimeZone(identifier: "UTC")!
        let sql = app.db as! any SQLDatabase
        let tasks = Self.all(app.appConfig)
        let rows = try await sql.raw("SELECT name, cron, next_run_at FROM system_tasks").all()
        var known: [String: (cron: String, next: Date)] = [:]
        for row in rows {
            known[try row.decode(column: "name", as: String.self)] = (try row.decode(column: "cron", as: String.self),
                                                                     try row.decode(column: "next_run_at", as: Date.self))
        }
        var claimed: [String] = []
        for task in tasks {
            let expression = try CronExpression(task.cron)
            guard let next = expression.next(after: now, in: utc) else { continue }
            guard let current = known[task.name], current.cron == task.cron else {
                let existing = known[task.name]
                try await app.writeStatements { sql in
                    if existing == nil {
                        try await sql.raw("""
                            INSERT INTO system_tasks (name, cron, next_run_at) VALUES (\(bind: task.name), \(bind: task.cron), \(bind: next))
                            ON CONFLICT (name) DO NOTHING
                            """).run()
                    } else {
                        try await sql.raw("UPDATE system_tasks SET cron = \(bind: task.cron), next_run_at = \(bind: next) WHERE name = \(bind: task.name)").run()
                    }
                }
                continue
            }
            guard current.next <= now else { continue }
            let won = try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                guard try await sql.raw("""
                    UPDATE system_tasks SET next_run_at = \(bind: next) WHERE name = \(bind: task.name) AND next_run_at = \(bind: current.next)
                    RETURNING name
                    """).first() != nil
                else { return false }
                _ = try await JobQueue(app: app).enqueue(kind: Self.runKind, payload: ["task": .string(task.name)], maxAttempts: 1, on: db)
                return true
            }
            if won { claimed.append(task.name) }
        }
        return claimed
    }

    /// The `maintenance.run` job: runs the task and records how it went.
    func run(_ job: ClaimedJob) async throws {
        let name = job.payload.object?["task"]?.stringValue ?? ""
        var status = "succeeded"
        var result: String
        if let task = Self.all(app.appConfig).first(where: { $0.name == name }) {
            do {
                result = try await task.run(app)
            } catch {
                status = "failed"
                result = String(String(describing: error).prefix(500))
                app.logger.error("Maintenance task \(name) failed: \(result)")
            }
        } else {
            status = "failed"
            result = "no such task in this configuration"
        }
        let finishedAt = now, outcome = status, summary = result
        try await app.writeTransaction { db in
            guard try await JobQueue(app: app).finish(job, status: outcome == "succeeded" ? .succeeded : .failed, error: outcome == "failed" ? summary : nil, on: db)
            else { throw LeaseLost() }
            try await (db as! any SQLDatabase).raw("""
                UPDATE system_tasks SET last_run_at = \(bind: finishedAt), last_status = \(bind: outcome), last_result = \(bind: summary)
                WHERE name = \(bind: name)
                """).run()
        }
    }
}

extension MaintenanceTasks {
    /// Registers the maintenance handler (retention, backups).
    static func register(in handlers: JobHandlers) {
        handlers.register(runKind, Handler())
    }

    struct Handler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await MaintenanceTasks(app: app).run(job)
        }
    }
}
