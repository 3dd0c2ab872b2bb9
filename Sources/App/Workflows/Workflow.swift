import Fluent
import Foundation
import StewardSQLite

/// A workflow: a DAG of skill steps, stored as canonical JSON.
public final class Workflow: Model, @unchecked Sendable {
    public static let schema = "workflows"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date
    @Field(key: "version") public var version: Int

    // references
    @OptionalField(key: "created_by") public var createdBy: UUID?

    // data
    @Field(key: "slug") public var slug: String
    @Field(key: "name") public var name: String
    @Field(key: "description") public var description: String
    @Field(key: "enabled") public var enabled: Bool
    @Field(key: "steps") public var stepsJSON: String

    public init() {}

    var steps: [WorkflowStep] {
        get { WorkflowStep.stored(stepsJSON) }
        set { stepsJSON = String(decoding: (try? JSONEncoder.sortedKeys.encode(newValue)) ?? Data("[]".utf8), as: UTF8.self) }
    }
}

/// One run of a workflow, with the steps as they were when it started.
public final class WorkflowRun: Model, @unchecked Sendable {
    public static let schema = "workflow_runs"

    public enum Status: String, Codable, Sendable, CaseIterable {
        case queued, running, succeeded, failed, cancelled
        case rolledBack = "rolled_back"

        var isFinished: Bool { ![.queued, .running].contains(self) }
    }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @OptionalField(key: "started_at") public var startedAt: Date?
    @OptionalField(key: "finished_at") public var finishedAt: Date?

    // references
    @Parent(key: "workflow_id") public var workflow: Workflow
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "workflow_version") public var workflowVersion: Int
    @Enum(key: "status") public var status: Status
    @Field(key: "progress") public var progress: Int
    @Field(key: "input") public var input: String
    @Field(key: "steps") public var stepsJSON: String
    @OptionalField(key: "error") public var error: String?
    /// The schedule that started it, and the occurrence it fired for (nil for a run-now).
    @OptionalField(key: "schedule_id") public var scheduleID: UUID?
    @OptionalField(key: "scheduled_for") public var scheduledFor: Date?

    public init() {}

    var steps: [WorkflowStep] {
        WorkflowStep.stored(stepsJSON)
    }
}

/// A step of a run: waiting, running (its current execution), or done.
public final class WorkflowRunStep: Model, @unchecked Sendable {
    public static let schema = "workflow_run_steps"

    public enum Status: String, Codable, Sendable {
        case pending, running, succeeded, failed, skipped, cancelled
        case rolledBack = "rolled_back"
    }

    // managed
    @ID(key: .id) public var id: UUID?
    @OptionalField(key: "started_at") public var startedAt: Date?
    @OptionalField(key: "completed_at") public var completedAt: Date?

    // references
    @Parent(key: "run_id") public var run: WorkflowRun
    @OptionalField(key: "execution_id") public var executionID: UUID?

    // data
    @Field(key: "step_id") public var stepID: String
    @Field(key: "ordinal") public var ordinal: Int
    @Enum(key: "status") public var status: Status
    @Field(key: "attempts") public var attempts: Int
    /// When a failed attempt may be retried.
    @OptionalField(key: "retry_at") public var retryAt: Date?
    @OptionalField(key: "error") public var error: String?

    public init() {}
}

extension JSONEncoder {
    /// Stable output for JSON stored in text columns.
    static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

extension Workflow: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $version, $createdBy, $slug, $name, $description, $enabled, $stepsJSON]
    }
}

extension WorkflowRun: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $startedAt, $finishedAt, $workflow, $user, $workflowVersion, $status, $progress,
         $input, $stepsJSON, $error, $scheduleID, $scheduledFor]
    }
}

extension WorkflowRunStep: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $startedAt, $completedAt, $run, $executionID, $stepID, $ordinal, $status, $attempts, $retryAt,
         $error]
    }
}
