import Crypto
import Fluent
import SQLKit
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
@testable import StewardFormats

/// Sign-in with identity providers (issue 28), against the in-process fake provider, through the real HTTP stack.
@Suite("Identity-provider sign-in")
struct OAuthSignInTests {
    static let done = "https://app.example/done"

    /// One browser: its binding cookie, carried from start to callback.
    struct Browser {
        var binding: String?
    }

    /// Starts a login and returns the provider's authorization URL and the browser's cookie.
    static func start(_ app: Application, provider: String = "corp", redirect: String = done) async throws -> (url: String, browser: Browser) {
        let response = try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/\(provider)/start?redirect=\(FormEncoding.escape(redirect))")
        #expect(response.status == .found, "start: \(response.body.string)")
        let location = try #require(response.headers.first(name: .location))
        let cookie = response.headers.setCookie?[OAuthSignIn.bindingCookie]
        #expect(cookie?.isSecure == true && cookie?.isHTTPOnly == true && cookie?.sameSite == .lax)
        return (location, Browser(binding: cookie?.string))
    }

    static func callback(_ app: Application, provider: String = "corp", query: [(String, String)], browser: Browser) async throws -> TestingHTTPResponse {
        var headers = HTTPHeaders()
        if let binding = browser.binding { headers.add(name: .cookie, value: "\(OAuthSignIn.bindingCookie)=\(binding)") }
        return try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/\(provider)/callback?" + FormEncoding.encode(query), headers: headers)
    }

    /// The query of a redirect's `Location`.
    static func redirectQuery(_ response: TestingHTTPResponse) throws -> [String: String] {
        #expect(response.status == .found, "callback: \(response.status) \(response.body.string)")
        let location = try #require(response.headers.first(name: .location))
        let components = try #require(URLComponents(string: location))
        return Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
    }

    static func exchange(_ app: Application, code: String, cookie: Bool = false) async throws -> TestingHTTPResponse {
        try await app.testing().sendRequest(.POST, "/api/v1/auth/oauth/exchange", headers: ["Content-Type": "application/json"],
                                            body: ByteBuffer(string: #"{"code":"\#(code)","cookie":\#(cookie)}"#))
    }

    /// The whole login as a browser goes through it; returns the exchange's answer.
    static func signIn(_ app: Application, _ idp: FakeIdentityProvider, as person: FakeIdentityProvider.Person, provider: String = "corp") async throws -> TestingHTTPResponse {
        let (url, browser) = try await start(app, provider: provider)
        let (code, state) = try idp.authorize(url, as: person)
        let query = try redirectQuery(try await callback(app, provider: provider, query: [("code", code), ("state", state)], browser: browser))
        return try await exchange(app, code: try #require(query["code"]))
    }

    static func withProvider(signup: Bool = true, _ body: (Application, FakeIdentityProvider) async throws -> Void) async throws {
        try await withTestApp(environment: FakeIdentityProvider.environment(signup: signup)) { app in
            app.useTestDoubles()
            let idp = try FakeIdentityProvider()
            app.useFakeIdentityProvider(idp)
            try await body(app, idp)
        }
    }

    static func count(_ app: Application, _ table: String) async throws -> Int {
        try await (app.db as! any SQLDatabase).raw("SELECT COUNT(*) AS n FROM \(unsafeRaw: table)").first()!.decode(column: "n", as: Int.self)
    }

    static func person(_ name: String = "ada") -> FakeIdentityProvider.Person {
        FakeIdentityProvider.Person(subject: String(Int.random(in: 10_000...99_999_999)), email: "\(name)-\(UUID().uuidString.prefix(6).lowercased())@corp.example")
    }

    // MARK: Sign-up, sign-in, providers

    @Test("The providers list names each configured provider for a login page")
    func providers() async throws {
        try await Self.withProvider { app, _ in
            let response = try await app.testing().sendRequest(.GET, "/api/v1/auth/providers")
            #expect(response.status == .ok)
            #expect(response.body.string == #"{"items":[{"id":"corp","name":"Corp SSO","type":"oidc"},{"id":"github","name":"github","type":"github"}],"nextCursor":null}"#)
        }
    }

    @Test("An unknown identity with a new verified email signs up: an account with the default role, verified, no password, then a session")
    func signUp() async throws {
        try await Self.withProvider { app, idp in
            let person = Self.person()
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .ok, "\(response.body.string)")
            let pair = try response.content.decode(TokenPairResponse.self)
            #expect(pair.user.email == person.email)
            #expect(pair.user.emailVerified)
            #expect(pair.user.fullName == "Ada Lovelace")
            let me = try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(pair.accessToken))
            #expect(me.status == .ok)
            #expect(try me.json()["roles"] == ["viewer"])
            let identities = try await app.testing().sendRequest(.GET, "/api/v1/auth/identities", headers: bearer(pair.accessToken))
            let items = try #require(try identities.json()["items"]?.arrayValue)
            #expect(items.count == 1)
            #expect(items.first?.object?["provider"] == .string("corp"))
            #expect(items.first?.object?["subject"] == .string(person.subject))
            // The account has no password: a password login with anything fails.
            let user = try #require(try await User.query(on: app.db).filter(\.$email == person.email!).first())
            #expect(!user.hasPassword)
            let audit = try await (app.db as! any SQLDatabase).raw("SELECT action FROM audit_logs ORDER BY seq").all(decoding: ActionRow.self)
            #expect(audit.map(\.action).contains("auth.register"))
            #expect(audit.map(\.action).contains("auth.login"))
        }
    }

    struct ActionRow: Decodable { var action: String }

    @Test("A linked identity signs its account in again; a second sign-up does not happen; RS256 keys without alg work")
    func linkedSignIn() async throws {
        try await Self.withProvider { app, idp in
            let person = Self.person()
            let first = try await Self.signIn(app, idp, as: person)
            #expect(first.status == .ok)
            idp.set(\.signWithRSA, true)
            let second = try await Self.signIn(app, idp, as: person)
            #expect(second.status == .ok, "\(second.body.string)")
            #expect(try first.content.decode(TokenPairResponse.self).user.id == second.content.decode(TokenPairResponse.self).user.id)
            #expect(try await Self.count(app, "users") == 1)
        }
    }

    @Test("An unverified provider email makes an unverified account, and a verification mail goes out")
    func unverifiedEmail() async throws {
        try await Self.withProvider { app, idp in
            var person = Self.person()
            person.emailVerified = false
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .ok)
            #expect(try response.content.decode(TokenPairResponse.self).user.emailVerified == false)
        }
    }

    @Test("An account made by a provider sets a password through the reset flow, then signs in with it")
    func passwordThroughReset() async throws {
        try await withTestApp(environment: FakeIdentityProvider.environment()) { app in
            let (mailer, _) = app.useTestDoubles()
            let idp = try FakeIdentityProvider()
            app.useFakeIdentityProvider(idp)
            let person = Self.person()
            #expect(try await Self.signIn(app, idp, as: person).status == .ok)
            let refused = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", beforeRequest: { req in
                try req.content.encode(["email": person.email!, "password": "!"])
            })
            #expect(refused.status == .unauthorized)
            try await app.testing().test(.POST, "/api/v1/auth/password-reset/request", beforeRequest: { req in
                try req.content.encode(["email": person.email!])
            }, afterResponse: { res in #expect(res.status == .accepted) })
            try await MailOutbox(app: app).deliverDue()
            let token = try #require(mailer.token(to: person.email!))
            try await app.testing().test(.POST, "/api/v1/auth/password-reset/confirm", beforeRequest: { req in
                try req.content.encode(["token": token, "newPassword": strongPassword])
            }, afterResponse: { res in #expect(res.status == .noContent) })
            _ = try await login(app, email: person.email!)
        }
    }

    @Test("GitHub: the numeric account id is the subject and the primary verified address the email")
    func github() async throws {
        try await Self.withProvider { app, idp in
            let person = FakeIdentityProvider.Person(subject: "583231", email: "octo-\(UUID().uuidString.prefix(6).lowercased())@github.example", login: "octocat")
            let response = try await Self.signIn(app, idp, as: person, provider: "github")
            #expect(response.status == .ok, "\(response.body.string)")
            let pair = try response.content.decode(TokenPairResponse.self)
            #expect(pair.user.username == "octocat")
            #expect(pair.user.emailVerified)
            let identity = try #require(try await OAuthIdentity.query(on: app.db).filter(\.$provider == "github").first())
            #expect(identity.subject == "583231")
            #expect(idp.requests.contains("GET \(FakeIdentityProvider.githubAPI)/user/emails"))
        }
    }

    // MARK: Who may sign in

    @Test("An unknown identity with the verified email of an existing account is not linked: 409 account_exists, nothing written")
    func accountExists() async throws {
        try await Self.withProvider { app, idp in
            let existing = try await makeUser(app)
            var person = Self.person()
            // In another letter case: emails compare normalised.
            person.email = existing.email.uppercased()
            let identities = try await Self.count(app, "oauth_identities")
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .conflict)
            #expect(try response.problem().code == "account_exists")
            #expect(try await Self.count(app, "oauth_identities") == identities)
            #expect(try await Self.count(app, "sessions") == 0)
        }
    }

    @Test("With sign-up off an unknown identity gets 403 signup_disabled and no account")
    func signupOff() async throws {
        try await Self.withProvider(signup: false) { app, idp in
            let users = try await Self.count(app, "users")
            let response = try await Self.signIn(app, idp, as: Self.person())
            #expect(response.status == .forbidden)
            #expect(try response.problem().code == "signup_disabled")
            #expect(try await Self.count(app, "users") == users)
        }
    }

    @Test("An inactive account cannot sign in through its identity")
    func inactive() async throws {
        try await Self.withProvider { app, idp in
            let person = Self.person()
            #expect(try await Self.signIn(app, idp, as: person).status == .ok)
            try await app.writeStatements { sql in
                try await sql.raw("UPDATE users SET status = 'suspended' WHERE email = \(bind: person.email!)").run()
            }
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .forbidden)
            #expect(try response.problem().code == "account_inactive")
        }
    }

    @Test("A locked account (failed passwords) is locked for provider sign-in too: 423 at the exchange, with Retry-After")
    func locked() async throws {
        var environment = FakeIdentityProvider.environment()
        environment["STEWARD_LOCKOUT_THRESHOLD"] = "2"
        try await withTestApp(environment: environment) { app in
            app.useTestDoubles()
            let idp = try FakeIdentityProvider()
            app.useFakeIdentityProvider(idp)
            let person = Self.person()
            #expect(try await Self.signIn(app, idp, as: person).status == .ok)
            for _ in 0..<2 {
                let wrong = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                                                body: ByteBuffer(string: #"{"email":"\#(person.email!)","password":"not-it-at-all"}"#))
                #expect(wrong.status == .unauthorized)
            }
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .locked)
            #expect(response.headers.first(name: .retryAfter) != nil)
        }
    }

    @Test("An account with TOTP gets mfaRequired after the provider, and signs in with its code")
    func mfa() async throws {
        try await Self.withProvider { app, idp in
            let person = Self.person()
            let pair = try await Self.signIn(app, idp, as: person).content.decode(TokenPairResponse.self)
            let enroll = try await app.testing().sendRequest(.POST, "/api/v1/auth/mfa/totp/enroll", headers: bearer(pair.accessToken))
            let secret = try #require(try enroll.json()["secret"]?.stringValue)
            let key = try #require(Base32.decode(secret))
            let clock = app.wallClock
            let activate = try await app.testing().sendRequest(.POST, "/api/v1/auth/mfa/totp/activate", headers: bearer(pair.accessToken).adding(json: true),
                                                               body: ByteBuffer(string: #"{"code":"\#(TOTP.code(secret: key, step: TOTP.step(at: clock.now())))"}"#))
            #expect(activate.status == .ok)

            (clock as! TestClock).advance(by: 60)
            let response = try await Self.signIn(app, idp, as: person)
            #expect(response.status == .ok)
            let body = try response.json()
            #expect(body["mfaRequired"] == .bool(true))
            #expect(body["accessToken"] == nil)
            let token = try #require(body["mfaToken"]?.stringValue)
            let verify = try await app.testing().sendRequest(.POST, "/api/v1/auth/mfa/verify", headers: ["Content-Type": "application/json"],
                                                             body: ByteBuffer(string: #"{"mfaToken":"\#(token)","code":"\#(TOTP.code(secret: key, step: TOTP.step(at: clock.now())))"}"#))
            #expect(verify.status == .ok, "\(verify.body.string)")
        }
    }

    @Test("cookie=true on the exchange sets the session cookie, as a password login does")
    func cookieMode() async throws {
        try await Self.withProvider { app, idp in
            let (url, browser) = try await Self.start(app)
            let (code, state) = try idp.authorize(url, as: Self.person())
            let callback = try await Self.callback(app, query: [("code", code), ("state", state)], browser: browser)
            // The binding cookie is spent with the state.
            #expect(callback.headers.setCookie?[OAuthSignIn.bindingCookie]?.string == "")
            let query = try Self.redirectQuery(callback)
            let response = try await Self.exchange(app, code: try #require(query["code"]), cookie: true)
            #expect(response.status == .ok)
            #expect(response.headers.setCookie?[SessionAuthenticator.cookieName]?.string.isEmpty == false)
            #expect(try response.content.decode(TokenPairResponse.self).csrfToken != nil)
        }
    }

    // MARK: Link and unlink

    @Test("Link from a session, refuse an identity linked elsewhere, and refuse unlinking the last way to sign in")
    func linkAndUnlink() async throws {
        try await Self.withProvider { app, idp in
            _ = try await makeUser(app, email: "grace@example.com")
            let pair = try await login(app, email: "grace@example.com")
            let person = Self.person()

            // Link: an authenticated POST gives the provider URL and the binding cookie.
            let start = try await app.testing().sendRequest(.POST, "/api/v1/auth/oauth/corp/link", headers: bearer(pair.accessToken).adding(json: true),
                                                            body: ByteBuffer(string: #"{"redirect":"https://app.example/linked"}"#))
            #expect(start.status == .ok, "\(start.body.string)")
            let url = try #require(try start.json()["authorizationUrl"]?.stringValue)
            let browser = Browser(binding: start.headers.setCookie?[OAuthSignIn.bindingCookie]?.string)
            let (code, state) = try idp.authorize(url, as: person)
            let linked = try Self.redirectQuery(try await Self.callback(app, query: [("code", code), ("state", state)], browser: browser))
            #expect(linked["linked"] == "corp")
            #expect(linked["code"] == nil)

            // The identity now signs grace in.
            let signedIn = try await Self.signIn(app, idp, as: person)
            #expect(try signedIn.content.decode(TokenPairResponse.self).user.email == "grace@example.com")

            // Another account cannot link it.
            _ = try await makeUser(app, email: "other@example.com")
            let other = try await login(app, email: "other@example.com")
            let again = try await app.testing().sendRequest(.POST, "/api/v1/auth/oauth/corp/link", headers: bearer(other.accessToken).adding(json: true),
                                                            body: ByteBuffer(string: #"{"redirect":"https://app.example/linked"}"#))
            let url2 = try #require(try again.json()["authorizationUrl"]?.stringValue)
            let (code2, state2) = try idp.authorize(url2, as: person)
            let refused = try Self.redirectQuery(try await Self.callback(app, query: [("code", code2), ("state", state2)],
                                                                         browser: Browser(binding: again.headers.setCookie?[OAuthSignIn.bindingCookie]?.string)))
            #expect(refused["error"] == "identity_in_use")

            // Grace has a password, so she may unlink.
            let list = try await app.testing().sendRequest(.GET, "/api/v1/auth/identities", headers: bearer(pair.accessToken))
            let id = try #require(try list.json()["items"]?.arrayValue?.first?.object?["id"]?.stringValue)
            let unlink = try await app.testing().sendRequest(.DELETE, "/api/v1/auth/identities/\(id)", headers: bearer(pair.accessToken))
            #expect(unlink.status == .noContent)
            #expect(try await Self.count(app, "oauth_identities") == 0)

            // An account made by the provider has no password: its only identity stays.
            let made = try await Self.signIn(app, idp, as: Self.person("solo")).content.decode(TokenPairResponse.self)
            let soloList = try await app.testing().sendRequest(.GET, "/api/v1/auth/identities", headers: bearer(made.accessToken))
            let soloID = try #require(try soloList.json()["items"]?.arrayValue?.first?.object?["id"]?.stringValue)
            let last = try await app.testing().sendRequest(.DELETE, "/api/v1/auth/identities/\(soloID)", headers: bearer(made.accessToken))
            #expect(last.status == .conflict)
            #expect(try last.problem().code == "last_sign_in_method")
            // Nor can one user unlink another's identity: 404.
            let foreign = try await app.testing().sendRequest(.DELETE, "/api/v1/auth/identities/\(soloID)", headers: bearer(pair.accessToken))
            #expect(foreign.status == .notFound)
        }
    }

    // MARK: Forged and broken ID tokens

    /// Runs a login whose ID token `edit` or `forge` spoils; expects a 401 invalid_id_token and no account.
    static func expectRefusedToken(_ app: Application, _ idp: FakeIdentityProvider, _ what: Comment,
                                   edit: (@Sendable (inout [String: JSONValue]) -> Void)? = nil,
                                   forge: (@Sendable ([String: JSONValue]) async throws -> String)? = nil) async throws {
        idp.set(\.claimEdits, edit)
        idp.set(\.tokenForger, forge)
        defer { idp.set(\.claimEdits, nil); idp.set(\.tokenForger, nil) }
        let users = try await count(app, "users")
        let identities = try await count(app, "oauth_identities")
        let sessions = try await count(app, "sessions")
        let response = try await signIn(app, idp, as: person())
        #expect(response.status == .unauthorized, what)
        #expect((try? response.problem().code) == "invalid_id_token", what)
        #expect(try await count(app, "users") == users, what)
        #expect(try await count(app, "oauth_identities") == identities, what)
        #expect(try await count(app, "sessions") == sessions, what)
    }

    @Test("Forged and broken ID tokens are refused with nothing written")
    func forgedTokens() async throws {
        try await Self.withProvider { app, idp in
            let now = app.wallClock.now().timeIntervalSince1970
            try await Self.expectRefusedToken(app, idp, "wrong aud") { $0["aud"] = "someone-else" }
            try await Self.expectRefusedToken(app, idp, "several audiences without azp") { $0["aud"] = [.string(FakeIdentityProvider.clientID), "other"] }
            try await Self.expectRefusedToken(app, idp, "wrong iss") { $0["iss"] = "https://evil.test" }
            try await Self.expectRefusedToken(app, idp, "expired") { $0["exp"] = .number(now - 120); $0["iat"] = .number(now - 600) }
            try await Self.expectRefusedToken(app, idp, "future iat") { $0["iat"] = .number(now + 600) }
            try await Self.expectRefusedToken(app, idp, "not yet valid") { $0["nbf"] = .number(now + 600) }
            try await Self.expectRefusedToken(app, idp, "missing nonce") { $0["nonce"] = nil }
            try await Self.expectRefusedToken(app, idp, "wrong nonce") { $0["nonce"] = "another-sign-in" }
            try await Self.expectRefusedToken(app, idp, "alg none", forge: { claims in
                try FakeIdentityProvider.unsigned(header: ["alg": "none", "kid": "ec-1"], claims: claims) { _ in "" }
            })
            let jwks = try idp.jwks().canonicalString()
            try await Self.expectRefusedToken(app, idp, "HS256 keyed with the public key set", forge: { claims in
                try FakeIdentityProvider.unsigned(header: ["alg": "HS256", "kid": "ec-1", "typ": "JWT"], claims: claims) { input in
                    SecureToken.base64URL(Data(HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(jwks.utf8)))))
                }
            })
            try await Self.expectRefusedToken(app, idp, "unknown kid", forge: { [idp] claims in
                try await idp.signWithStranger(claims, kid: "not-published")
            })
            try await Self.expectRefusedToken(app, idp, "another provider's key under a published kid", forge: { [idp] claims in
                try await idp.signWithStranger(claims)
            })
            try await Self.expectRefusedToken(app, idp, "an EC token under the RSA key's id", forge: { [idp] claims in
                try await idp.signWithStranger(claims, kid: "rsa-1")
            })
            // After all that, an honest token still signs in.
            #expect(try await Self.signIn(app, idp, as: Self.person()).status == .ok)
        }
    }

    @Test("A control character from the provider is never stored: a subject with one is refused, an email or name with one is dropped")
    func controlCharactersFromProvider() async throws {
        try await Self.withProvider { app, idp in
            try await Self.expectRefusedToken(app, idp, "a subject with NUL") { $0["sub"] = "12\u{0}34" }
            try await Self.expectRefusedToken(app, idp, "a subject with a line feed") { $0["sub"] = "12\n34" }

            // A new identity whose email has a NUL has no usable email: no account, as with none at all.
            var unusable = Self.person()
            unusable.email = "ada\u{0}@corp.example"
            let refused = try await Self.signIn(app, idp, as: unusable)
            #expect(refused.status == .forbidden && (try? refused.problem().code) == "email_required", "\(refused.body.string)")
            #expect(try await Self.count(app, "users") == 0)
            #expect(try await Self.count(app, "oauth_identities") == 0)

            // A name with one is left out of the new account; the sign-up still happens.
            var person = Self.person()
            person.name = "Ada\u{0}Lovelace"
            let first = try await Self.signIn(app, idp, as: person)
            #expect(first.status == .ok, "\(first.body.string)")
            let user = try first.content.decode(TokenPairResponse.self).user
            #expect(user.fullName == nil && user.email == person.email)

            // The same identity signing in again with a NUL in its email: signed in, the identity's email dropped.
            person.email = "ada\u{0}@corp.example"
            let again = try await Self.signIn(app, idp, as: person)
            #expect(again.status == .ok, "\(again.body.string)")
            #expect(try again.content.decode(TokenPairResponse.self).user.id == user.id)
            let identity = try #require(try await OAuthIdentity.query(on: app.db).filter(\.$subject == person.subject).first())
            #expect(identity.email == nil && !identity.emailVerified)
        }
    }

    @Test("An unknown kid reads the key set again, at most once a minute, and so finds a rotated key")
    func keyRefreshFloor() async throws {
        try await Self.withProvider { app, idp in
            let clock = app.wallClock as! TestClock
            #expect(try await Self.signIn(app, idp, as: Self.person()).status == .ok)
            let reads = { idp.requests.filter { $0.hasSuffix("/jwks") }.count }
            #expect(reads() == 1)
            clock.advance(by: 61)
            try await Self.expectRefusedToken(app, idp, "unknown kid", forge: { [idp] claims in try await idp.signWithStranger(claims, kid: "k-new") })
            #expect(reads() == 2)
            try await Self.expectRefusedToken(app, idp, "unknown kid again", forge: { [idp] claims in try await idp.signWithStranger(claims, kid: "k-newer") })
            #expect(reads() == 2, "no second read within a minute")

            // The provider rotates to a new key: once the floor has passed, the next token under it signs in.
            idp.set(\.publishRotated, true)
            clock.advance(by: 61)
            idp.set(\.tokenForger, { [idp] claims in try await idp.signWithStranger(claims, kid: "rotated") })
            let response = try await Self.signIn(app, idp, as: Self.person())
            idp.set(\.tokenForger, nil)
            #expect(response.status == .ok, "\(response.body.string)")
            #expect(reads() == 3)
        }
    }

    // MARK: Flow attacks

    @Test("A replayed state, a missing state cookie and another browser's cookie are refused")
    func stateAttacks() async throws {
        try await Self.withProvider { app, idp in
            // Missing cookie.
            let (url, _) = try await Self.start(app)
            let (code, state) = try idp.authorize(url, as: Self.person())
            let noCookie = try await Self.callback(app, query: [("code", code), ("state", state)], browser: Browser(binding: nil))
            #expect(noCookie.status == .badRequest)
            #expect(try noCookie.problem().code == "invalid_oauth_state")

            // Another browser's cookie.
            let (_, otherBrowser) = try await Self.start(app)
            let (url2, browser2) = try await Self.start(app)
            let (code2, state2) = try idp.authorize(url2, as: Self.person())
            let crossed = try await Self.callback(app, query: [("code", code2), ("state", state2)], browser: otherBrowser)
            #expect(crossed.status == .badRequest)

            // The right browser finishes; a replay of the same state does not.
            let good = try await Self.callback(app, query: [("code", code2), ("state", state2)], browser: browser2)
            #expect(try Self.redirectQuery(good)["code"] != nil)
            let replay = try await Self.callback(app, query: [("code", code2), ("state", state2)], browser: browser2)
            #expect(replay.status == .badRequest)
            #expect(try replay.problem().code == "invalid_oauth_state")

            // No state at all, and a state of another provider.
            #expect(try await Self.callback(app, query: [("code", "x")], browser: browser2).status == .badRequest)
            let (url3, browser3) = try await Self.start(app)
            let (code3, state3) = try idp.authorize(url3, as: Self.person())
            #expect(try await Self.callback(app, provider: "github", query: [("code", code3), ("state", state3)], browser: browser3).status == .badRequest)

            // An expired state (10 minutes).
            let (url4, browser4) = try await Self.start(app)
            let (code4, state4) = try idp.authorize(url4, as: Self.person())
            (app.wallClock as! TestClock).advance(by: 601)
            #expect(try await Self.callback(app, query: [("code", code4), ("state", state4)], browser: browser4).status == .badRequest)
        }
    }

    @Test("A PKCE verifier mismatch is refused by the provider, and the exchange answers 401 provider_refused")
    func pkceMismatch() async throws {
        try await Self.withProvider { app, idp in
            let (url, browser) = try await Self.start(app)
            // An attacker's authorization, with a challenge of their own, injected into this browser's callback.
            var components = try #require(URLComponents(string: url))
            components.queryItems = components.queryItems?.map { item in
                item.name == "code_challenge" ? URLQueryItem(name: item.name, value: SecureToken.base64URL(Data(SHA256.hash(data: Data("attacker".utf8))))) : item
            }
            let (code, state) = try idp.authorize(try #require(components.string), as: Self.person())
            let query = try Self.redirectQuery(try await Self.callback(app, query: [("code", code), ("state", state)], browser: browser))
            let response = try await Self.exchange(app, code: try #require(query["code"]))
            #expect(response.status == .unauthorized)
            #expect(try response.problem().code == "provider_refused")
            #expect(try await Self.count(app, "oauth_identities") == 0)
        }
    }

    @Test("A redirect outside the allow-list is refused before anything is stored")
    func openRedirect() async throws {
        try await Self.withProvider { app, _ in
            for redirect in ["https://evil.example/done", "https://app.example/done/../x", "https://app.example/done?next=https://evil.example", "//evil.example", ""] {
                let response = try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/corp/start?redirect=\(FormEncoding.escape(redirect))")
                #expect(response.status == .unprocessableEntity, "\(redirect)")
                #expect(try response.problem().errors?.first?.field == "redirect")
            }
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/corp/start").status == .unprocessableEntity)
            #expect(try await Self.count(app, "oauth_states") == 0)
            let unknown = try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/nope/start?redirect=\(FormEncoding.escape(Self.done))")
            #expect(unknown.status == .notFound)
        }
    }

    @Test("An exchange code works once, and not after 60 seconds")
    func codeReplay() async throws {
        try await Self.withProvider { app, idp in
            let (url, browser) = try await Self.start(app)
            let (code, state) = try idp.authorize(url, as: Self.person())
            let query = try Self.redirectQuery(try await Self.callback(app, query: [("code", code), ("state", state)], browser: browser))
            let oneTime = try #require(query["code"])
            #expect(try await Self.exchange(app, code: oneTime).status == .ok)
            let replay = try await Self.exchange(app, code: oneTime)
            #expect(replay.status == .badRequest)
            #expect(try replay.problem().code == "invalid_oauth_code")

            let (url2, browser2) = try await Self.start(app)
            let (code2, state2) = try idp.authorize(url2, as: Self.person())
            let late = try Self.redirectQuery(try await Self.callback(app, query: [("code", code2), ("state", state2)], browser: browser2))
            (app.wallClock as! TestClock).advance(by: 61)
            #expect(try await Self.exchange(app, code: try #require(late["code"])).status == .badRequest)
            #expect(try await Self.exchange(app, code: "made-up").status == .badRequest)
        }
    }

    @Test("A provider whose discovery is down answers 503 with a problem, and a cached one keeps working")
    func discoveryDown() async throws {
        try await Self.withProvider { app, idp in
            idp.set(\.down, true)
            let response = try await app.testing().sendRequest(.GET, "/api/v1/auth/oauth/corp/start?redirect=\(FormEncoding.escape(Self.done))")
            #expect(response.status == .serviceUnavailable)
            #expect(try response.problem().code == "provider_unavailable")
            #expect(response.headers.first(name: .retryAfter) != nil)
            idp.set(\.down, false)
            #expect(try await Self.signIn(app, idp, as: Self.person()).status == .ok)
            idp.set(\.down, true)
            #expect(try await Self.signIn(app, idp, as: Self.person()).status == .ok)
        }
    }

    @Test("The provider's error on the callback ends in a problem, not a 500")
    func providerError() async throws {
        try await Self.withProvider { app, _ in
            // The person declines at the provider, which sends them back with an error instead of a code.
            let (url, browser2) = try await Self.start(app)
            let state = try #require(URLComponents(string: url)?.queryItems?.first(where: { $0.name == "state" })?.value)
            let query = try Self.redirectQuery(try await Self.callback(app, query: [("error", "access_denied"), ("state", state)], browser: browser2))
            let response = try await Self.exchange(app, code: try #require(query["code"]))
            #expect(response.status == .unauthorized)
            #expect(try response.problem().code == "provider_refused")
        }
    }

    @Test("The callback counts against STEWARD_RATE_LIMIT_LOGIN_IP")
    func callbackRateLimited() async throws {
        var environment = FakeIdentityProvider.environment()
        environment["STEWARD_RATE_LIMIT_LOGIN_IP"] = "2/min"
        try await withTestApp(environment: environment) { app in
            app.useTestDoubles()
            let browser = Browser(binding: nil)
            for _ in 0..<2 {
                let refused = try await Self.callback(app, query: [("state", "x")], browser: browser)
                #expect(refused.status == .badRequest)
            }
            let limited = try await Self.callback(app, query: [("state", "x")], browser: browser)
            #expect(limited.status == .tooManyRequests)
        }
    }

    @Test("Start-up names every bad or missing provider variable")
    func configuration() throws {
        do {
            _ = try AppConfig.parse([
                "STEWARD_OIDC_PROVIDERS": "corp,Bad!,github",
                "STEWARD_OIDC_CORP_ISSUER": "http://idp.example",
                "STEWARD_OIDC_GITHUB_CLIENT_ID": "x",
                "STEWARD_OAUTH_REDIRECT_URLS": "https://ok.example/done,not a url",
            ])
            Issue.record("the configuration was accepted")
        } catch let error as ConfigurationError {
            let text = error.problems.joined(separator: "\n")
            #expect(text.contains("STEWARD_OIDC_PROVIDERS: 'Bad!'"))
            #expect(text.contains("STEWARD_OIDC_CORP_ISSUER: 'http://idp.example' must use https"))
            #expect(text.contains("STEWARD_OIDC_CORP_CLIENT_ID: is required"))
            #expect(text.contains("STEWARD_OIDC_CORP_CLIENT_SECRET: is required"))
            #expect(text.contains("STEWARD_OIDC_GITHUB_CLIENT_SECRET: is required"))
            #expect(!text.contains("STEWARD_OIDC_GITHUB_CLIENT_ID"))
            #expect(text.contains("STEWARD_OAUTH_REDIRECT_URLS: 'not a url'"))
        }
        let config = try AppConfig.parse(FakeIdentityProvider.environment())
        #expect(config.oauthProviders.map(\.id) == ["corp", "github"])
        #expect(config.oauthProviders[1].scopes == ["read:user", "user:email"])
        #expect(try AppConfig.parse([:]).oauthRedirectURLs == ["http://127.0.0.1:8080/console/oauth"])
    }
}

extension HTTPHeaders {
    func adding(json: Bool) -> HTTPHeaders {
        var headers = self
        headers.replaceOrAdd(name: .contentType, value: "application/json")
        return headers
    }
}
