import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil,
                  headers extra: HTTPHeaders = [:]) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    headers.add(contentsOf: extra)
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// A user with a trace in most tables: sessions, an API key, a favourite, a webhook, a schedule, executions (one with
/// their name in its input), and a verification mail waiting in the outbox.
private func busyUser(_ app: Application) async throws -> (id: UUID, token: String, key: String) {
    _ = try await SkillService(app: app).seedSamples()
    let user = try await AccountRegistration(app: app).register(
        RegisterRequest(email: "Erin.Erasable@example.com", username: "erinerasable", password: strongPassword, fullName: "Erin Erasable"),
        origin: .system)
    let id = try user.requireID()
    _ = try await UserAdminService(app: app).setRoles(id, roles: ["developer"], actor: .cli)
    let token = try await login(app, email: "erin.erasable@example.com").accessToken
    let key = try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "erin laptop", "scopes": ["skills:read"]}"#)
    #expect(key.status == .created)
    let secret = try #require(JSONValue.parse(key.body.string).object?["key"]?.stringValue)
    #expect(try await send(app, .POST, "/api/v1/skills/echo/favorite", token: token).status == .noContent)
    #expect(try await send(app, .POST, "/api/v1/webhooks", token: token, json: #"{"url": "http://127.0.0.1:9/erin", "events": ["execution.*"]}"#).status == .created)
    #expect(try await send(app, .POST, "/api/v1/schedules", token: token,
                           json: #"{"name": "Erin's nightly", "target": {"skillId": "echo"}, "input": {}, "cron": "0 3 * * *"}"#).status == .created)
    for _ in 0..<2 {
        #expect(try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {"note": "for Erin Erasable"}}"#).status == .accepted)
    }
    try await drainJobs(app)
    return (id, token, secret)
}

@Suite("Erasure")
struct ErasureTests {
    @Test("Erasing a user leaves a tombstone with the id, removes their personal data, anonymises their executions, and leaves the audit chain intact; no byte of the SQLite file or its WAL holds their email, username or name")
    func erase() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
            let admin = try await adminToken(app)
            let (id, token, key) = try await busyUser(app)
            let path = "/api/v1/users/\(id.lowercasedString)?erase=true"

            let unconfirmed = try await send(app, .DELETE, path, token: admin)
            #expect(unconfirmed.status == .unprocessableEntity)
            #expect(try unconfirmed.problem().errors?.first?.field == "X-Confirm-Erase")
            let wrong = try await send(app, .DELETE, path, token: admin, headers: ["X-Confirm-Erase": UUID().uuidString])
            #expect(wrong.status == .unprocessableEntity)

            let erased = try await send(app, .DELETE, path, token: admin, headers: ["X-Confirm-Erase": id.uuidString])
            #expect(erased.status == .ok, "\(erased.body.string)")
            let outcome = try #require(JSONValue.parse(erased.body.string).object)
            #expect(outcome["executions"] == "anonymise" && outcome["executionsAffected"] == 2)

            // The tombstone.
            let shown = try #require(JSONValue.parse(try await send(app, .GET, "/api/v1/users/\(id)", token: admin).body.string).object)
            #expect(shown["status"] == "deleted" && shown["fullName"] == .null)
            #expect(shown["email"]?.stringValue?.hasSuffix("@erased.invalid") == true)
            // Nothing of theirs still works.
            #expect(try await send(app, .GET, "/api/v1/auth/me", token: token).status == .unauthorized)
            #expect(try await send(app, .GET, "/api/v1/auth/me", token: key).status == .unauthorized)
            let relogin = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                body: .init(string: #"{"email": "erin.erasable@example.com", "password": "\#(strongPassword)"}"#))
            #expect(relogin.status == .unauthorized)
            // Their executions stay, anonymised, under the tombstone's id.
            let executions = try await Execution.query(on: app.db).filter(\.$user.$id == id).all()
            #expect(executions.count == 2 && executions.allSatisfy { $0.input == "{}" && $0.output == nil })
            for table in ["sessions", "api_keys", "skill_favorites", "webhooks", "schedules", "user_roles"] {
                let left = try await (app.db as! any SQLDatabase).raw("SELECT COUNT(*) AS n FROM \(ident: table) WHERE user_id = \(bind: id)")
                    .first()?.decode(column: "n", as: Int.self)
                #expect(left == 0, "\(table) still holds their rows")
            }
            // Erasing again is a conflict; the chain verifies; the erasure is audited without personal data.
            #expect(try await send(app, .DELETE, path, token: admin, headers: ["X-Confirm-Erase": id.uuidString]).status == .conflict)
            #expect(try await app.runCommand(["audit", "verify"]).contains("audit chain intact"))
            let entry = try #require(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "user.erased").first())
            #expect(entry.resourceID == id.lowercasedString && !entry.details.lowercased().contains("erin"))

            if case .sqlite(let file) = app.appConfig.database {
                var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
                let mainSize = bytes.count
                if let wal = try? Data(contentsOf: URL(fileURLWithPath: file + "-wal")) { bytes.append(wal) }
                for personal in ["erin.erasable@example.com", "Erin.Erasable@example.com", "erinerasable", "Erin Erasable"] {
                    let found = bytes.range(of: Data(personal.utf8))
                    let context = found.map { String(decoding: bytes[max(0, $0.lowerBound - 300)..<min(bytes.count, $0.upperBound + 100)].map { $0 < 32 || $0 > 126 ? 46 : $0 }, as: UTF8.self) } ?? ""
                    #expect(found == nil, "\(personal) is still in the database file (main file \(mainSize) bytes): \(context)")
                }
            }
        }
    }

    @Test("With STEWARD_ERASE_EXECUTIONS=delete their executions go; the last admin cannot be erased; the CLI asks for the id and erases")
    func deleteModeAndSafety() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "STEWARD_ERASE_EXECUTIONS": "delete"]) { app in
            let admin = try await adminToken(app)
            let adminID = try await UserAdminService(app: app).find(email: app.appConfig.adminEmail).requireID()
            let last = try await send(app, .DELETE, "/api/v1/users/\(adminID)?erase=true", token: admin, headers: ["X-Confirm-Erase": adminID.uuidString])
            #expect(last.status == .conflict && last.body.string.contains("last active admin"))

            let (id, _, _) = try await busyUser(app)
            let refused = await #expect(throws: CommandFailure.self) { try await app.runCommand(["user", "erase", "erin.erasable@example.com"]) }
            #expect(refused?.description.contains(id.lowercasedString) == true, "it names the id to confirm with")
            let output = try await app.runCommand(["user", "erase", "erin.erasable@example.com", "--confirm", id.lowercasedString])
            #expect(output.contains("executions: delete, 2"))
            #expect(try await Execution.query(on: app.db).filter(\.$user.$id == id).count() == 0)
            #expect(try await app.runCommand(["audit", "verify"]).contains("audit chain intact"))
        }
    }
}
