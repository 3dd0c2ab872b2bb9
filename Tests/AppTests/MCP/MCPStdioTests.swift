import Fluent
import Foundation
import NIOConcurrencyHelpers
import Testing
import Vapor
@testable import App
import StewardFormats

/// `steward mcp --stdio` as a local agent runs it: the real binary, one JSON-RPC message per line.
@Suite("MCP over stdio")
struct MCPStdioTests {
    /// Lines a process writes, collected on a thread of their own.
    final class Lines: @unchecked Sendable {
        private let lines = NIOLockedValueBox<[String]>([])

        init(_ handle: FileHandle) {
            Thread {
                var pending = Data()
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { return }
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: 0x0A) {
                        let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                        pending = Data(pending[pending.index(after: newline)...])
                        self.lines.withLockedValue { $0.append(line) }
                    }
                }
            }.start()
        }

        /// The first line with `"id":<id>`, waiting up to `seconds`.
        func answer(to id: Int, within seconds: Double = 20) async throws -> [String: JSONValue] {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let found = lines.withLockedValue { $0 }.compactMap { JSONText.parse($0)?.object }.first { $0["id"] == .number(Double(id)) }
                if let found { return found }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw TimedOut(what: "the answer to \(id); lines so far: \(lines.withLockedValue { $0 })")
        }

        var all: [String] { lines.withLockedValue { $0 } }
    }

    @Test("The binary serves initialize, tools/list and a tools/call that runs the execution (2025 handshake), then a 2026-07-28 request, over stdin and stdout; a bad key stops it with a reason", .timeLimit(.minutes(2)))
    func stdio() async throws {
        let binary = try stewardBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let secret = String(repeating: "stdio-mcp-", count: 4)
        let app = try await makeTestApp(directory: directory, environment: ["STEWARD_JWT_SECRET": secret])
        do {
            _ = try await SkillService(app: app).seedSamples()
            let user = try await makeUser(app, email: "local@example.com")
            _ = try await UserAdminService(app: app).setRoles(try user.requireID(), roles: ["executor"], actor: .cli)
            let grants = try await UserRole.grants(of: try user.requireID(), on: app.db)
            let key = try await APIKeyService(app: app).create(name: "local agent", scopes: ["skills:read", "skills:execute", "executions:read"],
                                                              expiresAt: nil, ownerID: try user.requireID(), ownerGrants: grants, actor: nil, origin: .system).key
            var environment = [
                "DATABASE_URL": TestDatabase.postgresURL ?? "sqlite:\(directory.path)/steward.sqlite", "STEWARD_DATA_DIR": directory.path,
                "STEWARD_JWT_SECRET": secret, "STEWARD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin", "STEWARD_WORKERS": "1",
            ]

            func start(key: String) throws -> (Process, Pipe, Lines, Pipe) {
                environment["STEWARD_API_KEY"] = key
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["mcp", "--stdio"]
                process.environment = environment
                let input = Pipe(), output = Pipe(), errors = Pipe()
                process.standardInput = input
                process.standardOutput = output
                process.standardError = errors
                try process.run()
                return (process, input, Lines(output.fileHandleForReading), errors)
            }

            let (process, input, lines, _) = try start(key: key)
            func send(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }
            send(#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stdio-agent","version":"3"}}}"#)
            #expect(try await lines.answer(to: 1)["result"]?.object?["protocolVersion"] == "2025-11-25")
            send(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            send(#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
            let list = try await lines.answer(to: 2)
            guard case .array(let tools)? = list["result"]?.object?["tools"] else { throw TimedOut(what: "a tool list: \(list)") }
            let names = tools.compactMap { $0.object?["name"]?.stringValue }
            #expect(names.contains("echo"), "\(list)")
            send(#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"over":"stdio"}}}"#)
            let call = try await lines.answer(to: 3)
            #expect(call["result"]?.object?["structuredContent"] == ["over": "stdio"], "\(call)")
            send(#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
            #expect(try await lines.answer(to: 4)["result"]?.object?["resultType"] == "complete")
            send("not json")
            send(#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#)
            #expect(try await lines.answer(to: 5)["result"] != nil, "a bad line does not stop the server")
            #expect(lines.all.allSatisfy { JSONText.parse($0) != nil }, "standard output carries only protocol messages: \(lines.all)")
            try input.fileHandleForWriting.close()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)

            let execution = try #require(try await Execution.query(on: app.db).filter(\.$origin == "mcp").first())
            #expect(execution.clientName == "stdio-agent")
            #expect(execution.status == .succeeded)

            let (refused, refusedInput, _, refusedErrors) = try start(key: "stw_nothing_here")
            try refusedInput.fileHandleForWriting.close()
            refused.waitUntilExit()
            #expect(refused.terminationStatus != 0)
            let reason = String(decoding: refusedErrors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(reason.contains("STEWARD_API_KEY"), "\(reason)")
        } catch {
            try? await app.asyncShutdown()
            throw error
        }
        try await app.asyncShutdown()
    }
}
