import SQLKit
import Vapor
import StewardFormats

/// `steward schedule list|run-now`.
struct ScheduleCommandGroup: AsyncCommandGroup {
    var help: String { "List schedules and start one at once." }
    var commands: [String: any AnyAsyncCommand] { ["list": ScheduleListCommand(), "run-now": ScheduleRunNowCommand()] }
}

struct ScheduleListCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "List every schedule (id, enabled, cron and zone, next run, last status, name), then the built-in maintenance tasks." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let schedules = try await Schedule.query(on: context.application.db).sort(\.$createdAt).all()
        let formatter = ISO8601DateFormatter()
        for schedule in schedules {
            let next = schedule.nextRunAt.map(formatter.string(from:)) ?? "-"
            context.console.print([schedule.id!.lowercasedString, schedule.enabled ? "enabled" : "disabled",
                                   "\"\(schedule.cron)\" \(schedule.timezone)", "next=\(next)",
                                   "last=\(schedule.lastStatus?.rawValue ?? "-")", schedule.name].joined(separator: "  "))
        }
        if schedules.isEmpty { context.console.print("No schedules.") }
        let sql = context.application.db as! any SQLDatabase
        for row in try await sql.raw("SELECT name, cron, next_run_at, last_status FROM system_tasks ORDER BY name").all() {
            let next = try row.decode(column: "next_run_at", as: Date.self)
            context.console.print(["system", try row.decode(column: "name", as: String.self), "\"\(try row.decode(column: "cron", as: String.self))\" UTC",
                                   "next=\(formatter.string(from: next))", "last=\(try row.decode(column: "last_status", as: String?.self) ?? "-")"]
                .joined(separator: "  "))
        }
    }
}

struct ScheduleRunNowCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "id", help: "The schedule's id.") var id: String
        init() {}
    }

    var help: String { "Start a schedule's target now, as its owner; prints the execution (or workflow run) id." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard let id = UUID(uuidString: signature.id) else { throw CommandFailure("'\(signature.id)' is not a schedule id") }
        do {
            let started = try await ScheduleService(app: context.application).runNow(id, caller: nil, origin: .system)
            context.console.print(started.id!.lowercasedString)
        } catch {
            throw commandFailure(error)
        }
    }
}
