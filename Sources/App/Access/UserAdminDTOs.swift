import Foundation
import StewardFormats
import Vapor

/// A user as administrators see it: with roles and lock state.
struct AdminUserResponse: Content {
    var id: UUID
    var email: String
    var username: String
    var fullName: String?
    var status: String
    var roles: [String]
    var emailVerified: Bool
    var emailVerifiedAt: Date?
    var mfaEnabled: Bool
    var failedLoginCount: Int
    var lockedUntil: Date?
    var lastLoginAt: Date?
    var createdAt: Date?
    var updatedAt: Date?

    init(_ user: User, roles: [String]) {
        id = user.id!
        email = user.email
        username = user.username
        fullName = user.fullName
        status = user.status.rawValue
        self.roles = roles
        emailVerified = user.emailVerifiedAt != nil
        emailVerifiedAt = user.emailVerifiedAt
        mfaEnabled = user.mfaEnabled
        failedLoginCount = user.failedLoginCount
        lockedUntil = user.lockedUntil
        lastLoginAt = user.lastLoginAt
        createdAt = user.createdAt
        updatedAt = user.updatedAt
    }
}

/// `PUT /api/v1/users/{id}/roles`.
struct SetRolesRequest: Content {
    var roles: [String]
}

/// One role and what it allows.
struct RoleResponse: Content {
    var name: String
    var description: String
    var permissions: [String]
}

extension AdminUserResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("email", email)
        object.field("username", username)
        object.field("fullName", fullName)
        object.field("status", status)
        object.field("roles", roles)
        object.field("emailVerified", emailVerified)
        object.field("emailVerifiedAt", emailVerifiedAt)
        object.field("mfaEnabled", mfaEnabled)
        object.field("failedLoginCount", failedLoginCount)
        object.field("lockedUntil", lockedUntil)
        object.field("lastLoginAt", lastLoginAt)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
    }
}
