import Vapor

/// `/api/v1/webhooks` (webhooks:manage): subscriptions, secrets, test pings and delivery history.
struct WebhookController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let hooks = routes.grouped(FeatureGate(.webhooks)).grouped("webhooks").grouped(RequireCaller(), RequirePermission(.webhooksManage))
        hooks.post(use: create)
        hooks.get(use: index)
        hooks.get(":id", use: show)
        hooks.patch(":id", use: update)
        hooks.delete(":id", use: delete)
        hooks.post(":id", "rotate-secret", use: rotateSecret)
        hooks.post(":id", "test", use: test)
        hooks.get(":id", "deliveries", use: deliveries)
        hooks.post(":id", "deliveries", ":deliveryId", "redeliver", use: redeliver)
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let draft = try WebhookService.draft(from: try req.jsonObject())
        let (hook, secret) = try await WebhookService(app: req.application).create(draft, caller: try req.caller, origin: req.origin)
        return try await WebhookResponse(hook, secret: secret).encodeResponse(status: .created, for: req)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<WebhookResponse> {
        ListResponse(items: try await WebhookService(app: req.application).list(caller: try req.caller), nextCursor: nil)
    }

    @Sendable
    func show(req: Request) async throws -> WebhookResponse {
        WebhookResponse(try await WebhookService(app: req.application).find(try req.uuidParameter("id"), caller: try req.caller))
    }

    @Sendable
    func update(req: Request) async throws -> WebhookResponse {
        let draft = try WebhookService.draft(from: try req.jsonObject())
        return WebhookResponse(try await WebhookService(app: req.application).update(try req.uuidParameter("id"), draft: draft, caller: try req.caller, origin: req.origin))
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        try await WebhookService(app: req.application).delete(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func rotateSecret(req: Request) async throws -> WebhookResponse {
        let (hook, secret) = try await WebhookService(app: req.application).rotateSecret(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin)
        return WebhookResponse(hook, secret: secret)
    }

    @Sendable
    func test(req: Request) async throws -> Response {
        let delivery = try await WebhookService(app: req.application).test(try req.uuidParameter("id"), caller: try req.caller)
        return try await DeliveryResponse(delivery, attempts: []).encodeResponse(status: .accepted, for: req)
    }

    @Sendable
    func deliveries(req: Request) async throws -> ListResponse<DeliveryResponse> {
        let (items, next) = try await WebhookService(app: req.application).deliveries(try req.uuidParameter("id"), caller: try req.caller, page: try PageRequest(from: req))
        return ListResponse(items: items, nextCursor: next)
    }

    @Sendable
    func redeliver(req: Request) async throws -> Response {
        let delivery = try await WebhookService(app: req.application).redeliver(
            try req.uuidParameter("id"), deliveryID: try req.uuidParameter("deliveryId"), caller: try req.caller)
        return try await DeliveryResponse(delivery, attempts: []).encodeResponse(status: .accepted, for: req)
    }
}
