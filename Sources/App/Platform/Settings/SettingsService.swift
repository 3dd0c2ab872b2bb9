import Fluent
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// One setting as `GET /api/v1/settings` shows it.
struct SettingResponse: Content, Equatable {
    var key: String
    var value: JSONValue
    var defaultValue: JSONValue
    /// `database` (set at runtime), `environment` (its variable is set) or `default`.
    var source: String
    var type: String
    var description: String
    var environmentVariable: String?
    var updatedAt: Date?
    var updatedBy: UUID?
}

/// What the console and any client may know without signing in: maintenance and the feature switches.
struct ServerStatusResponse: Content, Equatable {
    var readOnly: Bool
    var maintenanceMessage: String?
    var features: [String: Bool]
}

/// Lists, sets and resets runtime settings. Each change is one audit entry with the old and new value, applies
/// at once in this process, and reaches the others by `NOTIFY steward_settings` (PostgreSQL) or their poll.
struct SettingsService: Sendable {
    typealias Actor = UserAdminService.Actor

    let app: Application

    func all() async throws -> [SettingResponse] {
        let rows = try await storedRows()
        let snapshot = app.settings
        return SettingsRegistry.definitions.map { response($0, snapshot: snapshot, row: rows[$0.key]) }
    }

    func find(_ key: String) async throws -> SettingResponse {
        guard let definition = SettingsRegistry.definition(key) else { throw Self.unknown }
        return response(definition, snapshot: app.settings, row: try await storedRows()[key])
    }

    /// Sets `key` to `value`; a problem with the value is a 422 on `field`.
    func set(_ key: String, to value: JSONValue, actor: Actor, field: String = "value") async throws -> SettingResponse {
        guard let definition = SettingsRegistry.definition(key) else { throw Self.unknown }
        let stored: JSONValue
        switch definition.type.validate(value) {
        case .valid(let valid): stored = valid
        case .invalid(let message): throw HTTPProblem.validation([FieldProblem(field: field, message: message)])
        }
        if case .role = definition.type, let role = stored.stringValue {
            try await RoleService(app: app).requireKnown([role], field: field)
        }
        let text = try stored.canonicalString()
        let before = app.settings.values[key] ?? .null
        let now = app.wallClock.now()
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            try await sql.insert(into: "settings").columns("key", "value", "updated_by", "updated_at")
                .values(SQLBind(key), SQLBind(text), SQLBind(actor.id), SQLBind(now))
                .onConflict(with: ["key"]) { $0.set(excludedValueOf: "value").set(excludedValueOf: "updated_by").set(excludedValueOf: "updated_at") }
                .run()
            try await record("setting.updated", key: key, from: before, to: stored, actor: actor, on: db)
        }
        return try await applied(key)
    }

    /// Removes the stored value: the setting has its default again.
    func unset(_ key: String, actor: Actor) async throws -> SettingResponse {
        guard let definition = SettingsRegistry.definition(key) else { throw Self.unknown }
        let before = app.settings.values[key] ?? .null
        let fallback = definition.fallback(app.appConfig)
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let removed = try await sql.raw("DELETE FROM settings WHERE key = \(bind: key) RETURNING key").all()
            guard !removed.isEmpty else { return }
            try await record("setting.reset", key: key, from: before, to: fallback, actor: actor, on: db)
        }
        return try await applied(key)
    }

    func status() -> ServerStatusResponse {
        let snapshot = app.settings
        return ServerStatusResponse(readOnly: snapshot.readOnly, maintenanceMessage: snapshot.maintenanceMessage,
                                    features: Dictionary(uniqueKeysWithValues: Feature.allCases.map { ($0.rawValue, snapshot.isEnabled($0)) }))
    }

    // MARK: -

    private static let unknown = HTTPProblem.notFound("No setting has this key; GET /api/v1/settings lists them.")

    private func record(_ action: String, key: String, from: JSONValue, to: JSONValue, actor: Actor, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        // Other instances on PostgreSQL hear of it at once; on SQLite they (and the CLI's changes) arrive by the poll.
        if sql.dialect.name != "sqlite" { try await AfterCommit.note(RuntimeSettings.channel, on: sql) }
        try await app.activityRecorder.record(audit: AuditRecord(
            action: action, actorID: actor.id, actorType: actor.type, resourceType: "setting", resourceID: key,
            origin: actor.origin, details: ["from": from, "to": to]), on: db)
    }

    /// Applies the change in this process before answering, so the caller's next request sees it.
    private func applied(_ key: String) async throws -> SettingResponse {
        try await app.runtimeSettings.reload(from: app.db, logger: app.logger)
        return try await find(key)
    }

    private func storedRows() async throws -> [String: (updatedAt: Date, updatedBy: UUID?)] {
        let rows = try await (app.db as! any SQLDatabase).raw("SELECT key, updated_at, updated_by FROM settings").all()
        var found: [String: (updatedAt: Date, updatedBy: UUID?)] = [:]
        for row in rows {
            found[try row.decode(column: "key", as: String.self)] =
                (try row.decode(column: "updated_at", as: Date.self), try row.decode(column: "updated_by", as: UUID?.self))
        }
        return found
    }

    private func response(_ definition: SettingDefinition, snapshot: SettingsSnapshot,
                          row: (updatedAt: Date, updatedBy: UUID?)?) -> SettingResponse {
        let stored = snapshot.stored.contains(definition.key)
        let source = stored ? "database"
            : definition.environment.map { app.appConfig.explicitlySet.contains($0) } == true ? "environment" : "default"
        return SettingResponse(
            key: definition.key, value: snapshot.values[definition.key] ?? .null, defaultValue: definition.fallback(app.appConfig),
            source: source, type: definition.type.name, description: definition.description,
            environmentVariable: definition.environment, updatedAt: stored ? row?.updatedAt : nil, updatedBy: stored ? row?.updatedBy : nil)
    }
}
