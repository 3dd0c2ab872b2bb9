import Foundation
import JWTKit
import StewardFormats

/// The identity an ID token (or GitHub's user API) vouches for.
struct ProviderIdentity: Sendable, Equatable {
    var subject: String
    var email: String?
    var emailVerified: Bool
    var name: String?
    /// A hint for the username of a new account (`preferred_username`, GitHub's `login`).
    var preferredUsername: String?

    /// What the provider said, as Steward keeps it: an email, name or username hint with a control character
    /// (NUL among them, which PostgreSQL cannot store) is dropped, as if the provider had not sent it. No real
    /// address, name or username carries one. The subject is the caller's to check (`hasControlCharacter`): it names
    /// the account, so one with a control character refuses the sign-in instead.
    init(subject: String, email: String?, emailVerified: Bool, name: String?, preferredUsername: String?) {
        let email = email.flatMap { Self.hasControlCharacter($0) ? nil : $0 }
        self.subject = subject
        self.email = email
        self.emailVerified = email != nil && emailVerified
        self.name = name.flatMap { Self.hasControlCharacter($0) ? nil : $0 }
        self.preferredUsername = preferredUsername.flatMap { Self.hasControlCharacter($0) ? nil : $0 }
    }

    static func hasControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}

/// Checks an OpenID Connect ID token (OpenID Connect Core §3.1.3.7) before Steward believes a word of it:
/// - the algorithm: one the provider advertises and Steward verifies, asymmetric only (never `none`, never HMAC,
///   where a public key could serve as the secret);
/// - the key: the JWKS key its `kid` names (one unnamed key only when the set has exactly one that fits), of the
///   algorithm's key type, not marked for encryption;
/// - the signature (JWTKit);
/// - `iss`, `aud` (and `azp` when there are several audiences or it is present), `exp`, `iat`, `nbf` (with a
///   minute of leeway) and `nonce`.
struct IDTokenVerifier: Sendable {
    static let leeway: TimeInterval = 60
    /// What Steward can verify; the provider's advertised list narrows it.
    static let asymmetricAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    let provider: OAuthProviderConfig
    let metadata: OIDCMetadata
    let directory: OAuthProviderDirectory
    let issuer: String

    func verify(_ token: String, nonce expectedNonce: String, now: Date) async throws -> ProviderIdentity {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, case .object(let header)? = Self.decodeJSON(parts[0]) else {
            throw OAuthError.invalidIDToken("it is not a signed JWT")
        }
        guard let alg = header["alg"]?.stringValue else { throw OAuthError.invalidIDToken("its header names no algorithm") }
        guard Self.asymmetricAlgorithms.contains(alg), metadata.signingAlgorithms.contains(alg) else {
            throw OAuthError.invalidIDToken("the algorithm \(alg) is not one the provider signs ID tokens with")
        }
        if header["crit"] != nil { throw OAuthError.invalidIDToken("it has critical header parameters Steward does not understand") }
        let kid = header["kid"]?.stringValue

        let keys = try await directory.keys(for: provider, issuer: issuer, kid: kid)
        let fitting = keys.filter { key in
            Self.keyType(for: alg) == key.kty && (key.alg == nil || key.alg == alg) && (key.use == nil || key.use == "sig")
        }
        let key: ProviderKey
        if let kid {
            guard let named = keys.first(where: { $0.kid == kid }) else { throw OAuthError.invalidIDToken("its key id is not in the provider's key set") }
            guard fitting.contains(where: { $0.kid == kid }) else { throw OAuthError.invalidIDToken("its key does not fit the algorithm \(alg)") }
            key = named
        } else {
            guard fitting.count == 1 else { throw OAuthError.invalidIDToken("it names no key id and the key set has several keys") }
            key = fitting[0]
        }

        var jwk = key.jwk
        jwk.keyIdentifier = JWKIdentifier(string: key.kid ?? "only")
        let collection = JWTKeyCollection()
        let claims: IDTokenClaims
        do {
            try await collection.add(jwk: jwk)
            claims = try await collection.verify(token, as: IDTokenClaims.self)
        } catch {
            throw OAuthError.invalidIDToken("its signature does not verify")
        }
        return try check(claims, nonce: expectedNonce, now: now)
    }

    private func check(_ claims: IDTokenClaims, nonce expectedNonce: String, now: Date) throws -> ProviderIdentity {
        let clientID = provider.clientID
        guard claims.iss == metadata.issuer else { throw OAuthError.invalidIDToken("iss is not the provider's issuer") }
        guard let subject = claims.sub, !subject.isEmpty, subject.utf8.count <= 255, !ProviderIdentity.hasControlCharacter(subject) else {
            throw OAuthError.invalidIDToken("sub is missing, longer than 255 bytes or has a control character")
        }
        let audiences = claims.aud?.values ?? []
        guard audiences.contains(clientID) else { throw OAuthError.invalidIDToken("aud does not name this client") }
        if audiences.count > 1 || claims.azp != nil {
            guard claims.azp == clientID else { throw OAuthError.invalidIDToken("azp is not this client") }
        }
        let time = now.timeIntervalSince1970
        guard let exp = claims.exp else { throw OAuthError.invalidIDToken("exp is missing") }
        guard time < exp + Self.leeway else { throw OAuthError.invalidIDToken("it has expired") }
        guard let iat = claims.iat else { throw OAuthError.invalidIDToken("iat is missing") }
        guard iat <= time + Self.leeway else { throw OAuthError.invalidIDToken("it was issued in the future") }
        if let nbf = claims.nbf, time + Self.leeway < nbf { throw OAuthError.invalidIDToken("it is not valid yet") }
        guard let nonce = claims.nonce else { throw OAuthError.invalidIDToken("nonce is missing") }
        guard SecureToken.constantTimeEquals(nonce, expectedNonce) else { throw OAuthError.invalidIDToken("nonce does not match this sign-in") }

        let email = claims.email.map { User.normalise(email: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        return ProviderIdentity(subject: subject, email: email, emailVerified: claims.emailVerified == true,
                                name: claims.name, preferredUsername: claims.preferredUsername)
    }

    /// The JWK key type an algorithm needs.
    static func keyType(for alg: String) -> String {
        if alg.hasPrefix("RS") || alg.hasPrefix("PS") { return "RSA" }
        if alg.hasPrefix("ES") { return "EC" }
        return "OKP"
    }

    static func decodeJSON(_ part: Substring) -> JSONValue? {
        guard let data = AccessTokens.base64URLDecode(String(part)) else { return nil }
        return JSONText.parse(String(decoding: data, as: UTF8.self))
    }
}

/// The ID token claims Steward reads. Times are checked by `IDTokenVerifier` against the app's clock, not here.
struct IDTokenClaims: JWTPayload {
    /// `aud` is a string or an array of strings.
    struct Audience: Codable, Sendable {
        var values: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let one = try? container.decode(String.self) { values = [one] } else { values = try container.decode([String].self) }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(values)
        }
    }

    /// `email_verified` is a boolean, or (from some providers) the string "true" or "false".
    struct Flag: Codable, Sendable, Equatable {
        var value: Bool

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) { value = flag } else { value = try container.decode(String.self).lowercased() == "true" }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(value)
        }
    }

    var iss: String?
    var sub: String?
    var aud: Audience?
    var azp: String?
    var exp: Double?
    var iat: Double?
    var nbf: Double?
    var nonce: String?
    var email: String?
    var email_verified: Flag?
    var name: String?
    var preferred_username: String?

    var emailVerified: Bool? { email_verified?.value }
    var preferredUsername: String? { preferred_username }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
