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
        routes.grouped("audit", "verify").grouped(RequireCaller(), RequirePermission(.auditRead)).get(use: verify)
    }

    /// Walks the whole keyed chain, as `steward audit verify` does, and names the first broken link.
    @Sendable
    func verify(req: Request) async throws -> Response {
        let app = req.application
        let result = try await app.auditVerifications.run {
            try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
        }
        let body = AuditVerificationResponse(
            intact: result.isIntact, checked: result.checked, verifiedAt: app.wallClock.now(),
            firstBroken: result.firstBroken.map { AuditVerificationResponse.Broken(seq: $0.seq, id: $0.id, reason: $0.reason) })
        let response = try await body.encodeResponse(for: req)
        response.headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        return response
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
        if let raw = req.queryText("actorId") {
            if let id = UUID(uuidString: raw) { filter.actorID = id } else { problems.append(FieldProblem(field: "actorId", message: "must be a UUID")) }
        }
        filter.action = req.queryText("action")
        filter.resourceType = req.queryText("resourceType")
        filter.resourceID = req.queryText("resourceId").map(ResourceID.normalized)
        if let raw = req.queryText("outcome") {
            if let outcome = AuditRecord.Outcome(rawValue: raw) { filter.outcome = outcome } else {
                problems.append(FieldProblem(field: "outcome", message: "must be success or failure"))
            }
        }
        filter.from = req.timestampQuery("from", problems: &problems)
        filter.to = req.timestampQuery("to", problems: &problems)
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

/// The answer of `GET /api/v1/audit/verify`.
struct AuditVerificationResponse: Content {
    struct Broken: Content {
        var seq: Int64
        /// The entry's id, when the break is an entry (null when entries are missing).
        var id: UUID?
        var reason: String
    }
    var intact: Bool
    /// Entries whose links hold, up to the first broken one.
    var checked: Int
    var verifiedAt: Date
    var firstBroken: Broken?
}

/// One walk of the chain at a time per instance: requests that arrive while one runs share its result, so asking
/// again and again costs one walk, not one each.
actor AuditVerifications {
    private var running: Task<AuditChain.Verification, any Error>?

    func run(_ walk: @escaping @Sendable () async throws -> AuditChain.Verification) async throws -> AuditChain.Verification {
        if let running { return try await running.value }
        let task = Task { try await walk() }
        running = task
        defer { running = nil }
        return try await task.value
    }
}

extension Application {
    private struct AuditVerificationsKey: StorageKey { typealias Value = AuditVerifications }

    /// Set once at boot (`configure`).
    var auditVerifications: AuditVerifications {
        get { storage[AuditVerificationsKey.self]! }
        set { storage[AuditVerificationsKey.self] = newValue }
    }
}
