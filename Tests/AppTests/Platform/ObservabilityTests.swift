import Fluent
import Foundation
import Logging
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// Every JSON log line the test process writes once `install()` ran: the real handler, writing to memory.
/// The logging system is process-wide and set once, so tests find their own lines by request id or content.
final class LogCapture: @unchecked Sendable {
    static let shared = LogCapture()
    private static let installed: Void = {
        LoggingSystem.bootstrap { label in
            var handler = JSONLogHandler(label: label, write: { LogCapture.shared.append($0) })
            handler.logLevel = .info
            return handler
        }
    }()

    private let lock = NSLock()
    private var lines: [String] = []

    static func install() { _ = installed }

    func append(_ line: String) {
        lock.withLock {
            lines.append(line)
            if lines.count > 50_000 { lines.removeFirst(10_000) }
        }
    }

    func objects(where matches: ([String: JSONValue]) -> Bool) -> [[String: JSONValue]] {
        lock.withLock { lines }.compactMap { line in
            guard case .object(let object) = JSONValue.parse(line) else { return nil }
            return matches(object) ? object : nil
        }
    }
}

private func get(_ app: Application, _ path: String, token: String? = nil, headers extra: HTTPHeaders = [:]) async throws -> TestingHTTPResponse {
    var headers = extra
    if let token { headers.bearerAuthorization = BearerAuthorization(token: token) }
    return try await app.testing().sendRequest(.GET, path, headers: headers)
}

@Suite("Metrics, admin stats and logs")
struct ObservabilityTests {
    @Test("GET /metrics: request histograms by route pattern and status class, never the raw path; DB and process figures")
    func requestMetrics() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "metrics@example.com")
            let token = try await login(app, email: "metrics@example.com").accessToken
            for _ in 0..<3 { #expect(try await get(app, "/api/v1/auth/me", token: token).status == .ok) }
            let missing = UUID().uuidString.lowercased()
            #expect(try await get(app, "/api/v1/users/\(missing)", token: token).status == .forbidden)
            #expect(try await get(app, "/no-such-page-\(missing)").status == .notFound)

            let response = try await get(app, "/metrics")
            #expect(response.status == .ok)
            #expect(response.headers.contentType?.description.hasPrefix("text/plain") == true)
            let text = response.body.string
            #expect(text.contains(#"steward_http_request_duration_seconds_count{method="GET",route="/api/v1/auth/me",status="2xx"} 3"#))
            #expect(text.contains(#"steward_http_request_duration_seconds_count{method="GET",route="/api/v1/users/:id",status="4xx"} 1"#))
            #expect(text.contains(#"route="(unmatched)",status="4xx"} 1"#))
            #expect(!text.contains(missing), "raw paths never become labels")
            #expect(text.contains("# TYPE steward_http_request_duration_seconds histogram"))
            // The scrape itself is in flight while it renders.
            #expect(try await metricValue(app, "steward_http_requests_in_flight") == 1)
            #expect(try await metricValue(app, "steward_db_query_duration_seconds_count") ?? 0 > 0)
            #expect(try await metricValue(app, "steward_logins_total{step=\"password\",outcome=\"success\"}") == 1)
            #expect(try await metricValue(app, "steward_event_streams_open") == 0)
            #if os(Linux)
            #expect(try await metricValue(app, "process_resident_memory_bytes") ?? 0 > 1_000_000)
            #expect(try await metricValue(app, "process_cpu_seconds_total") ?? 0 > 0)
            #endif
        }
    }

    @Test("STEWARD_METRICS_TOKEN: /metrics answers 401 without the bearer token, 200 with it")
    func metricsToken() async throws {
        let secret = "scrape-token-0123456789"
        try await withTestApp(environment: ["STEWARD_METRICS_TOKEN": secret]) { app in
            let anonymous = try await get(app, "/metrics")
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.headers.contentType?.description.hasPrefix("application/problem+json") == true)
            #expect(!anonymous.body.string.contains("steward_"))
            #expect(try await get(app, "/metrics", token: "scrape-token-wrong-value").status == .unauthorized)
            let allowed = try await get(app, "/metrics", token: secret)
            #expect(allowed.status == .ok)
            #expect(allowed.body.string.contains("steward_http_request_duration_seconds"))
        }
    }

    @Test("Logins are counted by outcome, and 429s by the policy that refused them")
    func loginAndRefusalCounters() async throws {
        try await withTestApp(environment: ["STEWARD_RATE_LIMIT_LOGIN_IP": "3/min"]) { app in
            app.useTestDoubles()
            try await makeUser(app, email: "counted@example.com")
            _ = try await login(app, email: "counted@example.com")
            for _ in 0..<2 {
                let wrong = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                                                  body: .init(string: #"{"email":"counted@example.com","password":"Wrong-Pass-123"}"#))
                #expect(wrong.status == .unauthorized)
            }
            let refused = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                                                body: .init(string: #"{"email":"counted@example.com","password":"Wrong-Pass-123"}"#))
            #expect(refused.status == .tooManyRequests)

            #expect(try await metricValue(app, #"steward_logins_total{step="password",outcome="success"}"#) == 1)
            #expect(try await metricValue(app, #"steward_logins_total{step="password",outcome="invalid_credentials"}"#) == 2)
            #expect(try await metricValue(app, #"steward_logins_total{step="password",outcome="rate_limited"}"#) == 1)
            #expect(try await metricValue(app, #"steward_rate_limit_refusals_total{policy="login_ip"}"#) == 1)
        }
    }

    @Test("Queue depth by kind, job run time, and execution duration by skill and outcome")
    func workMetrics() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            let admin = try await adminToken(app)
            let created = try await app.testing().sendRequest(.POST, "/api/v1/executions", headers: ["Authorization": "Bearer \(admin)", "Content-Type": "application/json"],
                                                              body: .init(string: #"{"skillId": "echo", "input": {"a": 1}}"#))
            #expect(created.status == .accepted)
            #expect(try await metricValue(app, #"steward_job_queue_depth{kind="execution.run",status="queued"}"#) == 1)

            try await drainJobs(app)
            #expect(try await metricValue(app, #"steward_job_queue_depth{kind="execution.run",status="queued"}"#) == 0, "an emptied queue reads 0")
            #expect(try await metricValue(app, #"steward_job_run_duration_seconds_count{kind="execution.run"}"#) == 1)
            #expect(try await metricValue(app, #"steward_execution_duration_seconds_count{skill="echo",outcome="succeeded"}"#) == 1)
        }
    }

    @Test("GET /api/v1/admin/stats: per-route counts, errors and percentiles over 1, 5 and 60 minutes, and work and user counts")
    func adminStats() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            let admin = try await adminToken(app)
            for _ in 0..<4 { #expect(try await get(app, "/api/v1/auth/me", token: admin).status == .ok) }
            let missing = UUID().uuidString.lowercased()
            for _ in 0..<2 { #expect(try await get(app, "/api/v1/users/\(missing)", token: admin).status == .notFound) }
            let created = try await app.testing().sendRequest(.POST, "/api/v1/executions", headers: ["Authorization": "Bearer \(admin)", "Content-Type": "application/json"],
                                                              body: .init(string: #"{"skillId": "echo", "input": {}}"#))
            #expect(created.status == .accepted)

            let first = try await get(app, "/api/v1/admin/stats", token: admin)
            #expect(first.status == .ok)
            let raw = try first.json()
            #expect(raw["requests"]?.object?["last1m"]?.object?["count"] != nil, "window totals sit beside minutes and routes")
            let stats = try first.content.decode(AdminStatsResponse.self)
            let minute = try #require(stats.requests["last1m"])
            let me = try #require(minute.routes.first { $0.route == "GET /api/v1/auth/me" })
            #expect(me.figures.count == 4)
            #expect(me.figures.serverErrors == 0)
            #expect((me.figures.p50Ms ?? 0) > 0 && (me.figures.p50Ms ?? 0) <= (me.figures.p99Ms ?? 0))
            let notFound = try #require(minute.routes.first { $0.route == "GET /api/v1/users/:id" })
            #expect(notFound.figures.clientErrors == 2)
            #expect(minute.routes.allSatisfy { !$0.route.contains(missing) })
            #expect(minute.totals.count >= 8, "login, 4 × me, 2 × 404 and the execution")
            #expect(stats.requests["last5m"]?.totals.count == minute.totals.count)
            #expect(stats.executions["queued"] == 1)
            #expect(stats.executions["succeeded"] == 0)
            #expect(stats.queue.depth.contains { $0.kind == "execution.run" && $0.status == "queued" && $0.count == 1 })
            #expect(stats.users.total == 1)
            #expect(stats.sessions.live == 1)
            #expect(stats.users.withLiveSession == 1)

            // Two minutes on, the last minute is quiet but the last five still hold the calls.
            clock.advance(by: 120)
            let later = try (try await get(app, "/api/v1/admin/stats", token: admin)).content.decode(AdminStatsResponse.self)
            #expect(later.requests["last1m"]?.totals.count == 0)
            #expect(later.requests["last5m"]?.routes.first { $0.route == "GET /api/v1/auth/me" }?.figures.count == 4)
            #expect(later.requests["last60m"]?.routes.first { $0.route == "GET /api/v1/admin/stats" }?.figures.count == 1)
            // After an hour those calls have aged out (the access token has too: sign in again).
            clock.advance(by: 3600)
            let fresh = try await adminToken(app)
            let hourLater = try (try await get(app, "/api/v1/admin/stats", token: fresh)).content.decode(AdminStatsResponse.self)
            #expect(hourLater.requests["last60m"]?.routes.map(\.route) == ["POST /api/v1/auth/login"])
        }
    }

    @Test("GET /api/v1/admin/stats needs analytics:read: 401 anonymous, 403 for a developer")
    func adminStatsPermission() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            #expect(try await get(app, "/api/v1/admin/stats").status == .unauthorized)
            try await makeUser(app, email: "dev@example.com")
            let id = try await UserAdminService(app: app).find(email: "dev@example.com").requireID()
            _ = try await UserAdminService(app: app).setRoles(id, roles: ["developer"], actor: .cli)
            let token = try await login(app, email: "dev@example.com").accessToken
            let refused = try await get(app, "/api/v1/admin/stats", token: token)
            #expect(refused.status == .forbidden)
            #expect(try refused.problem().code == "forbidden")
        }
    }

    @Test("STEWARD_LOG_FORMAT=json: a request's lines carry requestId and, once signed in, userId")
    func jsonLogsNameTheUser() async throws {
        LogCapture.install()
        try await withTestApp(environment: ["STEWARD_LOG_LEVEL": "info"]) { app in
            app.useTestDoubles()
            let user = try await makeUser(app, email: "logged@example.com")
            let token = try await login(app, email: "logged@example.com").accessToken
            let signedIn = "log-\(UUID().uuidString.lowercased())"
            let anonymous = "log-\(UUID().uuidString.lowercased())"
            #expect(try await get(app, "/api/v1/auth/me", token: token, headers: ["X-Request-ID": signedIn]).status == .ok)
            #expect(try await get(app, "/health/live", headers: ["X-Request-ID": anonymous]).status == .ok)

            let lines = LogCapture.shared.objects { $0["requestId"] == .string(signedIn) }
            let access = try #require(lines.first { $0["message"] == "GET /api/v1/auth/me 200" })
            #expect(access["userId"] == .string(try user.requireID().uuidString.lowercased()))
            #expect(access["level"] == "info")
            #expect(access["route"] == "/api/v1/auth/me")
            #expect(access["status"] == "200")
            let anonymousLine = try #require(LogCapture.shared.objects { $0["requestId"] == .string(anonymous) }.first)
            #expect(anonymousLine["userId"] == nil)
        }
    }

    @Test("A statement slower than STEWARD_SLOW_QUERY_MS logs a warning with its duration and SQL, values redacted")
    func slowQueryLog() async throws {
        LogCapture.install()
        try await withTestApp(environment: ["STEWARD_SLOW_QUERY_MS": "5"]) { app in
            let marker = "slow-\(UUID().uuidString.prefix(8).lowercased())"
            let sql = app.db as! any SQLDatabase
            let count = try await sql.raw("""
                WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000)
                SELECT count(*) AS n FROM c WHERE x > 17 AND \(bind: marker) <> 'literal-secret'
                """).first()?.decode(column: "n", as: Int.self)
            #expect(count == 399_983)

            let slow = LogCapture.shared.objects { object in
                object["message"] == "slow query" && (object["sql"]?.stringValue?.contains("WITH RECURSIVE c(x)") ?? false)
            }
            let logged = try #require(slow.first)
            #expect(logged["level"] == "warning")
            let text = logged["sql"]?.stringValue ?? ""
            #expect(!text.contains(marker), "bound values never appear")
            #expect(!text.contains("literal-secret") && !text.contains("400000"), "literals are redacted")
            #expect(Double(logged["durationMs"]?.stringValue ?? "") ?? 0 >= 5)
            #expect(try await metricValue(app, "steward_db_slow_queries_total") ?? 0 >= 1)
        }
    }
}
