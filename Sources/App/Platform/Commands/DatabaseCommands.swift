import Vapor

/// `steward db backup [--out FILE] | check`.
struct DatabaseCommandGroup: AsyncCommandGroup {
    var help: String { "Back up or check the database." }
    var commands: [String: any AnyAsyncCommand] {
        ["backup": DatabaseBackupCommand(), "check": DatabaseCheckCommand()]
    }
}

/// Writes an online backup.
struct DatabaseBackupCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "out", short: "o", help: "Backup file (default: <data dir>/backups/steward-<time>.sqlite or .dump).")
        var out: String?
        init() {}
    }

    var help: String { "Online backup: SQLite via VACUUM INTO (safe while serving), PostgreSQL via pg_dump." }

    func run(using context: CommandContext, signature: Signature) async throws {
        do {
            let backup = try await DatabaseMaintenance(app: context.application).backup(to: signature.out)
            context.console.print("backup written to \(backup.path) (\(backup.bytes) bytes, mode 0600)")
        } catch let error as BackupError {
            throw CommandFailure(error.description)
        }
    }
}

/// Runs every check and fails if any fails.
struct DatabaseCheckCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "Check connectivity, integrity, settings, migrations and the audit chain." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let checks = try await DatabaseMaintenance(app: context.application).check()
        for check in checks {
            context.console.print("\(check.ok ? "ok  " : "FAIL") \(check.name): \(check.detail)")
        }
        if let failed = checks.first(where: { !$0.ok }) {
            throw CommandFailure("db check failed: \(failed.name): \(failed.detail)")
        }
    }
}
