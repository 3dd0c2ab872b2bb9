import Fluent
import Foundation
import PostgresNIO
import SQLKit
import StewardSQLite

/// Loads everything an authenticated request needs (the session or API key, its user, and the user's grants)
/// in one query of one row, read into plain values (`CallerUser`, `CallerSession`, `CallerKey`), because it runs
/// on every request. On SQLite the query runs on a direct read connection (`SQLiteReaders`) when it is free,
/// otherwise through the driver; on PostgreSQL as a statement prepared once per connection
/// (`PreparedStatements`), or through the driver where that does not apply.
enum CallerLookup {
    /// What identifies the credential row.
    enum Key {
        case sessionID(UUID)
        case cookieHash(String)
        case apiKeyID(UUID)
        case apiKeyPrefix(String)

        fileprivate var kind: Kind {
            switch self {
            case .sessionID: .sessionByID
            case .cookieHash: .sessionByCookie
            case .apiKeyID: .keyByID
            case .apiKeyPrefix: .keyByPrefix
            }
        }

        fileprivate var value: any Encodable & Sendable {
            switch self {
            case .sessionID(let id), .apiKeyID(let id): id
            case .cookieHash(let text), .apiKeyPrefix(let text): text
            }
        }

        /// The row by the kind's prepared statement on PostgreSQL; nil where that does not apply.
        fileprivate func prepared(on db: InstrumentedDatabase) async throws -> [any SQLRow]? {
            var bindings = PostgresBindings(capacity: 1)
            switch self {
            case .sessionID(let id), .apiKeyID(let id): bindings.append(id)
            case .cookieHash(let text), .apiKeyPrefix(let text): bindings.append(text)
            }
            return try await db.preparedRows(kind.prepared, bindings)
        }
    }

    /// The four statements as PostgreSQL prepares them: each kind's text with its key as `$1`.
    enum Prepared {
        protocol Read: FixedPostgresRead {
            static var kind: Kind { get }
        }
        enum SessionByID: Read { static let kind = Kind.sessionByID }
        enum SessionByCookie: Read { static let kind = Kind.sessionByCookie }
        enum KeyByID: Read { static let kind = Kind.keyByID }
        enum KeyByPrefix: Read { static let kind = Kind.keyByPrefix }
    }

    /// The session, its user and grants; nil when the session does not exist.
    static func session(_ key: Key, on db: any Database, readers: SQLiteReaders?) async throws -> (CallerSession, CallerUser, Grants)? {
        guard let row = try await row(for: key, on: db, readers: readers) else { return nil }
        return (try CallerSession(row: row, prefix: "c_"), try CallerUser(row: row), try grants(from: row))
    }

    /// The key, its user and the user's grants (not yet narrowed to the key's scopes); nil when there is no such key.
    static func apiKey(_ key: Key, on db: any Database, readers: SQLiteReaders?) async throws -> (CallerKey, CallerUser, Grants)? {
        guard let row = try await row(for: key, on: db, readers: readers) else { return nil }
        return (try CallerKey(row: row, prefix: "c_"), try CallerUser(row: row), try grants(from: row))
    }

    private static func row(for key: Key, on db: any Database, readers: SQLiteReaders?) async throws -> (any SQLRow)? {
        if let instrumented = db as? InstrumentedDatabase, let rows = try await key.prepared(on: instrumented) { return rows.first }
        let text = (db as! any SQLDatabase).dialect.name == "postgresql" ? key.kind.postgres : key.kind.sqlite
        return try await SQLiteReaders.quickRead(text + "?", [key.value], readers: readers, on: db).first
    }

    /// The four lookups, each one statement whose text never changes (one cached prepared statement each).
    /// Each raw value names the kind's prepared statement on PostgreSQL (after `steward_`).
    enum Kind: String, CaseIterable {
        case sessionByID = "caller_session_by_id", sessionByCookie = "caller_session_by_cookie"
        case keyByID = "caller_key_by_id", keyByPrefix = "caller_key_by_prefix"

        var prepared: any Prepared.Read.Type {
            switch self {
            case .sessionByID: Prepared.SessionByID.self
            case .sessionByCookie: Prepared.SessionByCookie.self
            case .keyByID: Prepared.KeyByID.self
            case .keyByPrefix: Prepared.KeyByPrefix.self
            }
        }

        /// The user's columns by name, never `u.*`: a prepared statement's result type must not change when a
        /// migration adds a column.
        private static let userColumns = CallerUser.columns.map { "u.\($0)" }.joined(separator: ", ")

        /// The statement up to its one bound value, which ends it. Roles and permissions come aggregated into one
        /// column each (comma-separated: both are identifiers, from `RoleCatalog` and `Permission`), so the answer
        /// is one row.
        private func text(aggregate: String) -> String {
            let (table, columns, condition) = switch self {
            case .sessionByID: (UserSession.schema, CallerSession.columns, "c.id")
            case .sessionByCookie: (UserSession.schema, CallerSession.columns, "c.cookie_token_hash")
            case .keyByID: (APIKey.schema, CallerKey.columns, "c.id")
            case .keyByPrefix: (APIKey.schema, CallerKey.columns, "c.prefix")
            }
            let selected = columns.map { "c.\($0) AS c_\($0)" }.joined(separator: ", ")
            return """
                SELECT \(Self.userColumns), \(selected), \
                (SELECT \(aggregate)(ur.role, ',') FROM user_roles ur WHERE ur.user_id = u.id) AS grant_roles, \
                (SELECT \(aggregate)(rp.permission, ',') FROM user_roles ur JOIN role_permissions rp ON rp.role = ur.role \
                WHERE ur.user_id = u.id) AS grant_permissions \
                FROM \(table) c JOIN users u ON u.id = c.user_id WHERE \(condition) =
                """
        }

        private static let sqliteTexts = Dictionary(uniqueKeysWithValues: allCases.map { ($0, $0.text(aggregate: "group_concat")) })
        private static let postgresTexts = Dictionary(uniqueKeysWithValues: allCases.map { ($0, $0.text(aggregate: "string_agg")) })

        var sqlite: String { Self.sqliteTexts[self]! }
        var postgres: String { Self.postgresTexts[self]! }
    }

    private static func grants(from row: any SQLRow) throws -> Grants {
        // Split on bytes: both lists are ASCII identifiers, and splitting by character costs ten times as much.
        func list(_ column: String) throws -> [String] {
            guard let text = try row.decode(column: column, as: String?.self) else { return [] }
            return text.utf8.split(separator: UInt8(ascii: ",")).map { String(decoding: $0, as: UTF8.self) }
        }
        let roles = Set(try list("grant_roles"))
        let permissions = Set(try list("grant_permissions").compactMap(Permission.init(rawValue:)))
        return Grants(roles: roles.sorted(), permissions: permissions)
    }
}

extension CallerLookup.Prepared.Read {
    static var name: String { kind.rawValue }
    static var sql: String { kind.postgres + "$1" }
}
