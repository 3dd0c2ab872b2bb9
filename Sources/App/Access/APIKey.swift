import Fluent
import Foundation
import StewardFormats
import StewardSQLite

/// A key for automation: `stw_<prefix>_<secret>`. Only the SHA-256 of the whole key is stored.
public final class APIKey: Model, @unchecked Sendable {
    public static let schema = "api_keys"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "user_id") public var user: User

    // data
    @Field(key: "name") public var name: String
    @Field(key: "prefix") public var prefix: String
    @Field(key: "key_hash") public var keyHash: String
    /// JSON array of permission names.
    @Field(key: "scopes") public var scopesJSON: String
    @OptionalField(key: "expires_at") public var expiresAt: Date?
    @OptionalField(key: "revoked_at") public var revokedAt: Date?
    @OptionalField(key: "last_used_at") public var lastUsedAt: Date?
    @OptionalField(key: "last_used_ip") public var lastUsedIP: String?

    public init() {}

    /// The permissions a stored `scopes` column names; names no longer known are left out.
    static func scopes(in text: String) -> Set<Permission> {
        Set(JSONText.strings(in: text).compactMap(Permission.init(rawValue:)))
    }

    public var scopes: Set<Permission> {
        get {
            Self.scopes(in: scopesJSON)
        }
        set {
            scopesJSON = String(decoding: (try? JSONEncoder.canonical.encode(newValue.map(\.rawValue).sorted())) ?? Data("[]".utf8), as: UTF8.self)
        }
    }

    public func isUsable(at now: Date) -> Bool {
        Self.isUsable(revokedAt: revokedAt, expiresAt: expiresAt, at: now)
    }

    /// Neither revoked nor expired.
    static func isUsable(revokedAt: Date?, expiresAt: Date?, at now: Date) -> Bool {
        revokedAt == nil && (expiresAt.map { $0 > now } ?? true)
    }
}

extension APIKey: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $user, $name, $prefix, $keyHash, $scopesJSON, $expiresAt, $revokedAt, $lastUsedAt, $lastUsedIP]
    }
}
