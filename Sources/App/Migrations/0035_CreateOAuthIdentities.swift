import Fluent
import SQLKit

/// Sign-in with identity providers (issue 28): linked identities, pending flows, and the one-time codes a finished
/// login hands to its client.
struct CreateOAuthIdentities: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(OAuthIdentity.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("provider", .string, .required)
            .field("subject", .string, .required)
            .field("email", .string)
            .field("email_verified", .bool, .required)
            .field("linked_at", .datetime, .required)
            .field("last_login_at", .datetime)
            .unique(on: "provider", "subject")
            .create()
        try await database.schema(OAuthState.schema)
            .id()
            .field("token_hash", .string, .required)
            .field("provider", .string, .required)
            .field("mode", .string, .required)
            .field("user_id", .uuid, .references(User.schema, "id", onDelete: .cascade))
            .field("nonce", .string, .required)
            .field("code_verifier", .string, .required)
            .field("redirect_url", .string, .required)
            .field("binding_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "token_hash")
            .create()
        try await database.schema(OAuthLoginCode.schema)
            .id()
            .field("token_hash", .string, .required)
            .field("provider", .string, .required)
            .field("user_id", .uuid, .references(User.schema, "id", onDelete: .cascade))
            .field("problem", .string)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "token_hash")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "oauth_identities_user_idx").on(OAuthIdentity.schema).column("user_id").column("linked_at").run()
        try await sql.create(index: "oauth_states_expires_idx").on(OAuthState.schema).column("expires_at").run()
        try await sql.create(index: "oauth_login_codes_expires_idx").on(OAuthLoginCode.schema).column("expires_at").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(OAuthLoginCode.schema).delete()
        try await database.schema(OAuthState.schema).delete()
        try await database.schema(OAuthIdentity.schema).delete()
    }
}
