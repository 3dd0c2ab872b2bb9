import NIOCore
import NIOPosix

/// Where Swift concurrency runs its tasks.
public enum ConcurrencySetup {
    /// Makes NIO's event loops (the ones Vapor serves on) Swift concurrency's global executor, so a handler that
    /// awaits a database result resumes on the loop that produced it instead of hopping to a separate thread
    /// pool. Call it once, from the main thread, before anything async starts. Nothing in Steward blocks a task:
    /// password hashing and SQLite run on their own thread pools.
    @discardableResult
    public static func runTasksOnEventLoops() -> Bool {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
