import Vapor

/// `/api/v1/api-keys` (api-keys:manage).
struct APIKeyController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let keys = routes.grouped("api-keys").grouped(RequireCaller(), RequirePermission(.apiKeysManage))
        keys.grouped(RequireInteractiveSession()).post(use: create)
        keys.get(use: index)
        keys.delete(":id", use: delete)
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let caller = try req.caller
        let body = try req.content.decode(CreateAPIKeyRequest.self)
        let created = try await APIKeyService(app: req.application).create(
            name: body.name, scopes: body.scopes, expiresAt: body.expiresAt, tools: body.tools, ownerID: caller.user.id, ownerGrants: caller.grants,
            actor: caller, origin: req.origin)
        return try await created.encodeResponse(status: .created, for: req)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<APIKeyResponse> {
        let keys = try await APIKeyService(app: req.application).list(caller: try req.caller)
        return ListResponse(items: keys, nextCursor: nil)
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        try await APIKeyService(app: req.application).revoke(id: try req.uuidParameter("id"), caller: try req.caller, origin: req.origin)
        return .noContent
    }
}
