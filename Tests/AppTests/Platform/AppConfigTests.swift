import Foundation
import Testing
@testable import App

@Suite("AppConfig")
struct AppConfigTests {
    @Test("An empty environment gives the documented defaults: SQLite in ./data on 127.0.0.1:8080")
    func defaults() throws {
        let config = try AppConfig.parse([:])
        #expect(config.host == "127.0.0.1")
        #expect(config.port == 8080)
        #expect(config.database == .sqlite(path: "./data/steward.sqlite"))
        #expect(config.publicURL == "http://127.0.0.1:8080")
        #expect(config.maxBodySize == 1 << 20)
        #expect(config.autoMigrate)
        #expect(config.sqliteSynchronous == .full)
        #expect(config.logFormat == .text)
        #expect(config.bcryptCost == 12)
    }

    @Test("DATABASE_URL=postgres://… switches to PostgreSQL and nothing else changes")
    func postgresSwitch() throws {
        let config = try AppConfig.parse(["DATABASE_URL": "postgres://steward:secret@db.internal:5432/steward"])
        #expect(config.database == .postgres(url: "postgres://steward:secret@db.internal:5432/steward"))
        #expect(config.port == 8080)
    }

    @Test("A PostgreSQL URL may name a Unix socket as libpq does: its directory as the host query parameter or the percent-encoded host, port 5432 unless given")
    func postgresSocket() throws {
        let url = "postgres://steward:s%40cret@/steward?host=/var/run/postgresql"
        #expect(try AppConfig.parse(["DATABASE_URL": url]).database == .postgres(url: url))
        #expect(PostgresAddress(url) == .socket(path: "/var/run/postgresql/.s.PGSQL.5432", username: "steward", password: "s@cret", database: "steward"))
        #expect(PostgresAddress("postgresql://steward@%2Ftmp%2Fpg%2F:5433/app") == .socket(path: "/tmp/pg/.s.PGSQL.5433", username: "steward", password: nil, database: "app"))
        #expect(PostgresAddress("postgres://steward:x@/app?port=6432&host=/tmp") == .socket(path: "/tmp/.s.PGSQL.6432", username: "steward", password: "x", database: "app"))
        #expect(PostgresAddress("postgres://steward:x@db.internal:5432/app?sslmode=require") == .tcp(url: "postgres://steward:x@db.internal:5432/app?sslmode=require"))
        let listen = try AppConfig.parse(["DATABASE_URL": "postgres://a:b@pgbouncer:6432/app", "STEWARD_DATABASE_LISTEN_URL": url])
        #expect(listen.databaseListenURL == url)
        // No user, no host at all, a host name in the query (libpq's, not Steward's), a port that is not one.
        for bad in ["postgres://@/steward?host=/tmp", "postgres:///steward?host=/tmp", "postgres://a:b@/steward",
                    "postgres://a:b@/steward?host=db.internal", "postgres://a:b@/steward?host=/tmp&port=x", "postgres://a:b@/steward?host=/tmp&port=70000"] {
            let error = #expect(throws: ConfigurationError.self, "\(bad)") { try AppConfig.parse(["DATABASE_URL": bad]) }
            #expect(error?.description.contains("Unix socket") == true, "\(bad)")
            #expect(throws: ConfigurationError.self, "\(bad)") { try AppConfig.parse(["STEWARD_DATABASE_LISTEN_URL": bad]) }
        }
    }

    @Test("Every invalid variable is named in one error, not just the first")
    func reportsEveryProblem() throws {
        let error = #expect(throws: ConfigurationError.self) {
            try AppConfig.parse([
                "STEWARD_PORT": "99999",
                "STEWARD_LOG_FORMAT": "xml",
                "STEWARD_AUTO_MIGRATE": "perhaps",
                "STEWARD_MAX_BODY_SIZE": "lots",
                "DATABASE_URL": "mysql://x",
                "STEWARD_LOG_LEVEL": "loud",
                "STEWARD_BCRYPT_COST": "4",
                "STEWARD_ADMIN_PASSWORD": "short",
                "STEWARD_BACKUP_CRON": "0 25 * * *",
                "STEWARD_METRICS_TOKEN": "too-short",
            ])
        }
        let names = ["STEWARD_PORT", "STEWARD_LOG_FORMAT", "STEWARD_AUTO_MIGRATE", "STEWARD_MAX_BODY_SIZE",
                     "DATABASE_URL", "STEWARD_LOG_LEVEL", "STEWARD_BCRYPT_COST", "STEWARD_ADMIN_PASSWORD",
                     "STEWARD_BACKUP_CRON", "STEWARD_METRICS_TOKEN"]
        for name in names {
            #expect(error?.description.contains(name) == true, "missing \(name) in: \(error?.description ?? "")")
        }
        #expect(error?.problems.count == names.count)
    }

    @Test("STEWARD_BACKUP_CRON=off turns the nightly SQLite backup off")
    func backupOff() throws {
        #expect(try AppConfig.parse([:]).backupCron == "0 2 * * *")
        let off = try AppConfig.parse(["STEWARD_BACKUP_CRON": "off"])
        #expect(off.backupCron == nil)
        #expect(!MaintenanceTasks.all(off).contains { $0.name == "sqlite.backup" })
        #expect(MaintenanceTasks.all(try AppConfig.parse([:])).contains { $0.name == "sqlite.backup" })
    }

    @Test("Sizes accept bytes and kb/mb suffixes; synchronous accepts normal in any case")
    func sizesAndEnums() throws {
        #expect(try AppConfig.parse(["STEWARD_MAX_BODY_SIZE": "512kb"]).maxBodySize == 512 * 1024)
        #expect(try AppConfig.parse(["STEWARD_MAX_BODY_SIZE": "2MB"]).maxBodySize == 2 * 1024 * 1024)
        #expect(try AppConfig.parse(["STEWARD_MAX_BODY_SIZE": "4096"]).maxBodySize == 4096)
        #expect(try AppConfig.parse(["STEWARD_SQLITE_SYNCHRONOUS": "Normal"]).sqliteSynchronous == .normal)
        #expect(try AppConfig.parse(["DATABASE_URL": "sqlite:/var/lib/steward/db.sqlite"]).database == .sqlite(path: "/var/lib/steward/db.sqlite"))
    }

    @Test(".env is read, quotes and comments handled, and the process environment wins over it")
    func dotEnvLayering() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/.env"
        try """
        # a comment
        STEWARD_PORT=9090
        export STEWARD_HOST="0.0.0.0"
        STEWARD_LOG_LEVEL=debug # trailing comment
        STEWARD_CORS_ORIGINS='https://a.example, https://b.example'
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let config = try AppConfig.load(processEnvironment: ["STEWARD_PORT": "7070"], dotEnvPath: path)
        #expect(config.port == 7070)
        #expect(config.host == "0.0.0.0")
        #expect(config.logLevel == .debug)
        #expect(config.corsOrigins == ["https://a.example", "https://b.example"])
    }

    @Test("Every documented variable appears in .env.example and the README")
    func documentation() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let example = try String(contentsOf: root.appendingPathComponent(".env.example"), encoding: .utf8)
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        for variable in AppConfig.variables {
            #expect(example.contains(variable.name), ".env.example lacks \(variable.name)")
            #expect(readme.contains("`\(variable.name)`"), "README lacks \(variable.name)")
        }
    }
}
