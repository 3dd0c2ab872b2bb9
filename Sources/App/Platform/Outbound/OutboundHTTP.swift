import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Vapor
import StewardFormats

/// Resolves host names; behind a protocol so tests can simulate DNS (rebinding included).
protocol AddressResolver: Sendable {
    func resolve(host: String) async throws -> [IPAddress]
}

/// The system resolver (getaddrinfo), run off the event loop.
struct SystemAddressResolver: AddressResolver {
    func resolve(host: String) async throws -> [IPAddress] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var result: UnsafeMutablePointer<addrinfo>?
                let status = getaddrinfo(host, nil, &hints, &result)
                guard status == 0, let first = result else {
                    continuation.resume(throwing: OutboundError.unresolvable(host))
                    return
                }
                defer { freeaddrinfo(first) }
                var addresses: [IPAddress] = []
                var cursor: UnsafeMutablePointer<addrinfo>? = first
                while let info = cursor {
                    if let sockaddr = info.pointee.ai_addr {
                        if info.pointee.ai_family == AF_INET {
                            sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                                var address = pointer.pointee.sin_addr
                                addresses.append(IPAddress(bytes: withUnsafeBytes(of: &address) { Array($0) }))
                            }
                        } else if info.pointee.ai_family == AF_INET6 {
                            sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                                var address = pointer.pointee.sin6_addr
                                addresses.append(IPAddress(bytes: withUnsafeBytes(of: &address) { Array($0) }))
                            }
                        }
                    }
                    cursor = info.pointee.ai_next
                }
                continuation.resume(returning: addresses)
            }
        }
    }
}

/// Why an outbound request did not happen or did not complete.
enum OutboundError: Error, CustomStringConvertible {
    case blocked(String)
    case unresolvable(String)
    case tooLarge

    var description: String {
        switch self {
        case .blocked(let reason): "blocked_address: \(reason)"
        case .unresolvable(let host): "could not resolve \(host)"
        case .tooLarge: "the response is larger than 1 MiB"
        }
    }
}

/// An answer to an outbound request.
struct OutboundResponse: Sendable {
    var status: Int
    var body: ByteBuffer
    var headers: HTTPHeaders = [:]
}

/// POSTs JSON to URLs that pass the outbound guard: resolve, check every address, then connect to the checked
/// address (so a DNS answer that changes between check and connect cannot redirect the request), never follow
/// redirects, and read at most 1 MiB of answer.
struct OutboundHTTP: Sendable {
    static let largestResponse = 1 << 20

    let guardrail: OutboundGuard
    let resolver: any AddressResolver
    /// `Steward/<version>` for runners; webhook deliveries say `Steward-Webhooks/<version>`.
    var userAgent: String
    /// Keeps one client (and its keep-alive connections) per host and checked address; nil makes one per call.
    var clients: OutboundClients?

    func post(_ urlString: String, json: JSONValue, headers extra: [String: String], timeout: TimeInterval) async throws -> OutboundResponse {
        var headers = extra
        headers["Content-Type"] = "application/json"
        return try await send(urlString, body: json.canonicalString(), headers: headers, timeout: timeout)
    }

    /// POSTs exactly `body` (it may be signed) with `headers`.
    func send(_ urlString: String, body: String, headers extra: [String: String], timeout: TimeInterval) async throws -> OutboundResponse {
        if let refusal = guardrail.refusal(for: urlString) { throw OutboundError.blocked("the URL \(refusal)") }
        guard let components = URLComponents(string: urlString), let rawHost = components.host else { throw OutboundError.blocked("the URL is not valid") }
        let host = rawHost.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))

        let pinned: String
        if let literal = IPAddress(host) {
            pinned = host
            if guardrail.isForbidden(address: literal) { throw OutboundError.blocked("\(host) is a special-purpose address") }
        } else {
            let addresses = try await resolver.resolve(host: host)
            guard let first = addresses.first else { throw OutboundError.unresolvable(host) }
            // Every answer must be allowed: otherwise a name with one public and one private address could pick either.
            if let forbidden = addresses.first(where: { guardrail.isForbidden(address: $0) }) {
                throw OutboundError.blocked("\(host) resolves to a special-purpose address (\(forbidden.text))")
            }
            pinned = first.text
        }

        var request = HTTPClientRequest(url: urlString)
        request.method = .POST
        for (name, value) in extra { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "User-Agent", value: userAgent)
        request.body = .bytes(ByteBuffer(string: body))
        guard let clients else {
            let ephemeral = OutboundClients.makeClient(host: host, pinned: pinned)
            defer { Task { try? await ephemeral.shutdown() } }
            return try await Self.execute(request, on: ephemeral, timeout: timeout)
        }
        return try await clients.withClient(host: host, pinned: pinned) { client in
            try await Self.execute(request, on: client, timeout: timeout)
        }
    }

    private static func execute(_ request: HTTPClientRequest, on client: HTTPClient, timeout: TimeInterval) async throws -> OutboundResponse {
        RequestEffects.note()
        let response = try await client.execute(request, timeout: .seconds(Int64(timeout)))
        do {
            let answer = try await response.body.collect(upTo: Self.largestResponse)
            return OutboundResponse(status: Int(response.status.code), body: answer, headers: response.headers)
        } catch is NIOTooManyBytesError {
            throw OutboundError.tooLarge
        }
    }
}

/// HTTP clients for outbound requests, one per host and checked address, so connections are reused; the
/// address stays part of the key, so a client never connects anywhere that was not checked.
///
/// At most `capacity` clients are kept: past it, the least recently used client that no request is using is shut
/// down (webhook endpoints and HTTP skills can name any number of hosts over a process's life).
final class OutboundClients: LifecycleHandler, @unchecked Sendable {
    private struct Entry {
        let client: HTTPClient
        var inUse = 0
        var lastUsed: UInt64
    }

    let capacity: Int
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var tick: UInt64 = 0

    init(capacity: Int = 256) {
        self.capacity = max(1, capacity)
    }

    static func makeClient(host: String, pinned: String) -> HTTPClient {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10)))
        configuration.dnsOverride = [host: pinned]
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// How many clients are kept now.
    var count: Int { lock.withLock { entries.count } }

    /// Runs `body` with the client for `host` at `pinned`, made if needed; the client is not evicted meanwhile.
    func withClient<T: Sendable>(host: String, pinned: String, _ body: (HTTPClient) async throws -> T) async throws -> T {
        let key = host + "|" + pinned
        let client = lock.withLock { () -> HTTPClient in
            tick += 1
            if var entry = entries[key] {
                entry.inUse += 1
                entry.lastUsed = tick
                entries[key] = entry
                return entry.client
            }
            let entry = Entry(client: Self.makeClient(host: host, pinned: pinned), inUse: 1, lastUsed: tick)
            entries[key] = entry
            return entry.client
        }
        defer {
            let evicted = lock.withLock { () -> [HTTPClient] in
                entries[key]?.inUse -= 1
                return evictIdle()
            }
            if !evicted.isEmpty { Task { for client in evicted { try? await client.shutdown() } } }
        }
        return try await body(client)
    }

    /// Removes idle clients, least recently used first, until at most `capacity` remain. Called under the lock.
    private func evictIdle() -> [HTTPClient] {
        guard entries.count > capacity else { return [] }
        let idle = entries.filter { $0.value.inUse == 0 }.sorted { $0.value.lastUsed < $1.value.lastUsed }
        var evicted: [HTTPClient] = []
        for (key, entry) in idle.prefix(entries.count - capacity) {
            entries[key] = nil
            evicted.append(entry.client)
        }
        return evicted
    }

    func shutdownAsync(_ application: Application) async {
        let all = lock.withLock { () -> [HTTPClient] in
            defer { entries.removeAll() }
            return entries.values.map(\.client)
        }
        for client in all { try? await client.shutdown() }
    }
}

extension IPAddress {
    /// The usual text form, for pinning and messages.
    var text: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var bytes = self.bytes
        let family = isIPv4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeMutableBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(cString: buffer)
    }
}

extension Application {
    private struct ResolverKey: StorageKey { typealias Value = any AddressResolver }

    /// The DNS resolver for outbound requests; tests swap it.
    var addressResolver: any AddressResolver {
        get { storage[ResolverKey.self] ?? SystemAddressResolver() }
        set { storage[ResolverKey.self] = newValue }
    }

    private struct ClientsKey: StorageKey { typealias Value = OutboundClients }

    /// Set once in `configure`.
    var outboundClients: OutboundClients? {
        get { storage[ClientsKey.self] }
        set { storage[ClientsKey.self] = newValue }
    }

    /// The outbound client with this app's guard and resolver.
    var outboundHTTP: OutboundHTTP {
        OutboundHTTP(guardrail: OutboundGuard(allowed: appConfig.outboundAllowedHosts, httpsOnly: appConfig.outboundHTTPSOnly),
                     resolver: addressResolver, userAgent: "Steward/\(StewardVersion.current)", clients: outboundClients)
    }
}

extension OutboundResponse {
    /// The start of the body as text Steward can store and show: an execution's error quotes a runner's answer, a
    /// webhook attempt keeps its receiver's. Bytes that are not UTF-8 become U+FFFD, as does the NUL character,
    /// which PostgreSQL cannot store in text and which would otherwise fail the write that records the answer.
    func storableText(prefix limit: Int) -> String {
        var text = String(String(buffer: body).prefix(limit))
        if text.utf8.contains(0) { text = String(String.UnicodeScalarView(text.unicodeScalars.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 })) }
        return text
    }
}
