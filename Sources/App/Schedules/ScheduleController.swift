import Vapor
import StewardFormats

/// `/api/v1/schedules`: cron schedules of skills. Reading needs executions:read; creating, changing, deleting
/// and running one needs skills:execute. Owner-scoped: another user's schedule is 404 (admins see all).
struct ScheduleController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let schedules = routes.grouped("schedules").grouped(RequireCaller())
        let readers = schedules.grouped(RequirePermission(.executionsRead))
        readers.get(use: index)
        readers.get(":id", use: show)
        let writers = schedules.grouped(RequirePermission(.skillsExecute))
        writers.post(use: create)
        writers.patch(":id", use: update)
        writers.delete(":id", use: delete)
        writers.post(":id", "run-now", use: runNow)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<ScheduleResponse> {
        let (items, next) = try await ScheduleService(app: req.application).list(page: try PageRequest(from: req), caller: try req.caller)
        return ListResponse(items: items, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> ScheduleResponse {
        ScheduleResponse(try await ScheduleService(app: req.application).find(try req.uuidParameter("id"), caller: try req.caller))
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let draft = try ScheduleService.draft(from: try req.jsonObject())
        let schedule = try await ScheduleService(app: req.application).create(draft, caller: try req.caller, origin: req.origin)
        let response = try await ScheduleResponse(schedule).encodeResponse(status: .created, for: req)
        response.headers.replaceOrAdd(name: .location, value: "/api/v1/schedules/\(schedule.id!.lowercasedString)")
        return response
    }

    @Sendable
    func update(req: Request) async throws -> ScheduleResponse {
        let draft = try ScheduleService.draft(from: try req.jsonObject())
        return ScheduleResponse(try await ScheduleService(app: req.application).update(try req.uuidParameter("id"), draft: draft, caller: try req.caller, origin: req.origin))
    }

    @Sendable
    func delete(req: Request) async throws -> HTTPStatus {
        try await ScheduleService(app: req.application).delete(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func runNow(req: Request) async throws -> Response {
        switch try await ScheduleService(app: req.application).runNow(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin) {
        case .execution(let execution):
            let response = try await ExecutionResponse(execution).encodeResponse(status: .accepted, for: req)
            response.headers.replaceOrAdd(name: .location, value: "/api/v1/executions/\(execution.id!.lowercasedString)")
            return response
        case .run(let run, let steps):
            let response = try await WorkflowRunResponse(run, steps: steps).encodeResponse(status: .accepted, for: req)
            response.headers.replaceOrAdd(name: .location, value: "/api/v1/workflows/\(run.$workflow.id.lowercasedString)/runs/\(run.id!.lowercasedString)")
            return response
        }
    }
}
