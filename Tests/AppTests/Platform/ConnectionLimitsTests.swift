import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Testing
import Vapor
@testable import App

/// The steward executable built beside the tests (`swift build --build-tests`).
func stewardBinary() throws -> String {
    let candidates = [Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("steward").path,
                      URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../.build/debug/steward").standardized.path]
    return try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) }, "no steward binary next to the tests")
}

/// A loopback port nothing listens on now: the kernel picks it for a socket that is closed again at once. Better
/// than a random number, which can fall on a port another test or process holds.
func freeLoopbackPort() throws -> Int {
    let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
    defer { try? channel.close().wait() }
    return try #require(channel.localAddress?.port)
}

/// `steward serve` on a free port in a fresh data directory, behind `sh -c "<limits> && exec steward serve"`,
/// once it answers `/health/live`. The caller terminates it.
private func serveBinary(limits: String, directory: TemporaryDirectory) async throws -> (Process, Int) {
    let binary = try stewardBinary()
    let port = try freeLoopbackPort()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", "\(limits) && exec \"$0\" serve", binary]
    process.environment = [
        "STEWARD_DATA_DIR": directory.path, "STEWARD_PORT": String(port), "STEWARD_LOG_LEVEL": "warning",
        "STEWARD_ADMIN_PASSWORD": "Bootstrap-Admin-Pass-1", "PATH": "/usr/bin:/bin",
    ]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    do {
        try await eventually(30, "the server to answer /health/live") {
            (try? await HTTPClient.shared.get(url: "http://127.0.0.1:\(port)/health/live").get().status) == .ok
        }
    } catch {
        process.terminate()
        throw error
    }
    return (process, port)
}

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

    @Test("With its descriptors exhausted by idle connections the server stays up, and serves again once they close",
          .timeLimit(.minutes(2)))
    func descriptorExhaustion() async throws {
        // The client side needs its descriptors too, beside the other tests running in this process.
        ProcessLimits.raiseOpenFileLimit(logger: Logger(label: "test"))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // Soft and hard limit 256 for this process: raising cannot help, so the connections below exhaust it.
        let (process, port) = try await serveBinary(limits: "ulimit -n 256", directory: directory)
        defer { if process.isRunning { process.terminate() } }
        let client = HTTPClient.shared
        var connections: [RawConnection] = []
        for _ in 0..<300 {
            guard let connection = try? await RawConnection.connect(port: port) else { break }
            connections.append(connection)
        }
        #expect(connections.count > 256, "more connections than the server has descriptors")
        try await Task.sleep(for: .seconds(2))
        #expect(process.isRunning, "the server is still running while out of descriptors")
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
        let (process, _) = try await serveBinary(limits: "ulimit -S -n 256", directory: directory)
        defer { if process.isRunning { process.terminate() } }
        let limits = try String(contentsOfFile: "/proc/\(process.processIdentifier)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        #expect(numbers.count == 2 && numbers[0] == numbers[1] && numbers[0] > 256, "\(line)")
    }
}
