import Fluent
import SQLKit
import Vapor

/// `GET /api/v1/admin/stats` (analytics:read): this instance's request figures for the last 1, 5 and 60 minutes,
/// and database-wide counts of executions, queued work and active users and sessions.
struct AdminStatsController: RouteCollection {
    /// Users and sessions seen this recently count as active.
    static let activeWindow: TimeInterval = 15 * 60
    /// The busiest routes listed per window; the totals count every route.
    static let routesListed = 50

    func boot(routes: any RoutesBuilder) throws {
        let admin = routes.grouped("admin").grouped(RequireCaller(), RequirePermission(.analyticsRead))
        admin.grouped(FeatureGate(.analytics)).get("stats", use: stats)
        admin.get("about", use: about)
    }

    /// `GET /api/v1/admin/about`: what this instance runs, for the console's About page and for support.
    @Sendable
    func about(req: Request) async throws -> AboutResponse {
        let app = req.application
        let (pending, version) = try await MigrationService(app: app).pendingCount(on: req.db)
        return AboutResponse(version: StewardVersion.current, database: app.appConfig.database.isPostgres ? "postgresql" : "sqlite",
                             schemaVersion: version, pendingMigrations: pending, openapi: "/openapi.yaml", metrics: "/metrics",
                             metricsProtected: app.appConfig.metricsToken != nil)
    }

    @Sendable
    func stats(req: Request) async throws -> AdminStatsResponse {
        let app = req.application
        let now = app.wallClock.now()
        let sql = req.db as! any SQLDatabase

        var windows: [String: RequestWindow] = [:]
        for window in RequestStats.windows {
            windows[window.name] = RequestWindow(app.requestStats.window(minutes: window.minutes, at: now), minutes: window.minutes)
        }

        var executions = Dictionary(uniqueKeysWithValues: Execution.Status.allCases.map { ($0.rawValue, 0) })
        for row in try await sql.raw("SELECT status, count(*) AS n FROM executions GROUP BY status").all() {
            executions[try row.decode(column: "status", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }

        let depth = try await QueueFigures.depth(req.db)
        let lag = try await QueueFigures.lagSeconds(req.db, now: now)

        let since = now.addingTimeInterval(-Self.activeWindow)
        let live = SQLQueryString("revoked_at IS NULL AND expires_at > \(bind: now) AND idle_expires_at > \(bind: now)")
        let sessions = try await sql.raw("""
            SELECT count(*) AS live, count(DISTINCT user_id) AS users,
                   coalesce(sum(CASE WHEN last_seen_at >= \(bind: since) THEN 1 ELSE 0 END), 0) AS recent
            FROM sessions WHERE \(live)
            """).first()
        let activeUsers = try await sql.raw("""
            SELECT count(DISTINCT user_id) AS n FROM sessions WHERE \(live) AND last_seen_at >= \(bind: since)
            """).first()?.decode(column: "n", as: Int.self) ?? 0
        let dayAgo = now.addingTimeInterval(-86_400)
        let hooks = try await sql.raw("""
            SELECT count(*) AS total, coalesce(sum(CASE WHEN enabled THEN 0 ELSE 1 END), 0) AS disabled,
                   coalesce(sum(CASE WHEN failing_since IS NOT NULL THEN 1 ELSE 0 END), 0) AS failing FROM webhooks
            """).first()
        // Each count reads its part of the (status, updated_at) index.
        let failedDeliveries = try await sql.raw("""
            SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'failed' AND updated_at >= \(bind: dayAgo)
            """).first()?.decode(column: "n", as: Int.self) ?? 0
        let retrying = try await sql.raw("""
            SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'pending' AND attempt > 1
            """).first()?.decode(column: "n", as: Int.self) ?? 0
        let users = try await sql.raw("SELECT count(*) AS total, coalesce(sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0) AS active FROM users")
            .first()

        return AdminStatsResponse(
            generatedAt: now,
            requests: windows,
            executions: executions,
            queue: QueueStats(
                depth: depth.map { QueueStats.Depth(kind: $0.kind, status: $0.status, count: $0.count) },
                lagSeconds: (lag * 1000).rounded() / 1000),
            users: UserStats(total: try users?.decode(column: "total", as: Int.self) ?? 0,
                             active: try users?.decode(column: "active", as: Int.self) ?? 0,
                             withLiveSession: try sessions?.decode(column: "users", as: Int.self) ?? 0,
                             seenRecently: activeUsers),
            sessions: SessionStats(live: try sessions?.decode(column: "live", as: Int.self) ?? 0,
                                   seenRecently: try sessions?.decode(column: "recent", as: Int.self) ?? 0),
            streams: await app.eventHub.openStreams,
            webhooks: WebhookStats(subscriptions: try hooks?.decode(column: "total", as: Int.self) ?? 0,
                                   disabled: try hooks?.decode(column: "disabled", as: Int.self) ?? 0,
                                   failing: try hooks?.decode(column: "failing", as: Int.self) ?? 0,
                                   failedLast24h: failedDeliveries, retrying: retrying))
    }
}

/// The answer of `GET /api/v1/admin/stats`.
struct AdminStatsResponse: Content {
    var generatedAt: Date
    /// Keyed `last1m`, `last5m`, `last60m`.
    var requests: [String: RequestWindow]
    /// Every execution status, with 0 for those that have none.
    var executions: [String: Int]
    var queue: QueueStats
    var users: UserStats
    var sessions: SessionStats
    /// Open SSE and WebSocket streams on this instance.
    var streams: Int
    var webhooks: WebhookStats
}

/// Webhook subscriptions and deliveries, database-wide.
struct WebhookStats: Content {
    var subscriptions: Int
    var disabled: Int
    /// Subscriptions whose endpoint has been failing (they are disabled if it goes on).
    var failing: Int
    /// Deliveries that gave up in the last 24 hours.
    var failedLast24h: Int
    /// Deliveries waiting for another attempt.
    var retrying: Int
}

/// The answer of `GET /api/v1/admin/about`.
struct AboutResponse: Content {
    var version: String
    /// `sqlite` or `postgresql`.
    var database: String
    /// The newest applied migration.
    var schemaVersion: String?
    var pendingMigrations: Int
    /// Where the contract and the metrics are served.
    var openapi: String
    var metrics: String
    /// Whether /metrics asks for STEWARD_METRICS_TOKEN.
    var metricsProtected: Bool
}

/// Counts, errors and latency percentiles of a set of requests.
struct RequestFigures: Content {
    var count: Int
    var clientErrors: Int
    var serverErrors: Int
    /// Share of requests answered 5xx.
    var errorRate: Double
    var p50Ms: Double?
    var p95Ms: Double?
    var p99Ms: Double?

    init(_ counts: RequestStats.Counts) {
        count = counts.count
        clientErrors = counts.clientErrors
        serverErrors = counts.serverErrors
        errorRate = counts.count == 0 ? 0 : (Double(counts.serverErrors) / Double(counts.count) * 10_000).rounded() / 10_000
        p50Ms = counts.percentile(0.50)
        p95Ms = counts.percentile(0.95)
        p99Ms = counts.percentile(0.99)
    }
}

/// Request figures over one window: the totals, then the busiest routes, each flat in JSON.
struct RequestWindow: Content {
    struct Route: Content {
        var route: String
        var figures: RequestFigures

        private enum CodingKeys: String, CodingKey { case route }

        init(route: String, figures: RequestFigures) {
            self.route = route
            self.figures = figures
        }

        init(from decoder: any Decoder) throws {
            route = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .route)
            figures = try RequestFigures(from: decoder)
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(route, forKey: .route)
            try figures.encode(to: encoder)
        }
    }

    var minutes: Int
    var requestsPerSecond: Double
    var totals: RequestFigures
    var routes: [Route]

    private enum CodingKeys: String, CodingKey { case minutes, requestsPerSecond, routes }

    init(_ counts: [String: RequestStats.Counts], minutes: Int) {
        var total = RequestStats.Counts()
        for value in counts.values { total.merge(value) }
        self.minutes = minutes
        requestsPerSecond = (Double(total.count) / Double(minutes * 60) * 100).rounded() / 100
        totals = RequestFigures(total)
        routes = counts.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key < $1.key }
            .prefix(AdminStatsController.routesListed)
            .map { Route(route: $0.key, figures: RequestFigures($0.value)) }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        minutes = try container.decode(Int.self, forKey: .minutes)
        requestsPerSecond = try container.decode(Double.self, forKey: .requestsPerSecond)
        routes = try container.decode([Route].self, forKey: .routes)
        totals = try RequestFigures(from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(minutes, forKey: .minutes)
        try container.encode(requestsPerSecond, forKey: .requestsPerSecond)
        try container.encode(routes, forKey: .routes)
        try totals.encode(to: encoder)
    }
}

struct QueueStats: Content {
    struct Depth: Content {
        var kind: String
        var status: String
        var count: Int
    }

    /// Queued and running jobs by kind.
    var depth: [Depth]
    /// How long the oldest due job has waited to be claimed, in seconds.
    var lagSeconds: Double
}

struct UserStats: Content {
    var total: Int
    /// Accounts whose status is `active`.
    var active: Int
    /// Users holding at least one live session.
    var withLiveSession: Int
    /// Users whose live session was used in the last 15 minutes.
    var seenRecently: Int
}

struct SessionStats: Content {
    var live: Int
    /// Live sessions used in the last 15 minutes.
    var seenRecently: Int
}
