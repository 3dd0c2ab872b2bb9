import Testing
import VaporTesting
@testable import App

@Suite("HealthController")
struct HealthControllerTests {
    @Test("GET /health/live answers 200 {status: ok}")
    func live() async throws {
        try await withTestApp { app in
            try await app.testing().test(.GET, "/health/live") { res throws in
                #expect(res.status == .ok)
                #expect(try res.json()["status"] == "ok")
            }
        }
    }

    @Test("GET /health/ready reports the schema version and no pending migrations")
    func ready() async throws {
        try await withTestApp { app in
            try await app.testing().test(.GET, "/health/ready") { res throws in
                #expect(res.status == .ok)
                let body = try res.json()
                #expect(body["status"] == "ok")
                #expect(body["database"] == "ok")
                #expect(body["pendingMigrations"] == 0)
                #expect(body["schemaVersion"] == .string(MigrationState(position: AppMigrations.all(app.keyMaterial).count, name: AppMigrations.all(app.keyMaterial).last!.name, applied: true).version))
            }
        }
    }

    @Test("GET /health/ready answers 503 while migrations are pending")
    func readyWhilePending() async throws {
        try await withTestApp { app in
            try await MigrationService(app: app).revert(downTo: "0002_CreateAuditLogs")
            try await app.testing().test(.GET, "/health/ready") { res throws in
                #expect(res.status == .serviceUnavailable)
                let body = try res.json()
                #expect(body["status"] == "unavailable")
                #expect(body["pendingMigrations"] == .number(Double(AppMigrations.all(app.keyMaterial).count - 2)))
                #expect(body["schemaVersion"] == "0002_CreateAuditLogs")
            }
        }
    }

    @Test("GET /health/ready answers 503 on an empty database that was never migrated")
    func readyOnEmptyDatabase() async throws {
        try await withTestApp(migrate: false) { app in
            try await app.testing().test(.GET, "/health/ready") { res throws in
                #expect(res.status == .serviceUnavailable)
                #expect(try res.json()["pendingMigrations"] == .number(Double(AppMigrations.all(app.keyMaterial).count)))
            }
        }
    }

    @Test("GET /health/ready answers 503 when the database is unreachable, and live still answers 200")
    func readyWithoutDatabase() async throws {
        // Port 1 on loopback refuses connections at once.
        try await withTestApp(environment: ["DATABASE_URL": "postgres://nobody:nothing@127.0.0.1:1/none", "STEWARD_DB_CONNECT_TIMEOUT": "1"], migrate: false) { app in
            try await app.testing().test(.GET, "/health/ready") { res throws in
                #expect(res.status == .serviceUnavailable)
                let body = try res.json()
                #expect(body["database"] == "unreachable")
                #expect(!res.body.string.contains("nothing"), "the password must not leak")
            }
            try await app.testing().test(.GET, "/health/live") { res throws in
                #expect(res.status == .ok)
            }
        }
    }
}
