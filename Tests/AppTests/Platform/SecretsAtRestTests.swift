import Crypto
import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// A webhook with an Authorization header and an http skill with an API-key header, both aimed at `port`.
private func makeCredentials(_ app: Application, port: Int) async throws -> (token: String, secret: String) {
    let admin = try await adminToken(app)
    let hook = try await send(app, .POST, "/api/v1/webhooks", token: admin,
                              json: #"{"url": "http://127.0.0.1:\#(port)/hook", "events": ["execution.*"], "headers": {"Authorization": "Bearer hook-key-123"}}"#)
    #expect(hook.status == .created, "\(hook.body.string)")
    let skill = try await send(app, .POST, "/api/v1/skills", token: admin, json: #"""
        {"slug": "remote", "name": "Remote", "runner": {"type": "http", "url": "http://127.0.0.1:\#(port)/hook", "headers": {"X-Api-Key": "runner-key-456"}}}
        """#)
    #expect(skill.status == .created, "\(skill.body.string)")
    return (admin, try #require(try hook.content.decode(WebhookResponse.self).secret))
}

/// The stored header columns, as text.
private func storedHeaders(_ app: Application) async throws -> String {
    let sql = app.db as! any SQLDatabase
    let hooks = try await sql.raw("SELECT headers FROM webhooks").all().map { try $0.decode(column: "headers", as: String.self) }
    let skills = try await sql.raw("SELECT runner FROM skills WHERE slug = 'remote'").all().map { try $0.decode(column: "runner", as: String.self) }
    return (hooks + skills).joined(separator: "\n")
}

private func key(_ byte: UInt8) -> String { Data(repeating: byte, count: 32).base64EncodedString() }

@Suite("Secrets at rest")
struct SecretsAtRestTests {
    @Test("HTTP-runner and webhook header values are sealed in the database, shown redacted, and sent as written")
    func sealedHeaders() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let (admin, _) = try await makeCredentials(app, port: receiver.port)
                let stored = try await storedHeaders(app)
                #expect(!stored.contains("hook-key-123") && !stored.contains("runner-key-456"), "\(stored)")
                #expect(stored.contains("X-Api-Key") && stored.contains("Authorization"), "names stay readable")
                let shown = try await send(app, .GET, "/api/v1/skills/remote", token: admin)
                #expect(shown.body.string.contains("[redacted]") && !shown.body.string.contains("runner-key-456"))
                let listed = try await send(app, .GET, "/api/v1/skills", token: admin)
                #expect(listed.body.string.contains(#""headers":{"X-Api-Key":"[redacted]"}"#), "the list redacts too: \(listed.body.string)")

                #expect(try await send(app, .POST, "/api/v1/executions", token: admin, json: #"{"skillId": "remote", "input": {}}"#).status == .accepted)
                for _ in 0..<3 {
                    try await drainJobs(app)
                    _ = try await app.settledLedger()
                    try await WebhookDispatcher(app: app).dispatchBatch()
                }
                try await drainJobs(app)
                let received = receiver.received
                #expect(received.contains { $0.headers.first(name: "X-Api-Key") == "runner-key-456" }, "the runner sent its key")
                #expect(received.contains { $0.headers.first(name: "Authorization") == "Bearer hook-key-123" }, "the webhook sent its header")
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("The migration seals rows stored in the clear, and its revert opens them again")
    func migration() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
            app.useTestDoubles()
            _ = try await makeCredentials(app, port: 9)
            let reverted = try await MigrationService(app: app).revert(downTo: "0023_CountActiveExecutions")
            #expect(reverted.contains("0024_SealHeaderValues"))
            let plain = try await storedHeaders(app)
            #expect(plain.contains("hook-key-123") && plain.contains("runner-key-456"), "\(plain)")
            try await MigrationService(app: app).migrate()
            let sealed = try await storedHeaders(app)
            #expect(!sealed.contains("hook-key-123") && !sealed.contains("runner-key-456"), "\(sealed)")
            let hook = try #require(try await Webhook.query(on: app.db).first())
            #expect(try hook.headers(opening: app.secretBox) == ["Authorization": "Bearer hook-key-123"])
        }
    }

    @Test("keys rotate-encryption re-seals every value under the new key while the old one still opens; without the old key it refuses")
    func rotation() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let allowed = ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "STEWARD_JWT_SECRET": String(repeating: "rotation-", count: 5)]
        let first = try await makeTestApp(directory: directory, environment: allowed.merging(["STEWARD_ENCRYPTION_KEY": key(1)]) { $1 })
        let secret: String
        do {
            first.useTestDoubles()
            secret = try await makeCredentials(first, port: 9).secret
        } catch {
            try? await first.asyncShutdown()
            throw error
        }
        try await first.asyncShutdown()

        // The new key alone cannot open what the old one sealed: the command says so and changes nothing.
        let alone = try await makeTestApp(directory: directory, environment: allowed.merging(["STEWARD_ENCRYPTION_KEY": key(2)]) { $1 }, freshDatabase: false)
        await #expect(throws: CommandFailure.self) { _ = try await alone.runCommand(["keys", "rotate-encryption"]) }
        try await alone.asyncShutdown()

        let rotating = try await makeTestApp(directory: directory, environment: allowed.merging(["STEWARD_ENCRYPTION_KEY": key(2), "STEWARD_ENCRYPTION_PREVIOUS_KEYS": key(1)]) { $1 },
                                            freshDatabase: false)
        do {
            let output = try await rotating.runCommand(["keys", "rotate-encryption"])
            #expect(output.contains("webhooks.headers: 1 re-sealed") && output.contains("skills.runner: 1 re-sealed")
                    && output.contains("webhooks.secret: 1 re-sealed"), "\(output)")
        } catch {
            try? await rotating.asyncShutdown()
            throw error
        }
        try await rotating.asyncShutdown()

        // Afterwards the new key alone opens everything, and the old one nothing.
        let after = try await makeTestApp(directory: directory, environment: allowed.merging(["STEWARD_ENCRYPTION_KEY": key(2)]) { $1 }, freshDatabase: false)
        do {
            let hook = try #require(try await Webhook.query(on: after.db).first())
            #expect(try hook.headers(opening: after.secretBox) == ["Authorization": "Bearer hook-key-123"])
            #expect(try after.secretBox.open(hook.sealedSecret) == secret)
            let old = SecretBox(key: SymmetricKey(data: Data(repeating: 1, count: 32)))
            #expect(throws: (any Error).self) { try old.open(hook.sealedSecret) }
            let skill = try #require(try await Skill.query(on: after.db).filter(\.$slug == "remote").first())
            #expect(Skill.mappingHeaderValues(of: skill.runner) { (try? after.secretBox.open($0)) ?? "unopened" }.object?["headers"] == ["X-Api-Key": "runner-key-456"])
        } catch {
            try? await after.asyncShutdown()
            throw error
        }
        try await after.asyncShutdown()
    }
}
