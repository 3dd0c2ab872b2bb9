import NIOPosix
import Vapor

/// Thread pools for blocking work, so one kind of work never starves another.
///
/// SQLite runs every statement on the application thread pool, and a writer waiting for SQLite's lock sleeps there.
/// Vapor's default pool is the process-wide singleton with one thread per core, which bcrypt would also use:
/// during a login storm every database call would queue behind password hashing, and the transaction that holds
/// the lock could wait for a thread to commit. Each app therefore gets its own database pool, larger than its
/// connection count, and password hashing gets a pool of its own.
enum ThreadPools {
    static func configure(_ app: Application) {
        app.threadPool = NIOThreadPool(numberOfThreads: max(4, System.coreCount * 2))
        let hashing = NIOThreadPool(numberOfThreads: max(1, System.coreCount))
        hashing.start()
        app.passwordHashingPool = hashing
        app.lifecycle.use(PoolShutdown(pool: hashing))
    }

    /// Stops a pool this app owns when the app shuts down.
    private struct PoolShutdown: LifecycleHandler {
        let pool: NIOThreadPool
        func shutdownAsync(_ application: Application) async {
            try? await pool.shutdownGracefully()
        }
    }
}

extension Application {
    private struct HashingPoolKey: StorageKey { typealias Value = NIOThreadPool }

    /// Where bcrypt runs: never on an event loop, never on the database's pool.
    var passwordHashingPool: NIOThreadPool {
        get { storage[HashingPoolKey.self]! }
        set { storage[HashingPoolKey.self] = newValue }
    }
}
