import Fluent
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardFormats
import Vapor

/// The effective value of every setting at one moment, typed for the code that reads them on each request.
struct SettingsSnapshot: Sendable {
    /// Every setting's effective value, by key.
    let values: [String: JSONValue]
    /// The keys that have a row in `settings`.
    let stored: Set<String>

    let disabledFeatures: Set<Feature>
    let defaultRole: String
    let passwordMinLength: Int
    let accessTokenTTLSeconds: Int
    let sessionIdleTimeoutSeconds: Int
    let sessionAbsoluteTimeoutSeconds: Int
    let maxConcurrentExecutionsPerUser: Int
    let rateLimits: RateLimitPolicies
    let maintenanceMessage: String?
    let readOnly: Bool

    func isEnabled(_ feature: Feature) -> Bool { !disabledFeatures.contains(feature) }

    /// Defaults from `config`, with `rows` (key → stored value) over them. A stored value that no longer
    /// validates (a setting whose range narrowed, a row written by hand) is ignored and reported in `ignored`.
    init(config: AppConfig, rows: [String: JSONValue], ignored: inout [String]) {
        var values: [String: JSONValue] = [:]
        var stored: Set<String> = []
        for definition in SettingsRegistry.definitions {
            values[definition.key] = definition.fallback(config)
            guard let row = rows[definition.key] else { continue }
            if case .valid(let value) = definition.type.validate(row) {
                values[definition.key] = value
                stored.insert(definition.key)
            } else {
                ignored.append(definition.key)
            }
        }
        self.values = values
        self.stored = stored
        func int(_ key: String) -> Int { values[key]?.intValue ?? 0 }
        func rate(_ key: String, _ policy: String) -> RateLimitPolicy {
            values[key]?.stringValue.flatMap { RateLimitPolicy.parse(name: policy, $0) } ?? config.rateLimits[policy]!
        }
        disabledFeatures = Set(Feature.allCases.filter { values[$0.settingKey] == .bool(false) })
        defaultRole = values["accounts.defaultRole"]?.stringValue ?? RoleCatalog.defaultRole
        passwordMinLength = int("accounts.passwordMinLength")
        accessTokenTTLSeconds = int("accounts.accessTokenTTLSeconds")
        sessionIdleTimeoutSeconds = int("accounts.sessionIdleTimeoutSeconds")
        sessionAbsoluteTimeoutSeconds = int("accounts.sessionAbsoluteTimeoutSeconds")
        maxConcurrentExecutionsPerUser = int("limits.maxConcurrentExecutionsPerUser")
        rateLimits = RateLimitPolicies(
            login: rate("rateLimits.login", "login"), loginIP: rate("rateLimits.loginIp", "login_ip"),
            register: rate("rateLimits.register", "register"), mailEmail: rate("rateLimits.mail", "mail"),
            mailIP: rate("rateLimits.mailIp", "mail_ip"),
            mfa: RateLimitPolicy(name: "mfa", limit: int("rateLimits.mfa"), window: 300),
            apiUser: rate("rateLimits.api", "api"), apiAnonymous: rate("rateLimits.anonymous", "anonymous"),
            executions: rate("rateLimits.executions", "executions"), global: rate("rateLimits.global", "global"))
        maintenanceMessage = values["maintenance.message"]?.stringValue
        readOnly = values["maintenance.readOnly"] == .bool(true)
    }
}

/// The settings this process applies: the snapshot every request reads, replaced whole when the `settings` table
/// changes. A change made here applies at once; one made by another instance (or the CLI) arrives by `NOTIFY
/// steward_settings` on PostgreSQL, and by the poll (`SettingsWatcher`, every 2 s) on both databases.
final class RuntimeSettings: Sendable {
    static let channel = "steward_settings"

    private let config: AppConfig
    private let snapshot: NIOLockedValueBox<SettingsSnapshot>
    /// The rows the snapshot was built from, to tell a poll that found nothing new.
    private let rows = NIOLockedValueBox<[String: String]>([:])

    init(config: AppConfig) {
        self.config = config
        var ignored: [String] = []
        snapshot = NIOLockedValueBox(SettingsSnapshot(config: config, rows: [:], ignored: &ignored))
    }

    var current: SettingsSnapshot { snapshot.withLockedValue { $0 } }

    /// Reads the `settings` table and applies it when it changed. Returns whether it did.
    @discardableResult
    func reload(from database: any Database, logger: Logger) async throws -> Bool {
        let found = try await (database as! any SQLDatabase).raw("SELECT key, value FROM settings").all()
        var texts: [String: String] = [:]
        for row in found {
            texts[try row.decode(column: "key", as: String.self)] = try row.decode(column: "value", as: String.self)
        }
        guard rows.withLockedValue({ $0 }) != texts else { return false }
        var ignored: [String] = []
        let next = SettingsSnapshot(config: config, rows: texts.mapValues { JSONValue.parse($0) }, ignored: &ignored)
        for key in ignored { logger.warning("The stored value of setting \(key) is not valid; its default applies") }
        rows.withLockedValue { $0 = texts }
        snapshot.withLockedValue { $0 = next }
        return true
    }

    /// Loads the table at start; without it (migrations pending) the defaults stand until the watcher finds it.
    func load(_ app: Application) async {
        do { try await reload(from: app.db, logger: app.logger) } catch {
            app.logger.notice("Runtime settings not read (\(String(describing: error))); defaults apply until they can be")
        }
    }
}

extension BackgroundLoop {
    /// Re-reads the settings every 2 seconds: the fallback for a lost NOTIFY, and how a change made by another
    /// process on SQLite (the CLI, another instance) arrives.
    static func settingsWatcher() -> BackgroundLoop {
        BackgroundLoop("Settings poll", retryAfter: .seconds(2)) { app in
            try await app.runtimeSettings.reload(from: app.db, logger: app.logger)
            return .seconds(2)
        }
    }
}

extension Application {
    private struct RuntimeSettingsKey: StorageKey { typealias Value = RuntimeSettings }
    private struct WatcherKey: StorageKey { typealias Value = BackgroundLoop }

    /// Set once in `configure`.
    var runtimeSettings: RuntimeSettings {
        get { storage[RuntimeSettingsKey.self]! }
        set { storage[RuntimeSettingsKey.self] = newValue }
    }

    /// The effective settings now.
    var settings: SettingsSnapshot { runtimeSettings.current }

    /// Set once in `configure`; started by `serve`.
    var settingsWatcher: BackgroundLoop {
        get { storage[WatcherKey.self]! }
        set { storage[WatcherKey.self] = newValue }
    }
}
