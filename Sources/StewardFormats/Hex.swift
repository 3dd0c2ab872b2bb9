import Foundation

/// Hexadecimal digits as bytes, both ways: for digests, UUID text and JSON's `\u` escapes.
package enum Hex {
    package static let lowercase: [UInt8] = Array("0123456789abcdef".utf8)
    package static let uppercase: [UInt8] = Array("0123456789ABCDEF".utf8)

    /// The value of one hexadecimal digit in either case, or nil.
    package static func value(of byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal, two digits per byte. (`String(format: "%02x")` per byte goes through Foundation's
    /// formatter; this runs inside every audited write.)
    package var hexString: String {
        let digits = Hex.lowercase
        var bytes: [UInt8] = []
        bytes.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
