import Foundation
import SQLKit
import StewardSQLite
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

extension AdminUserResponse: RowReadable {
    /// A user read straight from its row (the columns of `User`'s keys) and its roles, read in the same statement.
    static var extraColumns: [any SQLExpression] { [UserRole.RolesColumn()] }

    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        email = try row.decode(column: "email", as: String.self)
        username = try row.decode(column: "username", as: String.self)
        fullName = try row.optional("full_name", as: String.self)
        status = try row.decode(column: "status", as: String.self)
        roles = try UserRole.RolesColumn.roles(in: row)
        emailVerifiedAt = try row.optional("email_verified_at", as: Date.self)
        emailVerified = emailVerifiedAt != nil
        mfaEnabled = try row.decode(column: "mfa_enabled", as: Bool.self)
        failedLoginCount = try row.decode(column: "failed_login_count", as: Int.self)
        lockedUntil = try row.optional("locked_until", as: Date.self)
        lastLoginAt = try row.optional("last_login_at", as: Date.self)
        createdAt = try row.optional("created_at", as: Date.self)
        updatedAt = try row.optional("updated_at", as: Date.self)
    }
}

/// `PUT /api/v1/users/{id}/roles`.
struct SetRolesRequest: Content {
    var roles: [String]
}

/// One role and what it allows.
struct RoleResponse: Content, Equatable {
    var name: String
    var description: String
    var permissions: [String]
    /// One of the five built-in roles, which cannot be changed or deleted.
    var builtIn: Bool
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
