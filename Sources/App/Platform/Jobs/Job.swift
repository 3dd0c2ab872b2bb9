import Fluent
import Foundation

/// One unit of background work. A worker holds it under a lease; `lease_token` fences late writes from a worker
/// that lost its lease.
public final class Job: Model, @unchecked Sendable {
    public static let schema = "jobs"

    /// Where a job is in its life.
    public enum Status: String, Codable, Sendable { case queued, running, succeeded, failed, cancelled }

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date

    // data
    @Field(key: "kind") public var kind: String
    @Field(key: "payload") public var payload: String
    @Enum(key: "status") public var status: Status
    @Field(key: "run_at") public var runAt: Date
    @Field(key: "attempts") public var attempts: Int
    @Field(key: "max_attempts") public var maxAttempts: Int
    @OptionalField(key: "lease_owner") public var leaseOwner: String?
    @OptionalField(key: "lease_token") public var leaseToken: UUID?
    @OptionalField(key: "lease_expires_at") public var leaseExpiresAt: Date?
    @OptionalField(key: "last_error") public var lastError: String?
    @OptionalField(key: "finished_at") public var finishedAt: Date?
    /// Jobs of one group can be held back together (webhook deliveries: the endpoint); workers skip groups they
    /// cannot run now.
    @OptionalField(key: "group_key") public var groupKey: String?

    public init() {}
}
