import Foundation
import JWTKit
import Logging
import StewardFormats
import Vapor

/// What an OpenID Connect provider's discovery document says that Steward uses.
struct OIDCMetadata: Sendable {
    var issuer: String
    var authorizationEndpoint: String
    var tokenEndpoint: String
    var jwksURI: String
    /// `id_token_signing_alg_values_supported`; RS256 when the document is silent (OpenID Connect Discovery §3).
    var signingAlgorithms: [String]
    /// `token_endpoint_auth_methods_supported`; client_secret_basic when silent.
    var tokenAuthMethods: [String]
}

/// One signing key of a provider's JWKS, with the fields the verifier checks before using it.
struct ProviderKey: Sendable {
    var kid: String?
    var kty: String
    var alg: String?
    var use: String?
    var jwk: JWK
}

/// Discovery documents and key sets of the configured OpenID Connect providers: fetched when first needed, kept,
/// and refreshed when an ID token names a key id the cached set lacks, at most once a minute per provider. A
/// provider that cannot be read, with nothing cached, is `OAuthError.providerUnavailable` (503).
actor OAuthProviderDirectory {
    /// The discovery document is read again after this long (keys rotate through the JWKS, not the document).
    static let metadataLifetime: TimeInterval = 24 * 3600
    /// The key set is read again after this long even without a key-id miss.
    static let keysLifetime: TimeInterval = 3600
    /// The floor between two reads of one provider's keys forced by unknown key ids.
    static let refreshFloor: TimeInterval = 60

    private struct Entry {
        var metadata: OIDCMetadata
        var metadataFetchedAt: Date
        var keys: [ProviderKey] = []
        var keysFetchedAt: Date?
    }

    private let transport: any ProviderTransport
    private let clock: any WallClock
    private let logger: Logger
    private var entries: [String: Entry] = [:]

    init(transport: any ProviderTransport, clock: any WallClock, logger: Logger) {
        self.transport = transport
        self.clock = clock
        self.logger = logger
    }

    /// The provider's discovery document, fetched if not cached or too old (an old one still serves if the
    /// provider cannot be reached).
    func metadata(for provider: OAuthProviderConfig, issuer: String) async throws -> OIDCMetadata {
        let now = clock.now()
        if let entry = entries[provider.id], now.timeIntervalSince(entry.metadataFetchedAt) < Self.metadataLifetime {
            return entry.metadata
        }
        do {
            let metadata = try await fetchMetadata(issuer: issuer)
            var entry = entries[provider.id] ?? Entry(metadata: metadata, metadataFetchedAt: now)
            entry.metadata = metadata
            entry.metadataFetchedAt = now
            entries[provider.id] = entry
            return metadata
        } catch let error as OAuthError {
            if let stale = entries[provider.id] {
                logger.warning("oauth discovery failed; using the cached document", metadata: ["provider": .string(provider.id), "error": .string(error.reason)])
                return stale.metadata
            }
            throw error
        }
    }

    /// The keys that may have signed a token naming `kid`: the cached set, read again when it lacks `kid` (at most
    /// once a minute) or is older than an hour.
    func keys(for provider: OAuthProviderConfig, issuer: String, kid: String?) async throws -> [ProviderKey] {
        let metadata = try await self.metadata(for: provider, issuer: issuer)
        let now = clock.now()
        let entry = entries[provider.id]!
        let missing = kid.map { wanted in !entry.keys.contains { $0.kid == wanted } } ?? false
        let age = entry.keysFetchedAt.map { now.timeIntervalSince($0) }
        let needsRead = age == nil || age! >= Self.keysLifetime || (missing && age! >= Self.refreshFloor)
        guard needsRead else { return entry.keys }
        do {
            let keys = try await fetchKeys(metadata.jwksURI)
            entries[provider.id]?.keys = keys
            entries[provider.id]?.keysFetchedAt = now
            return keys
        } catch let error as OAuthError {
            guard age != nil else { throw error }
            logger.warning("oauth key set read failed; using the cached keys", metadata: ["provider": .string(provider.id), "error": .string(error.reason)])
            entries[provider.id]?.keysFetchedAt = now
            return entry.keys
        }
    }

    private func fetchMetadata(issuer: String) async throws -> OIDCMetadata {
        let url = issuer + "/.well-known/openid-configuration"
        guard case .object(let document) = try await fetchJSON(url) else {
            throw OAuthError.providerUnavailable("the discovery document is not a JSON object")
        }
        func string(_ name: String) throws -> String {
            guard case .string(let value)? = document[name], !value.isEmpty else {
                throw OAuthError.providerUnavailable("the discovery document has no \(name)")
            }
            return value
        }
        func strings(_ name: String) -> [String]? {
            guard case .array(let values)? = document[name] else { return nil }
            return values.compactMap(\.stringValue)
        }
        let documentIssuer = try string("issuer")
        // OpenID Connect Discovery §4.3: the document must be the issuer's own.
        guard Self.trimmed(documentIssuer) == Self.trimmed(issuer) else {
            throw OAuthError.providerUnavailable("the discovery document names another issuer (\(documentIssuer))")
        }
        return OIDCMetadata(
            issuer: documentIssuer, authorizationEndpoint: try string("authorization_endpoint"),
            tokenEndpoint: try string("token_endpoint"), jwksURI: try string("jwks_uri"),
            signingAlgorithms: strings("id_token_signing_alg_values_supported") ?? ["RS256"],
            tokenAuthMethods: strings("token_endpoint_auth_methods_supported") ?? ["client_secret_basic"])
    }

    private func fetchKeys(_ url: String) async throws -> [ProviderKey] {
        guard case .object(let document) = try await fetchJSON(url), case .array(let entries)? = document["keys"] else {
            throw OAuthError.providerUnavailable("the key set has no keys")
        }
        // Keys of kinds Steward does not read (symmetric, encryption) are skipped, not fatal.
        return entries.compactMap { entry -> ProviderKey? in
            guard case .object(let fields) = entry, let kty = fields["kty"]?.stringValue,
                  let text = try? entry.canonicalString(),
                  let jwk = try? JSONDecoder().decode(JWK.self, from: Data(text.utf8))
            else { return nil }
            return ProviderKey(kid: fields["kid"]?.stringValue, kty: kty, alg: fields["alg"]?.stringValue,
                               use: fields["use"]?.stringValue, jwk: jwk)
        }
    }

    private func fetchJSON(_ url: String) async throws -> JSONValue {
        let response: ProviderResponse
        do {
            response = try await transport.get(url, headers: [("Accept", "application/json")])
        } catch {
            throw OAuthError.providerUnavailable("\(url) did not answer (\(error))")
        }
        guard response.status == 200 else { throw OAuthError.providerUnavailable("\(url) answered \(response.status)") }
        guard let value = JSONText.parse(response.body) else { throw OAuthError.providerUnavailable("\(url) did not answer JSON") }
        return value
    }

    private static func trimmed(_ url: String) -> String {
        url.hasSuffix("/") ? String(url.dropLast()) : url
    }
}

extension Application {
    private struct DirectoryKey: StorageKey { typealias Value = OAuthProviderDirectory }

    /// Set in `configure`; tests that swap the transport or the clock set a new one.
    var oauthProviderDirectory: OAuthProviderDirectory {
        get { storage[DirectoryKey.self]! }
        set { storage[DirectoryKey.self] = newValue }
    }
}
