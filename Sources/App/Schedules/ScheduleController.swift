import Vapor
import StewardFormats

/// `/api/v1/schedules`: cron schedules of skills. Reading needs executions:read; creating, changing, deleting
/// and running one needs skills:execute. Owner-scoped: another user's schedule is 404 (admins see all).
struct ScheduleController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let schedules = routes.grouped(FeatureGate(.schedules)).grouped("schedules").grouped(RequireCaller())
        let readers = schedules.grouped(RequirePermission(.executionsRead))
        readers.get(use: index)
        readers.get("preview", use: preview)
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

    /// `GET /api/v1/schedules/preview?cron=&timezone=&count=`: when an expression would fire next, before saving it.
    @Sendable
    func preview(req: Request) async throws -> SchedulePreview {
        var problems: [FieldProblem] = []
        // The expression's own parse refuses an empty or over-long one, naming the position.
        let text = req.queryText("cron") ?? ""
        var expression: CronExpression?
        if req.queryText("cron") == nil { problems.append(FieldProblem(field: "cron", message: "is required")) } else {
            expression = ScheduleService.cron(text, problems: &problems)
        }
        let zoneName = req.queryText("timezone") ?? "UTC"
        let zone = ScheduleService.timeZone(zoneName, problems: &problems)
        var count = 5
        if let raw = req.queryText("count") {
            if let value = Int(raw), (1...20).contains(value) { count = value } else {
                problems.append(FieldProblem(field: "count", message: "must be an integer from 1 to 20"))
            }
        }
        guard problems.isEmpty, let expression, let zone else { throw HTTPProblem.validation(problems) }
        let next = expression.occurrences(after: req.application.wallClock.now(), in: zone, count: count)
        guard !next.isEmpty else { throw HTTPProblem.validation([ScheduleService.neverFires]) }
        return SchedulePreview(cron: text.trimmingCharacters(in: .whitespaces), timezone: zoneName, next: next)
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

/// The answer of `GET /api/v1/schedules/preview`.
struct SchedulePreview: Content {
    var cron: String
    var timezone: String
    /// The next fire times, oldest first, as instants.
    var next: [Date]
}
