import Crypto
import Fluent
import Foundation
import NIOConcurrencyHelpers
import StewardFormats
import Vapor

/// One `tools/call`: a skill's call becomes an execution (queued, run by the workers, recorded like any other),
/// followed through the event hub until it ends or the call's time runs out; a built-in tool calls the service.
struct MCPToolCall: Sendable {
    let context: MCPContext
    let id: JSONRPCID
    let name: String
    let arguments: [String: JSONValue]
    /// `params._meta.progressToken`: progress goes to the request's own stream as `notifications/progress`.
    let progressToken: JSONValue?

    /// Sends one message on the request's stream; throws once the client has gone.
    typealias Send = @Sendable (String) async throws -> Void

    init(_ params: [String: JSONValue], id: JSONRPCID, context: MCPContext) throws {
        guard case .string(let name)? = params["name"], !name.isEmpty, name.utf8.count <= 128 else {
            throw JSONRPCError.invalidParams("name must be the name of a tool.")
        }
        var arguments: [String: JSONValue] = [:]
        switch params["arguments"] {
        case nil, .null?: break
        case .object(let object)?: arguments = object
        default: throw JSONRPCError.invalidParams("arguments must be an object.")
        }
        var token: JSONValue?
        if case .object(let meta)? = params["_meta"], let raw = meta["progressToken"] {
            switch raw {
            case .string, .number: token = raw
            default: throw JSONRPCError.invalidParams("_meta.progressToken must be a string or a number.")
            }
        }
        self.context = context
        self.id = id
        self.name = name
        self.arguments = arguments
        progressToken = token
    }

    /// The call's result. `send` is the response stream (nil for a single JSON answer, which then carries no progress
    /// and notices no disconnect).
    func run(send: Send?) async throws -> JSONValue {
        let started = ContinuousClock.now
        let caller = context.caller
        guard MCPTools.mayUseTools(caller) else { throw MCPAccess.insufficientScope(caller.can(.skillsRead) ? .skillsExecute : .skillsRead) }
        var outcome = "error"
        var executionID: UUID?
        // Whether the entry waits on the execution the call made, for the transaction that ends it (`MCPCallAudit`).
        var auditedAtEnd = false
        defer { context.app.metrics.recordMCPToolCall(outcome: outcome, duration: ContinuousClock.now - started) }
        let result: JSONValue
        let allowed = try await MCPTools.allowList(caller, app: context.app)
        if let builtIn = MCPTools.builtIns.first(where: { $0.name == name }), MCPTools.allows(allowed, name: name) {
            guard caller.can(builtIn.permission) else { throw MCPAccess.insufficientScope(builtIn.permission) }
            (result, outcome) = try await runBuiltIn(builtIn)
        } else {
            // A tool the key's allow-list hides is, to that key, no tool at all.
            guard Slug.isValid(name), let skill = try? await SkillService(app: context.app).find(name), skill.enabled,
                  MCPTools.json(skill) != nil, MCPTools.allows(allowed, name: skill.slug, tags: skill.tags)
            else { throw JSONRPCError.invalidParams("Unknown tool: \(name)", data: ["name": .string(name)]) }
            (result, outcome, executionID, auditedAtEnd) = try await runSkill(skill, send: send)
        }
        if !auditedAtEnd { await audit(outcome: outcome, executionID: executionID) }
        return result
    }

    // MARK: Skills

    /// The result, the outcome, the execution, and whether the call made the execution (whose end then writes the
    /// call's audit entry).
    private func runSkill(_ skill: Skill, send: Send?) async throws -> (JSONValue, String, UUID?, Bool) {
        let app = context.app
        let execution: Execution
        let made: Bool
        do {
            if let existing = try await existingCall() { (execution, made) = (existing, false) } else {
                // Read-only mode: no new execution (a retried call still follows the one it made).
                if app.settings.readOnly { return (toolError(ReadOnlyRefusal().reason), "read_only", nil, false) }
                (execution, made) = try await create(skill)
            }
        } catch let problem as HTTPProblem where problem.status == .unprocessableEntity {
            let lines = problem.fieldProblems.map { "\($0.field) \($0.message)" }
            return (toolError("The arguments do not match the tool's input schema: " + lines.joined(separator: "; "),
                              structured: ["errors": .array(problem.fieldProblems.map { ["field": .string($0.field), "message": .string($0.message)] })]),
                    "invalid_arguments", nil, false)
        } catch let problem as any ProblemError where problem.status.code < 500 && problem.status != .forbidden {
            return (toolError(problem.reason), "refused", nil, false)
        }
        let executionID = try execution.requireID()
        let finished = try await follow(executionID, send: send)
        guard let finished else {
            let uri = MCPServer.executionPrefix + executionID.lowercasedString
            return (context.finish([
                "content": [
                    ["type": "text", "text": .string("""
                        The execution \(executionID.lowercasedString) is still running after \(app.appConfig.mcpCallTimeoutSeconds) s; \
                        it goes on. Read \(uri) (or call steward_get_execution) for its outcome.
                        """)],
                    ["type": "resource_link", "uri": .string(uri), "name": "execution", "mimeType": "application/json"],
                ],
                "structuredContent": ["executionId": .string(executionID.lowercasedString), "status": "running", "resource": .string(uri)],
                "isError": false,
                "_meta": meta(executionID, status: "running"),
            ]), "timeout", executionID, made)
        }
        return (result(of: finished), finished.status.rawValue, executionID, made)
    }

    /// The execution a call with this id already made in this session (a client retrying): it is followed, not run
    /// again.
    private func existingCall() async throws -> Execution? {
        guard let sessionID = context.sessionID else { return nil }
        return try await Execution.query(on: context.app.db).filter(\.$mcpSessionID == sessionID)
            .filter(\.$mcpRequestID == id.stored).filter(\.$user.$id == context.caller.user.id).first()
    }

    /// The call's execution, and whether this call made it (false: a retry arriving at once that lost the race).
    private func create(_ skill: Skill) async throws -> (Execution, Bool) {
        let context = context, requestID = id.stored
        do {
            return (try await ExecutionService(app: context.app).create(
                skill: skill, input: .object(arguments), caller: context.caller, origin: context.origin
            ) { execution in
                execution.origin = Execution.Origin.mcp.rawValue
                execution.clientName = context.clientName
                execution.clientVersion = context.clientVersion
                execution.mcpSessionID = context.sessionID
                execution.mcpRequestID = requestID
                execution.mcpCallAudit = MCPCallAudit.pending(details: auditDetails(executionID: execution.id),
                                                              actorType: context.caller.actorType, origin: context.origin)
            }, true)
        } catch let error where context.sessionID != nil && !(error is any ProblemError) {
            // The same call arriving twice at once: the unique (session, request id) index let one through.
            if let existing = try await existingCall() { return (existing, false) }
            throw error
        }
    }

    /// Waits for the execution to end, sending its progress; nil when the call's time ran out first. A client that
    /// closes the stream cancels the execution.
    private func follow(_ executionID: UUID, send: Send?) async throws -> Execution? {
        let app = context.app
        let caller = context.caller
        let service = ExecutionService(app: app)
        guard let credential = StreamCredential(caller) else { throw AuthError.unauthenticated }
        let watcher = StreamSubscriber(userID: caller.user.id, credential: credential, grants: caller.grants,
                                       filter: StreamFilter(types: ["execution.*"], resourceID: executionID.lowercasedString),
                                       capacity: 256)
        let hub = app.eventHub
        // The hub ticks its watchers about once a second.
        _ = try await hub.watch(watcher)
        let deadline = ContinuousClock.now + .seconds(app.appConfig.mcpCallTimeoutSeconds)
        var lastProgress = -1
        var ticks = 0
        do {
            var current = try await service.find(executionID, caller: caller)
            if current.status.isFinished { await hub.unwatch(watcher); return current }
            for await item in watcher.items {
                switch item {
                case .event(let event):
                    if event.type == "execution.progress" {
                        if let send, let progressToken, let (value, message) = Self.progress(in: event.json), value > lastProgress {
                            lastProgress = value
                            var params: [String: JSONValue] = ["progressToken": progressToken, "progress": .number(Double(value)), "total": 100]
                            if let message { params["message"] = .string(message) }
                            try await send(JSONRPCResponse.notification("notifications/progress", .object(params)))
                        }
                        continue
                    }
                    // Events are "execution.<status>": only one that names a final status needs the row read again.
                    guard Self.endsExecution(event.type) else { continue }
                    current = try await service.find(executionID, caller: caller)
                case .tick:
                    watcher.tickTaken()
                    ticks += 1
                    // A comment line: it keeps proxies from closing a quiet stream and shows whether the client is there.
                    if let send { try await send("") }
                    // The hub reads the log at least every second; this covers a watcher that missed its event.
                    if ticks % 5 == 0 { current = try await service.find(executionID, caller: caller) }
                case .message:
                    continue
                }
                if current.status.isFinished { break }
                if ContinuousClock.now >= deadline { break }
            }
            await hub.unwatch(watcher)
            return current.status.isFinished ? current : nil
        } catch let error as MCPStreamGone {
            await hub.unwatch(watcher)
            // The client went away: nobody waits for the answer any more, so the work stops (as a cancel would).
            _ = try? await service.cancel(executionID, caller: caller, origin: context.origin)
            throw error
        } catch {
            await hub.unwatch(watcher)
            throw error
        }
    }

    /// Whether an execution event's type names a final status (`execution.succeeded`, `execution.failed`, …).
    static func endsExecution(_ type: String) -> Bool {
        guard type.hasPrefix("execution.") else { return false }
        return Execution.Status(rawValue: String(type.dropFirst("execution.".count)))?.isFinished ?? false
    }

    /// `data.progress` and `data.message` of an `execution.progress` event's JSON.
    static func progress(in eventJSON: String) -> (Int, String?)? {
        guard case .object(let event)? = JSONText.parse(eventJSON), case .object(let data)? = event["data"],
              case .number(let value)? = data["progress"] else { return nil }
        if case .string(let message)? = data["message"] { return (Int(value), message) }
        return (Int(value), nil)
    }

    private func result(of execution: Execution) -> JSONValue {
        let id = execution.id!
        guard execution.status == .succeeded else {
            let reason = execution.error ?? execution.status.rawValue
            return context.finish([
                "content": [["type": "text", "text": .string("The execution \(id.lowercasedString) ended \(execution.status.rawValue): \(reason)")]],
                "isError": true,
                "_meta": meta(id, status: execution.status.rawValue),
            ])
        }
        let output = execution.output.map(JSONValue.parse) ?? .null
        var result: [String: JSONValue] = [
            "content": [["type": "text", "text": .string((try? output.canonicalString()) ?? "null")]],
            "isError": false,
            "_meta": meta(id, status: execution.status.rawValue),
        ]
        // 2025 revisions allow only an object here; 2026-07-28 any JSON value.
        if context.isModern { result["structuredContent"] = output } else if case .object = output { result["structuredContent"] = output }
        return context.finish(result)
    }

    private func meta(_ executionID: UUID, status: String) -> JSONValue {
        ["dev.steward/executionId": .string(executionID.lowercasedString), "dev.steward/status": .string(status)]
    }

    private func toolError(_ text: String, structured: JSONValue? = nil) -> JSONValue {
        var result: [String: JSONValue] = ["content": [["type": "text", "text": .string(text)]], "isError": true]
        if let structured, context.isModern { result["structuredContent"] = structured }
        return context.finish(result)
    }

    // MARK: Built-in tools

    private func runBuiltIn(_ tool: MCPTools.BuiltIn) async throws -> (JSONValue, String) {
        let app = context.app
        let caller = context.caller
        do {
            switch tool.name {
            case "steward_search_skills":
                guard case .string(let query)? = arguments["query"], (1...200).contains(query.utf8.count) else {
                    return (toolError("query must be a string of 1 to 200 bytes."), "invalid_arguments")
                }
                var limit = 10
                if let raw = arguments["limit"] {
                    guard case .number(let number) = raw, number == number.rounded(), (1...50).contains(number) else {
                        return (toolError("limit must be an integer from 1 to 50."), "invalid_arguments")
                    }
                    limit = Int(number)
                }
                let (skills, _) = try await SkillService(app: app).list(filter: .init(q: query), page: PageRequest(limit: limit, cursor: nil))
                let items: [JSONValue] = skills.filter(\.enabled).map { skill in
                    ["name": .string(skill.slug), "title": .string(skill.name), "description": .string(skill.description),
                     "inputSchema": JSONValue.parse(skill.inputSchema.text)]
                }
                let structured: JSONValue = ["skills": .array(items)]
                return (context.finish(["content": [["type": "text", "text": .string((try? structured.canonicalString()) ?? "{}")]],
                                        "structuredContent": structured, "isError": false]), "succeeded")
            default:
                guard case .string(let raw)? = arguments["executionId"], let executionID = UUID(text: raw) else {
                    return (toolError("executionId must be an execution's id (a UUID)."), "invalid_arguments")
                }
                let service = ExecutionService(app: app)
                let execution: Execution
                if app.settings.readOnly, tool.name != "steward_get_execution" { return (toolError(ReadOnlyRefusal().reason), "read_only") }
                switch tool.name {
                case "steward_cancel_execution": execution = try await service.cancel(executionID, caller: caller, origin: context.origin)
                case "steward_rollback_execution": execution = try await service.rollback(executionID, caller: caller, origin: context.origin)
                default: execution = try await service.find(executionID, caller: caller)
                }
                let history = try await service.history(executionID, caller: caller).map {
                    ExecutionController.HistoryEntry(at: $0.at, level: $0.level, message: $0.message, progress: $0.progress)
                }
                let text = try APIJSON.string(MCPServer.ExecutionResource(execution: ExecutionResponse(execution), history: history))
                return (context.finish(["content": [["type": "text", "text": .string(text)]], "structuredContent": JSONValue.parse(text),
                                        "isError": false, "_meta": meta(executionID, status: execution.status.rawValue)]), "succeeded")
            }
        } catch let problem as any ProblemError where problem.status.code < 500 && problem.status != .forbidden {
            return (toolError(problem.reason), "refused")
        }
    }

    // MARK: Record

    /// The call's `mcp.tools_call` entry (`MCPCallAudit`), all but the outcome.
    private func auditDetails(executionID: UUID?) -> [String: JSONValue] {
        let caller = context.caller
        let argumentsText = (try? JSONValue.object(arguments).canonicalString()) ?? ""
        var details: [String: JSONValue] = [
            "tool": .string(name),
            "argumentsSha256": .string(SHA256.hash(data: Data(argumentsText.utf8)).hexString),
            "protocolVersion": .string(context.version),
            "requestId": id.json,
            "clientName": context.clientName.map(JSONValue.string) ?? .null,
            "clientVersion": context.clientVersion.map(JSONValue.string) ?? .null,
            "apiKeyId": caller.apiKey.map { .string($0.id.lowercasedString) } ?? .null,
            "sessionId": context.sessionID.map { .string($0.lowercasedString) } ?? .null,
        ]
        if let executionID { details["executionId"] = .string(executionID.lowercasedString) }
        return details
    }

    /// Writes the entry of a call whose outcome is known now: one that made no execution, or followed one it made
    /// before.
    private func audit(outcome: String, executionID: UUID?) async {
        let context = context
        let record = MCPCallAudit.record(details: auditDetails(executionID: executionID), outcome: outcome, actorID: context.caller.user.id,
                                         actorType: context.caller.actorType, origin: context.origin, tool: name, executionID: executionID)
        do {
            try await context.app.writeTransaction { db in _ = try await context.app.activityRecorder.record(audit: record, on: db) }
        } catch {
            context.app.logger.error("Could not record an MCP tool call in the audit log: \(String(describing: error))")
        }
    }
}

/// The response stream's client went away.
struct MCPStreamGone: Error {}
