import Fluent
import Foundation
import SQLKit
import StewardSQLite

/// What one user may do right now, read from the role tables.
public struct Grants: Sendable, Equatable {
    public var roles: [String]
    public var permissions: Set<Permission>

    public static let none = Grants(roles: [], permissions: [])
}

extension UserRole {
    /// The roles and permissions a user holds, in one query; read on every request so changes apply at once.
    static func grants(of userID: UUID, on db: any Database) async throws -> Grants {
        let sql = db as! any SQLDatabase
        let rows = try await sql.raw("""
            SELECT ur.role AS role, rp.permission AS permission FROM user_roles ur
            LEFT JOIN role_permissions rp ON rp.role = ur.role WHERE ur.user_id = \(bind: userID)
            """).all()
        var roles: Set<String> = []
        var permissions: Set<Permission> = []
        for row in rows {
            if let role = try? row.decode(column: "role", as: String.self) { roles.insert(role) }
            if let name = try? row.decode(column: "permission", as: String?.self), let permission = Permission(rawValue: name) {
                permissions.insert(permission)
            }
        }
        return Grants(roles: roles.sorted(), permissions: permissions)
    }

    /// A user's roles, sorted, as one column of the user's own row: a subquery the (user_id, role) unique index
    /// answers, so a page of users and their roles is one statement. Role names have no commas (`RoleService`).
    struct RolesColumn: SQLExpression {
        static let alias = "roles"

        func serialize(to serializer: inout SQLSerializer) {
            // Neither aggregate's order is relied on: `roles(in:)` sorts.
            let aggregate = serializer.dialect.name == "postgresql" ? "string_agg(role, ',')" : "group_concat(role, ',')"
            serializer.write("(SELECT \(aggregate) FROM user_roles WHERE user_roles.user_id = users.id) AS \(Self.alias)")
        }

        static func roles(in row: any SQLRow) throws -> [String] {
            guard let list = try row.optional(alias, as: String.self) else { return [] }
            return list.split(separator: ",").map(String.init).sorted()
        }
    }

    /// Gives a user a role (no-op if they have it).
    static func assign(_ role: String, to userID: UUID, by assigner: UUID?, at now: Date, on db: any Database) async throws {
        let exists = try await UserRole.query(on: db).filter(\.$user.$id == userID).filter(\.$role == role).count() > 0
        guard !exists else { return }
        let assignment = UserRole()
        assignment.id = UUID()
        assignment.$user.id = userID
        assignment.role = role
        assignment.assignedBy = assigner
        assignment.assignedAt = now
        try await assignment.create(on: db)
    }
}
