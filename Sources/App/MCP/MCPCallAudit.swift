import Fluent
import Foundation
import StewardFormats

/// `mcp.tools_call` in the audit log: the tool, a SHA-256 of the arguments (never the arguments), the client, the
/// key, and the outcome; the actor is the user.
///
/// A call that made an execution does not write its entry itself: the entry, all but its outcome, waits on the
/// execution's row (`mcp_call_audit`), and the transaction that writes the execution's final status writes it with
/// that status as the outcome and empties the column (`ExecutionService.transition`). The entry thus commits with
/// the outcome it records, on whichever instance's worker ends the execution, and is there whatever becomes of the
/// call: answered, timed out, or gone with its client. Calls that made no execution (a built-in tool, arguments the
/// schema refused, read-only mode, a retried call following the execution it made before) write theirs at once.
enum MCPCallAudit {
    static let action = "mcp.tools_call"

    /// What the row keeps until the execution ends: the entry's details, its actor type and its origin.
    static func pending(details: [String: JSONValue], actorType: ActorType, origin: RequestOrigin) -> String? {
        let kept: JSONValue = [
            "actorType": .string(actorType.rawValue),
            "origin": [
                "ipAddress": origin.ipAddress.map(JSONValue.string) ?? .null,
                "userAgent": origin.userAgent.map(JSONValue.string) ?? .null,
                "requestId": origin.requestID.map(JSONValue.string) ?? .null,
            ],
            "details": .object(details),
        ]
        return try? kept.canonicalString()
    }

    /// The entry of a call, with its outcome: an execution's final status, or what became of a call that made none.
    static func record(details: [String: JSONValue], outcome: String, actorID: UUID?, actorType: ActorType, origin: RequestOrigin,
                       tool: String, executionID: UUID?) -> AuditRecord {
        var details = details
        details["outcome"] = .string(outcome)
        return AuditRecord(
            action: action, actorID: actorID, actorType: actorType,
            resourceType: executionID == nil ? "tool" : "execution", resourceID: executionID?.lowercasedString ?? tool,
            outcome: ["succeeded", "timeout"].contains(outcome) ? .success : .failure, origin: origin, details: .object(details))
    }

    /// The waiting entry of an execution that has just ended, if it has one.
    static func record(ending execution: Execution) -> AuditRecord? {
        guard let text = execution.mcpCallAudit, case .object(let kept)? = JSONText.parse(text),
              case .object(let details)? = kept["details"] else { return nil }
        let string = { (value: JSONValue?) -> String? in if case .string(let text)? = value { text } else { nil } }
        var origin = RequestOrigin()
        if case .object(let fields)? = kept["origin"] {
            origin = RequestOrigin(ipAddress: string(fields["ipAddress"]), userAgent: string(fields["userAgent"]), requestID: string(fields["requestId"]))
        }
        return record(details: details, outcome: execution.status.rawValue, actorID: execution.$user.id,
                      actorType: string(kept["actorType"]).flatMap(ActorType.init(rawValue:)) ?? .user, origin: origin,
                      tool: string(details["tool"]) ?? "", executionID: execution.id)
    }

    /// Writes an ending execution's waiting entry in the transaction that ends it.
    static func register(observing executions: ExecutionOutcomeObservers) {
        executions.add { execution, app, db in
            guard let record = record(ending: execution) else { return }
            _ = try await app.activityRecorder.record(audit: record, on: db)
        }
    }
}
