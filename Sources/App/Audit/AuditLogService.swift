import Fluent
import Foundation
import SQLKit
import Vapor
import StewardSQLite

/// Reads the audit log (newest first) and applies retention.
struct AuditLogService: Sendable {
    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }

    struct Filter: Sendable {
        var actorID: UUID?
        var action: String?
        var resourceType: String?
        var resourceID: String?
        var outcome: AuditRecord.Outcome?
        var from: Date?
        var to: Date?
    }

    func list(filter: Filter, page: PageRequest) async throws -> ([AuditLogController.Entry], String?) {
        var query = AuditLog.query(on: reads)
        if let actorID = filter.actorID { query = query.filter(\.$actorID == actorID) }
        if let action = filter.action { query = query.filter(\.$action == action) }
        if let resourceType = filter.resourceType { query = query.filter(\.$resourceType == resourceType) }
        if let resourceID = filter.resourceID { query = query.filter(\.$resourceID == resourceID) }
        if let outcome = filter.outcome { query = query.filter(\.$outcome == outcome.rawValue) }
        if let from = filter.from { query = query.filter(\.$at >= from) }
        if let to = filter.to { query = query.filter(\.$at <= to) }
        if let seq = page.cursor?.seq { query = query.filter(\.$seq < seq) }
        // The seq index, or one of (actor, seq), (action, seq), (resource type and id, seq), reads the page in order
        // when at most one of those filters is given; anything else may scan, so it is read off the event loop.
        let resource = filter.resourceType != nil || filter.resourceID != nil
        let indexed = [filter.actorID != nil, filter.action != nil, resource].filter { $0 }.count <= 1
            && (filter.resourceType != nil) == (filter.resourceID != nil)
            && filter.outcome == nil && filter.from == nil && filter.to == nil
        query = query.sort(\.$seq, .descending).limit(page.limit + 1)
        // Everything committed before this request is numbered first (PostgreSQL), so a client sees its own writes.
        let entries = try await LedgerSequencer.settledPage(query, as: AuditLogController.Entry.self, descending: true, app: app) {
            try await query.listed(as: AuditLogController.Entry.self, through: app.sqliteReaders, offLoopOn: indexed ? nil : app.threadPool)
        }
        let pageEntries = Array(entries.prefix(page.limit))
        let next = entries.count > page.limit ? pageEntries.last.map { PageRequest.encode(.init(seq: $0.seq)) } : nil
        return (pageEntries, next)
    }

    /// Deletes entries older than the retention period, oldest first, remembering where the chain was cut so
    /// `audit verify` still checks everything that remains; writes an entry saying what it removed.
    @discardableResult
    func applyRetention() async throws -> Int {
        try await LedgerSequencer.settle(app)
        let days = app.appConfig.auditRetentionDays
        guard days > 0 else { return 0 }
        let cutoff = app.wallClock.now().addingTimeInterval(-TimeInterval(days) * 86_400)
        return try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            // Delete a prefix of the chain: everything up to the newest entry older than the cutoff.
            guard let row = try await sql.raw("SELECT max(seq) AS seq FROM audit_logs WHERE at < \(bind: cutoff)").first(),
                  let through = try row.decode(column: "seq", as: Int64?.self),
                  let last = try await AuditLog.query(on: db).filter(\.$seq == through).first()
            else { return 0 }
            let removed = try await AuditLog.query(on: db).filter(\.$seq <= through).count()
            try await AuditLog.query(on: db).filter(\.$seq <= through).delete()
            try await sql.raw("""
                UPDATE ledger_heads SET seq = \(bind: through), last_hash = \(bind: last.hash) WHERE name = \(bind: LedgerHead.auditPruned)
                """).run()
            try await app.activityRecorder.record(audit: AuditRecord(
                action: "audit.retention", actorID: nil, actorType: .system, resourceType: "audit_log",
                details: ["removed": .number(Double(removed)), "throughSeq": .number(Double(through)),
                          "olderThan": .string(ISO8601DateFormatter().string(from: cutoff)), "retentionDays": .number(Double(days))]),
                on: db)
            return removed
        }
    }
}
