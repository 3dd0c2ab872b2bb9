import Vapor

/// The `steward` command line: Vapor's `serve` (wrapped), plus `migrate`, `db`, `audit`, `user`, `apikey`, `seed`, `schedule`, `keys`, `mcp` and `settings`.
enum Commands {
    static func register(in app: Application) {
        if let serve = app.asyncCommands.commands["serve"] {
            app.asyncCommands.use(StewardServeCommand(wrapped: serve), as: "serve", isDefault: true)
        }
        // Replaces Fluent's interactive `migrate`.
        app.asyncCommands.use(MigrateCommandGroup(), as: "migrate")
        app.asyncCommands.use(DatabaseCommandGroup(), as: "db")
        app.asyncCommands.use(AuditCommandGroup(), as: "audit")
        app.asyncCommands.use(UserCommandGroup(), as: "user")
        app.asyncCommands.use(APIKeyCommandGroup(), as: "apikey")
        app.asyncCommands.use(SeedCommand(), as: "seed")
        app.asyncCommands.use(ScheduleCommandGroup(), as: "schedule")
        app.asyncCommands.use(KeysCommandGroup(), as: "keys")
        app.asyncCommands.use(MCPStdioCommand(), as: "mcp")
        app.asyncCommands.use(SettingsCommandGroup(), as: "settings")
    }
}

/// A command failure with a one-line reason; `main` prints it and exits non-zero.
public struct CommandFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `serve`: applies migrations (when STEWARD_AUTO_MIGRATE is on), creates the first admin, then serves.
struct StewardServeCommand: AnyAsyncCommand {
    let wrapped: any AnyAsyncCommand

    var help: String { "Applies pending migrations (unless STEWARD_AUTO_MIGRATE=false), then serves HTTP." }

    func run(using context: inout CommandContext) async throws {
        let app = context.application
        ProcessLimits.raiseOpenFileLimit(logger: app.logger)
        await ProcessLimits.primeTimers()
        let migrations = MigrationService(app: app)
        if app.appConfig.autoMigrate {
            let applied = try await migrations.migrate()
            if !applied.isEmpty { app.logger.notice("Applied \(applied.count) migration(s)") }
        } else {
            let (pending, _) = try await migrations.pendingCount(on: app.db)
            if pending > 0 {
                app.logger.warning("\(pending) migration(s) are pending and STEWARD_AUTO_MIGRATE is off; /health/ready answers 503 until `steward migrate` runs")
            }
        }
        if try await migrations.pendingCount(on: app.db).pending == 0 {
            try await AdminBootstrap(app: app).ensureFirstAdmin()
        }
        await app.runtimeSettings.load(app)
        BackgroundWork.start(app)
        try await wrapped.run(using: &context)
    }

    func outputHelp(using context: inout CommandContext) throws {
        context.console.output(help.consoleText())
        try wrapped.outputHelp(using: &context)
    }
}

/// Limits of the serving process.
enum ProcessLimits {
    /// Raises the soft limit on open files to the hard one: a service manager's default soft limit (1,024 under
    /// systemd) is soon reached by keep-alive connections, streams and database files, while the hard limit is
    /// usually far higher.
    static func raiseOpenFileLimit(logger: Logger) {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0, limits.rlim_cur < limits.rlim_max else { return }
        let before = limits.rlim_cur
        limits.rlim_cur = limits.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 {
            logger.info("Raised the open-file limit from \(before) to \(limits.rlim_max)")
        } else {
            logger.warning("Could not raise the open-file limit from \(before) to \(limits.rlim_max)")
        }
    }

    /// How many client connections the open-file limit leaves room for: the soft limit less a reserve for the
    /// process's own descriptors (database files, outbound connections, and Dispatch, which kills the process when
    /// its thread-pool monitor cannot open `/proc/self/task/…/stat` under load). The reserve is an eighth of the
    /// limit, at least 96. nil when the limit is unknown or unlimited.
    static func connectionBudget() -> Int? {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0, limits.rlim_cur != rlim_t.max else { return nil }
        let soft = Int(clamping: limits.rlim_cur)
        return max(1, soft - max(96, soft / 8))
    }

    /// On Linux, Dispatch (which runs Swift concurrency's timers: `Task.sleep`, clocks, `asyncAfter`) opens its epoll,
    /// eventfd and timerfd descriptors on first use, and kills the process (SIGILL) when it cannot, as when idle
    /// connections have taken every descriptor. A first sleep on each clock while descriptors are to spare makes
    /// them, so that exhaustion later only delays accepting (NIO backs off) instead of ending the server.
    static func primeTimers() async {
        try? await Task.sleep(for: .milliseconds(1))
        try? await SuspendingClock().sleep(for: .milliseconds(1))
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(1)) { done.resume() }
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().asyncAfter(wallDeadline: .now() + .milliseconds(1)) { done.resume() }
        }
    }
}
