import Fluent
import Foundation
import SQLKit
import Vapor

/// One user's usage over a window: `GET /api/v1/users/{id}/usage` and `GET /api/v1/auth/me/usage`.
struct UsageResponse: Content, Equatable {
    struct Executions: Content, Equatable {
        var total: Int
        /// Every status, zero included.
        var byStatus: [String: Int]
        /// Every origin (api, mcp, schedule, workflow), zero included.
        var byOrigin: [String: Int]
        /// The 20 skills run most, most first.
        var bySkill: [SkillCount]
        var durationMs: Durations
    }

    struct SkillCount: Content, Equatable {
        var skillId: UUID
        /// Null when the skill has been deleted since.
        var slug: String?
        var count: Int
    }

    /// Nearest-rank percentiles of the finished executions' durations (the latest 100,000 in the window); null
    /// when none finished.
    struct Durations: Content, Equatable {
        var count: Int
        var p50: Int?
        var p95: Int?
        var p99: Int?
    }

    struct Deliveries: Content, Equatable {
        var total: Int
        var byStatus: [String: Int]
    }

    var userId: UUID
    var from: Date
    var to: Date
    var executions: Executions
    /// `/api/v1` requests made with the user's credentials, counted per hour: an hour that overlaps the window
    /// counts whole.
    var apiRequests: Int
    /// Deliveries to the user's webhooks created in the window.
    var webhookDeliveries: Deliveries
}

struct UsageService: Sendable {
    static let defaultWindow: TimeInterval = 30 * 86_400
    static let longestWindow: TimeInterval = 366 * 86_400
    static let durationSample = 100_000

    let app: Application

    /// The window of a request's `from` and `to` (default: the 30 days up to now), or a 422.
    func window(_ req: Request) throws -> Range<Date> {
        var problems: [FieldProblem] = []
        let from = req.timestampQuery("from", problems: &problems)
        let to = req.timestampQuery("to", problems: &problems)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let end = to ?? app.wallClock.now()
        let start = from ?? end.addingTimeInterval(-Self.defaultWindow)
        guard start < end else { throw HTTPProblem.validation([FieldProblem(field: "from", message: "must be before to")]) }
        guard end.timeIntervalSince(start) <= Self.longestWindow else {
            throw HTTPProblem.validation([FieldProblem(field: "from", message: "must be at most 366 days before to")])
        }
        return start..<end
    }

    func usage(of userID: UUID, in window: Range<Date>) async throws -> UsageResponse {
        let sql = app.db as! any SQLDatabase
        let (from, to) = (window.lowerBound, window.upperBound)

        var byStatus = Dictionary(uniqueKeysWithValues: Execution.Status.allCases.map { ($0.rawValue, 0) })
        var byOrigin = Dictionary(uniqueKeysWithValues: Execution.Origin.allCases.map { ($0.rawValue, 0) })
        var total = 0
        for row in try await sql.raw("""
            SELECT status, origin, COUNT(*) AS n FROM executions
            WHERE user_id = \(bind: userID) AND queued_at >= \(bind: from) AND queued_at < \(bind: to) GROUP BY status, origin
            """).all() {
            let count = try row.decode(column: "n", as: Int.self)
            byStatus[try row.decode(column: "status", as: String.self), default: 0] += count
            byOrigin[try row.decode(column: "origin", as: String.self), default: 0] += count
            total += count
        }

        let bySkill = try await sql.raw("""
            SELECT e.skill_id AS skill_id, s.slug AS slug, COUNT(*) AS n FROM executions e LEFT JOIN skills s ON s.id = e.skill_id
            WHERE e.user_id = \(bind: userID) AND e.queued_at >= \(bind: from) AND e.queued_at < \(bind: to)
            GROUP BY e.skill_id, s.slug ORDER BY n DESC, s.slug LIMIT 20
            """).all().map {
            UsageResponse.SkillCount(skillId: try $0.decode(column: "skill_id", as: UUID.self),
                                     slug: try $0.decode(column: "slug", as: String?.self), count: try $0.decode(column: "n", as: Int.self))
        }

        let durations = try await sql.raw("""
            SELECT duration_ms FROM executions
            WHERE user_id = \(bind: userID) AND queued_at >= \(bind: from) AND queued_at < \(bind: to) AND duration_ms IS NOT NULL
            ORDER BY queued_at DESC LIMIT \(literal: Self.durationSample)
            """).all().map { try $0.decode(column: "duration_ms", as: Int.self) }.sorted()

        var requests = app.usageCounter.unwritten(for: userID, in: window)
        for row in try await sql.raw("""
            SELECT hour, requests FROM usage_counters
            WHERE user_id = \(bind: userID) AND hour > \(bind: from.addingTimeInterval(-3600)) AND hour < \(bind: to)
            """).all() {
            let hour = try row.decode(column: "hour", as: Date.self)
            if UsageCounter.hour(Int(hour.timeIntervalSince1970), overlaps: window) { requests += try row.decode(column: "requests", as: Int.self) }
        }

        var deliveries = Dictionary(uniqueKeysWithValues: [WebhookDelivery.Status.pending, .succeeded, .failed].map { ($0.rawValue, 0) })
        for row in try await sql.raw("""
            SELECT d.status AS status, COUNT(*) AS n FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
            WHERE w.user_id = \(bind: userID) AND d.created_at >= \(bind: from) AND d.created_at < \(bind: to) GROUP BY d.status
            """).all() {
            deliveries[try row.decode(column: "status", as: String.self), default: 0] += try row.decode(column: "n", as: Int.self)
        }

        return UsageResponse(
            userId: userID, from: from, to: to,
            executions: .init(total: total, byStatus: byStatus, byOrigin: byOrigin, bySkill: bySkill,
                              durationMs: .init(count: durations.count, p50: ExecutionService.percentile(durations, 0.5),
                                                p95: ExecutionService.percentile(durations, 0.95), p99: ExecutionService.percentile(durations, 0.99))),
            apiRequests: requests,
            webhookDeliveries: .init(total: deliveries.values.reduce(0, +), byStatus: deliveries))
    }
}
