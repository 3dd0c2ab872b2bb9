import Fluent
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import MCP
import Testing
import Vapor
@testable import App

/// The official Swift MCP client (modelcontextprotocol/swift-sdk), unchanged, against a live server over
/// 2025-11-25: the interop check for Swift clients, beside the Python SDK's in `scripts/mcp-interop.sh`.
@Suite("MCP: the Swift SDK's client")
struct MCPSwiftClientTests {
    @Test("The Swift SDK's client initializes, lists the tools, calls one, gets isError from a failing skill and reads the execution")
    func swiftClient() async throws {
        try await withTestApp { app in
            _ = try await SkillService(app: app).seedSamples()
            try await makeUser(app, email: "swift@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "swift@example.com").requireID(),
                                                              roles: ["executor"], actor: .cli)
            let token = try await login(app, email: "swift@example.com").accessToken
            app.jobWorkers.start(app, count: 1)
            try await app.withLiveServer { port in
                let transport = HTTPClientTransport(
                    endpoint: URL(string: "http://127.0.0.1:\(port)/mcp")!, streaming: false,
                    requestModifier: { request in
                        var request = request
                        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
                        return request
                    })
                let client = MCP.Client(name: "swift-interop", version: "0.12.1")
                let initialized = try await client.connect(transport: transport)
                #expect(initialized.protocolVersion == "2025-11-25")
                #expect(initialized.serverInfo.name == "steward")

                let (tools, _) = try await client.listTools()
                #expect(tools.map(\.name).contains("echo"))
                #expect(tools.map(\.name).contains("steward_get_execution"))

                let (content, isError) = try await client.callTool(name: "echo", arguments: ["word": "hi"])
                #expect(isError != true)
                #expect("\(content)".contains(#"{\"word\":\"hi\"}"#) || "\(content)".contains(#"{"word":"hi"}"#), "\(content)")

                let (failed, failedIsError) = try await client.callTool(name: "always-fails", arguments: ["message": "swift boom"])
                #expect(failedIsError == true)
                #expect("\(failed)".contains("swift boom"))

                let execution = try #require(try await Execution.query(on: app.db).filter(\.$skillID == (try await SkillService(app: app).find("echo")).requireID()).first())
                #expect(execution.origin == "mcp")
                #expect(execution.clientName == "swift-interop")
                let contents = try await client.readResource(uri: "steward://executions/\(try execution.requireID().lowercasedString)")
                #expect("\(contents)".contains("succeeded"))
                await client.disconnect()
            }
        }
    }
}
