import Fluent
import Foundation
import NIOConcurrencyHelpers
import Prometheus
import SQLKit
import Vapor

/// `GET /metrics`: Prometheus text. Open, or behind `Authorization: Bearer <STEWARD_METRICS_TOKEN>` when that is set.
struct MetricsController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        routes.get("metrics", use: metrics)
    }

    @Sendable
    func metrics(req: Request) async throws -> Response {
        if let expected = req.application.appConfig.metricsToken {
            guard let sent = req.headers.bearerAuthorization?.token,
                  SecureToken.constantTimeEquals(SecureToken.hash(sent), SecureToken.hash(expected))
            else { throw AuthError.unauthenticated }
        }
        let text = try await req.application.metricsScrape.emit(req.application)
        var headers = HTTPHeaders()
        headers.contentType = HTTPMediaType(type: "text", subType: "plain", parameters: ["version": "0.0.4", "charset": "utf-8"])
        headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        return Response(status: .ok, headers: headers, body: .init(string: text))
    }
}

/// Refreshes the gauges that are read rather than counted (queue depth, open streams, process figures), then
/// renders the registry; one scrape at a time, so the refreshed values and the text agree.
final class MetricsScrape: Sendable {
    private struct State {
        var depthSeries: Set<String> = []
        var cpuSecondsReported = 0.0
    }

    private let state = NIOLockedValueBox(State())
    private let lock = AsyncSemaphore(limit: 1)

    func emit(_ app: Application) async throws -> String {
        await lock.acquire()
        defer { lock.release() }
        let registry = app.metrics.registry
        let depth = try await QueueFigures.depth(app.db)
        let streams = await app.eventHub.openStreams
        let process = ProcessStats.read()
        let wal = SQLiteWAL.size(app)
        state.withLockedValue { state in
            if let wal {
                registry.makeGauge(descriptor: AppMetrics.descriptor("sqlite_wal", "bytes", "Size of the SQLite write-ahead log file."))
                    .set(Double(wal))
            }
            let gaugeName = AppMetrics.descriptor("job_queue_depth", "", "Jobs waiting (queued) or running, by kind.")
            var current: Set<String> = []
            for row in depth {
                current.insert("\(row.kind)\u{0}\(row.status)")
                registry.makeGauge(descriptor: gaugeName, labels: [("kind", row.kind), ("status", row.status)]).set(Double(row.count))
            }
            // A kind that emptied reads 0, not its last value.
            for gone in state.depthSeries.subtracting(current) {
                let parts = gone.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
                registry.makeGauge(descriptor: gaugeName, labels: [("kind", parts[0]), ("status", parts[1])]).set(to: 0.0)
            }
            state.depthSeries.formUnion(current)
            registry.makeGauge(descriptor: AppMetrics.descriptor("event_streams_open", "", "Open SSE and WebSocket event streams on this instance."))
                .set(Double(streams))
            if let process {
                registry.makeGauge(descriptor: Self.process("resident_memory", "bytes", "Resident memory size.")).set(process.residentBytes)
                registry.makeGauge(descriptor: Self.process("virtual_memory", "bytes", "Virtual memory size.")).set(process.virtualBytes)
                // A counter only moves forward: add what was used since the last scrape.
                let cpu = registry.makeCounter(descriptor: Self.process("cpu", "seconds_total", "User and system CPU time spent."))
                if process.cpuSeconds > state.cpuSecondsReported {
                    cpu.increment(by: process.cpuSeconds - state.cpuSecondsReported)
                    state.cpuSecondsReported = process.cpuSeconds
                }
                if let descriptors = process.openFileDescriptors {
                    registry.makeGauge(descriptor: Self.process("open_fds", "", "Open file descriptors.")).set(descriptors)
                }
                if let start = process.startTime {
                    registry.makeGauge(descriptor: Self.process("start_time", "seconds", "Start time since the Unix epoch.")).set(start)
                }
            }
        }
        return registry.emitToString()
    }

    private static func process(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "process", metricName: name, unitName: unit, helpText: help)
    }
}

/// Read-only figures about the job queue, shared by `/metrics` and the admin stats.
enum QueueFigures {
    struct Depth: Sendable {
        let kind: String
        let status: String
        let count: Int
    }

    /// Queued and running jobs by kind; finished jobs are history, not depth.
    static func depth(_ db: any Database) async throws -> [Depth] {
        let sql = db as! any SQLDatabase
        return try await sql.raw("""
            SELECT kind, status, count(*) AS n FROM jobs WHERE status IN ('queued', 'running') GROUP BY kind, status
            """).all().map { row in
            Depth(kind: try row.decode(column: "kind", as: String.self), status: try row.decode(column: "status", as: String.self),
                  count: try row.decode(column: "n", as: Int.self))
        }
    }

    /// How long the oldest job that is due has waited to be claimed (0 when none is waiting).
    static func lagSeconds(_ db: any Database, now: Date) async throws -> Double {
        let sql = db as! any SQLDatabase
        let oldest = try await sql.raw("SELECT min(run_at) AS oldest FROM jobs WHERE status = 'queued' AND run_at <= \(bind: now)")
            .first()?.decode(column: "oldest", as: Date?.self) ?? nil
        return oldest.map { max(0, now.timeIntervalSince($0)) } ?? 0
    }
}

extension Application {
    private struct MetricsScrapeKey: StorageKey { typealias Value = MetricsScrape }

    /// Set once in `configure`.
    var metricsScrape: MetricsScrape {
        get { storage[MetricsScrapeKey.self]! }
        set { storage[MetricsScrapeKey.self] = newValue }
    }
}
