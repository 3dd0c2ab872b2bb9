import Foundation
import JWT
import NIOConcurrencyHelpers
import Vapor
import StewardFormats

/// The claims of an access token.
struct AccessTokenClaims: JWTPayload {
    var sub: SubjectClaim
    var sid: String
    var iss: IssuerClaim
    var aud: AudienceClaim
    var iat: IssuedAtClaim
    var nbf: NotBeforeClaim
    var exp: ExpirationClaim
    var jti: IDClaim
    var roles: [String]

    /// Time-based claims are checked by `AccessTokens.verify` against the app's clock.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Issues and checks access tokens (JWTs).
struct AccessTokens: Sendable {
    /// The most clock skew tolerated on `exp` and `nbf`.
    static let leeway: TimeInterval = 30

    let app: Application

    var config: AppConfig { app.appConfig }

    func issue(userID: UUID, sessionID: UUID, roles: [String], now: Date) async throws -> String {
        let claims = AccessTokenClaims(
            sub: SubjectClaim(value: userID.lowercasedString),
            sid: sessionID.lowercasedString,
            iss: IssuerClaim(value: config.jwtIssuer),
            aud: AudienceClaim(value: [config.jwtAudience]),
            iat: IssuedAtClaim(value: now),
            nbf: NotBeforeClaim(value: now),
            exp: ExpirationClaim(value: now.addingTimeInterval(TimeInterval(app.settings.accessTokenTTLSeconds))),
            jti: IDClaim(value: UUID().lowercasedString),
            roles: roles
        )
        var header = JWTHeader()
        header.typ = "JWT"
        header.alg = app.keyMaterial.algorithm.rawValue
        let kid = app.keyMaterial.signingKID.map { JWKIdentifier(string: $0) }
        return try await app.jwt.keys.sign(claims, kid: kid, header: header)
    }

    /// Verifies header, signature and claims; every failure is an `AuthError`, never a 500.
    func verify(_ token: String, now: Date) async throws -> AccessTokenClaims {
        let claims = try await verifiedClaims(token)
        guard claims.nbf.value.timeIntervalSince(now) <= Self.leeway else { throw AuthError.invalidToken }
        guard now.timeIntervalSince(claims.exp.value) <= Self.leeway else { throw AuthError.tokenExpired }
        return claims
    }

    /// The claims of a token whose header, signature, issuer and audience are good; the times are not checked
    /// here. A token that passed once is remembered (`VerifiedTokens`).
    private func verifiedClaims(_ token: String) async throws -> AccessTokenClaims {
        let cache = app.verifiedTokens
        if let claims = cache.claims(of: token) { return claims }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count < 8192, let headerData = Self.base64URLDecode(String(parts[0])),
              let header = try? JSONDecoder().decode(HeaderFields.self, from: headerData)
        else { throw AuthError.invalidToken }
        // The algorithm must be exactly the configured one: this refuses `none` in any letter case, and any
        // attempt to make an HMAC key verify an asymmetric signature.
        guard header.alg == app.keyMaterial.algorithm.rawValue else { throw AuthError.invalidToken }
        if let typ = header.typ, typ.uppercased() != "JWT" { throw AuthError.invalidToken }
        if app.keyMaterial.algorithm == .es256 {
            guard let kid = header.kid, app.keyMaterial.verifyingKIDs.contains(kid) else { throw AuthError.invalidToken }
        }
        let claims: AccessTokenClaims
        do {
            claims = try await app.jwt.keys.verify(token, as: AccessTokenClaims.self)
        } catch {
            throw AuthError.invalidToken
        }
        guard claims.iss.value == config.jwtIssuer || config.jwtAcceptedLegacyIssuers.contains(claims.iss.value),
              claims.aud.value.contains(config.jwtAudience) else {
            throw AuthError.invalidToken
        }
        cache.remember(token, claims)
        return claims
    }

    private struct HeaderFields: Decodable {
        var alg: String
        var typ: String?
        var kid: String?
    }

    static func base64URLDecode(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64)
    }
}

/// Access tokens whose signature, header, issuer and audience have been checked, with their claims, so a client
/// sending the same token on every request pays for the check once. Only what cannot change is remembered: the
/// signing keys are loaded at start and never removed while running, and the times (`exp`, `nbf`) and the
/// session behind the token are checked on every request all the same. Verifying through JWTKit's key collection
/// (an actor) also moved every request's task between event loops; a hit stays on its loop.
///
/// Bounded: when full it starts again empty, so a flood of distinct valid tokens costs only the checks it would
/// have cost anyway.
final class VerifiedTokens: Sendable {
    private let entries = NIOLockedValueBox<[String: AccessTokenClaims]>([:])
    let capacity: Int

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    func claims(of token: String) -> AccessTokenClaims? {
        entries.withLockedValue { $0[token] }
    }

    func remember(_ token: String, _ claims: AccessTokenClaims) {
        entries.withLockedValue { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = claims
        }
    }
}

extension Application {
    private struct VerifiedTokensKey: StorageKey { typealias Value = VerifiedTokens }

    /// Set up with the key material in `configure`.
    var verifiedTokens: VerifiedTokens {
        get {
            guard let tokens = storage[VerifiedTokensKey.self] else { fatalError("verifiedTokens is set in configure") }
            return tokens
        }
        set { storage[VerifiedTokensKey.self] = newValue }
    }
}
