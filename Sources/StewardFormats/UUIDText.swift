import Foundation

extension UUID {
    /// A random (version 4) UUID from `IDRandom`'s pooled bytes: for ids that are not secrets (request ids, lease
    /// tokens, row ids). `UUID()` on Linux opens, reads and closes `/dev/urandom` for every id, three system calls,
    /// and a create makes several ids. Tokens and secrets keep `SecureToken`, which draws from the system each time.
    package static func pooledRandom() -> UUID {
        var bytes = IDRandom.uuidBytes()
        withUnsafeMutableBytes(of: &bytes) { raw in
            raw[6] = 0x40 | (raw[6] & 0x0F)
            raw[8] = 0x80 | (raw[8] & 0x3F)
        }
        return UUID(uuid: bytes)
    }

    /// `uuidString.lowercased()` without the C formatter `uuidString` goes through.
    package var lowercasedString: String { text(alphabet: Hex.lowercase) }

    /// `uuidString` (upper case, what SQLite stores), without the C formatter.
    package var uppercasedString: String { text(alphabet: Hex.uppercase) }

    private func text(alphabet: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: 36) { out in
            fill(out, alphabet: alphabet)
            return 36
        }
    }

    /// Appends `lowercasedString`'s 36 bytes to `bytes`, without making the string.
    package func appendLowercased(to bytes: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 36) { out in
            fill(out, alphabet: Hex.lowercase)
            bytes.append(contentsOf: out)
        }
    }

    /// The 36 characters of the text form, in `alphabet`, into `out`.
    private func fill(_ out: UnsafeMutableBufferPointer<UInt8>, alphabet: [UInt8]) {
        withUnsafeBytes(of: uuid) { raw in
            var position = 0
            for index in 0..<16 {
                if index == 4 || index == 6 || index == 8 || index == 10 {
                    out[position] = UInt8(ascii: "-")
                    position += 1
                }
                out[position] = alphabet[Int(raw[index] >> 4)]
                out[position + 1] = alphabet[Int(raw[index] & 0x0F)]
                position += 2
            }
        }
    }

    /// `UUID(uuidString:)` for the 36-character form in either case, without the C scanner it goes through.
    package init?(text: String) {
        var text = text
        let parsed: uuid_t? = text.withUTF8 { bytes in
            guard bytes.count == 36 else { return nil }
            var value: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            let complete = withUnsafeMutableBytes(of: &value) { raw -> Bool in
                var position = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        guard bytes[position] == UInt8(ascii: "-") else { return false }
                        position += 1
                    }
                    guard let high = Hex.value(of: bytes[position]), let low = Hex.value(of: bytes[position + 1]) else { return false }
                    raw[index] = high << 4 | low
                    position += 2
                }
                return true
            }
            return complete ? value : nil
        }
        guard let parsed else { return nil }
        self.init(uuid: parsed)
    }
}

/// Random bytes for ids, read from `/dev/urandom` 4 KiB at a time through one descriptor kept open, and handed out
/// under a lock. Falls back to the system generator if the device cannot be opened.
package enum IDRandom {
    private static let pool = Pool()

    package static func uuidBytes() -> uuid_t { pool.take() }

    private final class Pool: @unchecked Sendable {
        private let lock = NSLock()
        private var buffer = [UInt8](repeating: 0, count: 4096)
        private var next = 4096
        private let device: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

        func take() -> uuid_t {
            lock.withLock {
                if next + 16 > buffer.count { refill() }
                var value: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                withUnsafeMutableBytes(of: &value) { raw in
                    buffer.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[next..<next + 16])) }
                }
                // Each byte is handed out once.
                for index in next..<next + 16 { buffer[index] = 0 }
                next += 16
                return value
            }
        }

        private func refill() {
            var filled = 0
            if device >= 0 {
                buffer.withUnsafeMutableBytes { raw in
                    while filled < raw.count {
                        let count = read(device, raw.baseAddress! + filled, raw.count - filled)
                        if count > 0 { filled += count } else if count < 0, errno == EINTR { continue } else { break }
                    }
                }
            }
            if filled < buffer.count {
                var generator = SystemRandomNumberGenerator()
                for index in filled..<buffer.count { buffer[index] = UInt8.random(in: .min ... .max, using: &generator) }
            }
            next = 0
        }
    }
}
