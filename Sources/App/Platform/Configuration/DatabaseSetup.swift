import Fluent
import FluentPostgresDriver
import FluentSQLiteDriver
import StewardSQLite
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
            // Reads. Write transactions run on a connection of their own (`SQLiteWriter`, opened in
            // `openSQLiteWriter`), so reads on any loop go on beside them: WAL lets readers and the one writer work at once.
            let poolWrites = PoolWriteGuard()
            app.poolWriteGuard = poolWrites
            var observer = queryObserver(app, config)
            observer.poolWrites = poolWrites
            // The driver sets none of Steward's connection settings on the connections it opens; each gets them before use.
            let poolSetup = SQLitePoolSetup(synchronous: config.sqliteSynchronous.rawValue,
                                            busyTimeoutMilliseconds: config.sqliteBusyTimeoutMilliseconds, logger: app.logger)
            app.databases.use(InstrumentedDatabaseConfiguration(base: sqlite.make(), observer: observer, poolSetup: poolSetup), as: .sqlite)
        case .postgres(let url):
            var postgres = try Self.postgres(url)
            postgres.coreConfiguration.options.connectTimeout = .seconds(Int64(config.dbConnectTimeoutSeconds))
            // LISTEN needs a session of its own: through PgBouncer in transaction mode it must go around the pooler.
            var listen = postgres.coreConfiguration
            if let listenURL = config.databaseListenURL {
                listen = try Self.postgres(listenURL).coreConfiguration
                listen.options.connectTimeout = .seconds(Int64(config.dbConnectTimeoutSeconds))
            }
            let listener = JobNotificationListener(configuration: listen)
            app.jobNotificationListener = listener
            app.lifecycle.use(listener)
            let loops = max(1, System.coreCount)
            let perLoop = max(1, config.dbPoolMax / loops)
            let postgresFactory = DatabaseConfigurationFactory.postgres(
                configuration: postgres, maxConnectionsPerEventLoop: perLoop,
                connectionPoolTimeout: .seconds(Int64(config.dbConnectTimeoutSeconds)),
                encodingContext: .default, decodingContext: .default, sqlLogLevel: .trace)
            app.databases.use(instrumented(postgresFactory, app, config), as: .psql)
            let sender = AfterCommitSender()
            app.afterCommitSender = sender
            app.lifecycle.use(sender)
            // Registered after the databases (it gives up its lease on the way down) and before the loops that
            // write, so it stops after them and before the databases close.
            let sequencer = LedgerSequencerLoop()
            app.ledgerSequencerLoop = sequencer
            app.lifecycle.use(sequencer)
        }
    }

    /// The connection settings a PostgreSQL URL gives (TCP or a Unix socket: `PostgresAddress`).
    private static func postgres(_ url: String) throws -> SQLPostgresConfiguration {
        guard let address = PostgresAddress(url) else { throw URLError(.badURL) }
        return try address.configuration()
    }

    /// Every statement is timed for `/metrics`, and logged when slower than `STEWARD_SLOW_QUERY_MS`.
    private static func instrumented(_ factory: DatabaseConfigurationFactory, _ app: Application, _ config: AppConfig) -> any DatabaseConfiguration {
        InstrumentedDatabaseConfiguration(base: factory.make(), observer: queryObserver(app, config),
                                          preparedStatements: PreparedStatements(enabled: config.databasePreparedStatements))
    }

    private static func queryObserver(_ app: Application, _ config: AppConfig) -> QueryObserver {
        let threshold = config.slowQueryMilliseconds > 0 ? Duration.milliseconds(config.slowQueryMilliseconds) : nil
        return QueryObserver(metrics: app.metrics, slowThreshold: threshold)
    }

    /// SQLite: opens the pool's connection on every event loop now, each set up by `SQLitePoolSetup`, rather than on
    /// first use: a server whose descriptors run out later (idle connections) then still has its read connections.
    static func openSQLitePool(_ app: Application, _ config: AppConfig) async throws {
        guard case .sqlite = config.database else { return }
        for eventLoop in app.eventLoopGroup.makeIterator() {
            guard let db = app.databases.database(.sqlite, logger: app.logger, on: eventLoop) else { continue }
            try await db.withConnection { $0.eventLoop.makeSucceededVoidFuture() }.get()
        }
    }

    /// SQLite: opens the write transactions' connection, with the write gate in front of it, and sets up the direct
    /// read connections; closes them when the app shuts down (after the workers and loops that write, whose handlers are registered later).
    static func openSQLiteWriter(_ app: Application, _ config: AppConfig) async throws {
        guard case .sqlite(let path) = config.database else { return }
        let writer = try await SQLiteWriter.open(
            path: path, busyTimeoutMilliseconds: config.sqliteBusyTimeoutMilliseconds, synchronous: config.sqliteSynchronous.rawValue,
            journalSizeLimit: config.sqliteWALLimitBytes, configuration: app.databases.configuration(for: .sqlite)!, logger: app.logger,
            pageSizeLimit: app.fluent.pagination.pageSizeLimit, observer: queryObserver(app, config), gate: WriteGate())
        // The audit chain's and the event log's heads, kept in memory for each batch.
        writer.addBatchParticipant { LedgerHeadCache() }
        let listeners = app.commitListeners
        writer.afterCommit { listeners.committed() }
        app.sqliteWriter = writer
        // One per thread that may read at once: the event loops, and a few more for tasks running elsewhere.
        app.sqliteReaders = SQLiteReaders(path: path, limit: System.coreCount + 4, observer: queryObserver(app, config), logger: app.logger)
        app.lifecycle.use(SQLiteWriterLifecycle())
        let wal = BackgroundLoop("SQLite WAL check", retryAfter: .seconds(30)) { app in
            _ = try await SQLiteWAL.checkpointIfLarge(app)
            return .seconds(30)
        }
        app.sqliteWALLoop = wal
        app.lifecycle.use(wal)
    }
}

/// The SQLite write-ahead log: its size, and a TRUNCATE checkpoint once it is past `STEWARD_SQLITE_WAL_LIMIT`.
/// SQLite checkpoints by itself every 1,000 pages, but a checkpoint cannot finish while a reader holds an old
/// snapshot, so under steady reads the file only grows; this one runs between batches and truncates it.
enum SQLiteWAL {
    /// Bytes in `<database>-wal`, or nil when not on SQLite.
    static func size(_ app: Application) -> Int? {
        guard case .sqlite(let path) = app.appConfig.database else { return nil }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path + "-wal")
        return (attributes?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// Checkpoints when the WAL is past the limit; returns whether it did and the checkpoint completed.
    static func checkpointIfLarge(_ app: Application) async throws -> Bool {
        guard let writer = app.sqliteWriter, let bytes = size(app), bytes > app.appConfig.sqliteWALLimitBytes else { return false }
        let complete = try await writer.checkpoint(logger: app.logger)
        if !complete { app.logger.warning("SQLite WAL checkpoint could not finish (a reader holds an old snapshot); the WAL is \(bytes) bytes") }
        return complete
    }
}

extension Application {
    private struct WALLoopKey: StorageKey { typealias Value = BackgroundLoop }

    /// SQLite only: the loop that keeps the WAL in check.
    var sqliteWALLoop: BackgroundLoop? {
        get { storage[WALLoopKey.self] }
        set { storage[WALLoopKey.self] = newValue }
    }
}

/// Closes the SQLite writer and readers when the app stops.
final class SQLiteWriterLifecycle: LifecycleHandler {
    func shutdownAsync(_ application: Application) async {
        application.sqliteReaders?.close()
        await application.sqliteWriter?.close()
    }

    func shutdown(_ application: Application) {
        application.sqliteReaders?.close()
        application.sqliteWriter?.closeBlocking()
    }
}
