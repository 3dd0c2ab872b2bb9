import Crypto
import Foundation

/// RFC 6238 time-based one-time passwords: HMAC-SHA1, 6 digits, 30-second steps.
public enum TOTP {
    public static let digits = 6
    public static let period: TimeInterval = 30

    /// A new 160-bit secret, base32 encoded as authenticator apps expect.
    public static func generateSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return Base32.encode(Data((0..<20).map { _ in UInt8.random(in: .min ... .max, using: &generator) }))
    }

    public static func step(at date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 / period).rounded(.down))
    }

    /// The code for a step; `digits` may be raised for the RFC's 8-digit test vectors.
    public static func code(secret: Data, step: Int64, digits: Int = digits) -> String {
        var counter = UInt64(bitPattern: step).bigEndian
        let message = withUnsafeBytes(of: &counter) { Data($0) }
        let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: secret)))
        let offset = Int(mac[mac.count - 1] & 0x0f)
        let binary = (UInt32(mac[offset] & 0x7f) << 24) | (UInt32(mac[offset + 1]) << 16)
            | (UInt32(mac[offset + 2]) << 8) | UInt32(mac[offset + 3])
        var modulus: UInt32 = 1
        for _ in 0..<digits { modulus *= 10 }
        let value = String(binary % modulus)
        return String(repeating: "0", count: max(0, digits - value.count)) + value
    }

    /// The step whose code matches within ±1 step of `date`, if any and if newer than `lastUsedStep`.
    public static func matchingStep(code: String, secret: Data, at date: Date, lastUsedStep: Int64?) -> Int64? {
        let trimmed = code.filter { !$0.isWhitespace }
        guard trimmed.count == digits, trimmed.allSatisfy(\.isASCIIDigitCharacter) else { return nil }
        let current = step(at: date)
        for candidate in [current - 1, current, current + 1] {
            if let lastUsedStep, candidate <= lastUsedStep { continue }
            if SecureToken.constantTimeEquals(Self.code(secret: secret, step: candidate), trimmed) { return candidate }
        }
        return nil
    }

    public static func provisioningURI(secret: String, account: String, issuer: String) -> String {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~@"))
        let label = "\(issuer):\(account)".addingPercentEncoding(withAllowedCharacters: allowed.union(CharacterSet(charactersIn: ":"))) ?? account
        let encodedIssuer = issuer.addingPercentEncoding(withAllowedCharacters: allowed) ?? issuer
        return "otpauth://totp/\(label)?secret=\(secret)&issuer=\(encodedIssuer)&algorithm=SHA1&digits=\(digits)&period=\(Int(period))"
    }
}

extension Character {
    var isASCIIDigitCharacter: Bool { ("0"..."9").contains(self) }
}

/// RFC 4648 base32 without padding.
public enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    public static func encode(_ data: Data) -> String {
        var output = ""
        var buffer: UInt32 = 0
        var bits = 0
        for byte in data {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return output
    }

    public static func decode(_ text: String) -> Data? {
        var buffer: UInt32 = 0
        var bits = 0
        var output = Data()
        for character in text.uppercased() where character != "=" && !character.isWhitespace {
            guard let index = alphabet.firstIndex(of: character) else { return nil }
            buffer = (buffer << 5) | UInt32(index)
            bits += 5
            if bits >= 8 {
                output.append(UInt8((buffer >> UInt32(bits - 8)) & 0xff))
                bits -= 8
            }
        }
        return output
    }
}
