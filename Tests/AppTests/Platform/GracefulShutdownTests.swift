import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Graceful shutdown")
struct GracefulShutdownTests {
    @Test("On shutdown a request already in flight finishes with its answer")
    func inFlightRequestFinishes() async throws {
        try await withTestApp { app in
            // The handler says when it has the request, so shutdown starts with it in flight however loaded the machine is.
            let (arrived, arrival) = AsyncStream<Void>.makeStream()
            app.get("test-probe", "slow") { _ async throws -> String in
                arrival.yield()
                try await Task.sleep(for: .milliseconds(800))
                return "finished"
            }
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            let port = try #require(app.stewardServer.localAddress?.port)

            let response = Task {
                try await app.client.get(URI(string: "http://127.0.0.1:\(port)/test-probe/slow"))
            }
            var iterator = arrived.makeAsyncIterator()
            await iterator.next()
            await app.server.shutdown()

            let answer = try await response.value
            #expect(answer.status == .ok)
            #expect(answer.body.map { String(buffer: $0) } == "finished")
        }
    }

    @Test("The steward binary stops on SIGTERM during a login storm and exits 0, not by a crash or the signal")
    func sigtermExitsCleanly() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let output = Pipe()
        let (process, port) = try await serveSteward(directory: directory, environment: ["STEWARD_BCRYPT_COST": "12"],
                                                     readyPath: "/health/ready", output: output)
        defer { if process.isRunning { process.terminate() } }

        let client = HTTPClient.shared
        let metrics = try await client.get(url: "http://127.0.0.1:\(port)/metrics").get()
        #expect(metrics.status == .ok)

        // Logins queued for bcrypt when the signal arrives must not outlive the database they write to.
        var login = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/auth/login")
        login.method = .POST
        login.headers.add(name: "Content-Type", value: "application/json")
        login.body = .bytes(ByteBuffer(string: #"{"email":"admin@steward.local","password":"Bootstrap-Admin-Pass-1"}"#))
        let storm = (0..<12).map { [login] _ in
            Task { try? await client.execute(login, timeout: .seconds(30)).status }
        }
        try await Task.sleep(for: .milliseconds(300))
        kill(process.processIdentifier, SIGTERM)
        for task in storm { _ = await task.value }
        try await eventually(30, "the process to exit") { !process.isRunning }
        #expect(process.terminationReason == .exit, "ended by a signal: \(process.terminationStatus)")
        #expect(process.terminationStatus == 0)
    }
}

