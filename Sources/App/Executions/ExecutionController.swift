import Vapor
import StewardFormats

/// `/api/v1/executions`: run skills and follow, cancel or roll back their runs.
struct ExecutionController: RouteCollection {
    struct CreateExecutionRequest: Content {
        var skillId: String
        var input: JSONValue?
    }

    /// One line of `GET /executions/{id}/history`.
    struct HistoryEntry: Content {
        var at: Date
        var level: String
        var message: String
        var progress: Int?
    }

    /// `POST /executions/{id}/progress`, from an HTTP runner.
    struct ProgressReport: Content {
        var progress: Int
        var message: String?
    }

    func boot(routes: any RoutesBuilder) throws {
        // Authenticated by the execution's callback token, not by a user.
        routes.grouped("executions").post(":id", "progress", use: reportProgress)

        let executions = routes.grouped("executions").grouped(RequireCaller())
        executions.grouped(RequirePermission(.skillsExecute)).post(use: create)
        let readers = executions.grouped(RequirePermission(.executionsRead))
        readers.get(use: index)
        readers.get("stats", use: stats)
        readers.get(":id", use: show)
        readers.get(":id", "history", use: history)
        let writers = executions.grouped(RequirePermission(.executionsWrite))
        writers.post(":id", "cancel", use: cancel)
        writers.post(":id", "rollback", use: rollback)
    }

    @Sendable
    func create(req: Request) async throws -> Response {
        let body = try Self.createRequest(req)
        let caller = try req.caller
        try await RateLimiter(app: req.application).check(
            req, [(req.application.rateLimitPolicies.executions, "user:\(caller.user.id.lowercasedString)")], onStoreFailure: .failOpen)
        guard !body.skillId.isEmpty, body.skillId.utf8.count <= 64 else {
            throw HTTPProblem.validation([FieldProblem(field: "skillId", message: "must be a skill id or slug")])
        }
        let execution = try await ExecutionService(app: req.application).create(
            skillReference: body.skillId, input: body.input ?? [:], caller: try req.caller, origin: req.origin)
        // The body is the event data's text (`ExecutionResponse.json`): the fields `APIJSON` writes, keys sorted.
        let response = Response(status: .accepted, body: .init(string: try ExecutionResponse(execution).json.canonicalString()))
        response.headers.contentType = .json
        response.headers.replaceOrAdd(name: .location, value: "/api/v1/executions/\(execution.id!.lowercasedString)")
        return response
    }

    /// The create body. A JSON object with a string `skillId` is read with `JSONText`, the common case, which runs on
    /// every create; anything else (another media type, JSON that does not parse, a missing or mistyped field) goes
    /// through `Content` as every other body does, so the answers to bad input are exactly the usual ones.
    private static func createRequest(_ req: Request) throws -> CreateExecutionRequest {
        if req.headers.contentType == .json, let buffer = req.body.data,
           case .object(let fields)? = JSONText.parse(buffer), case .string(let skillId)? = fields["skillId"] {
            if NULCharacter.isIn(.object(fields)) { throw NULCharacter(place: "The body") }
            let input = fields["input"]
            return CreateExecutionRequest(skillId: skillId, input: input == .null ? nil : input)
        }
        return try req.content.decode(CreateExecutionRequest.self)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<ExecutionResponse> {
        let page = try PageRequest(from: req)
        var filter = ExecutionService.Filter()
        var problems: [FieldProblem] = []
        if let raw = req.queryText("status") {
            if let status = Execution.Status(rawValue: raw) { filter.status = status } else {
                problems.append(FieldProblem(field: "status", message: "must be one of \(Execution.Status.allCases.map(\.rawValue).joined(separator: ", "))"))
            }
        }
        if let raw = req.queryText("skillId") {
            if let id = UUID(uuidString: raw) { filter.skillID = id } else { problems.append(FieldProblem(field: "skillId", message: "must be a UUID")) }
        }
        if let raw = req.queryText("userId") {
            if let id = UUID(uuidString: raw) { filter.userID = id } else { problems.append(FieldProblem(field: "userId", message: "must be a UUID")) }
        }
        if let raw = req.queryText("origin") {
            if let origin = Execution.Origin(rawValue: raw) { filter.origin = origin } else {
                problems.append(FieldProblem(field: "origin", message: "must be one of \(Execution.Origin.allCases.map(\.rawValue).joined(separator: ", "))"))
            }
        }
        if let raw = req.queryText("clientName") {
            if (1...200).contains(raw.utf8.count) { filter.clientName = raw } else {
                problems.append(FieldProblem(field: "clientName", message: "must be 1 to 200 bytes"))
            }
        }
        // Queued at or after `from`, and before `to`: the date filter of the console's list.
        filter.from = req.timestampQuery("from", problems: &problems)
        filter.to = req.timestampQuery("to", problems: &problems)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let (executions, next) = try await ExecutionService(app: req.application).list(filter: filter, page: page, caller: try req.caller)
        return ListResponse(items: executions, nextCursor: next)
    }

    @Sendable
    func show(req: Request) async throws -> ExecutionResponse {
        ExecutionResponse(try await ExecutionService(app: req.application).find(try req.uuidParameter("id"), caller: try req.caller))
    }

    @Sendable
    func history(req: Request) async throws -> ListResponse<HistoryEntry> {
        let entries = try await ExecutionService(app: req.application).history(try req.uuidParameter("id"), caller: try req.caller)
        return ListResponse(items: entries.map { HistoryEntry(at: $0.at, level: $0.level, message: $0.message, progress: $0.progress) }, nextCursor: nil)
    }

    @Sendable
    func cancel(req: Request) async throws -> ExecutionResponse {
        ExecutionResponse(try await ExecutionService(app: req.application).cancel(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin))
    }

    @Sendable
    func rollback(req: Request) async throws -> Response {
        let execution = try await ExecutionService(app: req.application).rollback(try req.uuidParameter("id"), caller: try req.caller, origin: req.origin)
        return try await ExecutionResponse(execution).encodeResponse(status: .accepted, for: req)
    }

    @Sendable
    func reportProgress(req: Request) async throws -> Response {
        let id = try req.uuidParameter("id")
        let expected = HTTPRunner.callbackToken(for: id, key: req.application.keyMaterial.callbackKey)
        guard let token = req.headers.bearerAuthorization?.token, SecureToken.constantTimeEquals(token, expected) else {
            throw AuthError.invalidToken
        }
        let body = try req.content.decode(ProgressReport.self)
        guard (0...100).contains(body.progress) else {
            throw HTTPProblem.validation([FieldProblem(field: "progress", message: "must be a whole number from 0 to 100")])
        }
        if let message = body.message, message.count > 500 {
            throw HTTPProblem.validation([FieldProblem(field: "message", message: "must be at most 500 characters")])
        }
        let progress = try await ExecutionService(app: req.application).reportProgress(id, progress: body.progress, message: body.message ?? "\(body.progress)%")
        return try await ["progress": progress].encodeResponse(status: .accepted, for: req)
    }

    @Sendable
    func stats(req: Request) async throws -> ExecutionService.Stats {
        try await ExecutionService(app: req.application).stats(caller: try req.caller)
    }
}
