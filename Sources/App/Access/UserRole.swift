import Fluent
import Foundation
import StewardSQLite

/// One role held by one user, with who gave it and when.
public final class UserRole: Model, @unchecked Sendable {
    public static let schema = "user_roles"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "assigned_at") public var assignedAt: Date

    // references
    @Parent(key: "user_id") public var user: User
    @OptionalField(key: "assigned_by") public var assignedBy: UUID?

    // data
    @Field(key: "role") public var role: String

    public init() {}
}

extension UserRole: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $assignedAt, $user, $assignedBy, $role]
    }
}
