import Crypto
import Foundation

/// AES-256-GCM for secrets at rest (TOTP secrets, cached token pairs, queued mail tokens, webhook secrets, and
/// HTTP-runner and webhook header values). Seals under the current key; opens under it or any previous key, so
/// values sealed before a key rotation stay readable until they are re-sealed.
public struct SecretBox: Sendable {
    private let key: SymmetricKey
    private let previous: [SymmetricKey]

    public init(key: SymmetricKey, previous: [SymmetricKey] = []) {
        self.key = key
        self.previous = previous
    }

    /// `v1.` + base64 of nonce, ciphertext and tag.
    public func seal(_ plaintext: String) throws -> String {
        let box = try AES.GCM.seal(Data(plaintext.utf8), using: key)
        guard let combined = box.combined else { throw SecretBoxError.sealFailed }
        return "v1." + combined.base64EncodedString()
    }

    public func open(_ sealed: String) throws -> String {
        guard sealed.hasPrefix("v1."), let data = Data(base64Encoded: String(sealed.dropFirst(3))) else {
            throw SecretBoxError.malformed
        }
        let box = try AES.GCM.SealedBox(combined: data)
        for candidate in [key] + previous {
            if let plaintext = try? AES.GCM.open(box, using: candidate) { return String(decoding: plaintext, as: UTF8.self) }
        }
        throw SecretBoxError.wrongKey
    }

    /// Seals a map's values (header values), leaving the names readable.
    public func seal(values: [String: String]) throws -> [String: String] {
        try values.mapValues { try seal($0) }
    }

    public func open(values: [String: String]) throws -> [String: String] {
        try values.mapValues { try open($0) }
    }
}

enum SecretBoxError: Error, CustomStringConvertible {
    case sealFailed
    case malformed
    /// No configured key opens the value: STEWARD_ENCRYPTION_KEY changed without the old key in
    /// STEWARD_ENCRYPTION_PREVIOUS_KEYS, or the value was altered.
    case wrongKey

    var description: String {
        switch self {
        case .sealFailed: "a value could not be sealed"
        case .malformed: "a sealed value is malformed"
        case .wrongKey: "a sealed value opens under none of the configured encryption keys (STEWARD_ENCRYPTION_KEY, STEWARD_ENCRYPTION_PREVIOUS_KEYS)"
        }
    }
}
