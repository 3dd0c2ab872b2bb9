import Crypto
import Foundation
import JWT
import Vapor

/// One public signing key as published in the JWKS.
struct PublishedKey: Content, Equatable {
    var kty: String
    var crv: String
    var x: String
    var y: String
    var kid: String
    var use: String
    var alg: String
}

/// Signing keys and the at-rest encryption key, loaded from configuration or generated into the data directory.
struct KeyMaterial: Sendable {
    var algorithm: AppConfig.JWTAlgorithmName
    /// The `kid` new tokens carry (ES256 only).
    var signingKID: String?
    /// Every `kid` that verifies (the signing key and any previous keys).
    var verifyingKIDs: Set<String>
    var publishedKeys: [PublishedKey]
    var secretBox: SecretBox
    /// Signs HTTP-runner callback tokens; derived from the encryption key, so every instance agrees.
    var callbackKey: SymmetricKey
    /// Keys the audit chain's HMAC; kept outside the database (STEWARD_AUDIT_KEY or the data directory).
    var audit: AuditKeys

    static func load(_ app: Application, _ config: AppConfig) async throws -> KeyMaterial {
        let encryption = try encryptionKey(config)
        let previous = config.previousEncryptionKeys.compactMap { Data(base64Encoded: $0) }.map { SymmetricKey(data: $0) }
        let secretBox = SecretBox(key: SymmetricKey(data: encryption), previous: previous)
        let callbackKey = SymmetricKey(data: Data(SHA256.hash(data: Data("steward-callback-key".utf8) + encryption)))
        let audit = AuditKeys(
            chain: SymmetricKey(data: try key32(config.auditKey, file: "audit.key", variable: "STEWARD_AUDIT_KEY", config)),
            checkpointSigner: try Curve25519.Signing.PrivateKey(
                rawRepresentation: try key32(config.auditSigningKey, file: "audit-signing.key", variable: "STEWARD_AUDIT_SIGNING_KEY", config)))
        switch config.jwtAlgorithm {
        case .hs256:
            let secret = try config.jwtSecret ?? (try generatedFile(config, name: "jwt-secret") { SecureToken.generate(bytes: 48) })
            await app.jwt.keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            return KeyMaterial(algorithm: .hs256, signingKID: nil, verifyingKIDs: [], publishedKeys: [], secretBox: secretBox, callbackKey: callbackKey, audit: audit)
        case .es256:
            let pem: String
            if let file = config.jwtKeyFile {
                pem = try readKeyFile(file, variable: "STEWARD_JWT_KEY_FILE")
            } else {
                pem = try generatedFile(config, name: "jwt-es256.pem") { ES256PrivateKey().pemRepresentation }
            }
            let signing = try ES256PrivateKey(pem: pem)
            var published = [try publish(signing.publicKey)]
            await app.jwt.keys.add(ecdsa: signing, kid: JWKIdentifier(string: published[0].kid))
            for file in config.jwtPreviousKeyFiles {
                let text = try readKeyFile(file, variable: "STEWARD_JWT_PREVIOUS_KEY_FILES")
                let publicKey: ES256PublicKey
                if let privateKey = try? ES256PrivateKey(pem: text) {
                    publicKey = privateKey.publicKey
                } else {
                    publicKey = try ES256PublicKey(pem: text)
                }
                let entry = try publish(publicKey)
                guard !published.contains(entry) else { continue }
                published.append(entry)
                await app.jwt.keys.add(ecdsa: publicKey, kid: JWKIdentifier(string: entry.kid))
            }
            return KeyMaterial(algorithm: .es256, signingKID: published[0].kid, verifyingKIDs: Set(published.map(\.kid)),
                               publishedKeys: published, secretBox: secretBox, callbackKey: callbackKey, audit: audit)
        }
    }

    /// The RFC 7638 thumbprint of the key: stable, derived, and the same on every instance that shares it.
    private static func publish(_ key: ES256PublicKey) throws -> PublishedKey {
        guard let parameters = key.parameters else { throw KeyMaterialError.unusable("ES256 key has no parameters") }
        let thumbprintInput = #"{"crv":"P-256","kty":"EC","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
        let kid = SecureToken.base64URL(Data(SHA256.hash(data: Data(thumbprintInput.utf8))))
        return PublishedKey(kty: "EC", crv: "P-256", x: parameters.x, y: parameters.y, kid: kid, use: "sig", alg: "ES256")
    }

    private static func encryptionKey(_ config: AppConfig) throws -> Data {
        try key32(config.encryptionKey, file: "encryption.key", variable: "STEWARD_ENCRYPTION_KEY", config)
    }

    /// 32 bytes: from the variable's base64 when set, else from (or generated into) `<data dir>/<file>`.
    private static func key32(_ configured: String?, file: String, variable: String, _ config: AppConfig) throws -> Data {
        let encoded = try configured ?? (try generatedFile(config, name: file) {
            var generator = SystemRandomNumberGenerator()
            return Data((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }).base64EncodedString()
        })
        guard let data = Data(base64Encoded: encoded.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32 else {
            throw KeyMaterialError.unusable("\(variable) (or \(file) in the data directory) is not base64 of 32 bytes")
        }
        return data
    }

    private static func readKeyFile(_ path: String, variable: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw KeyMaterialError.unusable("\(variable): cannot read \(path)")
        }
        return text
    }

    /// Reads `<data dir>/<name>`, creating it with mode 0600 from `make()` the first time.
    private static func generatedFile(_ config: AppConfig, name: String, make: () -> String) throws -> String {
        let directory = config.dataDirectory
        let path = (directory as NSString).appendingPathComponent(name)
        if let existing = try? String(contentsOfFile: path, encoding: .utf8) {
            return existing.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let value = make()
        guard FileManager.default.createFile(atPath: path, contents: Data((value + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw KeyMaterialError.unusable("cannot write \(path)")
        }
        return value
    }
}

enum KeyMaterialError: Error, CustomStringConvertible {
    case unusable(String)
    var description: String {
        switch self {
        case .unusable(let reason): reason
        }
    }
}

extension Application {
    private struct KeyMaterialKey: StorageKey { typealias Value = KeyMaterial }

    var keyMaterial: KeyMaterial {
        get {
            guard let keys = storage[KeyMaterialKey.self] else { fatalError("KeyMaterial.load was not called in configure") }
            return keys
        }
        set { storage[KeyMaterialKey.self] = newValue }
    }

    /// Encrypts secrets at rest.
    public var secretBox: SecretBox { keyMaterial.secretBox }

    /// Keys the audit chain and signs its checkpoints.
    var auditKeys: AuditKeys { keyMaterial.audit }
}

/// The audit chain's HMAC key (shared by every instance on one database) and this instance's Ed25519 key for
/// signing checkpoints.
struct AuditKeys: Sendable {
    var chain: SymmetricKey
    var checkpointSigner: Curve25519.Signing.PrivateKey

    var checkpointPublicKey: String { checkpointSigner.publicKey.rawRepresentation.base64EncodedString() }

    /// How the audit log names an email address that may belong to no account (a failed login, a lockout, a reset
    /// asked for an unknown address): a keyed digest, so the log, which no one can rewrite, never holds the address
    /// itself. The same address always gives the same digest under one audit key, so attempts can be correlated.
    func emailDigest(_ normalisedEmail: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(("email-digest\n" + normalisedEmail).utf8), using: chain)
        return Data(mac).prefix(16).hexString
    }
}
