import Fluent
import SQLKit

/// Accounts, with every column the identity layer needs (status, lockout, MFA).
struct CreateUsers: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(User.schema)
            .id()
            .field("email", .string, .required)
            .field("username", .string, .required)
            .field("full_name", .string)
            .field("password_hash", .string, .required)
            .field("status", .string, .required)
            .field("email_verified_at", .datetime)
            .field("failed_login_count", .int, .required, .sql(.default(0)))
            .field("locked_until", .datetime)
            .field("last_login_at", .datetime)
            .field("mfa_enabled", .bool, .required, .sql(.default(false)))
            .field("mfa_secret", .string)
            .field("mfa_last_used_step", .int64)
            .field("created_at", .datetime)
            .field("updated_at", .datetime)
            .unique(on: "email")
            .unique(on: "username")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "users_status_idx").on(User.schema).column("status").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(User.schema).delete()
    }
}
