import Fluent
import Foundation
import StewardSQLite

/// One append-only audit entry; `hash` chains it to the entry before it.
public final class AuditLog: Model, @unchecked Sendable {
    public static let schema = "audit_logs"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "seq") public var seq: Int64
    @Field(key: "at") public var at: Date

    // references
    @OptionalField(key: "actor_id") public var actorID: UUID?
    @Field(key: "actor_type") public var actorType: String
    @OptionalField(key: "resource_type") public var resourceType: String?
    @OptionalField(key: "resource_id") public var resourceID: String?

    // data
    @Field(key: "action") public var action: String
    @Field(key: "outcome") public var outcome: String
    @OptionalField(key: "ip_address") public var ipAddress: String?
    @OptionalField(key: "user_agent") public var userAgent: String?
    @OptionalField(key: "request_id") public var requestID: String?
    @Field(key: "details") public var details: String
    @Field(key: "prev_hash") public var prevHash: String
    @Field(key: "hash") public var hash: String

    public init() {}
}

extension AuditLog: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $seq, $at, $actorID, $actorType, $resourceType, $resourceID, $action, $outcome, $ipAddress,
         $userAgent, $requestID, $details, $prevHash, $hash]
    }
}
