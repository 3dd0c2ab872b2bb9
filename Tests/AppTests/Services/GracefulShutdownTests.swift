import Foundation
import NIOCore
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Graceful shutdown")
struct GracefulShutdownTests {
    @Test("On shutdown a request already in flight finishes with its answer")
    func inFlightRequestFinishes() async throws {
        try await withTestApp { app in
            app.get("test-probe", "slow") { _ async throws -> String in
                try await Task.sleep(for: .milliseconds(800))
                return "finished"
            }
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            let port = try #require(app.http.server.shared.localAddress?.port)

            let response = Task {
                try await app.client.get(URI(string: "http://127.0.0.1:\(port)/test-probe/slow"))
            }
            try await Task.sleep(for: .milliseconds(200))
            await app.server.shutdown()

            let answer = try await response.value
            #expect(answer.status == .ok)
            #expect(answer.body.map { String(buffer: $0) } == "finished")
        }
    }
}
