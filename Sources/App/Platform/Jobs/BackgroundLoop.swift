import Foundation
import Vapor

/// A loop that runs while the server serves: each pass returns how long to pause before the next one; a pass
/// that throws is logged and retried after `retryAfter`. Shutdown cancels the pause and waits for the pass.
final class BackgroundLoop: LifecycleHandler, @unchecked Sendable {
    private let name: String
    private let retryAfter: Duration
    private let pass: @Sendable (Application) async throws -> Duration
    private let lock = NSLock()
    private var task: Task<Void, Never>?

    init(_ name: String, retryAfter: Duration, pass: @escaping @Sendable (Application) async throws -> Duration) {
        self.name = name
        self.retryAfter = retryAfter
        self.pass = pass
    }

    func start(_ app: Application) {
        lock.withLock {
            guard task == nil else { return }
            let name = name, retryAfter = retryAfter, pass = pass
            task = Task {
                while !Task.isCancelled {
                    let pause: Duration
                    do {
                        pause = try await pass(app)
                    } catch {
                        app.logger.warning("\(name) failed: \(String(describing: error))")
                        pause = retryAfter
                    }
                    if pause > .zero { try? await Task.sleep(for: pause) }
                }
            }
        }
    }

    func shutdownAsync(_ application: Application) async {
        let running = lock.withLock { () -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        await running?.value
    }
}
