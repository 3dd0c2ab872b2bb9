import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func attempt(_ app: Application, email: String, password: String) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(.POST, "/api/v1/auth/login", beforeRequest: { req in
        try req.json(["email": email, "password": password])
    })
}

@Suite("POST /api/v1/auth/login")
struct LoginTests {
    @Test("Login returns a token pair whose JWT follows the standard claims")
    func tokenPair() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let user = try await makeUser(app, email: "jwt@example.com")
            let pair = try await login(app, email: "JWT@example.com")
            #expect(pair.tokenType == "Bearer")
            #expect(pair.expiresIn == 900)
            #expect(pair.refreshToken.count >= 43)

            let parts = pair.accessToken.split(separator: ".").map(String.init)
            #expect(parts.count == 3)
            let header = try JSONDecoder().decode([String: String].self, from: try #require(AccessTokens.base64URLDecode(parts[0])))
            #expect(header["alg"] == "HS256")
            #expect(header["typ"] == "JWT")
            guard case .object(let claims) = try JSONDecoder().decode(JSONValue.self, from: try #require(AccessTokens.base64URLDecode(parts[1]))) else {
                Issue.record("claims are not an object")
                return
            }
            #expect(claims["sub"] == .string(user.id!.uuidString.lowercased()))
            #expect(claims["iss"] == .string(app.appConfig.jwtIssuer))
            #expect(claims["aud"] == .array(["steward"]) || claims["aud"] == "steward")
            for claim in ["sid", "iat", "nbf", "exp", "jti", "roles"] { #expect(claims[claim] != nil, "missing \(claim)") }
            if case .number(let iat) = claims["iat"], case .number(let exp) = claims["exp"] {
                #expect(iat == clock.now().timeIntervalSince1970.rounded(.down))
                #expect(exp - iat == 900)
            } else {
                Issue.record("iat/exp are not numbers")
            }
            let stored = try #require(try await User.find(user.id, on: app.db))
            #expect(stored.lastLoginAt != nil)
        }
    }

    @Test("Unknown email and wrong password get the same 401 body")
    func sameFailure() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "known@example.com")
            let wrong = try await attempt(app, email: "known@example.com", password: "Wrong-Password-1")
            let unknown = try await attempt(app, email: "nobody@example.com", password: "Wrong-Password-1")
            #expect(wrong.status == .unauthorized)
            #expect(unknown.status == .unauthorized)
            let a = try wrong.problem(), b = try unknown.problem()
            #expect(a.code == "invalid_credentials")
            #expect(a.code == b.code && a.title == b.title && a.detail == b.detail && a.type == b.type)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.login").filter(\.$outcome == "failure").count() == 2)
        }
    }

    @Test("Five failures lock the email for 15 minutes: even the right password gets 423 with Retry-After")
    func lockout() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "lock@example.com")
            for _ in 1...5 {
                #expect(try await attempt(app, email: "lock@example.com", password: "Wrong-Password-1").status == .unauthorized)
            }
            let locked = try await attempt(app, email: "lock@example.com", password: strongPassword)
            #expect(locked.status == .locked)
            #expect(try locked.problem().code == "account_locked")
            #expect(locked.headers.first(name: "Retry-After") == "900")

            // Failures while locked do not extend the lock.
            clock.advance(by: 600)
            #expect(try await attempt(app, email: "lock@example.com", password: "Wrong-Password-1").status == .locked)
            let later = try await attempt(app, email: "lock@example.com", password: strongPassword)
            #expect(later.headers.first(name: "Retry-After") == "300")

            clock.advance(by: 301)
            #expect(try await attempt(app, email: "lock@example.com", password: strongPassword).status == .ok)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.lockout").count() == 1)
        }
    }

    @Test("Lockout counts per email whether or not the account exists, so 423 reveals nothing")
    func lockoutForUnknownEmail() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            for _ in 1...5 { _ = try await attempt(app, email: "ghost@example.com", password: "Wrong-Password-1") }
            let response = try await attempt(app, email: "Ghost@Example.com", password: "Wrong-Password-1")
            #expect(response.status == .locked)
        }
    }

    @Test("A success resets the failure counter")
    func successResets() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "reset@example.com")
            for _ in 1...4 { _ = try await attempt(app, email: "reset@example.com", password: "Wrong-Password-1") }
            #expect(try await attempt(app, email: "reset@example.com", password: strongPassword).status == .ok)
            for _ in 1...4 { _ = try await attempt(app, email: "reset@example.com", password: "Wrong-Password-1") }
            #expect(try await attempt(app, email: "reset@example.com", password: strongPassword).status == .ok)
        }
    }

    @Test("A user who is not active cannot log in, and their live tokens stop working at the next request")
    func inactiveUsers() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let user = try await makeUser(app, email: "suspend@example.com")
            let pair = try await login(app, email: "suspend@example.com")
            user.status = .suspended
            try await app.writeTransaction { db in try await user.save(on: db) }
            try await app.testing().test(.GET, "/api/v1/auth/me", headers: bearer(pair.accessToken)) { res throws in
                #expect(res.status == .unauthorized)
                #expect(try res.problem().code == "token_revoked")
            }
            #expect(try await attempt(app, email: "suspend@example.com", password: strongPassword).status == .unauthorized)
        }
    }

    @Test("A login at a new bcrypt cost re-hashes the password at that cost")
    func rehash() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory)
        first.useTestDoubles()
        try await makeUser(first, email: "rehash@example.com")
        let before = try #require(try await User.query(on: first.db).first()).passwordHash
        try await first.asyncShutdown()
        #expect(before.hasPrefix("$2b$04$"))

        let second = try await makeTestApp(directory: directory, environment: ["STEWARD_BCRYPT_COST": "5"], freshDatabase: false)
        do {
            second.useTestDoubles()
            _ = try await login(second, email: "rehash@example.com")
            let after = try #require(try await User.query(on: second.db).first()).passwordHash
            #expect(after.hasPrefix("$2b$05$"))
            _ = try await login(second, email: "rehash@example.com")
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }

    @Test("Malformed login bodies are 4xx, never 500")
    func badBodies() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            for body in ["{", #"{"email": 5, "password": "x"}"#, #"{"email": "a@b.c"}"#, "[]", #"{"email": null, "password": null}"#] {
                try await app.testing().test(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"], body: .init(string: body)) { res throws in
                    #expect((400...499).contains(res.status.code), "\(body) gave \(res.status)")
                }
            }
        }
    }
}
