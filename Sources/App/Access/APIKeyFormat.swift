import Foundation

/// `stw_<8-character public prefix>_<32 random bytes in base62>`.
enum APIKeyFormat {
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    static func generate() -> (key: String, prefix: String) {
        var generator = SystemRandomNumberGenerator()
        let prefix = String((0..<8).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] })
        let secret = base62((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        return ("stw_\(prefix)_\(secret)", prefix)
    }

    /// The prefix of a well-formed key, or nil.
    static func prefix(of key: String) -> String? {
        let parts = key.split(separator: "_", omittingEmptySubsequences: false)
        guard key.utf8.count <= 100, parts.count == 3, parts[0] == "stw", parts[1].count == 8, !parts[2].isEmpty,
              (parts[1] + parts[2]).allSatisfy({ alphabet.contains($0) })
        else { return nil }
        return String(parts[1])
    }

    /// Big-endian base62 by repeated division.
    static func base62(_ bytes: [UInt8]) -> String {
        var number = bytes
        var digits: [Character] = []
        while number.contains(where: { $0 != 0 }) {
            var remainder = 0
            var quotient: [UInt8] = []
            for byte in number {
                let accumulator = remainder * 256 + Int(byte)
                let digit = accumulator / 62
                remainder = accumulator % 62
                if !quotient.isEmpty || digit != 0 { quotient.append(UInt8(digit)) }
            }
            digits.append(alphabet[remainder])
            number = quotient
        }
        return digits.isEmpty ? "0" : String(digits.reversed())
    }
}
