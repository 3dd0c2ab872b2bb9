import Fluent
import Foundation
import SQLKit
import Testing
import VaporTesting
@testable import App
import StewardFormats

/// Which database the suite runs on: PostgreSQL when `TEST_DATABASE_URL` is set, else a SQLite file per test.
enum TestDatabase {
    static var postgresURL: String? {
        let value = ProcessInfo.processInfo.environment["TEST_DATABASE_URL"]
        return (value?.isEmpty ?? true) ? nil : value
    }

    static var isPostgres: Bool { postgresURL != nil }

    /// The test database through the server's Unix socket, when `TEST_DATABASE_SOCKET_DIR` names its directory.
    static var postgresSocketURL: String? {
        guard let url = postgresURL, let directory = ProcessInfo.processInfo.environment["TEST_DATABASE_SOCKET_DIR"], !directory.isEmpty,
              var components = URLComponents(string: url) else { return nil }
        let port = components.port ?? 5432
        components.host = ""
        components.port = nil
        components.queryItems = [URLQueryItem(name: "host", value: directory), URLQueryItem(name: "port", value: String(port))]
        return components.string
    }
}

/// A scratch directory removed after the test.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "steward-test-" + UUID().uuidString.lowercased()
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Builds a configured app on the test database: fresh by default, or on an existing database/directory to restart.
func makeTestApp(
    directory: TemporaryDirectory,
    environment extra: [String: String] = [:],
    freshDatabase: Bool = true,
    migrate: Bool = true
) async throws -> Application {
    var env: [String: String] = [
        "STEWARD_DATA_DIR": directory.path,
        "STEWARD_BCRYPT_COST": "4",
        "STEWARD_LOG_LEVEL": "warning",
        "STEWARD_ADMIN_PASSWORD": "Bootstrap-Admin-Pass-1",
    ]
    env["DATABASE_URL"] = TestDatabase.postgresURL ?? "sqlite:\(directory.path)/steward.sqlite"
    // Tests log in and call the API far faster than people do: rate limits are off unless a test turns one on.
    for entry in AppConfig.rateLimitVariables { env[entry.variable] = "0" }
    for (key, value) in extra { env[key] = value }
    let config = try AppConfig.parse(env, allowLowBcryptCost: true)

    let app = try await Application.make(.testing)
    do {
        try await configure(app, config: config)
        if freshDatabase, let url = TestDatabase.postgresURL,
           [url, TestDatabase.postgresSocketURL].contains(where: { $0.map { config.database == .postgres(url: $0) } ?? false }) {
            try await resetPostgresSchema(app)
        }
        if migrate {
            try await MigrationService(app: app).migrate()
            await app.runtimeSettings.load(app)
            // PostgreSQL: events and audit entries are numbered by the sequencer, as under `serve`.
            app.ledgerSequencerLoop?.start(app)
        }
        // One door for writes: from here on the SQLite pool only reads, and the test fails if it wrote.
        if let poolWrites = app.poolWriteGuard {
            poolWrites.arm()
            app.lifecycle.use(PoolWriteCheck(poolWrites: poolWrites))
        }
    } catch {
        try? await app.asyncShutdown()
        throw error
    }
    return app
}

/// At shutdown, records a test issue for each write the SQLite pool ran (a write that skipped the writer).
private struct PoolWriteCheck: LifecycleHandler {
    let poolWrites: PoolWriteGuard

    func shutdownAsync(_ application: Application) async {
        for write in poolWrites.takeWrites() { Issue.record("a write on the SQLite pool, outside the write door: \(write)") }
    }
}

/// Runs `body` with a fresh app and database, then shuts down and cleans up.
func withTestApp(
    environment extra: [String: String] = [:],
    migrate: Bool = true,
    _ body: (Application) async throws -> Void
) async throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let app = try await makeTestApp(directory: directory, environment: extra, migrate: migrate)
    do {
        try await body(app)
    } catch {
        try? await app.asyncShutdown()
        throw error
    }
    try await app.asyncShutdown()
}

/// The PostgreSQL leg shares one database, so each test starts from an empty schema (run it with --no-parallel).
private func resetPostgresSchema(_ app: Application) async throws {
    let sql = app.db as! any SQLDatabase
    try await sql.raw("DROP SCHEMA IF EXISTS public CASCADE").run()
    try await sql.raw("CREATE SCHEMA public").run()
}

/// A clock tests can set and move.
final class TestClock: WallClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    init(_ start: Date = Date(timeIntervalSince1970: 1_795_000_000)) {
        current = start
    }

    func now() -> Date {
        lock.withLock { current }
    }

    func advance(by seconds: TimeInterval) {
        lock.withLock { current = current.addingTimeInterval(seconds) }
    }
}

extension TestingHTTPResponse {
    /// The problem body of an error response.
    func problem() throws -> ProblemDetails {
        try JSONDecoder().decode(ProblemDetails.self, from: Data(buffer: body))
    }

    /// The body as a JSON object.
    func json() throws -> [String: JSONValue] {
        guard case .object(let object) = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: body)) else {
            Issue.record("body is not a JSON object: \(body.string)")
            return [:]
        }
        return object
    }
}

extension Application {
    /// Sends test requests over a real socket to a server on a free loopback port, so body limits,
    /// header parsing and streaming behave exactly as in production.
    func live() throws -> any TestingApplicationTester {
        // A fixed free port rather than 0: VaporTesting asks Vapor's own server (which Steward does not run) for
        // the port it was given, and starts and stops `app.server` (Steward's) around each request.
        try testing(method: .running(hostname: "127.0.0.1", port: try freeLoopbackPort()))
    }
}

/// Changes the database behind the server's back, as someone with owner rights on it could: the immutability
/// trigger is disabled first, so only the hash chain stands between the change and the audit trail.
func tamper(_ app: Application, _ statement: SQLQueryString) async throws {
    // What the attacker edits is the numbered chain.
    _ = try await app.settledLedger()
    try await app.writeStatements { sql in
        if TestDatabase.isPostgres {
            try await sql.raw("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable").run()
        } else {
            try await sql.raw("DROP TRIGGER IF EXISTS audit_logs_immutable").run()
        }
        try await sql.raw(statement).run()
    }
}

extension Application {
    /// The seqs a recorded write got: known at once on SQLite, after the sequencer's pass on PostgreSQL.
    func numbered(_ recorded: RecordedActivity) async throws -> (audit: Int64?, event: Int64?) {
        let db = try await settledLedger()
        var audit = recorded.auditSeq, event = recorded.eventSeq
        if audit == nil, let id = recorded.auditID { audit = try await AuditLog.find(id, on: db)?.seq }
        if event == nil, let id = recorded.eventID { event = try await Event.find(id, on: db)?.seq }
        return (audit, event)
    }
}
