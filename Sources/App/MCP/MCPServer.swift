import Fluent
import Foundation
import StewardFormats
import Vapor

/// The protocol revisions Steward speaks.
enum MCPVersion {
    /// Stateless single exchanges: version and capabilities in every request's `_meta`.
    static let modern = "2026-07-28"
    /// `initialize` and `Mcp-Session-Id`; the first is what a client gets when it asks for one Steward lacks.
    static let legacy = ["2025-11-25", "2025-06-18", "2025-03-26"]
    static let all = [modern] + legacy

    static let metaVersion = "io.modelcontextprotocol/protocolVersion"
    static let metaCapabilities = "io.modelcontextprotocol/clientCapabilities"
    static let metaClientInfo = "io.modelcontextprotocol/clientInfo"
    static let metaServerInfo = "io.modelcontextprotocol/serverInfo"
    static let metaSubscriptionID = "io.modelcontextprotocol/subscriptionId"
}

/// Who is asking, over which revision: everything a method needs besides its params.
struct MCPContext: Sendable {
    let app: Application
    let caller: AuthenticatedCaller
    let version: String
    let clientName: String?
    let clientVersion: String?
    /// The 2025 session, if any.
    let sessionID: UUID?
    let origin: RequestOrigin

    var isModern: Bool { version == MCPVersion.modern }

    /// Results of the 2026-07-28 revision carry `resultType` and the server's identity.
    func finish(_ result: [String: JSONValue]) -> JSONValue {
        guard isModern else { return .object(result) }
        var result = result
        result["resultType"] = "complete"
        var meta: [String: JSONValue] = [:]
        if case .object(let existing)? = result["_meta"] { meta = existing }
        meta[MCPVersion.metaServerInfo] = MCPServer.serverInfo
        result["_meta"] = .object(meta)
        return .object(result)
    }

    /// A list result a client may cache (2026-07-28 requires the hints); per credential, so never shared.
    func cacheable(_ result: [String: JSONValue], ttlMs: Int = 0) -> JSONValue {
        var result = result
        if isModern {
            result["ttlMs"] = .number(Double(ttlMs))
            result["cacheScope"] = "private"
        }
        return finish(result)
    }
}

/// The methods, apart from the transport: what each answers for a caller.
enum MCPServer {
    static let name = "steward"
    static var serverInfo: JSONValue { ["name": .string(name), "title": "Steward", "version": .string(StewardVersion.current)] }
    static let instructions = """
        Each tool runs a Steward skill as a durable execution: it is queued, recorded in the execution history and \
        the audit log, and can be cancelled or rolled back. A call that outlasts the server's time limit returns the \
        execution id; read steward://executions/{id} for its outcome.
        """

    static func capabilities(modern: Bool) -> JSONValue {
        ["tools": ["listChanged": true], "resources": [:]]
    }

    /// The answer to a method that needs nothing of its transport; nil for a method not handled here.
    static func answer(_ message: JSONRPCMessage, _ context: MCPContext) async throws -> JSONValue? {
        switch message.method {
        case "ping": context.finish([:])
        case "server/discover": discover(context)
        case "tools/list": try await MCPTools.list(message.params, context)
        case "resources/list": resources(context)
        case "resources/templates/list": resourceTemplates(context)
        case "resources/read": try await readResource(message.params, context)
        default: nil
        }
    }

    // MARK: Discovery

    static func discover(_ context: MCPContext) -> JSONValue {
        context.finish([
            "supportedVersions": .array(MCPVersion.all.map(JSONValue.string)),
            "capabilities": capabilities(modern: true),
            "instructions": .string(instructions),
            "ttlMs": 3_600_000,
            "cacheScope": "public",
        ])
    }

    static func initializeResult(version: String) -> JSONValue {
        [
            "protocolVersion": .string(version),
            "capabilities": capabilities(modern: false),
            "serverInfo": serverInfo,
            "instructions": .string(instructions),
        ]
    }

    // MARK: Resources

    static let executionPrefix = "steward://executions/"
    static let skillPrefix = "steward://skills/"

    static func resourceTemplates(_ context: MCPContext) -> JSONValue {
        var templates: [JSONValue] = []
        if context.caller.can(.executionsRead) {
            templates.append([
                "uriTemplate": .string(executionPrefix + "{id}"), "name": "execution", "title": "Execution",
                "description": "An execution of a skill, with its status, output and history.", "mimeType": "application/json",
            ])
        }
        if context.caller.can(.skillsRead) {
            templates.append([
                "uriTemplate": .string(skillPrefix + "{slug}"), "name": "skill", "title": "Skill",
                "description": "A skill of the catalogue, with its input schema.", "mimeType": "application/json",
            ])
        }
        return context.cacheable(["resourceTemplates": .array(templates)])
    }

    static func resources(_ context: MCPContext) -> JSONValue {
        context.cacheable(["resources": []])
    }

    static func readResource(_ params: [String: JSONValue], _ context: MCPContext) async throws -> JSONValue {
        guard case .string(let uri)? = params["uri"], uri.utf8.count <= 300 else { throw JSONRPCError.invalidParams("uri must be a string.") }
        let notFound = JSONRPCError(code: context.isModern ? -32602 : -32002, message: "Resource not found: \(uri)", data: ["uri": .string(uri)])
        let text: String
        if uri.hasPrefix(executionPrefix) {
            guard context.caller.can(.executionsRead) else { throw MCPAccess.insufficientScope(.executionsRead) }
            guard let id = UUID(text: String(uri.dropFirst(executionPrefix.count))) else { throw notFound }
            let service = ExecutionService(app: context.app)
            do {
                let execution = try await service.find(id, caller: context.caller)
                let history = try await service.history(id, caller: context.caller)
                let entries = history.map { ExecutionController.HistoryEntry(at: $0.at, level: $0.level, message: $0.message, progress: $0.progress) }
                text = try APIJSON.string(ExecutionResource(execution: ExecutionResponse(execution), history: entries))
            } catch let problem as HTTPProblem where problem.status == .notFound {
                throw notFound
            }
        } else if uri.hasPrefix(skillPrefix) {
            guard context.caller.can(.skillsRead) else { throw MCPAccess.insufficientScope(.skillsRead) }
            let slug = String(uri.dropFirst(skillPrefix.count))
            guard Slug.isValid(slug), let skill = try? await SkillService(app: context.app).find(slug) else { throw notFound }
            text = try APIJSON.string(try await SkillService(app: context.app).response(skill))
        } else {
            throw notFound
        }
        return context.cacheable(["contents": [["uri": .string(uri), "mimeType": "application/json", "text": .string(text)]]])
    }

    struct ExecutionResource: Content {
        var execution: ExecutionResponse
        var history: [ExecutionController.HistoryEntry]
    }
}

/// Permission refusals: HTTP 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`, naming what is missing.
enum MCPAccess {
    static func insufficientScope(_ permission: Permission) -> JSONRPCError {
        JSONRPCError(code: -32001, message: "This credential lacks the permission \(permission.rawValue).",
                     data: ["requiredScope": .string(permission.rawValue)], status: .forbidden,
                     headers: ["WWW-Authenticate": #"Bearer error="insufficient_scope", scope="\#(permission.rawValue)""#])
    }
}
