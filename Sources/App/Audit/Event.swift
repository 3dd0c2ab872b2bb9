import Fluent
import Foundation
import StewardSQLite

/// One state change in the event log; `seq` is strictly increasing and gap-free per database.
public final class Event: Model, @unchecked Sendable {
    public static let schema = "events"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "seq") public var seq: Int64
    @Field(key: "at") public var at: Date

    // references
    @OptionalField(key: "actor_id") public var actorID: UUID?
    @Field(key: "resource_type") public var resourceType: String
    @OptionalField(key: "resource_id") public var resourceID: String?

    // data
    @Field(key: "type") public var type: String
    @Field(key: "data") public var data: String

    public init() {}
}

extension Event: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $seq, $at, $actorID, $resourceType, $resourceID, $type, $data]
    }
}
