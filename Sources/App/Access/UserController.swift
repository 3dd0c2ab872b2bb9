import Vapor
import StewardFormats

/// `/api/v1/users`: account administration (users:read to look, users:manage to change).
struct UserController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let users = routes.grouped("users").grouped(RequireCaller())
        let readers = users.grouped(RequirePermission(.usersRead))
        readers.get(use: index)
        readers.get(":id", use: show)
        readers.get(":id", "sessions", use: sessions)
        readers.grouped(FeatureGate(.analytics)).get(":id", "usage", use: usage)
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
        filter.q = req.queryText("q")
        if let q = filter.q, q.count > 500 { throw HTTPProblem.validation([FieldProblem(field: "q", message: "must be at most 500 characters")]) }
        if let role = req.queryText("role") {
            try await RoleService(app: req.application).requireKnown([role], field: "role")
            filter.role = role
        }
        if let raw = req.queryText("status") {
            guard let status = User.Status(rawValue: raw) else {
                throw HTTPProblem.validation([FieldProblem(field: "status", message: "must be active, inactive, suspended or deleted")])
            }
            filter.status = status
        }
        let (users, next) = try await UserAdminService(app: req.application).list(filter: filter, page: page)
        return ListResponse(items: users, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> AdminUserResponse {
        let (user, roles) = try await UserAdminService(app: req.application).find(try req.uuidParameter("id"))
        return AdminUserResponse(user, roles: roles)
    }

    /// The user's executions, requests and deliveries over `from`..`to` (default: the last 30 days).
    @Sendable
    func usage(req: Request) async throws -> UsageResponse {
        let (user, _) = try await UserAdminService(app: req.application).find(try req.uuidParameter("id"))
        let service = UsageService(app: req.application)
        return try await service.usage(of: try user.requireID(), in: try service.window(req))
    }

    /// The user's live sessions (where and when they signed in), newest first; one page.
    @Sendable
    func sessions(req: Request) async throws -> ListResponse<SessionResponse> {
        let (user, _) = try await UserAdminService(app: req.application).find(try req.uuidParameter("id"))
        let caller = try req.caller
        let items = try await SessionService(app: req.application).sessions(ofUser: try user.requireID(),
                                                                           current: user.id == caller.user.id ? caller.session?.id : nil)
        return ListResponse(items: items, nextCursor: nil)
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
    func delete(req: Request) async throws -> Response {
        let actor = UserAdminService.Actor(try req.caller, origin: req.origin)
        let id = try req.uuidParameter("id")
        // ?erase=true: erasure, confirmed by X-Confirm-Erase naming the same id; otherwise a soft delete.
        if try req.query.get(Bool?.self, at: "erase") == true {
            let erased = try await UserErasure(app: req.application).erase(id, confirmation: req.headers.first(name: "X-Confirm-Erase"), actor: actor)
            return try await erased.encodeResponse(for: req)
        }
        try await UserAdminService(app: req.application).delete(id, actor: actor)
        return Response(status: .noContent)
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

/// `/api/v1/roles`: the built-in roles and custom ones. Reading needs users:read; creating, changing and
/// deleting custom roles needs roles:manage.
struct RoleController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let roles = routes.grouped("roles").grouped(RequireCaller())
        roles.grouped(RequirePermission(.usersRead)).get(use: index)
        let managers = roles.grouped(RequirePermission(.rolesManage))
        managers.post(use: create)
        managers.patch(":name", use: update)
        managers.delete(":name", use: delete)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<RoleResponse> {
        ListResponse(items: try await RoleService(app: req.application).all(), nextCursor: nil)
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let body = try req.content.decode(RoleCreateRequest.self)
        let role = try await RoleService(app: req.application).create(body, caller: try req.caller, origin: req.origin)
        return try await role.encodeResponse(status: .created, for: req)
    }

    @Sendable
    func update(req: Request) async throws -> RoleResponse {
        guard case .object(let fields) = try req.content.decode(JSONValue.self) else {
            throw HTTPProblem.validation([FieldProblem(field: "body", message: "must be a JSON object")])
        }
        return try await RoleService(app: req.application).update(try req.parameters.require("name"), fields: fields,
                                                                  caller: try req.caller, origin: req.origin)
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        let reassign = try req.query.get(String?.self, at: "reassign")
        try await RoleService(app: req.application).delete(try req.parameters.require("name"), reassign: reassign,
                                                           caller: try req.caller, origin: req.origin)
        return .noContent
    }
}
