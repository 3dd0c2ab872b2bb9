import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
@testable import StewardFormats

/// Custom roles (issue 26): created, changed and deleted by holders of roles:manage, applied on the next request.
@Suite("Custom roles")
struct CustomRoleTests {
    static func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
        var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
        if json != nil { headers.add(name: .contentType, value: "application/json") }
        return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }

    /// A user holding exactly `roles`, signed in.
    static func member(_ app: Application, roles: [String]) async throws -> (token: String, key: String?, id: UUID) {
        let user = try await makeUser(app)
        _ = try await UserAdminService(app: app).setRoles(try user.requireID(), roles: roles, actor: .cli)
        return (try await login(app, email: user.email).accessToken, nil, try user.requireID())
    }

    @Test("A custom role grants its permissions on the next request, to sessions and API keys alike, and a change revokes them")
    func grantAndRevoke() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let created = try await Self.send(app, .POST, "/api/v1/roles", token: admin,
                                              json: #"{"name":"auditor","description":"Reads the audit log.","permissions":["audit:read","skills:read","api-keys:manage"]}"#)
            #expect(created.status == .created, "\(created.body.string)")
            #expect(created.body.string == #"{"name":"auditor","description":"Reads the audit log.","permissions":["api-keys:manage","audit:read","skills:read"],"builtIn":false}"#)

            let member = try await Self.member(app, roles: ["auditor"])
            #expect(try await Self.send(app, .GET, "/api/v1/audit-logs", token: member.token).status == .ok)
            // An API key of the member, scoped to audit:read, follows the role too.
            let keyAnswer = try await Self.send(app, .POST, "/api/v1/api-keys", token: member.token, json: #"{"name":"k","scopes":["audit:read"]}"#)
            #expect(keyAnswer.status == .created, "\(keyAnswer.body.string)")
            let key = try #require(try keyAnswer.json()["key"]?.stringValue)
            #expect(try await Self.send(app, .GET, "/api/v1/audit-logs", token: key).status == .ok)

            let me = try await Self.send(app, .GET, "/api/v1/auth/me", token: member.token).json()
            #expect(me["roles"] == ["auditor"])

            let changed = try await Self.send(app, .PATCH, "/api/v1/roles/auditor", token: admin, json: #"{"permissions":["skills:read"]}"#)
            #expect(changed.status == .ok, "\(changed.body.string)")
            #expect(try await Self.send(app, .GET, "/api/v1/audit-logs", token: member.token).status == .forbidden)
            #expect(try await Self.send(app, .GET, "/api/v1/audit-logs", token: key).status == .forbidden)
            #expect(try await Self.send(app, .GET, "/api/v1/skills", token: member.token).status == .ok)

            let list = try await Self.send(app, .GET, "/api/v1/roles", token: admin).json()
            let names = list["items"]?.arrayValue?.compactMap { $0.object?["name"]?.stringValue }
            #expect(names == ["admin", "developer", "executor", "viewer", "service", "auditor"])

            let actions = try await (app.db as! any SQLDatabase).raw("SELECT action FROM audit_logs WHERE resource_type = 'role'").all()
                .map { try $0.decode(column: "action", as: String.self) }
            #expect(actions.sorted() == ["role.created", "role.updated"])
        }
    }

    @Test("Built-in roles cannot be changed or deleted: 409")
    func builtIn() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let patch = try await Self.send(app, .PATCH, "/api/v1/roles/viewer", token: admin, json: #"{"permissions":["admin:full"]}"#)
            #expect(patch.status == .conflict)
            let delete = try await Self.send(app, .DELETE, "/api/v1/roles/admin", token: admin)
            #expect(delete.status == .conflict)
            let list = try await Self.send(app, .GET, "/api/v1/roles", token: admin).json()
            let viewer = list["items"]?.arrayValue?.first { $0.object?["name"] == "viewer" }?.object
            #expect(viewer?["builtIn"] == .bool(true))
            #expect(viewer?["permissions"]?.arrayValue?.contains("admin:full") == false)
        }
    }

    @Test("A role still held is not deleted without reassign (409 with the count); with it, its holders move and the role goes")
    func deleteAndReassign() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            _ = try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: #"{"name":"temp","permissions":["audit:read"]}"#)
            let one = try await Self.member(app, roles: ["temp"])
            _ = try await Self.member(app, roles: ["temp", "executor"])
            let refused = try await Self.send(app, .DELETE, "/api/v1/roles/temp", token: admin)
            #expect(refused.status == .conflict)
            #expect(try refused.problem().detail?.contains("held by 2 users") == true)
            #expect(try await Self.send(app, .DELETE, "/api/v1/roles/temp?reassign=temp", token: admin).status == .unprocessableEntity)
            #expect(try await Self.send(app, .DELETE, "/api/v1/roles/temp?reassign=nobody", token: admin).status == .unprocessableEntity)
            let deleted = try await Self.send(app, .DELETE, "/api/v1/roles/temp?reassign=executor", token: admin)
            #expect(deleted.status == .noContent)
            let me = try await Self.send(app, .GET, "/api/v1/auth/me", token: one.token).json()
            #expect(me["roles"] == ["executor"])
            #expect(try await Self.send(app, .DELETE, "/api/v1/roles/temp", token: admin).status == .notFound)
            // An unheld custom role goes without reassign.
            _ = try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: #"{"name":"unused","permissions":[]}"#)
            #expect(try await Self.send(app, .DELETE, "/api/v1/roles/unused", token: admin).status == .noContent)
        }
    }

    @Test("Bad role input is a 422 naming the field; a taken name is 409; roles:manage is needed; nobody grants what they lack")
    func validation() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            for (body, field) in [
                (#"{"name":"Bad Name","permissions":[]}"#, "name"),
                (#"{"name":"x","permissions":[]}"#, "name"),
                (#"{"name":"ok-name","permissions":["skills:read","nope"]}"#, "permissions[1]"),
                (#"{"name":"ok-name","description":"\u0007","permissions":[]}"#, "description"),
            ] {
                let response = try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: body)
                #expect(response.status == .unprocessableEntity, "\(body)")
                #expect(try response.problem().errors?.first?.field == field, "\(body)")
            }
            #expect(try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: #"{"name":"viewer","permissions":[]}"#).status == .conflict)
            #expect(try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: #"{"name":"ok","permissions":"skills:read"}"#).status == .unprocessableEntity)
            #expect(try await Self.send(app, .PATCH, "/api/v1/roles/nowhere", token: admin, json: #"{"description":"x"}"#).status == .notFound)

            // A developer lacks roles:manage.
            let developer = try await Self.member(app, roles: ["developer"])
            #expect(try await Self.send(app, .POST, "/api/v1/roles", token: developer.token, json: #"{"name":"mine","permissions":[]}"#).status == .forbidden)
            // A role manager without admin:full cannot hand out more than it holds.
            _ = try await Self.send(app, .POST, "/api/v1/roles", token: admin, json: #"{"name":"role-admin","permissions":["roles:manage","users:read","skills:read"]}"#)
            let manager = try await Self.member(app, roles: ["role-admin"])
            let escalate = try await Self.send(app, .POST, "/api/v1/roles", token: manager.token, json: #"{"name":"power","permissions":["admin:full"]}"#)
            #expect(escalate.status == .forbidden)
            #expect(try escalate.problem().detail?.contains("admin:full") == true)
            #expect(try await Self.send(app, .POST, "/api/v1/roles", token: manager.token, json: #"{"name":"reader","permissions":["skills:read"]}"#).status == .created)
            // Assigning an unknown role is refused; a custom one is accepted.
            let user = try await makeUser(app)
            let assign = try await Self.send(app, .PUT, "/api/v1/users/\(try user.requireID().lowercasedString)/roles", token: admin, json: #"{"roles":["reader"]}"#)
            #expect(assign.status == .ok, "\(assign.body.string)")
            let unknown = try await Self.send(app, .PUT, "/api/v1/users/\(try user.requireID().lowercasedString)/roles", token: admin, json: #"{"roles":["ghost"]}"#)
            #expect(unknown.status == .unprocessableEntity)
        }
    }
}
