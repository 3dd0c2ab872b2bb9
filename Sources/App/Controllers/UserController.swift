import Vapor
import StewardFormats

/// `/api/v1/users`: account administration (users:read to look, users:manage to change).
struct UserController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let users = routes.grouped("users").grouped(RequireCaller())
        let readers = users.grouped(RequirePermission(.usersRead))
        readers.get(use: index)
        readers.get(":id", use: show)
        let managers = users.grouped(RequirePermission(.usersManage))
        managers.patch(":id", use: update)
        managers.delete(":id", use: delete)
        managers.put(":id", "roles", use: setRoles)
        managers.post(":id", "unlock", use: unlock)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<AdminUserResponse> {
        let page = try PageRequest(from: req)
        var filter = UserAdminService.Filter()
        filter.q = req.query[String.self, at: "q"]
        if let q = filter.q, q.count > 500 { throw HTTPProblem.validation([FieldProblem(field: "q", message: "must be at most 500 characters")]) }
        if let role = req.query[String.self, at: "role"] {
            guard RoleCatalog.names.contains(role) else {
                throw HTTPProblem.validation([FieldProblem(field: "role", message: "must be one of \(RoleCatalog.names.joined(separator: ", "))")])
            }
            filter.role = role
        }
        if let raw = req.query[String.self, at: "status"] {
            guard let status = User.Status(rawValue: raw) else {
                throw HTTPProblem.validation([FieldProblem(field: "status", message: "must be active, inactive, suspended or deleted")])
            }
            filter.status = status
        }
        let (users, next) = try await UserAdminService(app: req.application).list(filter: filter, page: page)
        return ListResponse(items: users.map { AdminUserResponse($0.0, roles: $0.1) }, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> AdminUserResponse {
        let (user, roles) = try await UserAdminService(app: req.application).find(try req.uuidParameter("id"))
        return AdminUserResponse(user, roles: roles)
    }

    @Sendable
    func update(req: Request) async throws -> AdminUserResponse {
        let id = try req.uuidParameter("id")
        guard case .object(let fields) = try req.content.decode(JSONValue.self) else {
            throw HTTPProblem.validation([FieldProblem(field: "body", message: "must be a JSON object")])
        }
        let actor = UserAdminService.Actor(try req.caller, origin: req.origin)
        let (user, roles) = try await UserAdminService(app: req.application).update(id, fields: fields, actor: actor)
        return AdminUserResponse(user, roles: roles)
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        let actor = UserAdminService.Actor(try req.caller, origin: req.origin)
        try await UserAdminService(app: req.application).delete(try req.uuidParameter("id"), actor: actor)
        return .noContent
    }

    @Sendable
    func setRoles(req: Request) async throws -> AdminUserResponse {
        let id = try req.uuidParameter("id")
        let body = try req.content.decode(SetRolesRequest.self)
        let actor = UserAdminService.Actor(try req.caller, origin: req.origin)
        let (user, roles) = try await UserAdminService(app: req.application).setRoles(id, roles: body.roles, actor: actor)
        return AdminUserResponse(user, roles: roles)
    }

    @Sendable
    func unlock(req: Request) async throws -> AdminUserResponse {
        let actor = UserAdminService.Actor(try req.caller, origin: req.origin)
        let (user, roles) = try await UserAdminService(app: req.application).unlock(try req.uuidParameter("id"), actor: actor)
        return AdminUserResponse(user, roles: roles)
    }
}

/// `GET /api/v1/roles` (users:read): the fixed roles and their permissions.
struct RoleController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        routes.grouped("roles").grouped(RequireCaller(), RequirePermission(.usersRead)).get(use: index)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<RoleResponse> {
        ListResponse(items: RoleCatalog.roles.map { role in
            RoleResponse(name: role.name, description: role.description, permissions: role.permissions.map(\.rawValue).sorted())
        }, nextCursor: nil)
    }
}

/// `GET /api/v1/audit-logs` (audit:read). There is no route that changes or deletes an entry.
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
