import Fluent
import Foundation
import StewardSQLite

/// A cron schedule that starts an execution of a skill as its owner.
public final class Schedule: Model, @unchecked Sendable {
    public static let schema = "schedules"

    public enum OverlapPolicy: String, Codable, Sendable, CaseIterable { case skip, queue, allow }
    public enum CatchUp: String, Codable, Sendable, CaseIterable { case none, last, all }
    public enum TargetType: String, Codable, Sendable { case skill, workflow }
    /// What happened at the last firing: an execution started, the occurrence was skipped (overlap) or missed
    /// (downtime, `catchUp: none`), or starting failed (`lastError` says why).
    public enum LastStatus: String, Codable, Sendable { case started, skipped, missed, failed }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "name") public var name: String
    @Enum(key: "target_type") public var targetType: TargetType
    @Field(key: "target_id") public var targetID: UUID
    /// Canonical JSON.
    @Field(key: "input") public var input: String
    @Field(key: "cron") public var cron: String
    @Field(key: "timezone") public var timezone: String
    @Field(key: "enabled") public var enabled: Bool
    @Enum(key: "overlap_policy") public var overlapPolicy: OverlapPolicy
    @Enum(key: "catch_up") public var catchUp: CatchUp
    /// The occurrence to fire next; nil while disabled or when the expression never fires again.
    @OptionalField(key: "next_run_at") public var nextRunAt: Date?
    @OptionalField(key: "last_run_at") public var lastRunAt: Date?
    @OptionalEnum(key: "last_status") public var lastStatus: LastStatus?
    @OptionalField(key: "last_error") public var lastError: String?
    @OptionalField(key: "last_execution_id") public var lastExecutionID: UUID?

    public init() {}
}

extension Schedule: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $user, $name, $targetType, $targetID, $input, $cron, $timezone, $enabled,
         $overlapPolicy, $catchUp, $nextRunAt, $lastRunAt, $lastStatus, $lastError, $lastExecutionID]
    }
}
