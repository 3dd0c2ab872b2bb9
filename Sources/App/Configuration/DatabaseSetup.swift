import Fluent
import FluentPostgresDriver
import FluentSQLiteDriver
import Vapor

/// Connects Fluent to SQLite or PostgreSQL as the configuration says.
enum DatabaseSetup {
    static func configure(_ app: Application, _ config: AppConfig) throws {
        switch config.database {
        case .sqlite(let path):
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
            // The file holds password hashes: create it private before SQLite opens it with the default umask.
            if !FileManager.default.fileExists(atPath: path) {
                _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
            }
            let sqlite = DatabaseConfigurationFactory.sqlite(
                .file(path), connectionPoolTimeout: .seconds(Int64(config.dbConnectTimeoutSeconds)), sqlLogLevel: .trace)
            app.databases.use(instrumented(sqlite, app, config), as: .sqlite)
            // The driver pools one connection per event loop, and a transaction holds its loop's connection to the
            // end. Write transactions get connections of their own, so reads on that loop (authentication, lists,
            // a worker loading its job) go on beside them: WAL lets readers and the one writer work at once.
            app.databases.use(instrumented(sqlite, app, config), as: .sqliteWriter, isDefault: false)
        case .postgres(let url):
            var postgres = try SQLPostgresConfiguration(url: url)
            postgres.coreConfiguration.options.connectTimeout = .seconds(Int64(config.dbConnectTimeoutSeconds))
            let listener = JobNotificationListener(configuration: postgres.coreConfiguration)
            app.jobNotificationListener = listener
            app.lifecycle.use(listener)
            let loops = max(1, System.coreCount)
            let perLoop = max(1, config.dbPoolMax / loops)
            let postgresFactory = DatabaseConfigurationFactory.postgres(
                configuration: postgres, maxConnectionsPerEventLoop: perLoop,
                connectionPoolTimeout: .seconds(Int64(config.dbConnectTimeoutSeconds)),
                encodingContext: .default, decodingContext: .default, sqlLogLevel: .trace)
            app.databases.use(instrumented(postgresFactory, app, config), as: .psql)
        }
    }

    /// Every statement is timed for `/metrics`, and logged when slower than `STEWARD_SLOW_QUERY_MS`.
    private static func instrumented(_ factory: DatabaseConfigurationFactory, _ app: Application, _ config: AppConfig) -> any DatabaseConfiguration {
        let threshold = config.slowQueryMilliseconds > 0 ? Duration.milliseconds(config.slowQueryMilliseconds) : nil
        return InstrumentedDatabaseConfiguration(base: factory.make(), observer: QueryObserver(metrics: app.metrics, slowThreshold: threshold))
    }

    /// SQLite keeps `synchronous` and `busy_timeout` per connection, and the driver pools exactly one connection
    /// per event loop and database id, so setting them once on each loop's connection of both ids (reads and
    /// write transactions) covers every connection the app uses.
    static func tuneSQLite(_ app: Application, _ config: AppConfig) async throws {
        guard case .sqlite = config.database else { return }
        for id in [DatabaseID.sqlite, .sqliteWriter] {
            for eventLoop in app.eventLoopGroup.makeIterator() {
                guard let db = app.databases.database(id, logger: app.logger, on: eventLoop) else { continue }
                try await db.withConnection { connection in
                    let sql = connection as! any SQLDatabase
                    try await sql.raw("PRAGMA journal_mode = WAL").run()
                    try await sql.raw("PRAGMA synchronous = \(unsafeRaw: config.sqliteSynchronous.rawValue)").run()
                    try await sql.raw("PRAGMA busy_timeout = \(unsafeRaw: String(config.sqliteBusyTimeoutMilliseconds))").run()
                    try await sql.raw("PRAGMA foreign_keys = ON").run()
                }
            }
        }
    }
}

extension DatabaseID {
    /// SQLite's second pool, for write transactions (see `DatabaseSetup.configure`).
    static let sqliteWriter = DatabaseID(string: "sqlite-writer")
}
