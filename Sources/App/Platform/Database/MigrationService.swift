import Fluent
import SQLKit
import Vapor

/// One migration and whether it is applied.
public struct MigrationState: Sendable, Equatable {
    public var position: Int
    public var name: String
    public var applied: Bool
    public var batch: Int?
    public var appliedAt: Date?

    /// `0004_CreateUsers`: the position and type name, as the migration's file is named.
    public var version: String {
        let short = name.split(separator: ".").last.map(String.init) ?? name
        return String(format: "%04d_", position) + short
    }
}

/// Applies, reverts and reports migrations; used by `serve`, the `migrate` commands, health and tests.
public struct MigrationService: Sendable {
    let app: Application

    public init(app: Application) {
        self.app = app
    }

    private var registered: [any Migration] { AppMigrations.all(app.keyMaterial) }

    /// Every registered migration in order, with its applied state.
    public func status() async throws -> [MigrationState] {
        try await app.migrator.setupIfNeeded().get()
        let logs = try await MigrationLog.query(on: app.db).all()
        let byName = Dictionary(logs.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        return registered.enumerated().map { index, migration in
            let log = byName[migration.name]
            return MigrationState(position: index + 1, name: migration.name, applied: log != nil,
                                  batch: log?.batch, appliedAt: log?.createdAt)
        }
    }

    /// How many migrations are not applied, without creating anything (for health checks).
    public func pendingCount(on database: any Database) async throws -> (pending: Int, version: String?) {
        let applied: Set<String>
        do {
            applied = Set(try await MigrationLog.query(on: database).all().map(\.name))
        } catch {
            // No migration table yet means nothing has been applied.
            if try await tableExists(MigrationLog.schema, on: database) { throw error }
            applied = []
        }
        var lastApplied: String?
        var pending = 0
        for (index, migration) in registered.enumerated() {
            if applied.contains(migration.name) {
                lastApplied = MigrationState(position: index + 1, name: migration.name, applied: true).version
            } else {
                pending += 1
            }
        }
        return (pending, lastApplied)
    }

    /// Applies every pending migration as one batch; returns their versions.
    @discardableResult
    public func migrate() async throws -> [String] {
        try await migrating { try await migrateUnchecked() }
    }

    private func migrateUnchecked() async throws -> [String] {
        try await app.migrator.setupIfNeeded().get()
        let pending = try await app.migrator.previewPrepareBatch().get().map { $0.0.name }
        guard !pending.isEmpty else { return [] }
        try await app.migrator.prepareBatch().get()
        return pending.map(version(of:))
    }

    /// Reverts the last batch; returns the versions reverted.
    @discardableResult
    public func revertLastBatch() async throws -> [String] {
        try await migrating { try await revertLastBatchUnchecked() }
    }

    private func revertLastBatchUnchecked() async throws -> [String] {
        try await app.migrator.setupIfNeeded().get()
        let names = try await app.migrator.previewRevertLastBatch().get().map { $0.0.name }
        guard !names.isEmpty else { return [] }
        try await app.migrator.revertLastBatch().get()
        app.skillToolFields.reset()
        app.apiKeyTools.reset()
        return names.map(version(of:))
    }

    /// Reverts, newest first, every applied migration registered after `target`, leaving `target` applied.
    /// `target` may be the full name, the type name or the `0004_Name` version; `0` reverts everything.
    @discardableResult
    public func revert(downTo target: String) async throws -> [String] {
        let states = try await status()
        let targetPosition: Int
        if target == "0" {
            targetPosition = 0
        } else if let match = states.first(where: { $0.name == target || $0.version == target || $0.name.hasSuffix("." + target) }) {
            guard match.applied else { throw MigrationServiceError.notApplied(match.version) }
            targetPosition = match.position
        } else {
            throw MigrationServiceError.unknown(target, known: states.map(\.version))
        }
        var reverted: [String] = []
        for state in states.reversed() where state.applied && state.position > targetPosition {
            let migration = registered[state.position - 1]
            try await migrating {
                try await migration.revert(on: app.db).get()
                try await MigrationLog.query(on: app.db).filter(\.$name == migration.name).delete()
            }
            reverted.append(state.version)
        }
        if !reverted.isEmpty { app.skillToolFields.reset()
        app.apiKeyTools.reset() }
        return reverted
    }

    /// Migrations write through the pool (schema changes cannot run in the writer's batches); the one-door check
    /// lets them.
    private func migrating<T>(_ body: () async throws -> T) async throws -> T {
        guard let poolWrites = app.poolWriteGuard else { return try await body() }
        return try await poolWrites.migrating(body)
    }

    /// `0004_CreateUsers` for `App.CreateUsers`.
    private func version(of name: String) -> String {
        let position = (registered.firstIndex { $0.name == name } ?? -1) + 1
        return MigrationState(position: position, name: name, applied: true).version
    }

    private func tableExists(_ name: String, on database: any Database) async throws -> Bool {
        let sql = database as! any SQLDatabase
        let query: SQLQueryString = app.appConfig.database.isPostgres
            ? "SELECT 1 AS present FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = \(bind: name)"
            : "SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = \(bind: name)"
        return try await sql.raw(query).first() != nil
    }
}

/// Why a migration command could not do what was asked.
public enum MigrationServiceError: Error, CustomStringConvertible {
    case unknown(String, known: [String])
    case notApplied(String)

    public var description: String {
        switch self {
        case .unknown(let name, let known):
            "no migration named '\(name)'; known: \(known.joined(separator: ", "))"
        case .notApplied(let name):
            "migration \(name) is not applied, so there is nothing to revert down to"
        }
    }
}
