import ConsoleKit
import Foundation
import Vapor
@testable import App

/// A console that records what commands print, for CLI tests.
final class CapturingConsole: Console, @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    var userInfo: [AnySendableHashable: any Sendable] = [:]

    var output: String { lock.withLock { lines.joined() } }

    func input(isSecure: Bool) -> String { "" }

    func output(_ text: ConsoleText, newLine: Bool) {
        lock.withLock { lines.append(text.description + (newLine ? "\n" : "")) }
    }

    func report(error: String, newLine: Bool) {
        lock.withLock { lines.append(error + (newLine ? "\n" : "")) }
    }

    func clear(_ type: ConsoleClear) {}

    var size: (width: Int, height: Int) { (120, 40) }
}

extension Application {
    /// Runs `steward <arguments>` in-process against this app, returning what it printed.
    func runCommand(_ arguments: [String]) async throws -> String {
        let console = CapturingConsole()
        let group = AsyncCommands(commands: asyncCommands.commands, defaultCommand: nil).group()
        var context = CommandContext(console: console, input: CommandInput(arguments: ["steward"] + arguments))
        context.application = self
        try await console.run(group, with: context)
        return console.output
    }
}
