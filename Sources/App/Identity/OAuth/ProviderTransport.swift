import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Vapor

/// An answer from an identity provider's endpoint.
struct ProviderResponse: Sendable {
    var status: Int
    var body: ByteBuffer

    var text: String { String(buffer: body) }
}

/// The only door from Steward to identity providers: discovery, keys, the token endpoint and GitHub's API.
/// A small protocol so that tests put an in-process fake provider behind it.
///
/// Providers are named by the operator, so the outbound guard (which keeps webhooks and HTTP skills off private
/// addresses) does not apply: a company's Keycloak may well live on a private network.
protocol ProviderTransport: Sendable {
    func get(_ url: String, headers: [(String, String)]) async throws -> ProviderResponse
    func postForm(_ url: String, form: [(String, String)], headers: [(String, String)]) async throws -> ProviderResponse
}

/// The real transport: AsyncHTTPClient's shared client, no redirects, a 10-second timeout and at most 1 MiB read.
struct HTTPProviderTransport: ProviderTransport {
    static let timeout: TimeAmount = .seconds(10)
    static let largestResponse = 1 << 20
    let userAgent: String

    func get(_ url: String, headers: [(String, String)]) async throws -> ProviderResponse {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        return try await send(request, headers: headers)
    }

    func postForm(_ url: String, form: [(String, String)], headers: [(String, String)]) async throws -> ProviderResponse {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        return try await send(request, headers: headers)
    }

    private func send(_ request: HTTPClientRequest, headers: [(String, String)]) async throws -> ProviderResponse {
        var request = request
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "User-Agent", value: userAgent)
        RequestEffects.note()
        let response = try await HTTPClient.shared.execute(request, timeout: Self.timeout)
        let body = try await response.body.collect(upTo: Self.largestResponse)
        return ProviderResponse(status: Int(response.status.code), body: body)
    }
}

/// `application/x-www-form-urlencoded`, as RFC 6749 sends token requests (spaces as `%20`, which every server reads).
enum FormEncoding {
    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }

    /// Reads a form body (or a query string) into pairs, `+` as a space.
    static func decode(_ text: String) -> [(String, String)] {
        text.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func unescape(_ part: Substring) -> String {
                String(part).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(part)
            }
            return (unescape(parts[0]), parts.count > 1 ? unescape(parts[1]) : "")
        }
    }
}

extension Application {
    private struct ProviderTransportKey: StorageKey { typealias Value = any ProviderTransport }

    /// How Steward reaches identity providers; tests swap in a fake provider.
    var providerTransport: any ProviderTransport {
        get { storage[ProviderTransportKey.self] ?? HTTPProviderTransport(userAgent: "Steward/\(StewardVersion.current)") }
        set { storage[ProviderTransportKey.self] = newValue }
    }
}
