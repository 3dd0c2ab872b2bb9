import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// `GET /api/v1/audit-logs` and `GET /api/v1/audit/checkpoint` (audit:read). There is no route that changes or
/// deletes an entry.
struct AuditLogController: RouteCollection {
    /// An entry as the API shows it; `details` is the stored canonical text, served as it is.
    struct Entry: Content, RowReadable {
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
        var details: StoredJSON

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
            details = StoredJSON(canonical: log.details)
        }

        /// An entry read straight from its row (the columns of `AuditLog`'s keys).
        init(row: any SQLRow) throws {
            id = try row.decode(column: "id", as: UUID.self)
            seq = try row.decode(column: "seq", as: Int64.self)
            at = try row.decode(column: "at", as: Date.self)
            actorId = try row.optional("actor_id", as: UUID.self)
            actorType = try row.decode(column: "actor_type", as: String.self)
            action = try row.decode(column: "action", as: String.self)
            resourceType = try row.optional("resource_type", as: String.self)
            resourceId = try row.optional("resource_id", as: String.self)
            outcome = try row.decode(column: "outcome", as: String.self)
            ipAddress = try row.optional("ip_address", as: String.self)
            userAgent = try row.optional("user_agent", as: String.self)
            requestId = try row.optional("request_id", as: String.self)
            details = StoredJSON(canonical: try row.decode(column: "details", as: String.self))
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
        return ListResponse(items: entries, nextCursor: next)
    }
}

extension AuditLogController.Entry: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("seq", seq)
        object.field("at", at)
        object.field("actorId", actorId)
        object.field("actorType", actorType)
        object.field("action", action)
        object.field("resourceType", resourceType)
        object.field("resourceId", resourceId)
        object.field("outcome", outcome)
        object.field("ipAddress", ipAddress)
        object.field("userAgent", userAgent)
        object.field("requestId", requestId)
        object.field("details", details)
    }
}
