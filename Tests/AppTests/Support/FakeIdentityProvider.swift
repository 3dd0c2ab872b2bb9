import Crypto
import _CryptoExtras
import Foundation
import JWTKit
import NIOCore
import Testing
import Vapor
import VaporTesting
@testable import App
@testable import StewardFormats

/// An in-process identity provider behind `ProviderTransport`: an OpenID Connect issuer (discovery, JWKS,
/// authorize, token, with an ES256 key and an RS256 key of its own) and GitHub's OAuth endpoints and API. The
/// authorize step is `authorize(_:)`, standing in for the person's browser at the provider.
final class FakeIdentityProvider: ProviderTransport, @unchecked Sendable {
    static let issuer = "https://idp.test"
    static let clientID = "steward-client"
    static let clientSecret = "fake-secret-1234"
    static let githubAuth = "https://github.test/login/oauth/authorize"
    static let githubToken = "https://github.test/login/oauth/access_token"
    static let githubAPI = "https://api.github.test"

    /// Who signs in at the provider next.
    struct Person: Sendable {
        var subject: String
        var email: String?
        var emailVerified: Bool = true
        var name: String? = "Ada Lovelace"
        var login: String = "ada"
    }

    /// A pending authorization: what the authorize request said.
    private struct Grant {
        var clientID: String
        var redirectURI: String
        var challenge: String
        var nonce: String?
        var person: Person
    }

    private let lock = NSLock()
    let ecKey = ES256PrivateKey()
    let rsaKey: JWTKit.Insecure.RSA.PrivateKey
    /// A key of another provider, published nowhere.
    let strangerKey = ES256PrivateKey()
    private var grants: [String: Grant] = [:]
    private var githubTokens: [String: Person] = [:]
    private var log: [String] = []

    /// Discovery and keys answer 503 while true.
    var down = false
    /// Rewrites the claims of the next ID tokens (to forge them).
    var claimEdits: (@Sendable (inout [String: JSONValue]) -> Void)?
    /// Replaces the whole ID token the token endpoint hands out.
    var tokenForger: (@Sendable (_ claims: [String: JSONValue]) async throws -> String)?
    /// Sign with the RSA key instead of the EC key.
    var signWithRSA = false
    /// Publish the stranger key too, under the id `rotated` (a key rotation at the provider).
    var publishRotated = false

    init() throws {
        rsaKey = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
    }

    var requests: [String] { lock.withLock { log } }

    func set<T>(_ path: ReferenceWritableKeyPath<FakeIdentityProvider, T>, _ value: T) {
        lock.withLock { self[keyPath: path] = value }
    }

    /// The environment that configures Steward with this provider as `corp` and GitHub as `github`.
    static func environment(signup: Bool = true) -> [String: String] {
        [
            "STEWARD_OIDC_PROVIDERS": "corp,github",
            "STEWARD_OIDC_CORP_ISSUER": issuer, "STEWARD_OIDC_CORP_CLIENT_ID": clientID,
            "STEWARD_OIDC_CORP_CLIENT_SECRET": clientSecret, "STEWARD_OIDC_CORP_NAME": "Corp SSO",
            "STEWARD_OIDC_GITHUB_CLIENT_ID": "gh-client", "STEWARD_OIDC_GITHUB_CLIENT_SECRET": "gh-secret",
            "STEWARD_OIDC_GITHUB_AUTH_URL": githubAuth, "STEWARD_OIDC_GITHUB_TOKEN_URL": githubToken,
            "STEWARD_OIDC_GITHUB_API_URL": githubAPI,
            "STEWARD_OAUTH_REDIRECT_URLS": "https://app.example/done,https://app.example/linked",
            "STEWARD_OAUTH_SIGNUP": signup ? "true" : "false",
        ]
    }

    // MARK: The browser at the provider

    /// Reads an authorization URL as the provider would, remembers its challenge and nonce for `person`, and
    /// returns the code it would send back with the state.
    func authorize(_ url: String, as person: Person) throws -> (code: String, state: String) {
        let components = try #require(URLComponents(string: url))
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
        #expect(query["response_type"] == "code")
        #expect(query["code_challenge_method"] == "S256")
        let code = "code-" + UUID().uuidString
        lock.withLock {
            grants[code] = Grant(clientID: query["client_id"] ?? "", redirectURI: query["redirect_uri"] ?? "",
                                 challenge: query["code_challenge"] ?? "", nonce: query["nonce"], person: person)
        }
        return (code, try #require(query["state"]))
    }

    // MARK: ProviderTransport

    func get(_ url: String, headers: [(String, String)]) async throws -> ProviderResponse {
        lock.withLock { log.append("GET \(url)") }
        switch url {
        case Self.issuer + "/.well-known/openid-configuration":
            if lock.withLock({ down }) { return Self.answer(503, "{}") }
            return Self.answer(200, [
                "issuer": .string(Self.issuer),
                "authorization_endpoint": .string(Self.issuer + "/authorize"),
                "token_endpoint": .string(Self.issuer + "/token"),
                "jwks_uri": .string(Self.issuer + "/jwks"),
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            ])
        case Self.issuer + "/jwks":
            if lock.withLock({ down }) { return Self.answer(503, "{}") }
            return Self.answer(200, try jwks())
        case Self.githubAPI + "/user", Self.githubAPI + "/user/emails":
            guard let token = headers.first(where: { $0.0 == "Authorization" })?.1.replacingOccurrences(of: "Bearer ", with: ""),
                  let person = lock.withLock({ githubTokens[token] })
            else { return Self.answer(401, #"{"message":"Bad credentials"}"#) }
            if url.hasSuffix("/emails") {
                guard let email = person.email else { return Self.answer(200, "[]") }
                return Self.answer(200, [["email": .string(email), "primary": true, "verified": .bool(person.emailVerified)]])
            }
            let id = Double(person.subject) ?? 1
            return Self.answer(200, ["id": .number(id), "login": .string(person.login), "name": person.name.map { .string($0) } ?? .null])
        default:
            return Self.answer(404, "{}")
        }
    }

    func postForm(_ url: String, form pairs: [(String, String)], headers: [(String, String)]) async throws -> ProviderResponse {
        lock.withLock { log.append("POST \(url)") }
        let form = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        guard let code = form["code"], let grant = lock.withLock({ grants.removeValue(forKey: code) }) else {
            return Self.answer(400, #"{"error":"invalid_grant"}"#)
        }
        // PKCE (RFC 7636 §4.6): the verifier must hash to the challenge.
        let verifier = form["code_verifier"] ?? ""
        guard SecureToken.base64URL(Data(SHA256.hash(data: Data(verifier.utf8)))) == grant.challenge else {
            return Self.answer(400, #"{"error":"invalid_grant","error_description":"PKCE verification failed"}"#)
        }
        guard form["redirect_uri"] == grant.redirectURI else { return Self.answer(400, #"{"error":"invalid_grant"}"#) }

        if url == Self.githubToken {
            guard form["client_id"] == "gh-client", form["client_secret"] == "gh-secret" else {
                return Self.answer(200, #"{"error":"incorrect_client_credentials"}"#)
            }
            let token = "gho_" + UUID().uuidString
            lock.withLock { githubTokens[token] = grant.person }
            return Self.answer(200, ["access_token": .string(token), "token_type": "bearer", "scope": "read:user,user:email"])
        }
        guard url == Self.issuer + "/token" else { return Self.answer(404, "{}") }
        let basic = "Basic " + Data("\(Self.clientID):\(Self.clientSecret)".utf8).base64EncodedString()
        guard headers.contains(where: { $0.0 == "Authorization" && $0.1 == basic }) else { return Self.answer(401, #"{"error":"invalid_client"}"#) }

        var claims = claims(for: grant)
        lock.withLock { claimEdits }?(&claims)
        let idToken: String
        if let forger = lock.withLock({ tokenForger }) {
            idToken = try await forger(claims)
        } else {
            idToken = try await sign(claims, rsa: lock.withLock { signWithRSA })
        }
        return Self.answer(200, ["access_token": "at-unused", "token_type": "Bearer", "id_token": .string(idToken)])
    }

    // MARK: Tokens

    /// The claims an honest provider puts in the ID token for this grant, at Steward's (test) clock's time.
    var now: () -> Date = { Date() }

    private func claims(for grant: Grant) -> [String: JSONValue] {
        let time = now().timeIntervalSince1970.rounded(.down)
        var claims: [String: JSONValue] = [
            "iss": .string(Self.issuer), "sub": .string(grant.person.subject), "aud": .string(grant.clientID),
            "exp": .number(time + 300), "iat": .number(time), "email_verified": .bool(grant.person.emailVerified),
        ]
        if let nonce = grant.nonce { claims["nonce"] = .string(nonce) }
        if let email = grant.person.email { claims["email"] = .string(email) }
        if let name = grant.person.name { claims["name"] = .string(name) }
        return claims
    }

    struct Claims: JWTPayload {
        var values: [String: JSONValue]
        init(_ values: [String: JSONValue]) { self.values = values }
        init(from decoder: any Decoder) throws { values = try [String: JSONValue](from: decoder) }
        func encode(to encoder: any Encoder) throws { try values.encode(to: encoder) }
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    func sign(_ claims: [String: JSONValue], rsa: Bool = false) async throws -> String {
        let keys = JWTKeyCollection()
        if rsa {
            await keys.add(rsa: rsaKey, digestAlgorithm: .sha256, kid: "rsa-1")
            return try await keys.sign(Claims(claims), kid: "rsa-1")
        }
        await keys.add(ecdsa: ecKey, kid: "ec-1")
        return try await keys.sign(Claims(claims), kid: "ec-1")
    }

    /// Signed with a key the provider never published, under the published key's id.
    func signWithStranger(_ claims: [String: JSONValue], kid: String = "ec-1") async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: strangerKey, kid: JWKIdentifier(string: kid))
        return try await keys.sign(Claims(claims), kid: JWKIdentifier(string: kid))
    }

    /// A token with a hand-made header and signature.
    static func unsigned(header: [String: JSONValue], claims: [String: JSONValue], signature: (String) -> String) throws -> String {
        let input = SecureToken.base64URL(Data(try JSONValue.object(header).canonicalString().utf8)) + "."
            + SecureToken.base64URL(Data(try JSONValue.object(claims).canonicalString().utf8))
        return input + "." + signature(input)
    }

    /// The published key set as JSON (also the HMAC secret an algorithm-confusion attack would use).
    func jwks() throws -> JSONValue {
        let ec = try #require(ecKey.parameters)
        let rsa = try rsaKey.publicKey.getKeyPrimitives()
        var keys: [JSONValue] = []
        if lock.withLock({ publishRotated }) {
            let rotated = try #require(strangerKey.parameters)
            keys.append(["kty": "EC", "crv": "P-256", "x": .string(rotated.x), "y": .string(rotated.y), "kid": "rotated", "use": "sig", "alg": "ES256"])
        }
        return ["keys": .array(keys + [
            ["kty": "EC", "crv": "P-256", "x": .string(ec.x), "y": .string(ec.y), "kid": "ec-1", "use": "sig", "alg": "ES256"],
            // No alg, as several providers publish RSA keys.
            ["kty": "RSA", "n": .string(SecureToken.base64URL(rsa.modulus)), "e": .string(SecureToken.base64URL(rsa.publicExponent)), "kid": "rsa-1", "use": "sig"],
        ])]
    }

    private static func answer(_ status: Int, _ json: JSONValue) -> ProviderResponse {
        ProviderResponse(status: status, body: ByteBuffer(string: (try? json.canonicalString()) ?? "null"))
    }

    private static func answer(_ status: Int, _ text: String) -> ProviderResponse {
        ProviderResponse(status: status, body: ByteBuffer(string: text))
    }
}

extension Application {
    /// Puts `provider` behind the transport (and a fresh directory, so nothing is cached), at the app's clock.
    func useFakeIdentityProvider(_ provider: FakeIdentityProvider) {
        providerTransport = provider
        let clock = wallClock
        provider.now = { clock.now() }
        oauthProviderDirectory = OAuthProviderDirectory(transport: provider, clock: clock, logger: logger)
    }
}
