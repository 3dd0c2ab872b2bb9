import Foundation
import Vapor

/// `POST /api/v1/api-keys`.
struct CreateAPIKeyRequest: Content {
    var name: String
    var scopes: [String]
    var expiresAt: Date?
}

/// A key without its secret.
struct APIKeyResponse: Content {
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
}
