import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Testing
import Vapor
@testable import App

@Suite("Connection limits")
struct ConnectionLimitsTests {
    @Test("A connection that goes quiet is closed after STEWARD_HTTP_IDLE_TIMEOUT_SECONDS: a stalled head, a body short of its Content-Length, an idle keep-alive")
    func idleTimeout() async throws {
        try await withTestApp(environment: ["STEWARD_HTTP_IDLE_TIMEOUT_SECONDS": "5"]) { app in
            try await app.withLiveServer { port in
                let stalledHead = try await RawConnection.connect(port: port)
                try await stalledHead.send(Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8))
                let shortBody = try await RawConnection.connect(port: port)
                try await shortBody.send(Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\":".utf8))
                let keepAlive = try await RawConnection.connect(port: port)
                try await keepAlive.send(Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
                for connection in [stalledHead, shortBody, keepAlive] {
                    try await connection.waitClosed(timeout: 20)
                }
                #expect(keepAlive.text.hasPrefix("HTTP/1.1 200"), "the keep-alive request was answered before its connection went quiet")
                // The server goes on serving.
                let fresh = try await RawConnection.connect(port: port)
                try await fresh.send(Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
                try await eventually(10, "an answer on a new connection") { fresh.text.hasPrefix("HTTP/1.1 200") }
                await fresh.close()
            }
        }
    }

    @Test("With a low descriptor limit, idle connections past it get 503 before the descriptors run out; the server stays up, and serves again once they close",
          .timeLimit(.minutes(2)))
    func descriptorExhaustion() async throws {
        // The client side needs its descriptors too, beside the other tests running in this process.
        ProcessLimits.raiseOpenFileLimit(logger: Logger(label: "test"))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // Soft and hard limit 256 for this process: raising cannot help, so the connections below exhaust it.
        let logPath = directory.path + "/serve.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let (process, port) = try await serveSteward(directory: directory, shell: "ulimit -n 256", output: log)
        defer { if process.isRunning { process.terminate() } }
        func serverLog() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)).map { String($0.suffix(3000)) } ?? "" }
        let client = HTTPClient.shared
        var connections: [RawConnection] = []
        for _ in 0..<300 {
            guard let connection = try? await RawConnection.connect(port: port) else { break }
            connections.append(connection)
        }
        #expect(connections.count > 256, "more connections than the server has descriptors")
        // The server keeps descriptors for itself: past its budget (256 less a reserve of 96) a connection is answered
        // and closed. Dispatch would otherwise kill it under load, when its thread monitor finds no descriptor.
        let opened = connections
        try await eventually(20, "connections past the budget answered 503 too_many_connections") {
            opened.filter { $0.text.hasPrefix("HTTP/1.1 503") && $0.text.contains("too_many_connections") }.count >= 300 - 160 - 20
        }
        try await Task.sleep(for: .seconds(2))
        #expect(process.isRunning, "the server is still running while out of descriptors: exit \(process.isRunning ? 0 : process.terminationStatus), log: \(serverLog())")
        guard process.isRunning else { return }
        for connection in connections { await connection.close() }
        try await eventually(30, "the server to serve again") {
            (try? await client.get(url: "http://127.0.0.1:\(port)/health/live").get().status) == .ok
        }
        #expect(process.isRunning)
    }

    @Test("A soft open-file limit below the hard one is raised at start")
    func softLimitRaised() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (process, _) = try await serveSteward(directory: directory, shell: "ulimit -S -n 256")
        defer { if process.isRunning { process.terminate() } }
        let limits = try String(contentsOfFile: "/proc/\(process.processIdentifier)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        #expect(numbers.count == 2 && numbers[0] == numbers[1] && numbers[0] > 256, "\(line)")
    }
}
