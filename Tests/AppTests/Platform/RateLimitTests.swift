import Fluent
import Foundation
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App

private func postJSON(_ app: Application, _ path: String, _ body: [String: String], headers: HTTPHeaders = [:]) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(.POST, path, headers: headers, beforeRequest: { req in try req.json(body) })
}

@Suite("Rate limiting")
struct RateLimitTests {
    @Test("GCRA: a full window's worth at once, then one per interval")
    func gcraArithmetic() {
        let policy = RateLimitPolicy(name: "login", limit: 10, window: 60)
        var tat: Double?
        for index in 0..<10 {
            let (decision, next) = RateLimitDecision.decide(policy: policy, storedTAT: tat, now: 1000)
            #expect(decision.allowed)
            #expect(decision.remaining == 9 - index)
            tat = next
        }
        let (refused, unchanged) = RateLimitDecision.decide(policy: policy, storedTAT: tat, now: 1000)
        #expect(!refused.allowed)
        #expect(unchanged == nil)
        #expect(refused.resetSeconds == 6)
        #expect(RateLimitDecision.decide(policy: policy, storedTAT: tat, now: 1005.9).0.allowed == false)
        #expect(RateLimitDecision.decide(policy: policy, storedTAT: tat, now: 1006).0.allowed)
        #expect(RateLimitPolicy.parse(name: "x", "30/minute") == RateLimitPolicy(name: "x", limit: 30, window: 60))
        #expect(RateLimitPolicy.parse(name: "x", "ten/min") == nil)
    }

    @Test("Rates take any multiple of a unit as their window, up to 30 days")
    func anyWindow() throws {
        #expect(RateLimitPolicy.parse(name: "x", "100/15min") == RateLimitPolicy(name: "x", limit: 100, window: 900))
        #expect(RateLimitPolicy.parse(name: "x", "5/2h") == RateLimitPolicy(name: "x", limit: 5, window: 7200))
        #expect(RateLimitPolicy.parse(name: "x", "10/30s") == RateLimitPolicy(name: "x", limit: 10, window: 30))
        #expect(RateLimitPolicy.parse(name: "x", "1000/7days") == RateLimitPolicy(name: "x", limit: 1000, window: 7 * 86_400))
        for bad in ["10/0min", "10/31d", "10/15", "10/-5min", "10/1.5h", "10/min5", "10/15 parsecs"] {
            #expect(RateLimitPolicy.parse(name: "x", bad) == nil, "\(bad)")
        }
        #expect(try AppConfig.parse(["STEWARD_RATE_LIMIT_API": "100/15min"]).rateLimits["api"]?.window == 900)
        #expect(throws: ConfigurationError.self) { try AppConfig.parse(["STEWARD_RATE_LIMIT_GLOBAL": "lots"]) }
        #expect(try AppConfig.parse([:]).rateLimits["global"]?.isOff == true)
    }

    @Test("The global limit caps every /api/v1 request together, names the global policy, and exempts sign-in and health")
    func globalLimit() async throws {
        try await withTestApp(environment: ["STEWARD_RATE_LIMIT_GLOBAL": "3/min", "STEWARD_RATE_LIMIT_API": "0", "STEWARD_RATE_LIMIT_ANONYMOUS": "0"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "carol@example.com")
            try await makeUser(app, email: "dave@example.com")
            // Sign-in does not count and is never refused by the global cap.
            let carol = try await login(app, email: "carol@example.com").accessToken
            let dave = try await login(app, email: "dave@example.com").accessToken
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(carol)).status == .ok)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(dave)).status == .ok)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/skills").status == .unauthorized)
            // Three requests from three callers used the whole service's budget.
            let over = try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(dave))
            #expect(over.status == .tooManyRequests)
            #expect(try over.problem().errors?.first?.field == "global")
            #expect(over.headers.first(name: "RateLimit-Policy")?.contains("\"global\"") == true)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/skills").status == .tooManyRequests)
            _ = try await login(app, email: "carol@example.com")
            #expect(try await app.testing().sendRequest(.GET, "/health/live").status == .ok)
            // A minute later the budget is back.
            (app.wallClock as! TestClock).advance(by: 61)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(carol)).status == .ok)
        }
    }

    @Test("Login: per IP and email, then per IP; headers on every answer; 429 names the policy with Retry-After")
    func loginPolicies() async throws {
        try await withTestApp(environment: ["STEWARD_RATE_LIMIT_LOGIN": "3/min", "STEWARD_RATE_LIMIT_LOGIN_IP": "5/min"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "alice@example.com")
            for attempt in 0..<3 {
                let res = try await postJSON(app, "/api/v1/auth/login", ["email": "Alice@Example.com", "password": "wrong-password-1"])
                #expect(res.status == .unauthorized)
                #expect(res.headers.first(name: "RateLimit-Policy")?.contains(#""login";q=3;w=60"#) == true)
                #expect(res.headers.first(name: "RateLimit")?.contains(#""login";r=\#(2 - attempt);"#) == true, "\(res.headers)")
            }
            // Even the right password is refused now: the limit is on attempts, for admins too.
            let refused = try await postJSON(app, "/api/v1/auth/login", ["email": "alice@example.com", "password": strongPassword])
            #expect(refused.status == .tooManyRequests)
            let problem = try refused.problem()
            #expect(problem.code == "rate_limited")
            #expect(problem.errors?.first?.field == "login")
            let retryAfter = try #require(refused.headers.first(name: "Retry-After").flatMap(Int.init))
            #expect(retryAfter >= 20 && retryAfter <= 60, "one attempt comes back after 20 s")

            // Another email from the same IP goes on until the per-IP limit (5) is spent.
            // (A refused attempt spends nothing: alice's three count, so bob and carol make five.)
            #expect(try await postJSON(app, "/api/v1/auth/login", ["email": "bob@example.com", "password": "x-wrong-pass"]).status == .unauthorized)
            #expect(try await postJSON(app, "/api/v1/auth/login", ["email": "carol@example.com", "password": "x-wrong-pass"]).status == .unauthorized)
            let ipRefused = try await postJSON(app, "/api/v1/auth/login", ["email": "dave@example.com", "password": "x-wrong-pass"])
            #expect(ipRefused.status == .tooManyRequests)
            #expect(try ipRefused.problem().errors?.first?.field == "login_ip")
        }
    }

    @Test("Forwarded addresses count only from trusted proxies")
    func trustedProxies() async throws {
        for trusted in [true, false] {
            try await withTestApp(environment: ["STEWARD_RATE_LIMIT_REGISTER": "1/hour", "STEWARD_TRUSTED_PROXIES": trusted ? "127.0.0.1/32" : ""]) { app in
                app.useTestDoubles()
                let tester = try app.live()
                func register(_ name: String, from client: String) async throws -> HTTPStatus {
                    try await tester.sendRequest(.POST, "/api/v1/auth/register", headers: ["X-Forwarded-For": "198.51.100.9, \(client)"],
                                                 beforeRequest: { req in
                        try req.json(["email": "\(name)@example.com", "username": name, "password": strongPassword, "fullName": name])
                    }).status
                }
                #expect(try await register("first", from: "203.0.113.5") == .created)
                #expect(try await register("second", from: "203.0.113.5") == .tooManyRequests)
                // A different client behind the proxy has its own budget, but only if the proxy is trusted.
                #expect(try await register("third", from: "203.0.113.6") == (trusted ? .created : .tooManyRequests))
            }
        }
    }

    @Test("General limits: per user or key when signed in, per IP when anonymous; execution creation per user")
    func generalLimits() async throws {
        try await withTestApp(environment: ["STEWARD_RATE_LIMIT_API": "4/min", "STEWARD_RATE_LIMIT_ANONYMOUS": "4/min",
                                            "STEWARD_RATE_LIMIT_EXECUTIONS": "2/min"]) { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            for email in ["alice@example.com", "bob@example.com"] {
                try await makeUser(app, email: email)
                _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: email).requireID(), roles: ["executor"], actor: .cli)
            }
            let alice = try await login(app, email: "alice@example.com").accessToken
            let bob = try await login(app, email: "bob@example.com").accessToken
            for _ in 0..<2 {
                let created = try await app.testing().sendRequest(.POST, "/api/v1/executions",
                    headers: ["Authorization": "Bearer \(alice)", "Content-Type": "application/json"], body: .init(string: #"{"skillId":"echo"}"#))
                #expect(created.status == .accepted)
            }
            let third = try await app.testing().sendRequest(.POST, "/api/v1/executions",
                headers: ["Authorization": "Bearer \(alice)", "Content-Type": "application/json"], body: .init(string: #"{"skillId":"echo"}"#))
            #expect(third.status == .tooManyRequests)
            #expect(try third.problem().errors?.first?.field == "executions")
            // Alice has now used 3 of her 4 API requests; the 5th is refused, Bob is unaffected.
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(alice)).status == .ok)
            let over = try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(alice))
            #expect(over.status == .tooManyRequests)
            #expect(try over.problem().errors?.first?.field == "api")
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(bob)).status == .ok)

            // Anonymous calls spend the IP's budget (the two logins above were anonymous too), even when they are
            // refused for lack of credentials.
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/skills").status == .unauthorized)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/skills").status == .unauthorized)
            let anonymous = try await app.testing().sendRequest(.GET, "/api/v1/skills")
            #expect(anonymous.status == .tooManyRequests)
            #expect(try anonymous.problem().errors?.first?.field == "anonymous")
        }
    }

    @Test("Mails per address and MFA tries per token")
    func mailAndMFA() async throws {
        try await withTestApp(environment: ["STEWARD_RATE_LIMIT_MAIL": "2/hour", "STEWARD_RATE_LIMIT_MFA": "3", "STEWARD_LOCKOUT_THRESHOLD": "50"]) { app in
            let (mailer, clock) = app.useTestDoubles()
            try await makeUser(app, email: "alice@example.com")
            _ = try await MailOutbox(app: app).deliverDue()
            let before = mailer.sent.filter { $0.to == "alice@example.com" }.count
            for _ in 0..<2 {
                #expect(try await postJSON(app, "/api/v1/auth/password-reset/request", ["email": "alice@example.com"]).status == .accepted)
            }
            #expect(try await postJSON(app, "/api/v1/auth/password-reset/request", ["email": "ALICE@example.com"]).status == .tooManyRequests)
            #expect(try await postJSON(app, "/api/v1/auth/password-reset/request", ["email": "bob@example.com"]).status == .accepted)
            _ = try await MailOutbox(app: app).deliverDue()
            #expect(mailer.sent.filter { $0.to == "alice@example.com" }.count == before + 2)

            // MFA: enrol, then guess codes on one mfaToken.
            let pair = try await login(app, email: "alice@example.com")
            let enrolled = try await postJSON(app, "/api/v1/auth/mfa/totp/enroll", [:], headers: bearer(pair.accessToken))
            let secret = try #require(Base32.decode(try enrolled.content.decode(TOTPEnrollResponse.self).secret))
            let code = TOTP.code(secret: secret, step: TOTP.step(at: clock.now()))
            #expect(try await postJSON(app, "/api/v1/auth/mfa/totp/activate", ["code": code], headers: bearer(pair.accessToken)).status == .ok)
            clock.advance(by: 30)
            let challenge = try await postJSON(app, "/api/v1/auth/login", ["email": "alice@example.com", "password": strongPassword])
            guard case .string(let token) = try challenge.json()["mfaToken"] else { Issue.record("no mfaToken"); return }
            for _ in 0..<3 {
                #expect(try await postJSON(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": "000000"]).status.code < 429)
            }
            let good = TOTP.code(secret: secret, step: TOTP.step(at: clock.now()))
            let refused = try await postJSON(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": good])
            #expect(refused.status == .tooManyRequests, "the fourth try is refused, even with the right code")
            #expect(try refused.problem().errors?.first?.field == "mfa")
        }
    }

    @Test("The database store is shared by instances; when it fails, auth routes fail closed and the rest open")
    func databaseStore() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let env = ["STEWARD_RATE_LIMIT_STORE": "database", "STEWARD_RATE_LIMIT_LOGIN": "3/min", "STEWARD_RATE_LIMIT_API": "100/min",
                   "STEWARD_JWT_SECRET": String(repeating: "shared-", count: 6)]
        let a = try await makeTestApp(directory: directory, environment: env)
        let b = try await makeTestApp(directory: directory, environment: env, freshDatabase: false, migrate: false)
        do {
            a.useTestDoubles(); b.useTestDoubles()
            try await makeUser(a, email: "alice@example.com")
            let wrong = ["email": "alice@example.com", "password": "wrong-password-1"]
            #expect(try await postJSON(a, "/api/v1/auth/login", wrong).status == .unauthorized)
            #expect(try await postJSON(b, "/api/v1/auth/login", wrong).status == .unauthorized)
            #expect(try await postJSON(a, "/api/v1/auth/login", wrong).status == .unauthorized)
            #expect(try await postJSON(b, "/api/v1/auth/login", wrong).status == .tooManyRequests, "the fourth attempt, on either instance")

            try await makeUser(a, email: "bob@example.com")
            let bob = try await login(a, email: "bob@example.com").accessToken
            // The store goes away.
            try await (a.db as! any SQLDatabase).raw("DROP TABLE rate_limits").run()
            let me = try await a.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(bob))
            #expect(me.status == .ok, "non-auth routes fail open")
            #expect(try await metricValue(a, "steward_rate_limit_store_failures_total") ?? 0 > 0, "counted for /metrics")
            let closed = try await postJSON(a, "/api/v1/auth/login", ["email": "bob@example.com", "password": strongPassword])
            #expect(closed.status == .serviceUnavailable, "auth routes fail closed")
        } catch {
            try? await b.asyncShutdown(); try? await a.asyncShutdown()
            throw error
        }
        try await b.asyncShutdown()
        try await a.asyncShutdown()
    }
}
