import Crypto
import Foundation

/// Standard Webhooks signing: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the bytes
/// behind `whsec_`.
enum WebhookSignature {
    static let prefix = "whsec_"

    /// A new secret: `whsec_` + base64 of 32 random bytes.
    static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return prefix + Data((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }).base64EncodedString()
    }

    static func sign(secret: String, id: String, timestamp: Int64, body: String) -> String? {
        guard secret.hasPrefix(prefix), let key = Data(base64Encoded: String(secret.dropFirst(prefix.count))) else { return nil }
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: SymmetricKey(data: key))
        return "v1," + Data(mac).base64EncodedString()
    }
}
