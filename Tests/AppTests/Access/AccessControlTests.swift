import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App

/// Logs in as an admin (the bootstrapped one on an empty database, else one created for the test).
func adminToken(_ app: Application) async throws -> String {
    if case .created = try await AdminBootstrap(app: app).ensureFirstAdmin() {
        return try await login(app, email: app.appConfig.adminEmail, password: "Bootstrap-Admin-Pass-1").accessToken
    }
    let email = "admin-\(UUID().uuidString.prefix(8).lowercased())@example.com"
    _ = try await UserAdminService(app: app).create(email: email, username: "adm" + String(UUID().uuidString.prefix(8)).lowercased(),
                                                    password: strongPassword, fullName: nil, roles: ["admin"], actor: .cli)
    return try await login(app, email: email).accessToken
}

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String? = nil, key: String? = nil,
                  json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = [:]
    if let token { headers.add(name: .authorization, value: "Bearer \(token)") }
    if let key { headers.add(name: "X-API-Key", value: key) }
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

private func promote(_ app: Application, _ email: String, to roles: [String]) async throws {
    let user = try await UserAdminService(app: app).find(email: email)
    _ = try await UserAdminService(app: app).setRoles(try user.requireID(), roles: roles, actor: .cli)
}

private func createKey(_ app: Application, token: String, scopes: [String]) async throws -> (id: UUID, key: String) {
    let res = try await send(app, .POST, "/api/v1/api-keys", token: token,
                             json: #"{"name": "ci", "scopes": [\#(scopes.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
    #expect(res.status == .created, "\(res.body.string)")
    let body = try res.content.decode(CreatedAPIKeyResponse.self)
    return (body.id, body.key)
}

@Suite("API keys")
struct APIKeyTests {
    @Test("A key is shown once, stored hashed, and authenticates as Bearer or X-API-Key within its scopes")
    func lifecycle() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "dev@example.com")
            try await promote(app, "dev@example.com", to: ["developer"])
            let token = try await login(app, email: "dev@example.com").accessToken
            let (id, key) = try await createKey(app, token: token, scopes: ["skills:read", "api-keys:manage"])
            #expect(key.range(of: #"^stw_[0-9A-Za-z]{8}_[0-9A-Za-z]{40,}$"#, options: .regularExpression) != nil)

            let stored = try #require(try await APIKey.find(id, on: app.db))
            #expect(stored.keyHash == SecureToken.hash(key))
            #expect(!stored.keyHash.contains(key))

            let listed = try await send(app, .GET, "/api/v1/api-keys", token: token)
            #expect(!listed.body.string.contains(key))
            #expect(listed.body.string.contains(stored.prefix))

            let viaBearer = try await send(app, .GET, "/api/v1/auth/me", token: key)
            #expect(viaBearer.status == .ok)
            #expect(try viaBearer.content.decode(MeResponse.self).permissions == ["api-keys:manage", "skills:read"])
            #expect(try await send(app, .GET, "/api/v1/api-keys", key: key).status == .ok)
            let used = try #require(try await APIKey.find(id, on: app.db))
            #expect(used.lastUsedAt != nil)

            // Revoked: fails on the very next request.
            #expect(try await send(app, .DELETE, "/api/v1/api-keys/\(id)", token: token).status == .noContent)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .unauthorized)
        }
    }

    @Test("Keys cannot create keys, change passwords, manage sessions or MFA, or use /auth beyond GET /me")
    func interactiveOnly() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "dev2@example.com")
            try await promote(app, "dev2@example.com", to: ["developer"])
            let token = try await login(app, email: "dev2@example.com").accessToken
            let (_, key) = try await createKey(app, token: token, scopes: ["api-keys:manage"])
            #expect(try await send(app, .POST, "/api/v1/api-keys", key: key, json: #"{"name": "x", "scopes": ["api-keys:manage"]}"#).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/auth/change-password", key: key, json: #"{"currentPassword": "x", "newPassword": "y"}"#).status == .forbidden)
            #expect(try await send(app, .GET, "/api/v1/auth/sessions", key: key).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/auth/mfa/totp/enroll", key: key).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/auth/logout", key: key).status == .forbidden)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .ok)
        }
    }

    @Test("A key in the query string is refused, even a valid one")
    func queryString() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "dev3@example.com")
            try await promote(app, "dev3@example.com", to: ["developer"])
            let token = try await login(app, email: "dev3@example.com").accessToken
            let (_, key) = try await createKey(app, token: token, scopes: ["api-keys:manage"])
            let res = try await send(app, .GET, "/api/v1/auth/me?api_key=\(key)")
            #expect(res.status == .unauthorized)
            #expect(try res.problem().detail?.contains("URL") == true)
            #expect(try await send(app, .GET, "/api/v1/api-keys?key=\(key)", token: token).status == .unauthorized)
        }
    }

    @Test("Scopes beyond the owner's permissions are 403, unknown scopes 422; a demoted owner's keys lose the permission")
    func scopes() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "dev4@example.com")
            try await promote(app, "dev4@example.com", to: ["developer"])
            let token = try await login(app, email: "dev4@example.com").accessToken
            #expect(try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "x", "scopes": ["users:manage"]}"#).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "x", "scopes": ["launch:missiles"]}"#).status == .unprocessableEntity)
            #expect(try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "x", "scopes": []}"#).status == .unprocessableEntity)
            #expect(try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "x", "scopes": ["skills:read"], "expiresAt": "2001-01-01T00:00:00Z"}"#).status == .unprocessableEntity)

            let (_, key) = try await createKey(app, token: token, scopes: ["api-keys:manage"])
            #expect(try await send(app, .GET, "/api/v1/api-keys", key: key).status == .ok)
            try await promote(app, "dev4@example.com", to: ["viewer"])
            #expect(try await send(app, .GET, "/api/v1/api-keys", key: key).status == .forbidden)
            #expect(try await send(app, .GET, "/api/v1/api-keys", token: token).status == .forbidden, "the demotion applies to the live token too")
        }
    }

    @Test("An expired key stops working")
    func expiry() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "dev5@example.com")
            try await promote(app, "dev5@example.com", to: ["developer"])
            let token = try await login(app, email: "dev5@example.com").accessToken
            let expires = ISO8601DateFormatter().string(from: clock.now().addingTimeInterval(3600))
            let res = try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "short", "scopes": ["skills:read"], "expiresAt": "\#(expires)"}"#)
            let key = try res.content.decode(CreatedAPIKeyResponse.self).key
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .ok)
            clock.advance(by: 3601)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .unauthorized)
        }
    }

    @Test("Another owner's key is 404 to revoke, exactly like a missing one; an admin may revoke it")
    func ownership() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            for email in ["own-a@example.com", "own-b@example.com"] {
                try await makeUser(app, email: email)
                try await promote(app, email, to: ["developer"])
            }
            let a = try await login(app, email: "own-a@example.com").accessToken
            let b = try await login(app, email: "own-b@example.com").accessToken
            let (id, key) = try await createKey(app, token: a, scopes: ["skills:read"])
            #expect(try await send(app, .DELETE, "/api/v1/api-keys/\(id)", token: b).status == .notFound)
            #expect(try await send(app, .DELETE, "/api/v1/api-keys/\(UUID())", token: b).status == .notFound)
            let listed = try await send(app, .GET, "/api/v1/api-keys", token: b)
            #expect(try listed.content.decode(ListResponse<APIKeyResponse>.self).items.isEmpty)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .ok)

            let admin = try await adminToken(app)
            #expect(try await send(app, .DELETE, "/api/v1/api-keys/\(id)", token: admin).status == .noContent)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .unauthorized)
        }
    }

    @Test("The per-user quota holds under parallel creation")
    func quota() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_API_KEYS_PER_USER": "3"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "quota@example.com")
            try await promote(app, "quota@example.com", to: ["developer"])
            let token = try await login(app, email: "quota@example.com").accessToken
            let statuses = try await withThrowingTaskGroup(of: HTTPStatus.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await send(app, .POST, "/api/v1/api-keys", token: token, json: #"{"name": "k\#(index)", "scopes": ["skills:read"]}"#).status
                    }
                }
                return try await group.reduce(into: [HTTPStatus]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .created }.count == 3)
            #expect(statuses.filter { $0 == .conflict }.count == 5)
            #expect(try await APIKey.query(on: app.db).count() == 3)
        }
    }
}

@Suite("User administration")
struct UserAdministrationTests {
    @Test("Search by q, role and status with cursor pagination; absurd paging is 422")
    func search() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            var members: [User] = []
            for index in 0..<5 { members.append(try await makeUser(app, email: "member\(index)@example.com", username: "member\(index)")) }
            try await makeUser(app, email: "odd_one%@example.com", username: "oddone")
            let multi = try members[0].requireID().lowercasedString
            #expect(try await send(app, .PUT, "/api/v1/users/\(multi)/roles", token: admin, json: #"{"roles": ["viewer", "executor", "developer"]}"#).status == .ok)

            // Each item carries its own roles, sorted, read with the page.
            let everyone = try (try await send(app, .GET, "/api/v1/users?limit=100", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(everyone.items.count == 7)
            for item in everyone.items {
                let expected = item.id.lowercasedString == multi ? ["developer", "executor", "viewer"] : item.username.hasPrefix("member") || item.username == "oddone" ? ["viewer"] : ["admin"]
                #expect(item.roles == expected, "\(item.username) has \(item.roles)")
            }

            let first = try await send(app, .GET, "/api/v1/users?limit=3&role=viewer", token: admin)
            #expect(first.status == .ok)
            let page1 = try first.content.decode(ListResponse<AdminUserResponse>.self)
            #expect(page1.items.count == 3)
            let cursor = try #require(page1.nextCursor)
            let page2 = try (try await send(app, .GET, "/api/v1/users?limit=3&role=viewer&cursor=\(cursor)", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(page2.items.count == 3)
            #expect(page2.nextCursor == nil)
            #expect(Set(page1.items.map(\.id)).isDisjoint(with: page2.items.map(\.id)))

            let search = try (try await send(app, .GET, "/api/v1/users?q=MEMBER3", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(search.items.map(\.username) == ["member3"])
            // LIKE wildcards in q match literally.
            let literal = try (try await send(app, .GET, "/api/v1/users?q=%25", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(literal.items.map(\.username) == ["oddone"])
            let admins = try (try await send(app, .GET, "/api/v1/users?role=admin", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(admins.items.count == 1)
            #expect(admins.items.first?.roles == ["admin"])
            let developers = try (try await send(app, .GET, "/api/v1/users?role=developer", token: admin)).content.decode(ListResponse<AdminUserResponse>.self)
            #expect(developers.items.map(\.roles) == [["developer", "executor", "viewer"]], "a role filter still lists every role of the user")

            for query in ["limit=0", "limit=101", "limit=abc", "limit=-5", "cursor=garbage", "role=emperor", "status=asleep"] {
                let res = try await send(app, .GET, "/api/v1/users?\(query)", token: admin)
                #expect(res.status == .unprocessableEntity, "\(query) gave \(res.status)")
            }
        }
    }

    @Test("PATCH sets status and name; forbidden fields are 422 and nothing is written; suspension ends live sessions")
    func patch() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let user = try await makeUser(app, email: "target@example.com")
            let session = try await login(app, email: "target@example.com").accessToken

            for body in [#"{"role": "admin"}"#, #"{"status": "active", "emailVerifiedAt": "2026-01-01T00:00:00Z"}"#,
                         #"{"id": "x"}"#, #"{"lockedUntil": null}"#, #"{"status": "deleted"}"#, #"{"status": "emperor"}"#] {
                let res = try await send(app, .PATCH, "/api/v1/users/\(user.id!)", token: admin, json: body)
                #expect(res.status == .unprocessableEntity, "\(body)")
            }
            let unchanged = try #require(try await User.find(user.id, on: app.db))
            #expect(unchanged.status == .active)
            #expect(unchanged.emailVerifiedAt == nil)

            let res = try await send(app, .PATCH, "/api/v1/users/\(user.id!)", token: admin, json: #"{"status": "suspended", "fullName": "Renamed"}"#)
            #expect(res.status == .ok)
            #expect(try res.json()["status"] == "suspended")
            #expect(try await send(app, .GET, "/api/v1/auth/me", token: session).status == .unauthorized)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "user.status_changed").count() == 1)
        }
    }

    @Test("DELETE is a soft delete that revokes every session and key")
    func softDelete() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let user = try await makeUser(app, email: "gone@example.com")
            try await promote(app, "gone@example.com", to: ["developer"])
            let token = try await login(app, email: "gone@example.com").accessToken
            let (_, key) = try await createKey(app, token: token, scopes: ["skills:read"])

            #expect(try await send(app, .DELETE, "/api/v1/users/\(user.id!)", token: admin).status == .noContent)
            let stored = try #require(try await User.find(user.id, on: app.db))
            #expect(stored.status == .deleted)
            #expect(try await send(app, .GET, "/api/v1/auth/me", token: token).status == .unauthorized)
            #expect(try await send(app, .GET, "/api/v1/auth/me", key: key).status == .unauthorized)
            #expect(try await APIKey.query(on: app.db).filter(\.$revokedAt == nil).count() == 0)
            #expect(try await send(app, .GET, "/api/v1/users/\(UUID())", token: admin).status == .notFound)
            #expect(try await send(app, .GET, "/api/v1/users/not-a-uuid", token: admin).status == .notFound)
        }
    }

    @Test("The last active admin cannot be demoted, disabled or deleted")
    func lastAdmin() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let me = try await UserAdminService(app: app).find(email: app.appConfig.adminEmail)
            let id = try me.requireID()
            let demote = try await send(app, .PUT, "/api/v1/users/\(id)/roles", token: admin, json: #"{"roles": ["viewer"]}"#)
            #expect(demote.status == .conflict)
            #expect(try demote.problem().detail?.contains("last active admin") == true)
            #expect(try await send(app, .PATCH, "/api/v1/users/\(id)", token: admin, json: #"{"status": "inactive"}"#).status == .conflict)
            #expect(try await send(app, .DELETE, "/api/v1/users/\(id)", token: admin).status == .conflict)
            #expect(try await UserRole.grants(of: id, on: app.db).roles == ["admin"])

            // With a second admin, the first may step down.
            let other = try await makeUser(app, email: "second-admin@example.com")
            #expect(try await send(app, .PUT, "/api/v1/users/\(other.id!)/roles", token: admin, json: #"{"roles": ["admin"]}"#).status == .ok)
            #expect(try await send(app, .PUT, "/api/v1/users/\(id)/roles", token: admin, json: #"{"roles": ["viewer"]}"#).status == .ok)
            #expect(try await send(app, .GET, "/api/v1/users", token: admin).status == .forbidden, "the demotion applies on the next request")
            #expect(try await send(app, .PUT, "/api/v1/users/\(id)/roles", token: admin, json: #"{"roles": ["emperor"]}"#).status == .forbidden)
        }
    }

    @Test("Unlock lifts a lockout")
    func unlock() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let user = try await makeUser(app, email: "locked@example.com")
            for _ in 1...5 {
                _ = try await send(app, .POST, "/api/v1/auth/login", json: #"{"email": "locked@example.com", "password": "Wrong-Password-1"}"#)
            }
            #expect(try await send(app, .POST, "/api/v1/auth/login", json: #"{"email": "locked@example.com", "password": "\#(strongPassword)"}"#).status == .locked)
            #expect(try await send(app, .POST, "/api/v1/users/\(user.id!)/unlock", token: admin).status == .ok)
            #expect(try await send(app, .POST, "/api/v1/auth/login", json: #"{"email": "locked@example.com", "password": "\#(strongPassword)"}"#).status == .ok)
        }
    }

    @Test("GET /api/v1/roles lists the fixed table")
    func roles() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let res = try await send(app, .GET, "/api/v1/roles", token: admin)
            let roles = try res.content.decode(ListResponse<RoleResponse>.self).items
            #expect(roles.map(\.name) == ["admin", "developer", "executor", "viewer", "service"])
            #expect(roles.first { $0.name == "viewer" }?.permissions == ["analytics:read", "executions:read", "skills:read", "workflows:read"])
            #expect(roles.first { $0.name == "admin" }?.permissions.count == Permission.allCases.count)
        }
    }

    @Test("A new user is a viewer; /me lists roles and permissions; the bootstrapped admin is admin")
    func defaults() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            let me = try (try await send(app, .GET, "/api/v1/auth/me", token: admin)).content.decode(MeResponse.self)
            #expect(me.roles == ["admin"])
            #expect(me.permissions.count == Permission.allCases.count)
            try await makeUser(app, email: "fresh@example.com")
            let token = try await login(app, email: "fresh@example.com").accessToken
            let viewer = try (try await send(app, .GET, "/api/v1/auth/me", token: token)).content.decode(MeResponse.self)
            #expect(viewer.roles == ["viewer"])
            #expect(viewer.permissions == ["analytics:read", "executions:read", "skills:read", "workflows:read"])
        }
    }
}

@Suite("Audit log API")
struct AuditLogAPITests {
    @Test("Filters, pagination and no secrets in any entry")
    func query() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            try await makeUser(app, email: "audited@example.com")
            _ = try await send(app, .POST, "/api/v1/auth/login", json: #"{"email": "audited@example.com", "password": "Wrong-Password-1"}"#)
            let token = try await login(app, email: "audited@example.com").accessToken
            #expect(try await send(app, .GET, "/api/v1/audit-logs", token: token).status == .forbidden)

            let failures = try await send(app, .GET, "/api/v1/audit-logs?action=auth.login&outcome=failure", token: admin)
            #expect(failures.status == .ok)
            let entries = try failures.content.decode(ListResponse<AuditLogController.Entry>.self).items
            #expect(entries.count == 1)
            #expect(entries.first?.details.value == ["emailDigest": .string(app.auditKeys.emailDigest("audited@example.com")), "reason": "wrong_password"])
            #expect(entries.first?.requestId != nil)

            let page = try (try await send(app, .GET, "/api/v1/audit-logs?limit=2", token: admin)).content.decode(ListResponse<AuditLogController.Entry>.self)
            #expect(page.items.count == 2)
            #expect(page.items[0].seq > page.items[1].seq)
            let next = try #require(page.nextCursor)
            let second = try (try await send(app, .GET, "/api/v1/audit-logs?limit=2&cursor=\(next)", token: admin)).content.decode(ListResponse<AuditLogController.Entry>.self)
            #expect(second.items.first.map { $0.seq < page.items[1].seq } == true)

            #expect(try await send(app, .GET, "/api/v1/audit-logs?from=yesterday", token: admin).status == .unprocessableEntity)
            #expect(try await send(app, .GET, "/api/v1/audit-logs?actorId=nope", token: admin).status == .unprocessableEntity)

            let everything = try await AuditLog.query(on: try await app.settledLedger()).all()
            for entry in everything {
                let text = entry.details + (entry.userAgent ?? "")
                for secret in [strongPassword, "Wrong-Password-1", "Bootstrap-Admin-Pass-1", token] {
                    #expect(!text.contains(secret), "\(entry.action) holds a secret")
                }
            }
        }
    }
}

@Suite("User and API key commands")
struct UserCommandTests {
    @Test("user create, list, set-role, unlock, disable and apikey create")
    func commands() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let created = try await app.runCommand(["user", "create", "--email", "cli@example.com", "--username", "cliuser",
                                                    "--password", strongPassword, "--roles", "developer"])
            #expect(created.contains("created cli@example.com"))
            #expect(try await app.runCommand(["user", "list", "--role", "developer"]).contains("cli@example.com"))
            #expect(try await app.runCommand(["user", "set-role", "cli@example.com", "executor,viewer"]).contains("executor,viewer"))
            let key = try await app.runCommand(["apikey", "create", "--user", "cli@example.com", "--scopes", "skills:read"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(key.hasPrefix("stw_"))
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: ["X-API-Key": key]).status == .ok)
            let refused = await #expect(throws: CommandFailure.self) {
                try await app.runCommand(["apikey", "create", "--user", "cli@example.com", "--scopes", "users:manage"])
            }
            #expect(refused?.description.contains("users:manage") == true)
            #expect(try await app.runCommand(["user", "unlock", "cli@example.com"]).contains("unlocked"))
            #expect(try await app.runCommand(["user", "disable", "cli@example.com"]).contains("disabled"))
            #expect(try await UserAdminService(app: app).find(email: "cli@example.com").status == .inactive)
            await #expect(throws: CommandFailure.self) {
                try await app.runCommand(["user", "create", "--email", "bad", "--username", "x", "--password", "short"])
            }
        }
    }
}
