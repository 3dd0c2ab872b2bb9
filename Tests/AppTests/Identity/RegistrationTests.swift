import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("POST /api/v1/auth/register and /me")
struct RegistrationTests {
    @Test("Register answers 201 with the user, never the hash, and writes audit entry and event")
    func register() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await app.testing().test(.POST, "/api/v1/auth/register", beforeRequest: { req in
                try req.json(["email": "  Ada@Example.COM ", "username": "ada", "password": strongPassword, "fullName": "Ada Lovelace"])
            }) { res throws in
                #expect(res.status == .created)
                let body = try res.json()
                #expect(body["email"] == "ada@example.com")
                #expect(body["username"] == "ada")
                #expect(body["status"] == "active")
                #expect(body["emailVerified"] == false)
                #expect(body["passwordHash"] == nil)
                #expect(!res.body.string.contains("$2"))
            }
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.register").count() == 1)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "user.created").count() == 1)
        }
    }

    @Test("The audit log and the event log never hold an email address or a username: sign-up, failed logins, a lockout and a reset for an unknown address name it by a keyed digest or by the user's id")
    func noPersonalDataInTheLogs() async throws {
        try await withTestApp(environment: ["STEWARD_LOCKOUT_THRESHOLD": "3"]) { app in
            let registered = try await app.testing().sendRequest(.POST, "/api/v1/auth/register", headers: ["Content-Type": "application/json"],
                body: .init(string: #"{"email": "Private.Person@example.com", "username": "privateperson", "password": "Correct-Horse-Battery-9", "fullName": "Pat Private"}"#))
            #expect(registered.status == .created)
            for _ in 0..<3 {
                _ = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                    body: .init(string: #"{"email": "private.person@example.com", "password": "Wrong-Password-1"}"#))
            }
            _ = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                body: .init(string: #"{"email": "nobody.here@example.com", "password": "Wrong-Password-1"}"#))
            _ = try await app.testing().sendRequest(.POST, "/api/v1/auth/password-reset/request", headers: ["Content-Type": "application/json"],
                body: .init(string: #"{"email": "nobody.here@example.com"}"#))
            let db = try await app.settledLedger()
            let audit = try await AuditLog.query(on: db).all()
            let events = try await Event.query(on: db).all()
            let text = (audit.map { $0.details + ($0.resourceID ?? "") } + events.map(\.data)).joined(separator: "\n").lowercased()
            for personal in ["private.person@example.com", "privateperson", "pat private", "nobody.here@example.com"] {
                #expect(!text.contains(personal), "\(personal) is in the logs")
            }
            #expect(audit.contains { $0.action == "auth.lockout" }, "the lockout was audited")
            let digest = app.auditKeys.emailDigest("nobody.here@example.com")
            #expect(audit.filter { $0.details.contains(digest) }.count == 2, "the unknown address's login and reset share one digest")
        }
    }

    @Test("A taken email (in any case) or username answers 409 conflict")
    func duplicates() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "taken@example.com", username: "taken")
            for (email, username) in [("TAKEN@example.com", "other"), ("new@example.com", "taken")] {
                try await app.testing().test(.POST, "/api/v1/auth/register", beforeRequest: { req in
                    try req.json(["email": email, "username": username, "password": strongPassword])
                }) { res throws in
                    #expect(res.status == .conflict)
                    #expect(try res.problem().code == "conflict")
                }
            }
            #expect(try await User.query(on: app.db).count() == 1)
        }
    }

    @Test("Weak passwords are refused with 422 naming the rule", arguments: [
        ("short1A", "at least 8"),
        ("alllowercaseletters", "mix at least two"),
        ("password1", "most common"),
        ("qwerty123", "most common"),
        ("Grace.Hopper", "email"),
        (String(repeating: "aB1", count: 43), "at most 128"),
    ])
    func weakPasswords(password: String, rule: String) async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await app.testing().test(.POST, "/api/v1/auth/register", beforeRequest: { req in
                try req.json(["email": "grace.hopper@example.com", "username": "grace", "password": password])
            }) { res throws in
                #expect(res.status == .unprocessableEntity)
                let problem = try res.problem()
                #expect(problem.code == "validation_failed")
                #expect(problem.errors?.contains { $0.field == "password" && $0.message.contains(rule) } == true, "\(String(describing: problem.errors))")
            }
            #expect(try await User.query(on: app.db).count() == 0)
        }
    }

    @Test("A password equal to the username is refused")
    func passwordIsUsername() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await app.testing().test(.POST, "/api/v1/auth/register", beforeRequest: { req in
                try req.json(["email": "x@example.com", "username": "Zebra-Crossing9", "password": "zebra-crossing9"])
            }) { res throws in
                #expect(res.status == .unprocessableEntity)
                #expect(try res.problem().errors?.contains { $0.message.contains("username") } == true)
            }
        }
    }

    @Test("Bad fields are 422 each: invalid email, bad username, missing password, hostile strings")
    func badFields() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let cases: [([String: String], String)] = [
                (["email": "not-an-email", "username": "okname", "password": strongPassword], "email"),
                (["email": "a@b.example", "username": "x", "password": strongPassword], "username"),
                (["email": "a@b.example", "username": "'; DROP TABLE users;--", "password": strongPassword], "username"),
                (["email": "a@b.example", "username": "okname"], "password"),
                (["email": "a@b.example\r\nBcc: victim@example.com", "username": "okname", "password": strongPassword], "email"),
            ]
            for (body, field) in cases {
                try await app.testing().test(.POST, "/api/v1/auth/register", beforeRequest: { req in try req.json(body) }) { res throws in
                    #expect(res.status == .unprocessableEntity, "\(body)")
                    #expect(try res.problem().errors?.contains { $0.field == field } == true, "\(body): \(res.body.string)")
                }
            }
            #expect(try await User.query(on: app.db).count() == 0)
        }
    }

    @Test("GET /auth/me without credentials is 401; with a token it is the caller")
    func me() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await app.testing().test(.GET, "/api/v1/auth/me") { res throws in
                #expect(res.status == .unauthorized)
                #expect(try res.problem().code == "unauthorized")
                #expect(res.headers.first(name: "WWW-Authenticate") != nil)
            }
            let user = try await makeUser(app, email: "me@example.com")
            let pair = try await login(app, email: "me@example.com")
            try await app.testing().test(.GET, "/api/v1/auth/me", headers: bearer(pair.accessToken)) { res throws in
                #expect(res.status == .ok)
                let body = try res.content.decode(MeResponse.self)
                #expect(body.user.id == user.id)
                #expect(body.user.email == "me@example.com")
            }
        }
    }

    @Test("PATCH /auth/me changes the full name and username; fields the caller may not set are 422 and nothing changes")
    func updateMe() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "patch@example.com", username: "patcher")
            try await makeUser(app, email: "other@example.com", username: "occupied")
            let pair = try await login(app, email: "patch@example.com")
            try await app.testing().test(.PATCH, "/api/v1/auth/me", headers: bearer(pair.accessToken), beforeRequest: { req in
                try req.content.encode(["fullName": "New Name", "username": "renamed"])
            }) { res throws in
                #expect(res.status == .ok)
                #expect(try res.json()["fullName"] == "New Name")
                #expect(try res.json()["username"] == "renamed")
            }
            for field in ["status", "emailVerifiedAt", "id", "lockedUntil", "role", "email"] {
                try await app.testing().test(.PATCH, "/api/v1/auth/me", headers: bearer(pair.accessToken), beforeRequest: { req in
                    try req.content.encode(["fullName": "Sneaky", field: "x"])
                }) { res throws in
                    #expect(res.status == .unprocessableEntity, "\(field)")
                    #expect(try res.problem().errors?.contains { $0.field == field } == true)
                }
            }
            try await app.testing().test(.PATCH, "/api/v1/auth/me", headers: bearer(pair.accessToken), beforeRequest: { req in
                try req.content.encode(["username": "occupied"])
            }) { res throws in
                #expect(res.status == .conflict)
            }
            let user = try #require(try await User.query(on: app.db).filter(\.$email == "patch@example.com").first())
            #expect(user.fullName == "New Name")
            #expect(user.status == .active)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "user.updated").count() == 1)
        }
    }

    @Test("Passwords longer than bcrypt's 72 bytes are compared in full")
    func longPasswords() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let prefix = String(repeating: "Ab1-", count: 20)
            try await makeUser(app, email: "long@example.com", password: prefix + "first")
            _ = try await login(app, email: "long@example.com", password: prefix + "first")
            try await app.testing().test(.POST, "/api/v1/auth/login", beforeRequest: { req in
                try req.json(["email": "long@example.com", "password": prefix + "other"])
            }) { res throws in
                #expect(res.status == .unauthorized)
            }
        }
    }
}
