import Vapor
import StewardFormats

/// `GET /api/v1/audit-logs` and `GET /api/v1/audit/checkpoint` (audit:read). There is no route that changes or
/// deletes an entry.
struct AuditLogController: RouteCollection {
    /// An entry as the API shows it.
    struct Entry: Content {
        var id: UUID
        var seq: Int64
        var at: Date
        var actorId: UUID?
        var actorType: String
        var action: String
        var resourceType: String?
        var resourceId: String?
        var outcome: String
        var ipAddress: String?
        var userAgent: String?
        var requestId: String?
        var details: JSONValue

        init(_ log: AuditLog) {
            id = log.id!
            seq = log.seq
            at = log.at
            actorId = log.actorID
            actorType = log.actorType
            action = log.action
            resourceType = log.resourceType
            resourceId = log.resourceID
            outcome = log.outcome
            ipAddress = log.ipAddress
            userAgent = log.userAgent
            requestId = log.requestID
            details = JSONValue.parse(log.details)
        }
    }

    func boot(routes: any RoutesBuilder) throws {
        routes.grouped("audit-logs").grouped(RequireCaller(), RequirePermission(.auditRead)).get(use: index)
        routes.grouped("audit", "checkpoint").grouped(RequireCaller(), RequirePermission(.auditRead)).get(use: checkpoint)
    }

    /// The chain's head, signed with this instance's Ed25519 key (see `AuditCheckpoint`).
    @Sendable
    func checkpoint(req: Request) async throws -> Response {
        let response = try await AuditCheckpoint.current(req.application).encodeResponse(for: req)
        response.headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        return response
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<Entry> {
        let page = try PageRequest(from: req)
        var filter = AuditLogService.Filter()
        var problems: [FieldProblem] = []
        if let raw = req.query[String.self, at: "actorId"] {
            if let id = UUID(uuidString: raw) { filter.actorID = id } else { problems.append(FieldProblem(field: "actorId", message: "must be a UUID")) }
        }
        filter.action = req.query[String.self, at: "action"]
        filter.resourceType = req.query[String.self, at: "resourceType"]
        filter.resourceID = req.query[String.self, at: "resourceId"].map(ResourceID.normalized)
        if let raw = req.query[String.self, at: "outcome"] {
            if let outcome = AuditRecord.Outcome(rawValue: raw) { filter.outcome = outcome } else {
                problems.append(FieldProblem(field: "outcome", message: "must be success or failure"))
            }
        }
        let formatter = ISO8601DateFormatter()
        for (name, assign) in [("from", { (date: Date) in filter.from = date }), ("to", { (date: Date) in filter.to = date })] {
            guard let raw = req.query[String.self, at: name] else { continue }
            if let date = formatter.date(from: raw) { assign(date) } else {
                problems.append(FieldProblem(field: name, message: "must be an RFC 3339 timestamp such as 2026-11-21T19:01:43Z"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let (entries, next) = try await AuditLogService(app: req.application).list(filter: filter, page: page)
        return ListResponse(items: entries.map(Entry.init), nextCursor: next)
    }
}
