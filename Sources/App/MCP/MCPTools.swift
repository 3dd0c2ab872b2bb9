import Fluent
import Foundation
import StewardFormats
import Vapor

/// The tools a caller sees: Steward's built-in tools, then every enabled skill whose input is an object, by slug.
///
/// A tool is something the caller may run, so the catalogue is empty without `skills:execute` (and `skills:read`).
/// It depends on the credential (its user's roles, narrowed by an API key's scopes), never on the connection.
enum MCPTools {
    /// Tools per `tools/list` page.
    static let pageSize = 200

    struct BuiltIn: Sendable {
        let name: String
        let title: String
        let description: String
        let inputSchema: JSONValue
        let permission: Permission
        let readOnly: Bool
    }

    private static let executionIDSchema: JSONValue = [
        "type": "object",
        "properties": ["executionId": ["type": "string", "format": "uuid", "description": "The execution's id."]],
        "required": ["executionId"],
    ]

    static let builtIns: [BuiltIn] = [
        BuiltIn(name: "steward_search_skills", title: "Search skills",
                description: "Full-text search over the skill catalogue. Returns matching skills with their slugs (the tool names) and input schemas.",
                inputSchema: [
                    "type": "object",
                    "properties": [
                        "query": ["type": "string", "minLength": 1, "maxLength": 200, "description": "Words to look for."],
                        "limit": ["type": "integer", "minimum": 1, "maximum": 50, "description": "At most this many skills (default 10)."],
                    ],
                    "required": ["query"],
                ],
                permission: .skillsRead, readOnly: true),
        BuiltIn(name: "steward_get_execution", title: "Get an execution",
                description: "An execution's status, input, output or error, and history.",
                inputSchema: executionIDSchema, permission: .executionsRead, readOnly: true),
        BuiltIn(name: "steward_cancel_execution", title: "Cancel an execution",
                description: "Cancels a queued or running execution.",
                inputSchema: executionIDSchema, permission: .executionsWrite, readOnly: false),
        BuiltIn(name: "steward_rollback_execution", title: "Roll an execution back",
                description: "Runs the skill's rollback for a finished execution.",
                inputSchema: executionIDSchema, permission: .executionsWrite, readOnly: false),
    ]

    /// The calling API key's tool allow-list; nil when it has none (or the caller is not a key).
    static func allowList(_ caller: AuthenticatedCaller, app: Application) async throws -> [String]? {
        guard let keyID = caller.apiKey?.id else { return nil }
        return try await app.apiKeyTools.tools(of: [keyID], app: app)[keyID] ?? nil
    }

    /// Whether an allow-list lets a tool through: by its name, or by one of its tags (`tag:<tag>`).
    static func allows(_ list: [String]?, name: String, tags: [String] = []) -> Bool {
        guard let list else { return true }
        return list.contains(name) || tags.contains { list.contains("tag:" + $0) }
    }

    static func mayUseTools(_ caller: AuthenticatedCaller) -> Bool {
        caller.can(.skillsRead) && caller.can(.skillsExecute)
    }

    static func builtIns(for caller: AuthenticatedCaller) -> [BuiltIn] {
        mayUseTools(caller) ? builtIns.filter { caller.can($0.permission) } : []
    }

    static func json(_ tool: BuiltIn) -> JSONValue {
        [
            "name": .string(tool.name), "title": .string(tool.title), "description": .string(tool.description),
            "inputSchema": tool.inputSchema,
            "annotations": ["readOnlyHint": .bool(tool.readOnly), "destructiveHint": .bool(!tool.readOnly), "openWorldHint": false],
        ]
    }

    /// A skill as a tool; nil when its input is not an object (MCP arguments always are).
    static func json(_ skill: Skill, fields: SkillToolFields = .none) -> JSONValue? {
        guard case .object(var schema) = skill.inputSchema else { return nil }
        switch schema["type"] {
        case nil: schema["type"] = "object"
        case .string("object")?: break
        default: return nil
        }
        var tool: [String: JSONValue] = ["name": .string(skill.slug), "title": .string(skill.name), "description": .string(skill.description),
                                         "inputSchema": .object(schema)]
        // MCP's outputSchema is an object schema; a skill whose output is another type shows it in the description only.
        if let text = fields.outputSchema, case .object(let output) = JSONValue.parse(text), output["type"] == .string("object") {
            tool["outputSchema"] = .object(output)
        }
        if case .object(let hints) = JSONValue.parse(fields.annotations), !hints.isEmpty { tool["annotations"] = .object(hints) }
        return .object(tool)
    }

    /// One page of the catalogue. The cursor is the last slug of the previous page (built-ins come first, on the
    /// first page only), so pages stay stable while skills are added.
    static func list(_ params: [String: JSONValue], _ context: MCPContext) async throws -> JSONValue {
        var after: String?
        switch params["cursor"] {
        case nil, .null?: break
        case .string(let cursor)?:
            guard let decoded = Data(base64Encoded: cursor).map({ String(decoding: $0, as: UTF8.self) }), decoded.hasPrefix("s:"),
                  Slug.isValid(String(decoded.dropFirst(2)))
            else { throw JSONRPCError.invalidParams("The cursor is not one this server gave.") }
            after = String(decoded.dropFirst(2))
        default: throw JSONRPCError.invalidParams("cursor must be a string.")
        }
        var tools: [JSONValue] = []
        var next: String?
        if mayUseTools(context.caller) {
            let allowed = try await allowList(context.caller, app: context.app)
            if after == nil { tools = builtIns(for: context.caller).filter { allows(allowed, name: $0.name) }.map(json) }
            var query = Skill.query(on: context.app.db).filter(\.$enabled == true).sort(\.$slug).limit(pageSize + 1)
            if let after { query = query.filter(\.$slug > after) }
            let skills = try await query.listed()
            let page = Array(skills.prefix(pageSize))
            let fields = try await context.app.skillToolFields.fields(for: page.map { ($0.id!, $0.version) }, app: context.app)
            for skill in page where allows(allowed, name: skill.slug, tags: skill.tags) {
                if let tool = json(skill, fields: fields[skill.id!] ?? .none) { tools.append(tool) }
            }
            if skills.count > pageSize, let last = skills.prefix(pageSize).last {
                next = Data(("s:" + last.slug).utf8).base64EncodedString()
            }
        }
        var result: [String: JSONValue] = ["tools": .array(tools)]
        if let next { result["nextCursor"] = .string(next) }
        return context.cacheable(result)
    }
}
