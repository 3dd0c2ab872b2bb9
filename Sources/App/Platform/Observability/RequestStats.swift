import Foundation
import NIOConcurrencyHelpers
import Vapor

/// Request counts, errors and latency per route for the last hour, in memory, for `GET /api/v1/admin/stats`.
///
/// Sixty one-minute buckets in a ring; each holds, per route, the counts and a log-scale latency histogram
/// (bins 20% wide), so memory is bounded by routes × 60 × bins whatever the traffic, and a percentile is
/// exact to within one bin (about ±10%). Each instance keeps its own figures.
final class RequestStats: Sendable {
    /// Latency bin `i` holds durations up to `firstBound × growth^i`; the last bin takes everything slower.
    static let firstBoundMs = 0.05
    static let growth = 1.2
    static let binCount = 84
    static let windows: [(name: String, minutes: Int)] = [("last1m", 1), ("last5m", 5), ("last60m", 60)]

    struct Counts: Sendable {
        var count = 0
        var clientErrors = 0
        var serverErrors = 0
        var bins = [UInt32](repeating: 0, count: RequestStats.binCount)

        mutating func add(status: UInt, milliseconds: Double) {
            count += 1
            if status >= 500 { serverErrors += 1 } else if status >= 400 { clientErrors += 1 }
            bins[RequestStats.bin(for: milliseconds)] += 1
        }

        mutating func merge(_ other: Counts) {
            count += other.count
            clientErrors += other.clientErrors
            serverErrors += other.serverErrors
            for index in bins.indices { bins[index] += other.bins[index] }
        }

        /// The latency under which `quantile` of the requests finished, in milliseconds (the middle of its bin).
        func percentile(_ quantile: Double) -> Double? {
            guard count > 0 else { return nil }
            let rank = max(1, Int((quantile * Double(count)).rounded(.up)))
            var seen = 0
            for (index, value) in bins.enumerated() {
                seen += Int(value)
                if seen >= rank { return RequestStats.representative(of: index) }
            }
            return RequestStats.representative(of: bins.count - 1)
        }
    }

    private struct Minute {
        var minute: Int64 = -1
        var routes: [String: Counts] = [:]
    }

    private let ring = NIOLockedValueBox([Minute](repeating: Minute(), count: 60))

    static func bin(for milliseconds: Double) -> Int {
        guard milliseconds > firstBoundMs else { return 0 }
        let index = Int((log(milliseconds / firstBoundMs) / log(growth)).rounded(.up))
        return min(index, binCount - 1)
    }

    /// The geometric middle of a bin, rounded to 0.01 ms.
    static func representative(of index: Int) -> Double {
        let upper = firstBoundMs * pow(growth, Double(index))
        let value = index == 0 ? upper : upper / growth.squareRoot()
        return (value * 100).rounded() / 100
    }

    func record(route: String, status: UInt, milliseconds: Double, at date: Date) {
        let minute = Int64(date.timeIntervalSince1970 / 60)
        let slot = Int(minute % 60)
        ring.withLockedValue { ring in
            if ring[slot].minute != minute { ring[slot] = Minute(minute: minute) }
            ring[slot].routes[route, default: Counts()].add(status: status, milliseconds: milliseconds)
        }
    }

    /// Per-route counts over the last `minutes` minutes (the current, partial minute included).
    func window(minutes: Int, at date: Date) -> [String: Counts] {
        let now = Int64(date.timeIntervalSince1970 / 60)
        return ring.withLockedValue { ring in
            var merged: [String: Counts] = [:]
            for entry in ring where entry.minute > now - Int64(minutes) && entry.minute <= now {
                for (route, counts) in entry.routes { merged[route, default: Counts()].merge(counts) }
            }
            return merged
        }
    }
}

extension Application {
    private struct RequestStatsKey: StorageKey { typealias Value = RequestStats }

    /// Set once in `configure`.
    var requestStats: RequestStats {
        get { storage[RequestStatsKey.self]! }
        set { storage[RequestStatsKey.self] = newValue }
    }
}
