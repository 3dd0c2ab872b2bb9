import Foundation

/// Arbitrary JSON, for free-form payloads such as event data and audit details.
public enum JSONValue: Codable, Equatable, Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Canonical text: keys sorted, no insignificant space; what the tables store and the audit chain hashes.
    /// The same bytes `JSONEncoder.canonical` writes (see `JSONText`). Throws for a number that is not finite or
    /// nesting deeper than the parser reads (512 levels); it never writes `null` in their place.
    public func canonicalString() throws(JSONTextError) -> String {
        try JSONText.canonical(self)
    }

    /// Whether arrays and objects nest more than `limit` levels: a scalar has none, `[]` and `{}` one, `[[1]]` two.
    /// Stops looking as soon as it knows.
    public func exceedsNesting(_ limit: Int) -> Bool {
        switch self {
        case .array(let elements): limit < 1 || elements.contains { $0.exceedsNesting(limit - 1) }
        case .object(let members): limit < 1 || members.values.contains { $0.exceedsNesting(limit - 1) }
        default: false
        }
    }

    /// Parses stored JSON text; text that is not JSON becomes a string value rather than an error.
    public static func parse(_ text: String) -> JSONValue {
        JSONText.parse(text) ?? .string(text)
    }
}

/// Why a value has no JSON text.
public enum JSONTextError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFinite
    case nestedTooDeeply

    public var description: String {
        switch self {
        case .notFinite: "a number that is not finite has no JSON text"
        case .nestedTooDeeply: "nesting deeper than \(JSONText.maximumDepth) levels is not written"
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONEncoder {
    /// Sorted keys and no pretty-printing: the same value always gives the same bytes.
    package static var canonical: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    /// The decoder for API bodies: RFC 3339 timestamps, within the years RFC 3339 has (`RFC3339.date(from:)`).
    package static var api: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            guard let date = RFC3339.date(from: try container.decode(String.self)) else {
                // The words of Foundation's `.iso8601` strategy, which this replaces.
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "Expected date string to be ISO8601-formatted.")
            }
            return date
        }
        return decoder
    }
}

extension JSONValue {
    package var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    package var object: [String: JSONValue]? {
        if case .object(let fields) = self { return fields }
        return nil
    }

    /// A number that is a whole number (JSON has no integers of its own).
    package var intValue: Int? {
        if case .number(let number) = self, number.rounded() == number, abs(number) < 1e15 { return Int(number) }
        return nil
    }
}
