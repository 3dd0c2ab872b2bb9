import Fluent
import Foundation
import SQLKit

/// Loads everything an authenticated request needs (the session or API key, its user, and the user's grants)
/// in one query, because it runs on every request.
enum CallerLookup {
    static let sessionColumns = ["id", "user_id", "ip_address", "user_agent", "created_at", "last_seen_at", "idle_expires_at",
                                 "expires_at", "revoked_at", "revoked_reason", "cookie_token_hash", "csrf_token_hash"]
    static let keyColumns = ["id", "user_id", "name", "prefix", "key_hash", "scopes", "expires_at", "revoked_at",
                             "last_used_at", "last_used_ip", "created_at"]

    /// The session (by id or by cookie hash), its user and grants; nil when the session does not exist.
    static func session(where condition: SQLQueryString, on db: any Database) async throws -> (UserSession, User, Grants)? {
        let rows = try await joined(table: UserSession.schema, alias: "s", columns: sessionColumns, where: condition, on: db)
        guard let first = rows.first else { return nil }
        let session = UserSession()
        try session.output(from: RowOutput(row: first, prefix: "s_"))
        let user = User()
        try user.output(from: RowOutput(row: first, prefix: ""))
        return (session, user, grants(from: rows))
    }

    /// The key with this prefix, its user and the user's grants (not yet narrowed to the key's scopes).
    static func apiKey(prefix: String, on db: any Database) async throws -> (APIKey, User, Grants)? {
        try await apiKey(where: "k.prefix = \(bind: prefix)", on: db)
    }

    /// The key matching `condition` (on alias `k`), its user and the user's grants.
    static func apiKey(where condition: SQLQueryString, on db: any Database) async throws -> (APIKey, User, Grants)? {
        let rows = try await joined(table: APIKey.schema, alias: "k", columns: keyColumns, where: condition, on: db)
        guard let first = rows.first else { return nil }
        let key = APIKey()
        try key.output(from: RowOutput(row: first, prefix: "k_"))
        let user = User()
        try user.output(from: RowOutput(row: first, prefix: ""))
        return (key, user, grants(from: rows))
    }

    private static func joined(table: String, alias: String, columns: [String], where condition: SQLQueryString,
                               on db: any Database) async throws -> [any SQLRow] {
        let sql = db as! any SQLDatabase
        let selected = columns.map { "\(alias).\($0) AS \(alias)_\($0)" }.joined(separator: ", ")
        var query: SQLQueryString = """
            SELECT u.*, \(unsafeRaw: selected), ur.role AS grant_role, rp.permission AS grant_permission
            FROM \(unsafeRaw: table) \(unsafeRaw: alias)
            JOIN users u ON u.id = \(unsafeRaw: alias).user_id
            LEFT JOIN user_roles ur ON ur.user_id = u.id
            LEFT JOIN role_permissions rp ON rp.role = ur.role
            WHERE
            """
        query.appendInterpolation(unsafeRaw: " ")
        query = query + condition
        return try await sql.raw(query).all()
    }

    private static func grants(from rows: [any SQLRow]) -> Grants {
        var roles: Set<String> = []
        var permissions: Set<Permission> = []
        for row in rows {
            if let role = try? row.decode(column: "grant_role", as: String?.self) { roles.insert(role) }
            if let name = try? row.decode(column: "grant_permission", as: String?.self), let permission = Permission(rawValue: name) {
                permissions.insert(permission)
            }
        }
        return Grants(roles: roles.sorted(), permissions: permissions)
    }

    /// Lets a Fluent model read its fields from a joined row, under a column prefix.
    private struct RowOutput: DatabaseOutput {
        let row: any SQLRow
        let prefix: String

        var description: String { "\(row)" }

        func schema(_ schema: String) -> any DatabaseOutput { self }

        func contains(_ key: FieldKey) -> Bool {
            row.contains(column: prefix + key.description)
        }

        func decodeNil(_ key: FieldKey) throws -> Bool {
            try row.decodeNil(column: prefix + key.description)
        }

        func decode<T: Decodable>(_ key: FieldKey, as type: T.Type) throws -> T {
            try row.decode(column: prefix + key.description, as: T.self)
        }
    }
}
