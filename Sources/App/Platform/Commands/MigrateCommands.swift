import Vapor

/// `steward migrate [--revert] | status | down --to <name>`. ConsoleKit's groups only fall back to a default
/// command when no argument follows, so `migrate --revert` needs this small dispatcher.
struct MigrateCommandGroup: AnyAsyncCommand {
    let subcommands: [String: any AnyAsyncCommand] = ["status": MigrateStatusCommand(), "down": MigrateDownCommand()]
    let apply = MigrateApplyCommand()

    var help: String { "Apply pending migrations; `migrate --revert` reverts the last batch." }

    private func resolve(_ context: inout CommandContext) -> any AnyAsyncCommand {
        if let first = context.input.arguments.first, let command = subcommands[first] {
            context.input.arguments.removeFirst()
            context.input.executablePath.append(first)
            return command
        }
        return apply
    }

    func run(using context: inout CommandContext) async throws {
        try await resolve(&context).run(using: &context)
    }

    func outputHelp(using context: inout CommandContext) throws {
        let command = resolve(&context)
        try command.outputHelp(using: &context)
        if command is MigrateApplyCommand {
            context.console.output("Subcommands:".consoleText(.info))
            for (name, subcommand) in subcommands.sorted(by: { $0.key < $1.key }) {
                context.console.output("  \(name)  \(subcommand.help)".consoleText())
            }
        }
    }
}

/// Applies everything pending, or reverts the last batch with `--revert`.
struct MigrateApplyCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Flag(name: "revert", help: "Revert the last batch of migrations instead of applying.")
        var revert: Bool
        init() {}
    }

    var help: String { "Apply every pending migration (or revert the last batch with --revert)." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let service = MigrationService(app: context.application)
        if signature.revert {
            let reverted = try await service.revertLastBatch()
            if reverted.isEmpty { context.console.print("No migrations to revert.") }
            for name in reverted { context.console.print("reverted \(name)") }
        } else {
            let applied = try await service.migrate()
            if applied.isEmpty { context.console.print("No pending migrations.") }
            for name in applied { context.console.print("applied \(name)") }
        }
    }
}

/// Lists every migration, applied or pending, with when it was applied.
struct MigrateStatusCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "Show each migration, applied or pending, with the time it was applied." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let states = try await MigrationService(app: context.application).status()
        let formatter = ISO8601DateFormatter()
        for state in states {
            let when = state.appliedAt.map { formatter.string(from: $0) } ?? "-"
            let batch = state.batch.map { "batch \($0)" } ?? ""
            context.console.print("\(state.applied ? "applied" : "pending")  \(state.version.padding(toLength: 36, withPad: " ", startingAt: 0)) \(when)  \(batch)")
        }
        let pending = states.filter { !$0.applied }.count
        context.console.print("\(states.count - pending) applied, \(pending) pending")
    }
}

/// Reverts every migration after the named one.
struct MigrateDownCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "to", help: "Revert every migration after this one (e.g. 0002_CreateAuditLogs); 0 reverts all.")
        var to: String?
        init() {}
    }

    var help: String { "Revert migrations, newest first, down to (not including) --to <name>." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard let target = signature.to, !target.isEmpty else {
            throw CommandFailure("migrate down needs --to <name>; see `steward migrate status`")
        }
        let reverted = try await MigrationService(app: context.application).revert(downTo: target)
        if reverted.isEmpty { context.console.print("Nothing to revert: \(target) is the newest applied migration.") }
        for name in reverted { context.console.print("reverted \(name)") }
    }
}
