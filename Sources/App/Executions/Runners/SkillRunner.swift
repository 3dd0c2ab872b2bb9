import Foundation
import StewardFormats

/// What a runner is given: the input, the skill's runner settings, and a way to report progress.
struct RunContext: Sendable {
    var executionID: UUID
    var input: JSONValue
    var settings: JSONValue
    /// Reports progress (0-100, never going back) with a message; it throws if the execution was cancelled.
    var report: @Sendable (Int, String) async throws -> Void
}

/// How a run ended from the skill's point of view. Infrastructure failures are thrown instead, and retried.
enum RunOutcome: Sendable, Equatable {
    case succeeded(JSONValue)
    case failed(String)
}

/// Runs one kind of skill. `run` throws for infrastructure failures (retried with back-off) and returns
/// `.failed` for failures the skill reports (final). Runners must stop promptly when their task is cancelled.
protocol SkillRunner: Sendable {
    func run(_ context: RunContext) async throws -> RunOutcome
    /// Reverses a finished run; returns a note for the history.
    func undo(_ context: RunContext, output: JSONValue?) async throws -> String
}

/// Finds the runner for a skill's `runner` settings.
struct RunnerRegistry: Sendable {
    var builtins: [String: any SkillRunner]
    var http: (any SkillRunner)?

    static let standardBuiltins: [String: any SkillRunner] = [
        "echo": EchoRunner(), "sleep": SleepRunner(), "fail": FailRunner(), "transform": TransformRunner(),
    ]

    func runner(for settings: JSONValue) -> (any SkillRunner)? {
        guard case .object(let fields) = settings, case .string(let type)? = fields["type"] else { return nil }
        switch type {
        case "builtin":
            guard case .string(let name)? = fields["name"] else { return nil }
            return builtins[name]
        case "http":
            return http
        default:
            return nil
        }
    }
}

/// Returns its input.
struct EchoRunner: SkillRunner {
    func run(_ context: RunContext) async throws -> RunOutcome {
        try await context.report(100, "echoed")
        return .succeeded(context.input)
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "echo has nothing to undo" }
}

/// Sleeps `input.seconds` (0-3600), reporting progress every 10%.
struct SleepRunner: SkillRunner {
    func run(_ context: RunContext) async throws -> RunOutcome {
        guard case .object(let fields) = context.input, case .number(let seconds)? = fields["seconds"], (0...3600).contains(seconds) else {
            return .failed("sleep needs input.seconds from 0 to 3600")
        }
        for step in 1...10 {
            try await Task.sleep(for: .milliseconds(Int64(seconds * 100)))
            try await context.report(step * 10, "slept \(step * 10)%")
        }
        return .succeeded(["slept": .number(seconds)])
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "time slept cannot be given back; nothing to undo" }
}

/// Fails with `input.message`.
struct FailRunner: SkillRunner {
    func run(_ context: RunContext) async throws -> RunOutcome {
        if case .object(let fields) = context.input, case .string(let message)? = fields["message"], !message.isEmpty {
            return .failed(String(message.prefix(1000)))
        }
        return .failed("failed on purpose")
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "a failed run changed nothing; nothing to undo" }
}

/// Simple operations: uppercase, lowercase, reverse, trim, length on `text`; sum, product, min, max on `numbers`.
struct TransformRunner: SkillRunner {
    func run(_ context: RunContext) async throws -> RunOutcome {
        guard case .object(let fields) = context.input, case .string(let operation)? = fields["operation"] ?? Self.defaultOperation(fields) else {
            return .failed("transform needs input.operation")
        }
        let result: JSONValue
        switch (operation, fields["text"], fields["numbers"]) {
        case ("uppercase", .string(let text)?, _): result = .string(text.uppercased())
        case ("lowercase", .string(let text)?, _): result = .string(text.lowercased())
        case ("reverse", .string(let text)?, _): result = .string(String(text.reversed()))
        case ("trim", .string(let text)?, _): result = .string(text.trimmingCharacters(in: .whitespacesAndNewlines))
        case ("length", .string(let text)?, _): result = .number(Double(text.count))
        case (let op, _, .array(let values)?) where ["sum", "product", "min", "max"].contains(op):
            let numbers = values.compactMap { if case .number(let n) = $0 { n } else { nil } }
            guard numbers.count == values.count else { return .failed("input.numbers must hold only numbers") }
            switch op {
            case "sum": result = .number(numbers.reduce(0, +))
            case "product": result = .number(numbers.reduce(1, *))
            case "min": result = numbers.min().map { .number($0) } ?? .null
            default: result = numbers.max().map { .number($0) } ?? .null
            }
        default:
            return .failed("unknown operation '\(operation)' for this input")
        }
        try await context.report(100, "applied \(operation)")
        return .succeeded(["operation": .string(operation), "result": result])
    }

    /// The samples leave `operation` implicit when the input makes it obvious.
    private static func defaultOperation(_ fields: [String: JSONValue]) -> JSONValue? {
        if fields["numbers"] != nil { return "sum" }
        if fields["text"] != nil { return "uppercase" }
        return nil
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String { "transform is pure; nothing to undo" }
}
