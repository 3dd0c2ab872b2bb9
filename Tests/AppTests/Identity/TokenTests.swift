import Crypto
import Fluent
import Foundation
import JWTKit
import Testing
import Vapor
import VaporTesting
@testable import App

private func refresh(_ app: Application, _ token: String) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(.POST, "/api/v1/auth/refresh", beforeRequest: { req in
        try req.json(["refreshToken": token])
    })
}

private func meStatus(_ app: Application, _ token: String) async throws -> (HTTPStatus, String?) {
    let res = try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(token))
    return (res.status, res.status == .ok ? nil : try res.problem().code)
}

@Suite("Tokens and sessions")
struct TokenTests {
    @Test("Refresh rotates: a new pair each time, and the old token repeated within 10 s gets the same pair")
    func rotation() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "rotate@example.com")
            let first = try await login(app, email: "rotate@example.com")

            let second = try await refresh(app, first.refreshToken)
            #expect(second.status == .ok)
            let pair = try second.content.decode(TokenPairResponse.self)
            #expect(pair.refreshToken != first.refreshToken)

            clock.advance(by: 5)
            let repeated = try await refresh(app, first.refreshToken)
            #expect(repeated.status == .ok)
            #expect(try repeated.content.decode(TokenPairResponse.self) == pair)

            // The new token keeps rotating.
            let third = try await refresh(app, pair.refreshToken)
            #expect(third.status == .ok)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.refresh").count() == 2, "one entry per rotation, none for the grace repeat")
        }
    }

    @Test("Reuse of a rotated token after the grace window revokes the whole session")
    func reuseRevokes() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "reuse@example.com")
            let first = try await login(app, email: "reuse@example.com")
            let pair = try (try await refresh(app, first.refreshToken)).content.decode(TokenPairResponse.self)

            clock.advance(by: 11)
            let reuse = try await refresh(app, first.refreshToken)
            #expect(reuse.status == .unauthorized)
            #expect(try reuse.problem().code == "token_revoked")

            #expect(try await meStatus(app, pair.accessToken) == (.unauthorized, "token_revoked"))
            #expect(try await refresh(app, pair.refreshToken).status == .unauthorized)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.refresh_reuse").count() == 1)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "session.revoked").count() == 1)
        }
    }

    @Test("Two concurrent refreshes with the same token both succeed with the same new pair")
    func concurrentRefresh() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "race@example.com")
            let first = try await login(app, email: "race@example.com")
            async let a = refresh(app, first.refreshToken)
            async let b = refresh(app, first.refreshToken)
            let (left, right) = try await (a, b)
            #expect(left.status == .ok)
            #expect(right.status == .ok)
            #expect(try left.content.decode(TokenPairResponse.self).refreshToken == right.content.decode(TokenPairResponse.self).refreshToken)
            #expect(try await RefreshToken.query(on: app.db).count() == 2)
        }
    }

    @Test("Unknown and garbage refresh tokens are 401")
    func badRefreshTokens() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            for token in ["", "nope", String(repeating: "x", count: 5000), "' OR 1=1 --"] {
                let observed87 = try await refresh(app, token).status
                #expect(observed87 == .unauthorized)
            }
        }
    }

    @Test("Logout ends the session at once: the access and refresh tokens stop working")
    func logout() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "bye@example.com")
            let pair = try await login(app, email: "bye@example.com")
            try await app.testing().test(.POST, "/api/v1/auth/logout", headers: bearer(pair.accessToken)) { res throws in
                #expect(res.status == .noContent)
            }
            #expect(try await meStatus(app, pair.accessToken) == (.unauthorized, "token_revoked"))
            #expect(try await refresh(app, pair.refreshToken).status == .unauthorized)
        }
    }

    @Test("Sessions: list marks the current one; revoking another ends it; another user's id is 404")
    func sessions() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "multi@example.com")
            try await makeUser(app, email: "stranger@example.com")
            let laptop = try await login(app, email: "multi@example.com")
            let phone = try await login(app, email: "multi@example.com")
            let stranger = try await login(app, email: "stranger@example.com")

            var phoneSessionID: UUID?
            try await app.testing().test(.GET, "/api/v1/auth/sessions", headers: bearer(laptop.accessToken)) { res throws in
                #expect(res.status == .ok)
                let page = try res.content.decode(ListResponse<SessionResponse>.self)
                #expect(page.items.count == 2)
                #expect(page.items.filter(\.current).count == 1)
                phoneSessionID = page.items.first { !$0.current }?.id
            }
            let phoneID = try #require(phoneSessionID)
            try await app.testing().test(.DELETE, "/api/v1/auth/sessions/\(phoneID)", headers: bearer(stranger.accessToken)) { res throws in
                #expect(res.status == .notFound)
            }
            #expect(try await meStatus(app, phone.accessToken).0 == .ok)
            try await app.testing().test(.DELETE, "/api/v1/auth/sessions/\(phoneID)", headers: bearer(laptop.accessToken)) { res throws in
                #expect(res.status == .noContent)
            }
            #expect(try await meStatus(app, phone.accessToken) == (.unauthorized, "token_revoked"))
            #expect(try await meStatus(app, laptop.accessToken).0 == .ok)
            try await app.testing().test(.DELETE, "/api/v1/auth/sessions/not-a-uuid", headers: bearer(laptop.accessToken)) { res throws in
                #expect(res.status == .notFound)
            }
        }
    }

    @Test("DELETE /auth/sessions revokes every other session and keeps the current one")
    func revokeOthers() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "others@example.com")
            let keep = try await login(app, email: "others@example.com")
            let dropA = try await login(app, email: "others@example.com")
            let dropB = try await login(app, email: "others@example.com")
            try await app.testing().test(.DELETE, "/api/v1/auth/sessions", headers: bearer(keep.accessToken)) { res throws in
                #expect(res.status == .noContent)
            }
            #expect(try await meStatus(app, keep.accessToken).0 == .ok)
            #expect(try await meStatus(app, dropA.accessToken).0 == .unauthorized)
            #expect(try await meStatus(app, dropB.accessToken).0 == .unauthorized)
        }
    }

    @Test("An expired access token is 401 token_expired")
    func expiry() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "expire@example.com")
            let pair = try await login(app, email: "expire@example.com")
            clock.advance(by: 900 + 20)
            #expect(try await meStatus(app, pair.accessToken).0 == .ok, "within the leeway")
            clock.advance(by: 60)
            #expect(try await meStatus(app, pair.accessToken) == (.unauthorized, "token_expired"))
        }
    }

    @Test("A session in use slides its idle expiry: each use a minute or more after the last moves it on; an idle session ends")
    func idleExpirySlides() async throws {
        try await withTestApp(environment: ["STEWARD_SESSION_IDLE_TIMEOUT": "300"]) { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "idle@example.com")
            let pair = try await login(app, email: "idle@example.com")
            let started = clock.now()
            clock.advance(by: 200)
            #expect(try await meStatus(app, pair.accessToken).0 == .ok)
            let session = try #require(try await UserSession.query(on: app.db).all().first)
            #expect(abs(session.lastSeenAt.timeIntervalSince(started) - 200) < 1, "the use is recorded")
            #expect(abs(session.idleExpiresAt.timeIntervalSince(started) - 500) < 1, "the idle expiry moves on with it")
            clock.advance(by: 200)
            #expect(try await meStatus(app, pair.accessToken).0 == .ok, "past the first idle expiry, within the moved one")
            clock.advance(by: 301)
            #expect(try await meStatus(app, pair.accessToken) == (.unauthorized, "token_revoked"), "300 s without a use")
        }
    }

    @Test("A client can refresh with its expired access token still attached; protected routes still refuse it")
    func refreshWithStaleToken() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            try await makeUser(app, email: "stale@example.com")
            let pair = try await login(app, email: "stale@example.com")
            clock.advance(by: 3600)
            #expect(try await meStatus(app, pair.accessToken) == (.unauthorized, "token_expired"))
            let renewed = try await app.testing().sendRequest(.POST, "/api/v1/auth/refresh", headers: bearer(pair.accessToken), beforeRequest: { req in
                try req.json(["refreshToken": pair.refreshToken])
            })
            #expect(renewed.status == .ok)
            let fresh = try renewed.content.decode(TokenPairResponse.self)
            #expect(try await meStatus(app, fresh.accessToken).0 == .ok)
        }
    }

    @Test("Forged tokens are 401, never 500: alg none in any case, bad signatures, other keys, wrong claims")
    func forgedTokens() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "forge@example.com")
            let pair = try await login(app, email: "forge@example.com")
            let parts = pair.accessToken.split(separator: ".").map(String.init)
            func b64(_ text: String) -> String { SecureToken.base64URL(Data(text.utf8)) }

            var forged: [String] = []
            for alg in ["none", "None", "NONE", "nOnE"] {
                forged.append(b64(#"{"alg":"\#(alg)","typ":"JWT"}"#) + "." + parts[1] + ".")
                forged.append(b64(#"{"alg":"\#(alg)","typ":"JWT"}"#) + "." + parts[1] + "." + parts[2])
            }
            forged.append(parts[0] + "." + parts[1] + "." + String(parts[2].reversed()))
            forged.append(b64(#"{"alg":"HS512","typ":"JWT"}"#) + "." + parts[1] + "." + parts[2])
            forged.append(b64(#"{"alg":"HS256","typ":"at+jwt-evil"}"#) + "." + parts[1] + "." + parts[2])
            forged += ["", "a.b", "a.b.c", "....", String(repeating: "A", count: 9000), "eyJhbGciOiJIUzI1NiJ9.e30.", "\u{0}\u{1}"]

            // A well-formed token signed with another secret.
            let otherKeys = JWTKeyCollection()
            await otherKeys.add(hmac: HMACKey(from: "another-secret-that-is-long-enough-123"), digestAlgorithm: .sha256)
            let claims = AccessTokenClaims(
                sub: .init(value: UUID().uuidString), sid: UUID().uuidString, iss: .init(value: app.appConfig.jwtIssuer),
                aud: .init(value: ["steward"]), iat: .init(value: Date()), nbf: .init(value: Date()),
                exp: .init(value: Date().addingTimeInterval(600)), jti: .init(value: "x"), roles: ["admin"])
            forged.append(try await otherKeys.sign(claims))

            for token in forged {
                let res = try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(token))
                #expect(res.status == .unauthorized, "\(token.prefix(60)) gave \(res.status)")
            }
        }
    }

    @Test("A token signed by one instance passes on another with a different STEWARD_PUBLIC_URL; the issuer is not the URL")
    func issuerAcrossInstances() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let secret = ["STEWARD_JWT_SECRET": String(repeating: "two-instances-", count: 4)]
        let first = try await makeTestApp(directory: directory, environment: secret.merging(["STEWARD_PUBLIC_URL": "https://a.steward.test"]) { $1 })
        let second: Application
        do {
            second = try await makeTestApp(directory: directory, environment: secret.merging(["STEWARD_PUBLIC_URL": "https://b.steward.test"]) { $1 },
                                           freshDatabase: false)
        } catch {
            try? await first.asyncShutdown()
            throw error
        }
        do {
            #expect(first.appConfig.jwtIssuer == "steward" && second.appConfig.jwtIssuer == "steward")
            let token = try await adminToken(first)
            let me = try await second.testing().sendRequest(.GET, "/api/v1/auth/me", headers: ["Authorization": "Bearer \(token)"])
            #expect(me.status == .ok, "\(me.body.string)")
            // A token issued before, with the instance's public URL as issuer, still passes on that instance only.
            let claims = try #require(second.verifiedTokens.claims(of: token), "remembered by the instance that checked it")
            var legacy = claims
            legacy.iss = .init(value: "https://b.steward.test")
            var header = JWTHeader()
            header.typ = "JWT"
            let legacyToken = try await second.jwt.keys.sign(legacy, header: header)
            #expect(try await meStatus(second, legacyToken).0 == .ok)
            #expect(try await meStatus(first, legacyToken).0 == .unauthorized)
        } catch {
            try? await second.asyncShutdown()
            try? await first.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
        try await first.asyncShutdown()
    }

    @Test("A token for another audience or issuer is refused")
    func wrongAudience() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let user = try await makeUser(app, email: "aud@example.com")
            let pair = try await login(app, email: "aud@example.com")
            let sid = try #require(try await UserSession.query(on: app.db).first()?.id)
            for (iss, aud) in [(app.appConfig.jwtIssuer, "someone-else"), ("https://evil.example", "steward")] {
                let claims = AccessTokenClaims(
                    sub: .init(value: user.id!.uuidString.lowercased()), sid: sid.uuidString.lowercased(), iss: .init(value: iss),
                    aud: .init(value: [aud]), iat: .init(value: app.wallClock.now()), nbf: .init(value: app.wallClock.now()),
                    exp: .init(value: app.wallClock.now().addingTimeInterval(600)), jti: .init(value: "x"), roles: [])
                var header = JWTHeader()
                header.typ = "JWT"
                let token = try await app.jwt.keys.sign(claims, header: header)
                #expect(try await meStatus(app, token).0 == .unauthorized)
            }
            #expect(try await meStatus(app, pair.accessToken).0 == .ok)
        }
    }

    @Test("Cookie mode: HttpOnly Secure __Host- cookie; unsafe requests need the CSRF token")
    func cookieMode() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "cookie@example.com")
            var cookie: String?
            var csrf: String?
            try await app.testing().test(.POST, "/api/v1/auth/login", beforeRequest: { req in
                try req.content.encode(LoginRequest(email: "cookie@example.com", password: strongPassword, cookie: true))
            }) { res throws in
                #expect(res.status == .ok)
                let setCookie = try #require(res.headers.first(name: .setCookie))
                #expect(setCookie.hasPrefix("__Host-steward_session="))
                for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
                    #expect(setCookie.contains(attribute), "missing \(attribute) in \(setCookie)")
                }
                cookie = String(setCookie.split(separator: ";")[0])
                csrf = try res.content.decode(TokenPairResponse.self).csrfToken
            }
            let sessionCookie = try #require(cookie)
            let csrfToken = try #require(csrf)
            try await app.testing().test(.GET, "/api/v1/auth/me", headers: ["Cookie": sessionCookie]) { res throws in
                #expect(res.status == .ok)
            }
            try await app.testing().test(.POST, "/api/v1/auth/logout", headers: ["Cookie": sessionCookie]) { res throws in
                #expect(res.status == .forbidden)
                #expect(try res.problem().code == "forbidden")
            }
            try await app.testing().test(.POST, "/api/v1/auth/logout", headers: ["Cookie": sessionCookie, "X-CSRF-Token": "wrong"]) { res throws in
                #expect(res.status == .forbidden)
            }
            try await app.testing().test(.POST, "/api/v1/auth/logout", headers: ["Cookie": sessionCookie, "X-CSRF-Token": csrfToken]) { res throws in
                #expect(res.status == .noContent)
            }
            try await app.testing().test(.GET, "/api/v1/auth/me", headers: ["Cookie": sessionCookie]) { res throws in
                #expect(res.status == .unauthorized)
            }
        }
    }
}

@Suite("ES256 access tokens")
struct ES256Tests {
    @Test("ES256 tokens carry a kid published in the JWKS, and verify with a standard ES256 key")
    func es256() async throws {
        try await withTestApp(environment: ["STEWARD_JWT_ALG": "ES256"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "ec@example.com")
            let pair = try await login(app, email: "ec@example.com")
            let header = try JSONDecoder().decode([String: String].self, from: try #require(AccessTokens.base64URLDecode(String(pair.accessToken.split(separator: ".")[0]))))
            #expect(header["alg"] == "ES256")
            let kid = try #require(header["kid"])

            var jwks: JWKS?
            try await app.testing().test(.GET, "/.well-known/jwks.json") { res throws in
                #expect(res.status == .ok)
                jwks = try JSONDecoder().decode(JWKS.self, from: Data(buffer: res.body))
            }
            let set = try #require(jwks)
            #expect(set.keys.count == 1)
            // An independent verifier built only from the published JWKS accepts the token.
            let verifier = JWTKeyCollection()
            try await verifier.add(jwks: set)
            let claims = try await verifier.verify(pair.accessToken, as: AccessTokenClaims.self)
            #expect(claims.sid.isEmpty == false)
            #expect(set.keys.first?.keyIdentifier?.string == kid)
            #expect(try await meStatus(app, pair.accessToken).0 == .ok)
        }
    }

    @Test("After a key rotation, tokens signed by the previous key still verify and both keys are published")
    func rotation() async throws {
        let keys = try TemporaryDirectory()
        defer { keys.remove() }
        let oldKey = keys.path + "/old.pem", newKey = keys.path + "/new.pem"
        try ES256PrivateKey().pemRepresentation.write(toFile: oldKey, atomically: true, encoding: .utf8)
        try ES256PrivateKey().pemRepresentation.write(toFile: newKey, atomically: true, encoding: .utf8)

        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let before = try await makeTestApp(directory: directory, environment: ["STEWARD_JWT_ALG": "ES256", "STEWARD_JWT_KEY_FILE": oldKey])
        before.useTestDoubles()
        try await makeUser(before, email: "rotate-key@example.com")
        let oldToken = try await login(before, email: "rotate-key@example.com").accessToken
        try await before.asyncShutdown()

        let after = try await makeTestApp(directory: directory, environment: [
            "STEWARD_JWT_ALG": "ES256", "STEWARD_JWT_KEY_FILE": newKey, "STEWARD_JWT_PREVIOUS_KEY_FILES": oldKey,
        ], freshDatabase: false)
        do {
            after.useTestDoubles()
            #expect(try await meStatus(after, oldToken).0 == .ok)
            let newToken = try await login(after, email: "rotate-key@example.com").accessToken
            #expect(try await meStatus(after, newToken).0 == .ok)
            try await after.testing().test(.GET, "/.well-known/jwks.json") { res throws in
                #expect(try JSONDecoder().decode(JWKS.self, from: Data(buffer: res.body)).keys.count == 2)
            }
        } catch {
            try? await after.asyncShutdown()
            throw error
        }
        try await after.asyncShutdown()
    }

    @Test("HS256 publishes an empty key set")
    func hs256JWKS() async throws {
        try await withTestApp { app in
            try await app.testing().test(.GET, "/.well-known/jwks.json") { res throws in
                #expect(res.status == .ok)
                #expect(res.body.string == #"{"keys":[]}"#)
            }
        }
    }
}
