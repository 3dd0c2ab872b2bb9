import Crypto
import Foundation
import StewardFormats

/// Random opaque tokens and their stored hashes.
public enum SecureToken {
    /// `bytes` random bytes as unpadded base64url (32 bytes: 256 bits, 43 characters).
    public static func generate(bytes: Int = 32) -> String {
        var generator = SystemRandomNumberGenerator()
        let data = Data((0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        return base64URL(data)
    }

    /// SHA-256 as lowercase hex: what the database stores instead of the token.
    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).hexString
    }

    /// Constant-time comparison of two strings' bytes.
    public static func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8), right = Array(rhs.utf8)
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in left.indices { difference |= left[index] ^ right[index] }
        return difference == 0
    }

    static func base64URL(_ data: Data) -> String {
        Base64URL.encode(data)
    }
}
