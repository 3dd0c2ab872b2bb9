import Fluent
import Foundation
import SQLKit
import Vapor

/// Online backup and health checks of the database, for the `db` commands.
public struct DatabaseMaintenance: Sendable {
    let app: Application

    public init(app: Application) {
        self.app = app
    }

    /// One finding of `db check`.
    public struct Check: Sendable {
        public var name: String
        public var ok: Bool
        public var detail: String
    }

    /// Connectivity, integrity and settings; every check is reported, failing or not.
    public func check() async throws -> [Check] {
        let sql = app.db as! any SQLDatabase
        var checks: [Check] = []
        do {
            _ = try await sql.raw("SELECT 1 AS one").first()
            checks.append(Check(name: "connectivity", ok: true, detail: describeDatabase()))
        } catch {
            checks.append(Check(name: "connectivity", ok: false, detail: String(describing: error)))
            return checks
        }
        switch app.appConfig.database {
        case .sqlite:
            let integrity = try await sql.raw("PRAGMA integrity_check").all()
                .compactMap { try? $0.decode(column: "integrity_check", as: String.self) }
            checks.append(Check(name: "integrity", ok: integrity == ["ok"], detail: integrity.prefix(5).joined(separator: "; ")))
            let violations = try await sql.raw("PRAGMA foreign_key_check").all().count
            checks.append(Check(name: "foreign keys", ok: violations == 0, detail: "\(violations) violation(s)"))
            let journal = try await pragma("journal_mode", on: sql)
            checks.append(Check(name: "journal mode", ok: journal.lowercased() == "wal", detail: journal))
            let synchronous = try await pragma("synchronous", on: sql)
            let names = ["0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"]
            checks.append(Check(name: "synchronous", ok: true, detail: names[synchronous] ?? synchronous))
        case .postgres:
            let version = try await sql.raw("SHOW server_version").first()?.decode(column: "server_version", as: String.self) ?? "?"
            checks.append(Check(name: "server", ok: true, detail: "PostgreSQL \(version)"))
            let inRecovery = try await sql.raw("SELECT pg_is_in_recovery() AS recovery").first()?.decode(column: "recovery", as: Bool.self) ?? false
            checks.append(Check(name: "writable", ok: !inRecovery, detail: inRecovery ? "read-only replica" : "primary"))
        }
        let (pending, version) = try await MigrationService(app: app).pendingCount(on: app.db)
        checks.append(Check(name: "migrations", ok: pending == 0, detail: "schema \(version ?? "empty"), \(pending) pending"))
        let chain = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
        checks.append(Check(name: "audit chain", ok: chain.isIntact,
                            detail: chain.firstBroken.map { "broken at entry \($0.seq): \($0.reason)" } ?? "\(chain.checked) entries intact"))
        return checks
    }

    private func pragma(_ name: String, on sql: any SQLDatabase) async throws -> String {
        guard let row = try await sql.raw("PRAGMA \(unsafeRaw: name)").first() else { return "?" }
        if let text = try? row.decode(column: name, as: String.self) { return text }
        if let number = try? row.decode(column: name, as: Int.self) { return String(number) }
        return "?"
    }

    private func describeDatabase() -> String {
        switch app.appConfig.database {
        case .sqlite(let path): "SQLite at \(path)"
        case .postgres(let url): "PostgreSQL at \(Self.redact(url))"
        }
    }

    /// The URL without its password, safe to print.
    static func redact(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "postgres://***"
    }

    /// Where a backup went.
    public struct Backup: Sendable {
        public var path: String
        public var bytes: Int
    }

    /// Writes a consistent copy of the database to `output` (default: `<data dir>/backups/steward-<time>.<ext>`).
    public func backup(to output: String?) async throws -> Backup {
        let config = app.appConfig
        let stamp = Self.timestamp(app.wallClock.now())
        switch config.database {
        case .sqlite:
            let path = output ?? (config.dataDirectory as NSString).appendingPathComponent("backups/steward-\(stamp).sqlite")
            return try await backupSQLite(to: path)
        case .postgres(let url):
            let path = output ?? (config.dataDirectory as NSString).appendingPathComponent("backups/steward-\(stamp).dump")
            return try await backupPostgres(url: url, to: path)
        }
    }

    /// `VACUUM INTO` reads one snapshot, so it is safe while the server writes; then fsync, chmod 0600 and rename,
    /// so the target path only ever holds a whole backup.
    private func backupSQLite(to path: String) async throws -> Backup {
        let fileManager = FileManager.default
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if fileManager.fileExists(atPath: path) { throw BackupError.exists(path) }
        let temporary = path + ".partial-\(UUID().uuidString.prefix(8))"
        defer { try? fileManager.removeItem(atPath: temporary) }

        let sql = app.db as! any SQLDatabase
        try await sql.raw("VACUUM INTO \(bind: temporary)").run()
        guard chmod(temporary, 0o600) == 0 else { throw BackupError.io("cannot set permissions on \(temporary)") }
        try Self.fsync(path: temporary)
        guard rename(temporary, path) == 0 else { throw BackupError.io("cannot rename \(temporary) to \(path)") }
        try Self.fsync(path: directory.isEmpty ? "." : directory)
        let size = (try fileManager.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return Backup(path: path, bytes: size)
    }

    private func backupPostgres(url: String, to path: String) async throws -> Backup {
        guard let pgDump = Self.findExecutable("pg_dump") else {
            throw BackupError.missingTool("pg_dump is not installed; run: pg_dump --format=custom --file=\(path) '\(Self.redact(url))' (install it with: apt-get install postgresql-client)")
        }
        let fileManager = FileManager.default
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if fileManager.fileExists(atPath: path) { throw BackupError.exists(path) }

        // The password goes through the environment, not the command line, so `ps` never shows it.
        var components = URLComponents(string: url)
        let password = components?.password
        components?.password = nil
        let temporary = path + ".partial-\(UUID().uuidString.prefix(8))"
        defer { try? fileManager.removeItem(atPath: temporary) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: pgDump)
        process.arguments = ["--format=custom", "--no-owner", "--file=\(temporary)", components?.string ?? url]
        var environment = ProcessInfo.processInfo.environment
        if let password { environment["PGPASSWORD"] = password.removingPercentEncoding ?? password }
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw BackupError.io("pg_dump failed: \(text.split(separator: "\n").first ?? "exit \(process.terminationStatus)")")
        }
        guard chmod(temporary, 0o600) == 0 else { throw BackupError.io("cannot set permissions on \(temporary)") }
        try Self.fsync(path: temporary)
        guard rename(temporary, path) == 0 else { throw BackupError.io("cannot rename \(temporary) to \(path)") }
        let size = (try fileManager.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return Backup(path: path, bytes: size)
    }

    static func fsync(path: String) throws {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw BackupError.io("cannot open \(path) to sync it") }
        defer { close(descriptor) }
        guard Foundation.fsync(descriptor) == 0 else { throw BackupError.io("fsync of \(path) failed") }
    }

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        var candidates = path.split(separator: ":").map { "\($0)/\(name)" }
        // Debian installs server binaries outside PATH.
        if let versions = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            candidates += versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin/\(name)" }
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: date)
    }
}

/// Why a backup did not happen.
public enum BackupError: Error, CustomStringConvertible {
    case exists(String)
    case missingTool(String)
    case io(String)

    public var description: String {
        switch self {
        case .exists(let path): "\(path) already exists; choose another --out"
        case .missingTool(let message): message
        case .io(let message): message
        }
    }
}
