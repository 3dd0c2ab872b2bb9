import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// `{"a": [[…1…]]}`: an object holding arrays, `levels` deep in all.
private func nested(_ levels: Int) -> String {
    #"{"a": "# + String(repeating: "[", count: levels - 1) + "1" + String(repeating: "]", count: levels - 1) + "}"
}

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(method, path, headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"], body: .init(string: json))
}

@Suite("Nesting limit")
struct NestingLimitTests {
    @Test("Execution, workflow-run and schedule input nested 65 levels is 422 naming input; 64 levels are accepted and stored whole")
    func inputs() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            let admin = try await adminToken(app)
            let workflow = try await send(app, .POST, "/api/v1/workflows", token: admin,
                                          json: #"{"slug": "pass", "name": "Pass", "steps": [{"id": "a", "skillId": "echo"}]}"#)
            #expect(workflow.status == .created, "\(workflow.body.string)")
            let routes: [(String, (String) -> String)] = [
                ("/api/v1/executions", { #"{"skillId": "echo", "input": \#($0)}"# }),
                ("/api/v1/workflows/pass/runs", { #"{"input": \#($0)}"# }),
                ("/api/v1/schedules", { #"{"name": "deep", "target": {"skillId": "echo"}, "cron": "@hourly", "input": \#($0)}"# }),
            ]
            var executionID: UUID?
            for (path, body) in routes {
                let refused = try await send(app, .POST, path, token: admin, json: body(nested(65)))
                #expect(refused.status == .unprocessableEntity, "\(path): \(refused.status)")
                #expect(try refused.problem().errors == [FieldProblem(field: "input", message: "must not be nested more than 64 levels deep")], "\(path)")
                let accepted = try await send(app, .POST, path, token: admin, json: body(nested(64)))
                #expect(accepted.status.code < 300, "\(path): \(accepted.body.string.prefix(200))")
                if path == "/api/v1/executions" { executionID = try accepted.content.decode(ExecutionResponse.self).id }
            }
            // The accepted execution's input comes back whole, not cut to null.
            let id = try #require(executionID)
            let read = try await app.testing().sendRequest(.GET, "/api/v1/executions/\(id)", headers: ["Authorization": "Bearer \(admin)"])
            var depth = 0
            var value = try read.content.decode(ExecutionResponse.self).input.object?["a"]
            while case .array(let inner)? = value { depth += 1; value = inner.first }
            #expect(depth == 63 && value == .number(1))
        }
    }
}
