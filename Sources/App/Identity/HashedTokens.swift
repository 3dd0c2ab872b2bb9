import Fluent
import Foundation
import SQLKit

/// A secret handed to a client once and stored only as its hash, with an expiry and a single use: refresh tokens,
/// MFA challenges, and the mailed password-reset and verification tokens.
protocol HashedToken: Model where IDValue == UUID {
    var createdAt: Date { get set }
    var tokenHash: String { get set }
    var expiresAt: Date { get set }
    var usedAt: Date? { get set }
}

extension RefreshToken: HashedToken {}
extension MFAChallenge: HashedToken {}
extension OneTimeToken: HashedToken {}

/// Issuing and claiming `HashedToken`s, the same way for each kind.
enum HashedTokens {
    /// Gives `record` a new secret (stored as its hash), its id and its times, inserts it, and returns the secret:
    /// the only time it exists in clear.
    static func issue<Token: HashedToken>(_ record: Token, now: Date, expiresAt: Date, on db: any Database) async throws -> String {
        let raw = SecureToken.generate()
        record.id = UUID()
        record.tokenHash = SecureToken.hash(raw)
        record.createdAt = now
        record.expiresAt = expiresAt
        try await record.create(on: db)
        return raw
    }

    /// Marks the unused token whose secret is `raw` used, in one statement, so that of two requests racing with
    /// the same secret exactly one gets true. Unknown and already used secrets get false; expiry is the caller's
    /// to check.
    static func claim<Token: HashedToken>(_ type: Token.Type, raw: String, now: Date, on db: any Database) async throws -> Bool {
        try await (db as! any SQLDatabase).raw("""
            UPDATE \(unsafeRaw: Token.schema) SET used_at = \(bind: now)
            WHERE token_hash = \(bind: SecureToken.hash(raw)) AND used_at IS NULL RETURNING id
            """).first() != nil
    }

    /// The stored token whose secret is `raw`, if any, used or not.
    static func find<Token: HashedToken>(_ type: Token.Type, raw: String, on db: any Database) -> QueryBuilder<Token> {
        Token.query(on: db).filter("token_hash", .equal, SecureToken.hash(raw))
    }
}
