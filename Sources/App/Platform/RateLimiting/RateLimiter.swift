import Crypto
import Fluent
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// One limit: `limit` requests per `window` seconds, enforced with GCRA; a limit of 0 turns it off.
public struct RateLimitPolicy: Sendable, Equatable {
    public let name: String
    public let limit: Int
    public let window: Int

    public var isOff: Bool { limit == 0 }
    /// GCRA's emission interval: the time one request "costs".
    var interval: Double { Double(window) / Double(limit) }

    /// `10/min`, `30/minute`, `10/hour`, `100/s`, `5/day`, any multiple of a unit (`100/15min`, `5/2h`,
    /// `10/30s`), or `0` (off). Windows run from one second to 30 days.
    static func parse(name: String, _ text: String) -> RateLimitPolicy? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        if trimmed == "0" { return RateLimitPolicy(name: name, limit: 0, window: 60) }
        let parts = trimmed.split(separator: "/", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, let limit = Int(parts[0]), (1...1_000_000).contains(limit) else { return nil }
        let units: [String: Int] = ["s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
                                    "h": 3600, "hour": 3600, "hours": 3600, "d": 86_400, "day": 86_400, "days": 86_400]
        let digits = parts[1].prefix { $0.isASCII && $0.isNumber }
        let count = digits.isEmpty ? 1 : Int(digits)
        let unit = parts[1].dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        guard let count, count >= 1, let seconds = units[unit], count <= 30 * 86_400 / seconds else { return nil }
        return RateLimitPolicy(name: name, limit: limit, window: count * seconds)
    }

    var description: String { isOff ? "off" : "\(limit) per \(window) s" }
}

/// The result of asking for one request under one policy.
struct RateLimitDecision: Sendable {
    let policy: RateLimitPolicy
    let allowed: Bool
    /// Requests left in the current window.
    let remaining: Int
    /// Seconds until the quota is whole again (allowed), or until the next request is allowed (refused).
    let resetSeconds: Int

    /// GCRA: `tat` is the theoretical arrival time; a request is allowed if the new TAT stays within one window.
    static func decide(policy: RateLimitPolicy, storedTAT: Double?, now: Double) -> (RateLimitDecision, newTAT: Double?) {
        let interval = policy.interval
        let tat = max(storedTAT ?? now, now)
        let next = tat + interval
        if next - now <= Double(policy.window) + 1e-9 {
            let remaining = Int(((Double(policy.window) - (next - now)) / interval + 1e-9).rounded(.down))
            return (RateLimitDecision(policy: policy, allowed: true, remaining: max(0, remaining),
                                      resetSeconds: Int((next - now).rounded(.up))), next)
        }
        let wait = next - Double(policy.window) - now
        return (RateLimitDecision(policy: policy, allowed: false, remaining: 0, resetSeconds: max(1, Int(wait.rounded(.up)))), nil)
    }
}

/// Where TATs live.
protocol RateLimitStore: Sendable {
    func take(_ key: String, policy: RateLimitPolicy, now: Double) async throws -> RateLimitDecision
}

/// One process's limits, in memory (the default for a single instance).
final class MemoryRateLimitStore: RateLimitStore, @unchecked Sendable {
    private let lock = NIOLock()
    private var tats: [String: Double] = [:]
    private var operations = 0

    func take(_ key: String, policy: RateLimitPolicy, now: Double) async throws -> RateLimitDecision {
        lock.withLock {
            operations += 1
            if operations % 10_000 == 0 { tats = tats.filter { $0.value > now } }
            let (decision, next) = RateLimitDecision.decide(policy: policy, storedTAT: tats[key], now: now)
            if let next { tats[key] = next }
            return decision
        }
    }
}

/// Limits shared by every instance on one database: each decision is one atomic upsert.
struct DatabaseRateLimitStore: RateLimitStore {
    let app: Application

    func take(_ key: String, policy: RateLimitPolicy, now: Double) async throws -> RateLimitDecision {
        let sql = app.db as! any SQLDatabase
        let greatest = sql.dialect.name == "postgresql" ? "GREATEST" : "MAX"
        let interval = policy.interval
        let window = Double(policy.window)
        let fits: SQLQueryString = "\(unsafeRaw: greatest)(rate_limits.tat, \(bind: now)) + \(bind: interval) - \(bind: now) <= \(bind: window + 1e-9)"
        let query: SQLQueryString = """
            INSERT INTO rate_limits (key, tat, allowed) VALUES (\(bind: key), \(bind: now + interval), 1)
            ON CONFLICT (key) DO UPDATE SET
              allowed = CASE WHEN \(fits) THEN 1 ELSE 0 END,
              tat = CASE WHEN \(fits) THEN \(unsafeRaw: greatest)(rate_limits.tat, \(bind: now)) + \(bind: interval) ELSE rate_limits.tat END
            RETURNING tat, allowed
            """
        let row = try await app.writeStatements { sql in try await sql.raw(query).first() }
        guard let row else { throw RateLimitStoreError() }
        let tat = try row.decode(column: "tat", as: Double.self)
        let allowed = try row.decode(column: "allowed", as: Int.self) == 1
        if allowed {
            let remaining = Int(((window - (tat - now)) / interval + 1e-9).rounded(.down))
            return RateLimitDecision(policy: policy, allowed: true, remaining: max(0, remaining), resetSeconds: Int((tat - now).rounded(.up)))
        }
        let wait = tat + interval - window - now
        return RateLimitDecision(policy: policy, allowed: false, remaining: 0, resetSeconds: max(1, Int(wait.rounded(.up))))
    }

    static func prune(app: Application) async throws {
        let cutoff = app.wallClock.now().timeIntervalSince1970
        try await app.writeStatements { sql in try await sql.raw("DELETE FROM rate_limits WHERE tat < \(bind: cutoff)").run() }
    }
}

struct RateLimitStoreError: Error {}

/// Refusal: 429 with Retry-After and the violated policy.
struct RateLimitedError: ProblemError {
    let decision: RateLimitDecision

    var status: HTTPResponseStatus { .tooManyRequests }
    var code: String { "rate_limited" }
    var reason: String {
        "Too many requests under the '\(decision.policy.name)' limit (\(decision.policy.limit) per \(decision.policy.window) s); retry in \(decision.resetSeconds) s."
    }
    var fieldProblems: [FieldProblem] {
        [FieldProblem(field: decision.policy.name, message: "limit of \(decision.policy.limit) per \(decision.policy.window) s exceeded")]
    }
    var headers: HTTPHeaders {
        var headers: HTTPHeaders = ["Retry-After": String(decision.resetSeconds)]
        RateLimitHeaders.apply([decision], to: &headers)
        return headers
    }
}

/// The store said nothing (database down) on a route that must fail closed.
struct RateLimitUnavailableError: ProblemError {
    var status: HTTPResponseStatus { .serviceUnavailable }
    var code: String { "unavailable" }
    var reason: String { "Rate limits cannot be checked right now; retry shortly." }
    var headers: HTTPHeaders { ["Retry-After": "5"] }
}

/// The IETF RateLimit-Policy and RateLimit headers.
enum RateLimitHeaders {
    static func apply(_ decisions: [RateLimitDecision], to headers: inout HTTPHeaders) {
        guard !decisions.isEmpty else { return }
        let policies = decisions.map { "\"\($0.policy.name)\";q=\($0.policy.limit);w=\($0.policy.window)" }.joined(separator: ", ")
        let states = decisions.map { "\"\($0.policy.name)\";r=\($0.remaining);t=\($0.resetSeconds)" }.joined(separator: ", ")
        headers.replaceOrAdd(name: "RateLimit-Policy", value: policies)
        headers.replaceOrAdd(name: "RateLimit", value: states)
    }
}

/// Every policy, from configuration.
struct RateLimitPolicies: Sendable {
    var login: RateLimitPolicy
    var loginIP: RateLimitPolicy
    var register: RateLimitPolicy
    var mailEmail: RateLimitPolicy
    var mailIP: RateLimitPolicy
    var mfa: RateLimitPolicy
    var apiUser: RateLimitPolicy
    var apiAnonymous: RateLimitPolicy
    var executions: RateLimitPolicy
    /// Every `/api/v1` request together (sign-in exempt); off unless STEWARD_RATE_LIMIT_GLOBAL is set.
    var global: RateLimitPolicy
}

/// Asks the configured store, records what it said for the response headers, and refuses over the limit.
struct RateLimiter: Sendable {
    enum OnStoreFailure { case failClosed, failOpen }

    let app: Application

    /// Takes one request from each (policy, key) pair; throws 429 on the first refusal.
    func check(_ request: Request, _ checks: [(RateLimitPolicy, String)], onStoreFailure: OnStoreFailure) async throws {
        let store = app.rateLimitStore
        let now = app.wallClock.now().timeIntervalSince1970
        for (policy, key) in checks where !policy.isOff {
            let decision: RateLimitDecision
            do {
                decision = try await store.take(Self.storageKey(policy: policy, key: key), policy: policy, now: now)
            } catch {
                app.metrics.recordRateLimitStoreFailure()
                request.logger.warning("Rate-limit store failed (\(onStoreFailure == .failClosed ? "refusing" : "allowing") the request): \(String(describing: error))")
                if onStoreFailure == .failClosed { throw RateLimitUnavailableError() }
                continue
            }
            request.rateLimitDecisions.append(decision)
            if !decision.allowed {
                app.metrics.recordRateLimitRefusal(policy: policy.name)
                throw RateLimitedError(decision: decision)
            }
        }
    }

    /// Keys are hashed, so the store never holds emails or tokens.
    static func storageKey(policy: RateLimitPolicy, key: String) -> String {
        let digest = SHA256.hash(data: Data(key.utf8))
        return policy.name + ":" + digest.prefix(16).hexString
    }
}

/// The general limits on every `/api/v1` request: per user or key when authenticated, per client IP otherwise.
/// They fail open (with a warning) if the store is down, so an outage of the limiter is not an outage of the API.
struct GeneralRateLimitMiddleware: AsyncMiddleware {
    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        let policies = request.application.rateLimitPolicies
        if let caller = request.auth.get(AuthenticatedCaller.self) {
            let key = caller.apiKey.map { "key:\($0.id.lowercasedString)" } ?? "user:\(caller.user.id.lowercasedString)"
            try await RateLimiter(app: request.application).check(request, [(policies.apiUser, key)], onStoreFailure: .failOpen)
        } else {
            try await RateLimiter(app: request.application).check(request, [(policies.apiAnonymous, "ip:\(request.clientIP)")], onStoreFailure: .failOpen)
        }
        // The whole service's cap, counted after the caller's own limit (a caller refused there costs nothing here).
        // Signing in stays possible at the cap, so that an operator can still get in.
        if !policies.global.isOff, !Self.isSignIn(request.url.path) {
            try await RateLimiter(app: request.application).check(request, [(policies.global, "global")], onStoreFailure: .failOpen)
        }
        return try await next.respond(to: request)
    }

    static let signInPaths: Set<String> = ["/api/v1/auth/login", "/api/v1/auth/mfa/verify", "/api/v1/auth/refresh", "/api/v1/auth/providers"]

    static func isSignIn(_ path: String) -> Bool {
        signInPaths.contains(path) || path.hasPrefix("/api/v1/auth/oauth/")
    }
}

extension Request {
    private struct DecisionsKey: StorageKey { typealias Value = [RateLimitDecision] }

    /// What the limiter decided for this request, for the response headers.
    var rateLimitDecisions: [RateLimitDecision] {
        get { storage[DecisionsKey.self] ?? [] }
        set { storage[DecisionsKey.self] = newValue }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the address it forwarded.
    var clientIP: String {
        let peer = remoteAddress?.ipAddress ?? "unknown"
        let trusted = application.trustedProxies
        guard !trusted.isEmpty, let peerAddress = IPAddress(peer), trusted.contains(where: { $0.contains(peerAddress) }) else { return peer }
        // Walk X-Forwarded-For from the right: the first address that is not a trusted proxy is the client.
        var hops: [String] = []
        for value in headers[.xForwardedFor] {
            hops += value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        if hops.isEmpty {
            for value in headers[.forwarded] {
                for element in value.split(separator: ",") {
                    for pair in element.split(separator: ";") {
                        let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                        if parts.count == 2, parts[0].lowercased() == "for" {
                            var address = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                            if address.hasPrefix("[") { address = String(address.dropFirst().prefix { $0 != "]" }) }
                            hops.append(address)
                        }
                    }
                }
            }
        }
        for hop in hops.reversed() {
            guard let address = IPAddress(hop) else { return peer }
            if !trusted.contains(where: { $0.contains(address) }) { return hop }
        }
        return hops.first ?? peer
    }
}

extension Application {
    private struct StoreKey: StorageKey { typealias Value = any RateLimitStore }
    private struct ProxiesKey: StorageKey { typealias Value = [CIDR] }

    var rateLimitStore: any RateLimitStore {
        get { storage[StoreKey.self]! }
        set { storage[StoreKey.self] = newValue }
    }

    /// The rate-limit settings now (`rateLimits.*`, defaults from the STEWARD_RATE_LIMIT_* variables).
    var rateLimitPolicies: RateLimitPolicies { settings.rateLimits }

    var trustedProxies: [CIDR] {
        get { storage[ProxiesKey.self] ?? [] }
        set { storage[ProxiesKey.self] = newValue }
    }
}
