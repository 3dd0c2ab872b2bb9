import NIOCore

/// JSON text for `JSONValue` without `Codable`: the canonical writer and the parser behind `canonicalString()` and
/// `parse(_:)`. Both run inside write transactions (event data, audit details, job payloads, stored input), where
/// going through `JSONEncoder` and `JSONDecoder` cost more than the SQL around them.
///
/// The writer's output is byte for byte what `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]` writes
/// for the same value (`JSONTextTests` checks it against the encoder): keys in UTF-8 byte order; `"`, `\` and
/// control characters escaped (`\b \f \n \r \t`, others as `\u00xx`), nothing else; whole numbers below 10^15 as
/// integers, other numbers as Swift prints a `Double` without a trailing `.0`. A value JSON text cannot hold (a
/// number that is not finite) or that the parser would not read back (nesting deeper than 512) is an error: the
/// writer never stands `null` in for data.
package enum JSONText {
    package static let maximumDepth = 512

    // MARK: Writing

    package static func canonical(_ value: JSONValue) throws(JSONTextError) -> String {
        var writer = Writer()
        guard writer.write(value, depth: 0) else {
            throw value.exceedsNesting(maximumDepth - 1) ? .nestedTooDeeply : .notFinite
        }
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// One string as JSON text, quoted and escaped.
    package static func canonical(string: String) -> String {
        var writer = Writer()
        writer.write(string)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// An array of strings, which can always be written.
    package static func canonical(strings: [String]) -> String {
        var writer = Writer()
        writer.bytes.append(UInt8(ascii: "["))
        for (index, string) in strings.enumerated() {
            if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
            writer.write(string)
        }
        writer.bytes.append(UInt8(ascii: "]"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// An object of strings, which can always be written.
    package static func canonical(stringMap: [String: String]) -> String {
        var writer = Writer()
        writer.bytes.append(UInt8(ascii: "{"))
        for (index, key) in stringMap.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
            if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
            writer.write(key)
            writer.bytes.append(UInt8(ascii: ":"))
            writer.write(stringMap[key]!)
        }
        writer.bytes.append(UInt8(ascii: "}"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// The strings of a stored JSON array of strings (tags, event types, scopes), read with this parser; empty when
    /// the text is not such an array, and anything else in it left out.
    package static func strings(in text: String) -> [String] {
        guard case .array(let values)? = parse(text) else { return [] }
        return values.compactMap(\.stringValue)
    }

    /// Whether canonical JSON `text` (no insignificant space) may hold `key` as an object key at any depth: false
    /// only when `"key":` appears nowhere in it. A byte search, for a reader that parses only when it must.
    package static func mayHaveKey(_ key: String, in text: String) -> Bool {
        let needle = Array(canonical(string: key).utf8) + [UInt8(ascii: ":")]
        var text = text
        return text.withUTF8 { bytes in
            guard bytes.count >= needle.count else { return false }
            for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
                var index = 1
                while index < needle.count, bytes[start + index] == needle[index] { index += 1 }
                if index == needle.count { return true }
            }
            return false
        }
    }

    /// Appends JSON text to `bytes`; `APIJSON` writes API bodies with the same strings and numbers.
    struct Writer {
        var bytes: [UInt8] = []

        init() { bytes.reserveCapacity(128) }

        /// False when the encoder would have refused the value.
        mutating func write(_ value: JSONValue, depth: Int) -> Bool {
            switch value {
            case .null: append("null")
            case .bool(let flag): append(flag ? "true" : "false")
            case .number(let number): return write(number)
            case .string(let string): write(string)
            case .array(let elements):
                guard depth + 1 < JSONText.maximumDepth else { return false }
                bytes.append(UInt8(ascii: "["))
                for (index, element) in elements.enumerated() {
                    if index > 0 { bytes.append(UInt8(ascii: ",")) }
                    guard write(element, depth: depth + 1) else { return false }
                }
                bytes.append(UInt8(ascii: "]"))
            case .object(let members):
                guard depth + 1 < JSONText.maximumDepth else { return false }
                bytes.append(UInt8(ascii: "{"))
                let keys = members.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                for (index, key) in keys.enumerated() {
                    if index > 0 { bytes.append(UInt8(ascii: ",")) }
                    write(key)
                    bytes.append(UInt8(ascii: ":"))
                    guard write(members[key]!, depth: depth + 1) else { return false }
                }
                bytes.append(UInt8(ascii: "}"))
            }
            return true
        }

        mutating func append(_ text: StaticString) {
            bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        /// False for a number that is not finite, which JSON cannot spell.
        mutating func write(_ number: Double) -> Bool {
            guard number.isFinite else { return false }
            if number.rounded() == number, abs(number) < 1e15 {
                bytes.append(contentsOf: String(Int64(number)).utf8)
            } else {
                var text = number.description
                if text.hasSuffix(".0") { text.removeLast(2) }
                bytes.append(contentsOf: text.utf8)
            }
            return true
        }

        mutating func write(_ string: String) {
            bytes.append(UInt8(ascii: "\""))
            // Most strings need no escape: copied at once.
            if !string.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                bytes.append(contentsOf: string.utf8)
                bytes.append(UInt8(ascii: "\""))
                return
            }
            for byte in string.utf8 {
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0x00..<0x20:
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                    bytes.append(Hex.lowercase[Int(byte >> 4)])
                    bytes.append(Hex.lowercase[Int(byte & 0x0F)])
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }

    // MARK: Parsing

    /// The value of a body's bytes, or nil when they are not one JSON text: not UTF-8 exactly (`String(buffer:)`
    /// repairs invalid UTF-8, and the repaired text is not the body), or not JSON by `parse`.
    package static func parse(_ body: ByteBuffer) -> JSONValue? {
        let text = String(buffer: body)
        return text.utf8.elementsEqual(body.readableBytesView) ? parse(text) : nil
    }

    package static func isJSON(_ body: ByteBuffer) -> Bool {
        parse(body) != nil
    }

    /// The value of a JSON text (RFC 8259, any value at the top, whitespace around it), or nil when it is not JSON:
    /// bad syntax, an unpaired surrogate escape, a number too large for a `Double`, or nesting deeper than 512.
    /// It reads what `JSONDecoder` read, except that a trailing comma, which the decoder let pass, is not JSON.
    package static func parse(_ text: String) -> JSONValue? {
        var text = text
        return text.withUTF8 { buffer -> JSONValue? in
            var parser = Parser(bytes: buffer)
            guard let value = parser.value(depth: 0) else { return nil }
            parser.skipSpace()
            // Spelled out: a bare `nil` here would be `JSONValue.null`, which is expressible by it.
            return parser.position == buffer.count ? value : Optional<JSONValue>.none
        }
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipSpace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
        }

        mutating func value(depth: Int) -> JSONValue? {
            skipSpace()
            guard let byte = current else { return nil }
            switch byte {
            case UInt8(ascii: "{"): return object(depth: depth + 1)
            case UInt8(ascii: "["): return array(depth: depth + 1)
            case UInt8(ascii: "\""): return string().map(JSONValue.string)
            case UInt8(ascii: "t"): return literal("true") ? JSONValue.bool(true) : Optional<JSONValue>.none
            case UInt8(ascii: "f"): return literal("false") ? JSONValue.bool(false) : Optional<JSONValue>.none
            case UInt8(ascii: "n"): return literal("null") ? JSONValue.null : Optional<JSONValue>.none
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number().map(JSONValue.number)
            default: return nil
            }
        }

        private mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - position >= count else { return false }
            for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] { return false }
            position += count
            return true
        }

        private mutating func object(depth: Int) -> JSONValue? {
            guard depth < JSONText.maximumDepth else { return nil }
            position += 1
            skipSpace()
            if current == UInt8(ascii: "}") {
                position += 1
                return .object([:])
            }
            // The members are gathered first, and the dictionary made once at its size: grown a member at a time, a
            // small object's dictionary was allocated and rehashed three or four times.
            var pairs: [(key: String, value: JSONValue)] = []
            while true {
                skipSpace()
                guard current == UInt8(ascii: "\""), let key = string() else { return nil }
                skipSpace()
                guard current == UInt8(ascii: ":") else { return nil }
                position += 1
                guard let member = value(depth: depth) else { return nil }
                pairs.append((key, member))
                skipSpace()
                switch current {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "}"):
                    position += 1
                    var members = [String: JSONValue](minimumCapacity: pairs.count)
                    // A repeated key keeps its first value, as `JSONDecoder` does: set last to first, the first wins.
                    for pair in pairs.reversed() { members[pair.key] = pair.value }
                    return .object(members)
                default: return nil
                }
            }
        }

        private mutating func array(depth: Int) -> JSONValue? {
            guard depth < JSONText.maximumDepth else { return nil }
            position += 1
            var elements: [JSONValue] = []
            skipSpace()
            if current == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            }
            while true {
                guard let element = value(depth: depth) else { return nil }
                elements.append(element)
                skipSpace()
                switch current {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "]"):
                    position += 1
                    return .array(elements)
                default: return nil
                }
            }
        }

        /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, finite as a `Double`.
        private mutating func number() -> Double? {
            let start = position
            if current == UInt8(ascii: "-") { position += 1 }
            guard let first = current, isDigit(first) else { return nil }
            position += 1
            if first != UInt8(ascii: "0") { skipDigits() }
            if current == UInt8(ascii: ".") {
                position += 1
                guard let digit = current, isDigit(digit) else { return nil }
                skipDigits()
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                position += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
                guard let digit = current, isDigit(digit) else { return nil }
                skipDigits()
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
            guard let number = Double(text), number.isFinite else { return nil }
            return number
        }

        private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        private mutating func skipDigits() {
            while let byte = current, isDigit(byte) { position += 1 }
        }

        /// A string at the opening quote; nil for a raw control character, a bad escape or an unpaired surrogate.
        private mutating func string() -> String? {
            position += 1
            let start = position
            // The common case, no escapes: one copy of the bytes.
            while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
                guard byte >= 0x20 else { return nil }
                position += 1
            }
            guard let stop = current else { return nil }
            if stop == UInt8(ascii: "\"") {
                position += 1
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position - 1]), as: UTF8.self)
            }
            var decoded = Array(bytes[start..<position])
            while true {
                guard let byte = current else { return nil }
                position += 1
                switch byte {
                case UInt8(ascii: "\""): return String(decoding: decoded, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let escape = current else { return nil }
                    position += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
                    case UInt8(ascii: "b"): decoded.append(0x08)
                    case UInt8(ascii: "f"): decoded.append(0x0C)
                    case UInt8(ascii: "n"): decoded.append(0x0A)
                    case UInt8(ascii: "r"): decoded.append(0x0D)
                    case UInt8(ascii: "t"): decoded.append(0x09)
                    case UInt8(ascii: "u"):
                        guard let scalar = unicodeEscape() else { return nil }
                        decoded.append(contentsOf: String(Character(scalar)).utf8)
                    default: return nil
                    }
                case 0x00..<0x20: return nil
                default: decoded.append(byte)
                }
            }
        }

        /// After `\u`: four hex digits, and a second escape when they are a high surrogate.
        private mutating func unicodeEscape() -> Unicode.Scalar? {
            guard let unit = hexQuad() else { return nil }
            switch unit {
            case 0xD800...0xDBFF:
                guard literal("\\u"), let low = hexQuad(), (0xDC00...0xDFFF).contains(low) else { return nil }
                return Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
            case 0xDC00...0xDFFF: return nil
            default: return Unicode.Scalar(UInt32(unit))
            }
        }

        private mutating func hexQuad() -> UInt16? {
            guard bytes.count - position >= 4 else { return nil }
            var unit: UInt16 = 0
            for _ in 0..<4 {
                guard let digit = Hex.value(of: bytes[position]) else { return nil }
                unit = unit << 4 | UInt16(digit)
                position += 1
            }
            return unit
        }
    }
}
