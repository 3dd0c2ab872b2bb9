import Foundation
import NIOConcurrencyHelpers
import Prometheus
import Vapor

/// The application's Prometheus metrics: one registry per application, typed recorders for each measurement,
/// and the gauges that are read when `/metrics` is scraped.
///
/// Every label has a bounded set of values: route patterns (never raw paths), a fixed list of methods, status
/// classes, job kinds and outcomes chosen by code. Skill names are the one open set; the first
/// `LabelBudget.limit` distinct names get their own series and the rest are counted under `other`.
final class AppMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    private let inFlight: Gauge
    private let inFlightCount = NIOLockedValueBox(0)
    /// Labelled series, made once and then looked up: the registry's own lookup validates names on every call.
    private let histograms = NIOLockedValueBox<[String: DurationHistogram]>([:])
    private let queryDuration: DurationHistogram
    private let slowQueries: Counter
    private let skillLabels = LabelBudget(limit: 100)
    private let counters = NIOLockedValueBox<[String: Counter]>([:])

    static let httpBuckets: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                          .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                          .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]
    static let queryBuckets: [Duration] = [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                                           .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                           .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5)]
    static let workBuckets: [Duration] = [.milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250),
                                          .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
                                          .seconds(30), .seconds(60), .seconds(300), .seconds(900), .seconds(3600)]
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        inFlight = registry.makeGauge(descriptor: Self.descriptor("http_requests_in_flight", "", "HTTP requests being served."))
        queryDuration = registry.makeDurationHistogram(
            descriptor: Self.descriptor("db_query_duration", "seconds", "Database statements, from sending to the last row read."),
            buckets: Self.queryBuckets)
        slowQueries = registry.makeCounter(descriptor: Self.descriptor("db_slow_queries", "total", "Statements slower than STEWARD_SLOW_QUERY_MS."))
    }

    static func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "steward", metricName: name, unitName: unit, helpText: help)
    }

    // MARK: HTTP

    func requestStarted() {
        inFlight.increment()
        inFlightCount.withLockedValue { $0 += 1 }
    }

    func requestFinished() {
        inFlight.decrement()
        inFlightCount.withLockedValue { $0 -= 1 }
    }

    /// Requests whose handler has not returned yet (a stream counts only until its response starts).
    var requestsInFlight: Int { inFlightCount.withLockedValue { $0 } }

    /// The method as a label: unknown methods share `OTHER`, so clients cannot mint series.
    static func methodLabel(_ method: String) -> String {
        knownMethods.contains(method) ? method : "OTHER"
    }

    /// One answered request, labelled by route pattern, method and status class (`2xx` … `5xx`).
    func recordRequest(method: String, route: String, status: UInt, duration: Duration) {
        let statusClass = "\(min(max(status / 100, 1), 5))xx"
        histogram("http_request_duration", "HTTP requests by route pattern, method and status class.",
                  [("method", Self.methodLabel(method)), ("route", route), ("status", statusClass)], Self.httpBuckets).record(duration)
    }

    // MARK: Database

    func recordQuery(_ duration: Duration, slow: Bool) {
        queryDuration.record(duration)
        if slow { slowQueries.increment() }
    }

    // MARK: Jobs and executions

    /// One job run to its end (whatever the outcome), by kind.
    func recordJobRun(kind: String, duration: Duration) {
        histogram("job_run_duration", "Job handler runs by kind.", [("kind", kind)], Self.workBuckets).record(duration)
    }

    /// An execution a worker ended, by skill slug and final status.
    func recordExecution(skill: String, outcome: String, duration: Duration) {
        histogram("execution_duration", "Executions from start (or queueing) to their final status, by skill and outcome.",
                  [("skill", skillLabels.label(for: skill)), ("outcome", outcome)], Self.workBuckets).record(duration)
    }

    // MARK: MCP

    /// One JSON-RPC message on the MCP endpoint, by method (known ones only) and outcome (`ok`, `error`).
    func recordMCPRequest(method: String, outcome: String) {
        let known = ["initialize", "notifications/initialized", "notifications/cancelled", "ping", "server/discover", "tools/list",
                     "tools/call", "resources/list", "resources/templates/list", "resources/read", "subscriptions/listen"]
        counter("mcp_requests", "MCP JSON-RPC messages by method and outcome.",
                [("method", known.contains(method) ? method : "other"), ("outcome", outcome)]).increment()
    }

    /// A `tools/call` from its start to its answer, by outcome (the execution's status, `timeout`, `refused`…).
    func recordMCPToolCall(outcome: String, duration: Duration) {
        histogram("mcp_tool_call_duration", "MCP tool calls from request to answer, by outcome.", [("outcome", outcome)], Self.workBuckets)
            .record(duration)
    }

    private func histogram(_ name: String, _ help: String, _ labels: [(String, String)], _ buckets: [Duration]) -> DurationHistogram {
        let key = Self.key(name, labels)
        return histograms.withLockedValue { cache in
            if let existing = cache[key] { return existing }
            let made = registry.makeDurationHistogram(descriptor: Self.descriptor(name, "seconds", help), labels: labels, buckets: buckets)
            cache[key] = made
            return made
        }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        ([name] + labels.map { "\($0.0)=\($0.1)" }).joined(separator: "\u{0}")
    }

    // MARK: Counters

    /// Webhook delivery attempts by outcome: `succeeded`, `retrying` or `failed` (no attempt left, or disabled).
    func recordWebhookDelivery(outcome: String) {
        counter("webhook_deliveries", "Webhook delivery attempts by outcome.", [("outcome", outcome)]).increment()
    }

    /// Logins by step (`password`, `mfa`) and outcome.
    func recordLogin(step: String, outcome: String) {
        counter("logins", "Login attempts by step and outcome.", [("step", step), ("outcome", outcome)]).increment()
    }

    func recordRateLimitRefusal(policy: String) {
        counter("rate_limit_refusals", "Requests refused with 429 by rate-limit policy.", [("policy", policy)]).increment()
    }

    /// A request that lost a PostgreSQL write conflict and was run again (`WriteConflictRetryMiddleware`).
    func writeConflictRetried() {
        counter("write_conflict_retries", "Requests run again after a PostgreSQL write conflict.", []).increment()
    }

    /// The database rate-limit store could not answer (the request went on, or got 503 on auth routes).
    func recordRateLimitStoreFailure() {
        counter("rate_limit_store_failures", "Rate-limit decisions the store could not make.", []).increment()
    }

    private func counter(_ name: String, _ help: String, _ labels: [(String, String)]) -> Counter {
        let key = Self.key(name, labels)
        return counters.withLockedValue { cache in
            if let existing = cache[key] { return existing }
            let made = registry.makeCounter(descriptor: Self.descriptor(name, "total", help), labels: labels)
            cache[key] = made
            return made
        }
    }
}

/// Hands out at most `limit` distinct label values; later newcomers share `other`, so a metric's series stay bounded.
final class LabelBudget: Sendable {
    private let seen = NIOLockedValueBox<Set<String>>([])
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    func label(for value: String) -> String {
        seen.withLockedValue { seen in
            if seen.contains(value) { return value }
            guard seen.count < limit else { return "other" }
            seen.insert(value)
            return value
        }
    }
}

extension Application {
    private struct MetricsKey: StorageKey { typealias Value = AppMetrics }

    /// Set once in `configure`.
    var metrics: AppMetrics {
        get { storage[MetricsKey.self]! }
        set { storage[MetricsKey.self] = newValue }
    }
}
