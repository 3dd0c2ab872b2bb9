import Fluent
import Foundation
import StewardFormats
import StewardSQLite

/// One run of a skill with some input.
public final class Execution: Model, @unchecked Sendable {
    public static let schema = "executions"

    /// The lifecycle: queued → running → succeeded | failed | cancelled, then rolled_back after a rollback.
    public enum Status: String, Codable, Sendable, CaseIterable {
        case queued, running, succeeded, failed, cancelled
        case rolledBack = "rolled_back"

        var isFinished: Bool { [.succeeded, .failed, .cancelled, .rolledBack].contains(self) }
    }

    /// Where an execution was asked for.
    public enum Origin: String, CaseIterable, Sendable {
        case api, mcp, schedule, workflow
    }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "queued_at") public var queuedAt: Date
    @OptionalField(key: "started_at") public var startedAt: Date?
    @OptionalField(key: "finished_at") public var finishedAt: Date?

    // references
    @Field(key: "skill_id") public var skillID: UUID
    @Parent(key: "user_id") public var user: User

    // data
    @Enum(key: "status") public var status: Status
    @Field(key: "progress") public var progress: Int
    @Field(key: "input") public var input: String
    @OptionalField(key: "output") public var output: String?
    @OptionalField(key: "error") public var error: String?
    @Field(key: "attempt") public var attempt: Int
    @Field(key: "cancel_requested") public var cancelRequested: Bool
    @OptionalField(key: "duration_ms") public var durationMs: Int64?
    /// The job currently driving this execution (run or rollback).
    @OptionalField(key: "job_id") public var jobID: UUID?
    /// The schedule that started it, and the occurrence it fired for (nil for a run-now).
    @OptionalField(key: "schedule_id") public var scheduleID: UUID?
    @OptionalField(key: "scheduled_for") public var scheduledFor: Date?
    /// Where it was asked for (`Origin`), and for MCP the client's name and version, the session and the JSON-RPC id.
    @Field(key: "origin") public var origin: String
    @OptionalField(key: "client_name") public var clientName: String?
    @OptionalField(key: "client_version") public var clientVersion: String?
    @OptionalField(key: "mcp_session_id") public var mcpSessionID: UUID?
    @OptionalField(key: "mcp_request_id") public var mcpRequestID: String?
    /// An MCP call's audit entry, all but its outcome, until the execution ends (`MCPCallAudit`); then nil.
    @OptionalField(key: "mcp_call_audit") public var mcpCallAudit: String?

    /// `input` parsed, when this copy was made from the parsed value or has parsed it already (not stored; the
    /// input never changes once created). Each event and response shows the input, and parsing it again for each
    /// was a measurable part of running an execution.
    var parsedInput: JSONValue?

    /// `input` as JSON, parsed once per copy.
    var inputValue: JSONValue {
        if let parsedInput { return parsedInput }
        let parsed = JSONValue.parse(input)
        parsedInput = parsed
        return parsed
    }

    public init() {}
}

/// One line of an execution's history: a transition or a progress message.
public final class ExecutionHistoryEntry: Model, @unchecked Sendable {
    public static let schema = "execution_history"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "at") public var at: Date

    // references
    @Parent(key: "execution_id") public var execution: Execution

    /// Position in the execution's history (timestamps can tie).
    @Field(key: "ordinal") public var ordinal: Int

    // data
    @Field(key: "level") public var level: String
    @Field(key: "message") public var message: String
    @OptionalField(key: "progress") public var progress: Int?

    public init() {}
}

extension Execution: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $queuedAt, $startedAt, $finishedAt, $skillID, $user, $status, $progress, $input, $output, $error, $attempt,
         $cancelRequested, $durationMs, $jobID, $scheduleID, $scheduledFor, $origin, $clientName, $clientVersion, $mcpSessionID, $mcpRequestID,
         $mcpCallAudit]
    }
}

extension ExecutionHistoryEntry: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $at, $execution, $ordinal, $level, $message, $progress]
    }
}
