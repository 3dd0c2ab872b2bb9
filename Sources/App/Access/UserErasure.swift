import Fluent
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// What an erasure did.
struct ErasureResponse: Content, Equatable {
    var userId: UUID
    var erasedAt: Date
    /// `anonymise` or `delete` (STEWARD_ERASE_EXECUTIONS).
    var executions: String
    var executionsAffected: Int
    var workflowRunsAffected: Int
}

/// Erases a user (`DELETE /api/v1/users/{id}?erase=true`, `steward user erase`): their personal data goes, and the
/// row stays as a tombstone that keeps only the id, so every audit entry that names them by id still verifies and
/// now names no one. On SQLite the transaction runs with `secure_delete` on, so what it removes is overwritten,
/// and the WAL is checkpointed and truncated afterwards.
struct UserErasure: Sendable {
    typealias Actor = UserAdminService.Actor

    let app: Application

    /// The tables whose rows belong to one user and go with their personal data (`user_id`).
    private static let personalTables = [
        "sessions", "one_time_tokens", "mfa_challenges", "mfa_recovery_codes", "oauth_identities", "oauth_states",
        "oauth_login_codes", "skill_favorites", "idempotency_keys", "stream_tickets", "mcp_sessions", "user_roles",
    ]

    func erase(_ id: UUID, confirmation: String?, actor: Actor) async throws -> ErasureResponse {
        guard let confirmation, UUID(text: confirmation) == id else {
            throw HTTPProblem.validation([FieldProblem(field: "X-Confirm-Erase", message: "must be the id of the user to erase")])
        }
        let admin = UserAdminService(app: app)
        let (user, _) = try await admin.find(id)
        let sql = app.db as! any SQLDatabase
        // `erased_at` is read here only, not by the model, so a server whose schema is one migration behind keeps working.
        let erasedAt = try await sql.raw("SELECT erased_at FROM users WHERE id = \(bind: id)").first()?.decode(column: "erased_at", as: Date?.self)
        guard erasedAt == nil else { throw HTTPProblem.conflict("This user has already been erased.") }
        let active = try await sql.raw("""
            SELECT COUNT(*) AS n FROM executions WHERE user_id = \(bind: id) AND status IN ('queued', 'running')
            """).first()?.decode(column: "n", as: Int.self) ?? 0
        guard active == 0 else {
            throw HTTPProblem.conflict("The user has \(active) queued or running execution(s); cancel them or let them finish, then erase.")
        }
        // Every event of theirs is in the numbered log (PostgreSQL numbers after the commit), where the erasure finds it.
        _ = try await app.settledLedger()
        let mode = app.appConfig.eraseExecutions
        let now = app.wallClock.now()
        let email = user.email
        let sqlite = sql.dialect.name == "sqlite"
        let (executions, runs) = try await app.writeTransaction { db -> (Int, Int) in
            let sql = db as! any SQLDatabase
            if sqlite { try await sql.raw("PRAGMA secure_delete = ON").run() }
            try await admin.ensureNotLastAdmin(user, on: db, change: "erase")
            try await sql.raw("DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = \(bind: id))").run()
            for table in Self.personalTables {
                try await sql.raw("DELETE FROM \(ident: table) WHERE user_id = \(bind: id)").run()
            }
            // Keys (and their tool lists), webhooks (and their deliveries and attempts) and schedules are theirs alone.
            try await sql.raw("DELETE FROM api_key_tools WHERE api_key_id IN (SELECT id FROM api_keys WHERE user_id = \(bind: id))").run()
            try await sql.raw("DELETE FROM api_keys WHERE user_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.user_id = \(bind: id))").run()
            try await sql.raw("DELETE FROM webhook_deliveries WHERE webhook_id IN (SELECT id FROM webhooks WHERE user_id = \(bind: id))").run()
            try await sql.raw("DELETE FROM webhooks WHERE user_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM schedules WHERE user_id = \(bind: id)").run()
            // Mail still waiting for them, and the login throttle kept under their address.
            try await sql.raw("DELETE FROM mail_outbox WHERE to_address = \(bind: email)").run()
            try await sql.raw("DELETE FROM login_throttles WHERE key IN (\(bind: email), \(bind: app.auditKeys.emailDigest(email)))").run()

            let executionIDs = try await sql.raw("SELECT id FROM executions WHERE user_id = \(bind: id)").all().map { try $0.decode(column: "id", as: UUID.self) }
            let runIDs = try await sql.raw("SELECT id FROM workflow_runs WHERE user_id = \(bind: id)").all().map { try $0.decode(column: "id", as: UUID.self) }
            let (executions, runs) = (executionIDs.count, runIDs.count)
            // Their executions' and runs' events carry inputs and outputs: the data goes, the events keep their place
            // in the log (its order has no gaps), their type and their time. Deliveries still waiting carry them too.
            for (type, ids) in [("execution", executionIDs), ("workflow_run", runIDs)] where !ids.isEmpty {
                for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
                    let texts = SQLList(chunk.map { SQLBind($0.lowercasedString) })
                    try await sql.raw("UPDATE events SET data = '{}' WHERE resource_type = \(bind: type) AND resource_id IN (\(texts))").run()
                    try await sql.raw("""
                        DELETE FROM webhook_deliveries WHERE status = 'pending' AND event_id IN
                        (SELECT id FROM events WHERE resource_type = \(bind: type) AND resource_id IN (\(texts)))
                        """).run()
                }
            }
            switch mode {
            case .delete:
                try await sql.raw("DELETE FROM workflow_runs WHERE user_id = \(bind: id)").run()
                try await sql.raw("UPDATE workflow_run_steps SET execution_id = NULL WHERE execution_id IN (SELECT id FROM executions WHERE user_id = \(bind: id))").run()
                try await sql.raw("DELETE FROM execution_history WHERE execution_id IN (SELECT id FROM executions WHERE user_id = \(bind: id))").run()
                try await sql.raw("DELETE FROM executions WHERE user_id = \(bind: id)").run()
            case .anonymise:
                try await sql.raw("""
                    UPDATE execution_history SET message = '[erased]' WHERE execution_id IN (SELECT id FROM executions WHERE user_id = \(bind: id))
                    """).run()
                try await sql.raw("""
                    UPDATE executions SET input = '{}', output = NULL, error = NULL, client_name = NULL, client_version = NULL, mcp_call_audit = NULL
                    WHERE user_id = \(bind: id)
                    """).run()
                try await sql.raw("UPDATE workflow_runs SET input = '{}', error = NULL WHERE user_id = \(bind: id)").run()
            }

            // The tombstone: the id, and nothing that names anyone.
            let tag = String(id.lowercasedString.replacingOccurrences(of: "-", with: "").prefix(12))
            try await sql.raw("""
                UPDATE users SET email = \(bind: "erased-\(id.lowercasedString)@erased.invalid"), username = \(bind: "erased-\(tag)"),
                full_name = NULL, password_hash = \(bind: User.noPassword), status = \(bind: User.Status.deleted.rawValue),
                email_verified_at = NULL, failed_login_count = 0, locked_until = NULL, last_login_at = NULL, mfa_enabled = \(bind: false),
                mfa_secret = NULL, mfa_last_used_step = NULL, erased_at = \(bind: now), updated_at = \(bind: now)
                WHERE id = \(bind: id)
                """).run()
            try await app.activityRecorder.record(
                audit: AuditRecord(action: "user.erased", actorID: actor.id, actorType: actor.type, resourceType: "user",
                                   resourceID: id.lowercasedString, origin: actor.origin,
                                   details: ["executions": .string(mode.rawValue), "executionsAffected": .number(Double(executions)),
                                             "workflowRunsAffected": .number(Double(runs))]),
                event: EventRecord(type: "user.erased", actorID: actor.id, resourceType: "user", resourceID: id.lowercasedString, data: [:]),
                on: db)
            if sqlite { try await sql.raw("PRAGMA secure_delete = OFF").run() }
            return (executions, runs)
        }
        // Cached callers would still know the old row for a moment; the status check refuses it from now on.
        if let writer = app.sqliteWriter {
            if !(try await writer.checkpoint(logger: app.logger)) {
                app.logger.warning("After erasing a user the WAL checkpoint could not finish (a reader holds an old snapshot); the WAL truncates at the next one")
            }
        }
        return ErasureResponse(userId: id, erasedAt: now, executions: mode.rawValue, executionsAffected: executions, workflowRunsAffected: runs)
    }
}
