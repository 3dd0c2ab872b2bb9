/// Unpadded base64url (RFC 4648, section 5), written straight into the string's bytes: Foundation's
/// `base64EncodedString()` and three `replacingOccurrences` made a list page's cursor cost more than two of its items.
package enum Base64URL {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    package static func encode<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let input = Array(bytes)
        let digits = alphabet
        return String(unsafeUninitializedCapacity: (input.count * 4 + 2) / 3) { output in
            var written = 0
            var index = 0
            // The first `count` six-bit digits of a 24-bit group, most significant first.
            func put(_ group: UInt32, _ count: Int) {
                for shift in stride(from: 18, through: 24 - 6 * count, by: -6) {
                    output[written] = digits[Int(group >> UInt32(shift) & 63)]
                    written += 1
                }
            }
            while index + 3 <= input.count {
                put(UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2]), 4)
                index += 3
            }
            switch input.count - index {
            case 1: put(UInt32(input[index]) << 16, 2)
            case 2: put(UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8, 3)
            default: break
            }
            return written
        }
    }
}
