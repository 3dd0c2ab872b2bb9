import Fluent
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardFormats
import Vapor

/// API keys' MCP tool allow-lists (`api_key_tools`). A list never changes once its key exists, so each is read
/// once per process and kept, and a key without one is remembered as such too.
final class APIKeyToolStore: Sendable {
    /// nil in the map: the key has no list (every tool).
    private let cache = NIOLockedValueBox<[UUID: [String]?]>([:])
    private let ready = NIOLockedValueBox(false)
    static let capacity = 50_000
    static let maxEntries = 100

    static let notMigrated = HTTPProblem.conflict("Tool allow-lists need migration 0033; run `steward migrate`.")

    func reset() {
        ready.withLockedValue { $0 = false }
        cache.withLockedValue { $0.removeAll() }
    }

    func isReady(_ app: Application) async throws -> Bool {
        if ready.withLockedValue({ $0 }) { return true }
        let exists = try await SchemaProbe.tableExists("api_key_tools", app: app)
        if exists { ready.withLockedValue { $0 = true } }
        return exists
    }

    /// The problems of a requested list; each entry is a tool name or `tag:<tag>`.
    static func problems(in tools: [String]) -> [FieldProblem] {
        guard tools.count <= maxEntries else { return [FieldProblem(field: "tools", message: "must have at most \(maxEntries) entries")] }
        var problems: [FieldProblem] = []
        for (index, entry) in tools.enumerated() {
            if entry.hasPrefix("tag:") {
                let tag = entry.dropFirst(4)
                if tag.isEmpty || tag.count > 40 || tag.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                    problems.append(FieldProblem(field: "tools[\(index)]", message: "tag: must be followed by a tag of 1 to 40 printable characters"))
                }
            } else if !Slug.isValid(entry) && !MCPTools.builtIns.contains(where: { $0.name == entry }) {
                problems.append(FieldProblem(field: "tools[\(index)]", message: "must be a skill's slug, a built-in tool's name or tag:<tag>"))
            }
        }
        return problems
    }

    /// Stores a new key's list, inside the transaction that creates the key.
    static func write(_ tools: [String], of keyID: UUID, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        try await sql.insert(into: "api_key_tools").columns("api_key_id", "tools")
            .values(SQLBind(keyID), SQLBind(JSONText.canonical(strings: tools))).run()
    }

    /// Each key's list (nil: none).
    func tools(of keys: [UUID], app: Application) async throws -> [UUID: [String]?] {
        var found: [UUID: [String]?] = [:]
        var missing: [UUID] = []
        cache.withLockedValue { cache in
            for key in keys { if let hit = cache[key] { found[key] = hit } else { missing.append(key) } }
        }
        guard !missing.isEmpty else { return found }
        guard try await isReady(app) else {
            for key in missing { found[key] = .some(nil) }
            return found
        }
        let sql = app.db as! any SQLDatabase
        var read: [UUID: [String]] = [:]
        for row in try await sql.select().columns("api_key_id", "tools").from("api_key_tools").where("api_key_id", .in, missing).all() {
            read[try row.decode(column: "api_key_id", as: UUID.self)] = JSONText.strings(in: try row.decode(column: "tools", as: String.self))
        }
        cache.withLockedValue { cache in
            if cache.count + missing.count > Self.capacity { cache.removeAll() }
            for key in missing {
                let tools = read[key]
                found[key] = .some(tools)
                cache[key] = .some(tools)
            }
        }
        return found
    }
}

/// Whether a table exists, for features whose migration may still be pending while a server runs.
enum SchemaProbe {
    static func tableExists(_ name: String, app: Application) async throws -> Bool {
        let sql = app.db as! any SQLDatabase
        let query: SQLQueryString = sql.dialect.name == "postgresql"
            ? "SELECT count(*) AS n FROM pg_class WHERE relname = \(bind: name) AND relkind = 'r' AND pg_table_is_visible(oid)"
            : "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = \(bind: name)"
        return try await sql.raw(query).first()?.decode(column: "n", as: Int.self) ?? 0 > 0
    }
}

extension Application {
    private struct APIKeyToolStoreKey: StorageKey { typealias Value = APIKeyToolStore }
    private static let apiKeyToolsLock = NIOLock()

    var apiKeyTools: APIKeyToolStore {
        Self.apiKeyToolsLock.withLock {
            if let existing = storage[APIKeyToolStoreKey.self] { return existing }
            let made = APIKeyToolStore()
            storage[APIKeyToolStoreKey.self] = made
            return made
        }
    }
}
