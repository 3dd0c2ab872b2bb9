import Vapor

/// `/api/v1/skills`: the catalogue (skills:read to look, skills:write to change).
struct SkillController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let skills = routes.grouped("skills").grouped(RequireCaller())
        let readers = skills.grouped(RequirePermission(.skillsRead))
        readers.get(use: index)
        readers.get("favorites", use: favorites)
        readers.get("stats", use: stats)
        readers.get("popular", use: popular)
        readers.get(":skill", use: show)
        readers.post(":skill", "favorite", use: favorite)
        readers.delete(":skill", "favorite", use: unfavorite)
        let writers = skills.grouped(RequirePermission(.skillsWrite))
        writers.post(use: create)
        writers.patch(":skill", use: update)
        writers.delete(":skill", use: delete)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<SkillResponse> {
        let page = try PageRequest(from: req)
        let q = req.queryText("q")
        if let q, q.count > 500 { throw HTTPProblem.validation([FieldProblem(field: "q", message: "must be at most 500 characters")]) }
        let filter = SkillService.Filter(q: q,
                                         category: req.queryText("category"),
                                         tag: req.queryText("tag"))
        let (skills, next) = try await SkillService(app: req.application).list(filter: filter, page: page)
        return ListResponse(items: skills, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> SkillResponse {
        let service = SkillService(app: req.application)
        return try await service.response(try await service.find(try reference(req)))
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let draft = try SkillService.draft(from: try req.jsonObject())
        let service = SkillService(app: req.application)
        let skill = try await service.create(draft, caller: try req.caller, origin: req.origin)
        return try await service.response(skill).encodeResponse(status: .created, for: req)
    }

    @Sendable
    func update(req: Request) async throws -> SkillResponse {
        let draft = try SkillService.draft(from: try req.jsonObject())
        let service = SkillService(app: req.application)
        return try await service.response(try await service.update(try reference(req), draft: draft, caller: try req.caller, origin: req.origin))
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        try await SkillService(app: req.application).delete(try reference(req), caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func favorite(req: Request) async throws -> HTTPStatus {
        try await SkillService(app: req.application).setFavorite(try reference(req), caller: try req.caller, on: true)
        return .noContent
    }

    @Sendable
    func unfavorite(req: Request) async throws -> HTTPStatus {
        try await SkillService(app: req.application).setFavorite(try reference(req), caller: try req.caller, on: false)
        return .noContent
    }

    @Sendable
    func favorites(req: Request) async throws -> ListResponse<SkillResponse> {
        let service = SkillService(app: req.application)
        return ListResponse(items: try await service.withToolFields(try await service.favorites(of: try req.caller).map(SkillResponse.init)), nextCursor: nil)
    }

    /// A skill with its executions in the last 30 days.
    struct PopularSkill: Content {
        var skill: SkillResponse
        var executionsLast30Days: Int
    }

    @Sendable
    func popular(req: Request) async throws -> ListResponse<PopularSkill> {
        let page = try PageRequest(from: req)
        let service = SkillService(app: req.application)
        let popular = try await service.popular(limit: page.limit)
        let skills = try await service.withToolFields(popular.map { SkillResponse($0.0) })
        return ListResponse(items: zip(skills, popular).map { PopularSkill(skill: $0, executionsLast30Days: $1.1) }, nextCursor: nil)
    }

    @Sendable
    func stats(req: Request) async throws -> SkillService.Stats {
        try await SkillService(app: req.application).stats()
    }

    private func reference(_ req: Request) throws -> String {
        guard let value = req.parameters.get("skill"), !value.isEmpty, value.utf8.count <= 64 else { throw HTTPProblem.notFound("No such skill.") }
        return value
    }
}
