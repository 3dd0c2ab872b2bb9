import Foundation
import NIOCore
import NIOPosix

/// A thread of its own (the writer's, the readers'), an event loop, that also runs the jobs of tasks preferring it
/// (`withTaskExecutorPreference`).
/// Being an event loop, futures completed on it resolve on it, so Fluent's future-based calls stay on the thread.
package final class SQLiteThread: TaskExecutor, @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    package let eventLoop: any EventLoop
    private let lock = NSLock()
    private var stopped = false

    package init() {
        eventLoop = group.next()
    }

    package var isCurrent: Bool { eventLoop.inEventLoop }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        // After `stop` nothing is dropped: a late job runs on the thread that enqueued it.
        guard lock.withLock({ !stopped }) else { return job.runSynchronously(on: executor) }
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    /// Runs synchronous work on this thread.
    package func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withTaskExecutorPreference(self) { try work() }
    }

    package func stop() async {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        try? await group.shutdownGracefully()
    }

    package func stopBlocking() {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        try? group.syncShutdownGracefully()
    }
}

