import Fluent
import Foundation
import SQLKit

/// Roles, permissions and their links, seeded from `RoleCatalog`; `user_roles` records who assigned each role.
/// Existing users get `viewer`, and the earliest user (the bootstrapped admin) gets `admin`.
struct CreateRoles: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("roles")
            .field("name", .string, .identifier(auto: false))
            .field("description", .string, .required)
            .create()
        try await database.schema("permissions")
            .field("name", .string, .identifier(auto: false))
            .create()
        try await database.schema("role_permissions")
            .field("role", .string, .required, .references("roles", "name", onDelete: .cascade))
            .field("permission", .string, .required, .references("permissions", "name", onDelete: .cascade))
            .unique(on: "role", "permission")
            .create()
        try await database.schema(UserRole.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("role", .string, .required, .references("roles", "name"))
            .field("assigned_by", .uuid)
            .field("assigned_at", .datetime, .required)
            .unique(on: "user_id", "role")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "user_roles_role_idx").on(UserRole.schema).column("role").run()
        for permission in Permission.allCases {
            try await sql.insert(into: "permissions").columns("name").values(SQLBind(permission.rawValue)).run()
        }
        for role in RoleCatalog.roles {
            try await sql.insert(into: "roles").columns("name", "description").values(SQLBind(role.name), SQLBind(role.description)).run()
            for permission in role.permissions {
                try await sql.insert(into: "role_permissions").columns("role", "permission")
                    .values(SQLBind(role.name), SQLBind(permission.rawValue)).run()
            }
        }
        // Accounts created before roles existed: the first one is the bootstrapped admin.
        // Read with the columns of this point in the schema, not the model's (which later migrations extend).
        let users = try await sql.raw("SELECT id FROM users ORDER BY created_at").all().map { try $0.decode(column: "id", as: UUID.self) }
        for (index, userID) in users.enumerated() {
            let assignment = UserRole()
            assignment.id = UUID()
            assignment.$user.id = userID
            assignment.role = index == 0 ? RoleCatalog.admin : RoleCatalog.defaultRole
            assignment.assignedAt = Date()
            try await assignment.create(on: database)
        }
    }

    func revert(on database: any Database) async throws {
        try await database.schema(UserRole.schema).delete()
        try await database.schema("role_permissions").delete()
        try await database.schema("permissions").delete()
        try await database.schema("roles").delete()
    }
}
