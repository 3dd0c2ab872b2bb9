import Crypto
import Foundation

extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal, two digits per byte. (`String(format: "%02x")` per byte goes through Foundation's
    /// formatter; this runs inside every audited write.)
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Digest {
    var hexString: String { Array(self).hexString }
}
