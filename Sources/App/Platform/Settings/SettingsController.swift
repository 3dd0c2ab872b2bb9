import StewardFormats
import Vapor

/// `GET /api/v1/settings`, `GET|PUT|DELETE /api/v1/settings/{key}` (settings:manage), and the public
/// `GET /api/v1/status`.
struct SettingsController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        routes.get("status", use: status)
        let settings = routes.grouped("settings").grouped(RequireCaller(), RequirePermission(.settingsManage))
        settings.get(use: index)
        settings.get(":key", use: show)
        settings.put(":key", use: update)
        settings.delete(":key", use: reset)
    }

    @Sendable
    func status(req: Request) async throws -> ServerStatusResponse {
        SettingsService(app: req.application).status()
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<SettingResponse> {
        ListResponse(items: try await SettingsService(app: req.application).all(), nextCursor: nil)
    }

    @Sendable
    func show(req: Request) async throws -> SettingResponse {
        try await SettingsService(app: req.application).find(try req.parameters.require("key"))
    }

    /// The body is `{"value": <JSON>}`.
    @Sendable
    func update(req: Request) async throws -> SettingResponse {
        guard case .object(let fields) = try req.content.decode(JSONValue.self) else {
            throw HTTPProblem.validation([FieldProblem(field: "body", message: "must be a JSON object")])
        }
        var problems = fields.keys.filter { $0 != "value" }.sorted().map { FieldProblem(field: $0, message: "is not a field of this request") }
        if fields["value"] == nil { problems.append(FieldProblem(field: "value", message: "is required")) }
        guard problems.isEmpty, let value = fields["value"] else { throw HTTPProblem.validation(problems) }
        return try await SettingsService(app: req.application).set(
            try req.parameters.require("key"), to: value, actor: .init(try req.caller, origin: req.origin))
    }

    @Sendable
    func reset(req: Request) async throws -> SettingResponse {
        try await SettingsService(app: req.application).unset(try req.parameters.require("key"), actor: .init(try req.caller, origin: req.origin))
    }
}
