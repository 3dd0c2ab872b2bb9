import Vapor
import StewardFormats

/// `/api/v1/workflows`: the catalogue (workflows:read to look, workflows:write to change) and runs (skills:execute
/// to start, cancel or roll back one; runs are owner-scoped like executions).
struct WorkflowController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let workflows = routes.grouped(FeatureGate(.workflows)).grouped("workflows").grouped(RequireCaller())
        let readers = workflows.grouped(RequirePermission(.workflowsRead))
        readers.get(use: index)
        readers.get(":id", use: show)
        readers.get(":id", "runs", use: runs)
        readers.get(":id", "runs", ":runId", use: run)
        let writers = workflows.grouped(RequirePermission(.workflowsWrite))
        writers.post(use: create)
        writers.patch(":id", use: update)
        writers.delete(":id", use: delete)
        let runners = workflows.grouped(RequirePermission(.skillsExecute))
        runners.post(":id", "runs", use: start)
        runners.post(":id", "runs", ":runId", "cancel", use: cancel)
        runners.post(":id", "runs", ":runId", "rollback", use: rollback)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<WorkflowResponse> {
        let (items, next) = try await WorkflowService(app: req.application).list(page: try PageRequest(from: req))
        return ListResponse(items: items, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> WorkflowResponse {
        WorkflowResponse(try await WorkflowService(app: req.application).find(try reference(req)))
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let draft = try WorkflowService.draft(from: try req.jsonObject())
        let workflow = try await WorkflowService(app: req.application).create(draft, caller: try req.caller, origin: req.origin)
        let response = try await WorkflowResponse(workflow).encodeResponse(status: .created, for: req)
        response.headers.replaceOrAdd(name: .location, value: "/api/v1/workflows/\(workflow.id!.lowercasedString)")
        return response
    }

    @Sendable
    func update(req: Request) async throws -> WorkflowResponse {
        let draft = try WorkflowService.draft(from: try req.jsonObject())
        return WorkflowResponse(try await WorkflowService(app: req.application).update(try reference(req), draft: draft, caller: try req.caller, origin: req.origin))
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        try await WorkflowService(app: req.application).delete(try reference(req), caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func start(req: Request) async throws -> Response {
        let fields = try req.jsonObject()
        let unknown = fields.keys.filter { $0 != "input" }.sorted()
        guard unknown.isEmpty else { throw HTTPProblem.validation(unknown.map { FieldProblem(field: $0, message: "is not a run field") }) }
        let (run, steps) = try await WorkflowRunService(app: req.application).start(try reference(req), input: fields["input"] ?? [:], caller: try req.caller, origin: req.origin)
        let response = try await WorkflowRunResponse(run, steps: steps).encodeResponse(status: .accepted, for: req)
        response.headers.replaceOrAdd(name: .location, value: "/api/v1/workflows/\(run.$workflow.id.lowercasedString)/runs/\(run.id!.lowercasedString)")
        return response
    }

    @Sendable
    func runs(req: Request) async throws -> ListResponse<WorkflowRunResponse> {
        let (items, next) = try await WorkflowRunService(app: req.application).list(try reference(req), page: try PageRequest(from: req), caller: try req.caller)
        return ListResponse(items: items, nextCursor: next)
    }

    @Sendable
    func run(req: Request) async throws -> WorkflowRunResponse {
        try await WorkflowRunService(app: req.application).detail(try reference(req), runID: try req.uuidParameter("runId"), caller: try req.caller)
    }

    @Sendable
    func cancel(req: Request) async throws -> WorkflowRunResponse {
        let (run, steps) = try await WorkflowRunService(app: req.application).cancel(try reference(req), runID: try req.uuidParameter("runId"), caller: try req.caller, origin: req.origin)
        return WorkflowRunResponse(run, steps: steps)
    }

    @Sendable
    func rollback(req: Request) async throws -> Response {
        let (run, steps) = try await WorkflowRunService(app: req.application).rollback(try reference(req), runID: try req.uuidParameter("runId"), caller: try req.caller, origin: req.origin)
        return try await WorkflowRunResponse(run, steps: steps).encodeResponse(status: .accepted, for: req)
    }

    private func reference(_ req: Request) throws -> String {
        guard let value = req.parameters.get("id"), !value.isEmpty, value.count <= 200 else { throw HTTPProblem.notFound("No such workflow.") }
        return value
    }
}
