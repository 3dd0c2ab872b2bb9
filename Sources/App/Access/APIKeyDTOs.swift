import Foundation
import StewardSQLite
import SQLKit
import StewardFormats
import Vapor

/// `POST /api/v1/api-keys`.
struct CreateAPIKeyRequest: Content {
    var name: String
    var scopes: [String]
    var expiresAt: Date?
    /// MCP tools the key may see and call: tool names and `tag:<tag>`; nil for every tool its scopes allow.
    var tools: [String]?
}

/// A key without its secret.
struct APIKeyResponse: Content, RowReadable {
    var id: UUID
    var userId: UUID
    var name: String
    var prefix: String
    var scopes: [String]
    var expiresAt: Date?
    var revokedAt: Date?
    var lastUsedAt: Date?
    var lastUsedIp: String?
    var createdAt: Date
    var tools: [String]?

    init(_ key: APIKey) {
        id = key.id!
        userId = key.$user.id
        name = key.name
        prefix = key.prefix
        scopes = key.scopes.map(\.rawValue).sorted()
        expiresAt = key.expiresAt
        revokedAt = key.revokedAt
        lastUsedAt = key.lastUsedAt
        lastUsedIp = key.lastUsedIP
        createdAt = key.createdAt
    }

    /// A key read straight from its row (the columns of `APIKey`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        userId = try row.decode(column: "user_id", as: UUID.self)
        name = try row.decode(column: "name", as: String.self)
        prefix = try row.decode(column: "prefix", as: String.self)
        scopes = APIKey.scopes(in: try row.decode(column: "scopes", as: String.self)).map(\.rawValue).sorted()
        expiresAt = try row.optional("expires_at", as: Date.self)
        revokedAt = try row.optional("revoked_at", as: Date.self)
        lastUsedAt = try row.optional("last_used_at", as: Date.self)
        lastUsedIp = try row.optional("last_used_ip", as: String.self)
        createdAt = try row.decode(column: "created_at", as: Date.self)
    }
}

/// The answer to key creation: the only time `key` is shown.
struct CreatedAPIKeyResponse: Content {
    var id: UUID
    var name: String
    var prefix: String
    var key: String
    var scopes: [String]
    var expiresAt: Date?
    var createdAt: Date
    var tools: [String]?
}

extension APIKeyResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("userId", userId)
        object.field("name", name)
        object.field("prefix", prefix)
        object.field("scopes", scopes)
        object.field("expiresAt", expiresAt)
        object.field("revokedAt", revokedAt)
        object.field("lastUsedAt", lastUsedAt)
        object.field("lastUsedIp", lastUsedIp)
        object.field("createdAt", createdAt)
        if let tools { object.field("tools", tools) } else { object.field("tools", Optional<String>.none) }
    }
}
