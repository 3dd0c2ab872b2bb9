import Foundation
import NIOConcurrencyHelpers
import SQLKit
import Vapor

/// `/api/v1` requests per user and hour, counted in memory and added to `usage_counters` every 10 seconds (and at
/// shutdown) by one upsert per user and hour: a request costs no write of its own. Each instance adds its own
/// counts, so the table holds the whole cluster's. A crash loses at most the last 10 seconds of counts.
final class UsageCounter: LifecycleHandler, Sendable {
    struct Key: Hashable, Sendable {
        let userID: UUID
        /// The start of the hour, in seconds since 1970.
        let hour: Int
    }

    static let flushInterval: Duration = .seconds(10)

    private let pending = NIOLockedValueBox<[Key: Int]>([:])

    func count(_ userID: UUID, at date: Date) {
        let key = Key(userID: userID, hour: Int(date.timeIntervalSince1970) / 3600 * 3600)
        pending.withLockedValue { $0[key, default: 0] += 1 }
    }

    /// What this instance counted and has not written yet, for `userID` within `range`.
    func unwritten(for userID: UUID, in range: Range<Date>) -> Int {
        pending.withLockedValue { counts in
            counts.filter { $0.key.userID == userID && Self.hour($0.key.hour, overlaps: range) }.values.reduce(0, +)
        }
    }

    /// Whether the hour starting at `hour` has a moment in `range`.
    static func hour(_ hour: Int, overlaps range: Range<Date>) -> Bool {
        let start = Date(timeIntervalSince1970: TimeInterval(hour))
        return start < range.upperBound && start.addingTimeInterval(3600) > range.lowerBound
    }

    /// Writes what was counted. Counts that fail to be written are put back for the next flush.
    func flush(_ app: Application) async throws {
        let taken = pending.withLockedValue { counts -> [Key: Int] in
            defer { counts = [:] }
            return counts
        }
        guard !taken.isEmpty else { return }
        do {
            try await app.writeStatements { sql in
                for (key, requests) in taken {
                    try await sql.raw("""
                        INSERT INTO usage_counters (user_id, hour, requests) VALUES (\(bind: key.userID), \(bind: Date(timeIntervalSince1970: TimeInterval(key.hour))), \(bind: requests))
                        ON CONFLICT (user_id, hour) DO UPDATE SET requests = usage_counters.requests + excluded.requests
                        """).run()
                }
            }
        } catch {
            pending.withLockedValue { counts in counts.merge(taken, uniquingKeysWith: +) }
            throw error
        }
    }

    func shutdownAsync(_ application: Application) async {
        do { try await flush(application) } catch {
            application.logger.warning("Request counts not written at shutdown: \(String(describing: error))")
        }
    }
}

/// Counts each `/api/v1` request made with a user's credentials (session, token or API key) toward their usage.
struct UsageCountingMiddleware: AsyncMiddleware {
    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        if let userID = request.auth.get(AuthenticatedCaller.self)?.user.id {
            request.application.usageCounter.count(userID, at: request.application.wallClock.now())
        }
        return try await next.respond(to: request)
    }
}

extension BackgroundLoop {
    static func usageFlush() -> BackgroundLoop {
        BackgroundLoop("Usage counts", retryAfter: UsageCounter.flushInterval) { app in
            try await app.usageCounter.flush(app)
            return UsageCounter.flushInterval
        }
    }
}

extension Application {
    private struct UsageCounterKey: StorageKey { typealias Value = UsageCounter }
    private struct UsageFlushKey: StorageKey { typealias Value = BackgroundLoop }

    /// Set once in `configure`.
    var usageCounter: UsageCounter {
        get { storage[UsageCounterKey.self]! }
        set { storage[UsageCounterKey.self] = newValue }
    }

    /// Set once in `configure`; started by `serve`.
    var usageFlushLoop: BackgroundLoop {
        get { storage[UsageFlushKey.self]! }
        set { storage[UsageFlushKey.self] = newValue }
    }
}
