import Fluent
import Vapor

/// Liveness and readiness probes.
struct HealthController: RouteCollection {
    /// A readiness probe must answer quickly even when the database hangs.
    static let readinessTimeout: Duration = .seconds(3)

    func boot(routes: any RoutesBuilder) throws {
        let health = routes.grouped("health")
        health.get("live", use: live)
        health.get("ready", use: ready)
    }

    @Sendable
    func live(req: Request) async throws -> LivenessResponse {
        LivenessResponse(status: "ok")
    }

    @Sendable
    func ready(req: Request) async throws -> Response {
        let migrations = MigrationService(app: req.application)
        let database = req.db
        let body: ReadinessResponse
        let status: HTTPResponseStatus
        do {
            let (pending, version) = try await withTimeout(Self.readinessTimeout) {
                try await migrations.pendingCount(on: database)
            }
            body = ReadinessResponse(status: pending == 0 ? "ok" : "unavailable", database: "ok",
                                     schemaVersion: version, pendingMigrations: pending)
            status = pending == 0 ? .ok : .serviceUnavailable
        } catch {
            req.logger.warning("Readiness check failed: \(String(describing: error))")
            body = ReadinessResponse(status: "unavailable", database: "unreachable", schemaVersion: nil, pendingMigrations: nil)
            status = .serviceUnavailable
        }
        let response = try await body.encodeResponse(status: status, for: req)
        response.headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        return response
    }
}

/// Thrown when an operation outlives its deadline.
struct TimeoutError: Error {}

/// Runs `operation`, giving up after `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError()
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw TimeoutError() }
        return first
    }
}
