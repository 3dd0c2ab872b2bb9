import Fluent
import NIOConcurrencyHelpers
import Vapor

extension Application {
    /// The default database for the services' reads: what `db` gives, made once per event loop and kept. `db`
    /// makes a new one on every use (`Databases.database`), which takes the registry's lock, sets a `database-id`
    /// logger metadata value, and has the driver build its database again, PostgresKit's with a run-time lookup of
    /// an opaque type's metadata: 2-3% of the CPU of a list on PostgreSQL. Such a database is a value that holds no
    /// connection and no state, so one per loop serves every read on it. Requests' own databases (`Request.db`)
    /// are not kept: they carry the request's logger.
    var reads: any Database {
        let loop = eventLoopGroup.any()
        let key = ObjectIdentifier(loop)
        let kept = readDatabases.box
        if let database = kept.withLockedValue({ $0[key] }) { return database }
        let made = db(nil, logger: logger)
        kept.withLockedValue { $0[key] = made }
        return made
    }

    private var readDatabases: ReadDatabases {
        Self.readDatabasesLock.withLock {
            if let existing = storage[ReadDatabasesKey.self] { return existing }
            let made = ReadDatabases()
            storage[ReadDatabasesKey.self] = made
            return made
        }
    }

    private struct ReadDatabasesKey: StorageKey { typealias Value = ReadDatabases }
    private static let readDatabasesLock = NIOLock()
}

/// The kept databases, by event loop.
private final class ReadDatabases: Sendable {
    let box = NIOLockedValueBox<[ObjectIdentifier: any Database]>([:])
}
