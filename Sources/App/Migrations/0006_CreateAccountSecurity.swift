import Fluent
import SQLKit

/// Lockout counters, single-use mail tokens, MFA challenges and recovery codes.
struct CreateAccountSecurity: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(LoginThrottle.schema)
            .field("key", .string, .identifier(auto: false))
            .field("failed_count", .int, .required)
            .field("locked_until", .datetime)
            .field("updated_at", .datetime, .required)
            .create()
        try await database.schema(OneTimeToken.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("purpose", .string, .required)
            .field("token_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "token_hash")
            .create()
        try await database.schema(MFAChallenge.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("token_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .field("cookie", .bool, .required)
            .unique(on: "token_hash")
            .create()
        try await database.schema(RecoveryCode.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("code_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("used_at", .datetime)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "one_time_tokens_user_idx").on(OneTimeToken.schema).column("user_id").column("purpose").run()
        try await sql.create(index: "recovery_codes_user_idx").on(RecoveryCode.schema).column("user_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(RecoveryCode.schema).delete()
        try await database.schema(MFAChallenge.schema).delete()
        try await database.schema(OneTimeToken.schema).delete()
        try await database.schema(LoginThrottle.schema).delete()
    }
}
