import StewardFormats
import Vapor

extension Request {
    /// A UUID path parameter; anything that is not a UUID is a 404, exactly like an id that does not exist.
    public func uuidParameter(_ name: String) throws -> UUID {
        guard let raw = parameters.get(name), let id = UUID(uuidString: raw) else {
            throw HTTPProblem.notFound()
        }
        return id
    }

    /// An RFC 3339 timestamp in the query (the `from` and `to` of a list), nil when absent; anything else adds a
    /// field problem naming the parameter.
    func timestampQuery(_ name: String, problems: inout [FieldProblem]) -> Date? {
        guard let raw = queryText(name) else { return nil }
        guard let date = RFC3339.date(from: raw) else {
            problems.append(FieldProblem(field: name, message: "must be an RFC 3339 timestamp such as 2026-11-21T19:01:43Z (years 0001 to 9999)"))
            return nil
        }
        return date
    }

    /// One query parameter as text: what `query[String.self, at: name]` answers (the last value when the name comes
    /// more than once, `+` read as a space, nil when its percent-encoding is broken), read off the query string
    /// itself, byte by byte. Vapor's form decoder builds a tree of the whole query and decodes through `Codable` for
    /// every parameter asked for; a list asks for up to seven, which cost 5% of a search's CPU. A query whose keys
    /// are anything but plain (`[`, `%` or `+` in a key), or that holds bytes beyond ASCII (which a client should
    /// have percent-encoded), still goes through Vapor's decoder.
    func queryText(_ name: String) -> String? {
        guard let raw = url.query else { return nil }
        let bytes = raw.utf8
        guard bytes.allSatisfy({ $0 < 0x80 }) else { return query[String.self, at: name] }
        var found: Substring.UTF8View?
        for pair in bytes.split(separator: UInt8(ascii: "&")) {
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = pair[..<equals]
            if key.contains(where: { $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) {
                return query[String.self, at: name]
            }
            if key.elementsEqual(name.utf8) { found = pair[pair.index(after: equals)...] }
        }
        guard let found else { return nil }
        return Self.formDecoded(found)
    }

    /// A form value's text: `+` a space, `%XY` the byte XY; nil when a `%` is not followed by two hex digits or the
    /// bytes are not UTF-8 (as Foundation's `removingPercentEncoding` answers).
    private static func formDecoded(_ value: Substring.UTF8View) -> String? {
        guard value.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return String(Substring(value)) }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(value.count)
        var index = value.startIndex
        while index != value.endIndex {
            let byte = value[index]
            index = value.index(after: index)
            switch byte {
            case UInt8(ascii: "+"):
                decoded.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard index != value.endIndex, let high = hex(value[index]) else { return nil }
                index = value.index(after: index)
                guard index != value.endIndex, let low = hex(value[index]) else { return nil }
                index = value.index(after: index)
                decoded.append(high << 4 | low)
            default:
                decoded.append(byte)
            }
        }
        return String(validating: decoded, as: UTF8.self)
    }
}
