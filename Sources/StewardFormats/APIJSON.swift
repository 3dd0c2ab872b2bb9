import Foundation

/// The one JSON encoding of everything Steward serves: API bodies, problems, event and stream messages.
///
/// It exists because `JSONEncoder` gets two things wrong for clients that are not Swift:
/// - A `UUID` encodes as its `uuidString`, in upper case, while tokens, events, headers and logs carry ids in lower
///   case. Here every `UUID` is lower-case RFC 9562 text.
/// - An optional property without a value is left out (`encodeIfPresent`), although the document lists the field as
///   required and `null`-able. Here a field is always written, as `null` when it has no value. A type that means to
///   leave a field out says so by not encoding it.
///
/// Dates are RFC 3339 UTC to the second (`RFC3339`); `JSONValue` is written as `JSONText` writes it (keys sorted),
/// `StoredJSON` as the stored text it holds, strings and numbers as `JSONText` writes them. Other keys keep the order
/// in which they were encoded.
package enum APIJSON {
    /// Written in one pass as it is encoded (`streamed`), or, for the rare value one pass cannot follow, through a
    /// tree of the value that is then written.
    package static func encode<T: Encodable>(_ value: T, userInfo: [CodingUserInfoKey: any Sendable] = [:]) throws -> [UInt8] {
        if let bytes = try streamed(value, userInfo: userInfo) { return bytes }
        return try tree(value, userInfo: userInfo)
    }

    /// The tree encoding: the whole value as nodes first, then written. Kept as `encode`'s fallback, and to hold the
    /// one-pass writer to the same bytes in tests.
    package static func tree<T: Encodable>(_ value: T, userInfo: [CodingUserInfoKey: any Sendable] = [:]) throws -> [UInt8] {
        let encoder = TreeEncoder(codingPath: [], userInfo: userInfo)
        let node = try encoder.box(value)
        var writer = JSONText.Writer()
        try write(node, depth: 0, into: &writer, path: [])
        return writer.bytes
    }

    package static func string<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encode(value), as: UTF8.self)
    }

    package static func data<T: Encodable>(_ value: T) throws -> Data {
        Data(try encode(value))
    }

    // MARK: The tree an encoding builds

    fileprivate enum Node {
        case null
        case bool(Bool)
        case int(Int64)
        case uint(UInt64)
        case double(Double)
        case string(String)
        case json(JSONValue)
        /// Stored canonical JSON text, written as it is.
        case stored(String)
        case array(ArrayNode)
        case object(ObjectNode)
        /// What a `superEncoder()` encodes, read when the tree is written.
        case deferred(TreeEncoder)
    }

    fileprivate final class ArrayNode {
        var items: [Node] = []
    }

    fileprivate final class ObjectNode {
        var keys: [String] = []
        var values: [String: Node] = [:]

        func set(_ key: String, _ value: Node) {
            if values.updateValue(value, forKey: key) == nil { keys.append(key) }
        }
    }

    private static func write(_ node: Node, depth: Int, into writer: inout JSONText.Writer, path: [String]) throws {
        switch node {
        case .null: writer.append("null")
        case .bool(let flag): writer.append(flag ? "true" : "false")
        case .int(let number): writer.bytes.append(contentsOf: String(number).utf8)
        case .uint(let number): writer.bytes.append(contentsOf: String(number).utf8)
        case .double(let number):
            guard writer.write(number) else { throw invalid(number, path, "is not a finite number") }
        case .string(let string): writer.write(string)
        case .json(let value):
            // Counted from its own top: a stored value that `JSONText` read back (at most 512 levels) can always be
            // served, wherever a response embeds it.
            guard writer.write(value, depth: 0) else { throw invalid(value, path, "is nested too deeply or holds a number that is not finite") }
        case .stored(let text): writer.bytes.append(contentsOf: text.utf8)
        case .array(let array):
            guard depth + 1 < JSONText.maximumDepth else { throw invalid(array.items, path, "is nested too deeply") }
            writer.bytes.append(UInt8(ascii: "["))
            for (index, item) in array.items.enumerated() {
                if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
                try write(item, depth: depth + 1, into: &writer, path: path + ["[\(index)]"])
            }
            writer.bytes.append(UInt8(ascii: "]"))
        case .object(let object):
            guard depth + 1 < JSONText.maximumDepth else { throw invalid(object.keys, path, "is nested too deeply") }
            writer.bytes.append(UInt8(ascii: "{"))
            for (index, key) in object.keys.enumerated() {
                if index > 0 { writer.bytes.append(UInt8(ascii: ",")) }
                writer.write(key)
                writer.bytes.append(UInt8(ascii: ":"))
                try write(object.values[key]!, depth: depth + 1, into: &writer, path: path + [key])
            }
            writer.bytes.append(UInt8(ascii: "}"))
        case .deferred(let encoder):
            try write(encoder.node ?? .object(ObjectNode()), depth: depth, into: &writer, path: path)
        }
    }

    private static func invalid(_ value: Any, _ path: [String], _ reason: String) -> EncodingError {
        .invalidValue(value, .init(codingPath: [], debugDescription: "The value at \(path.joined(separator: ".")) \(reason)."))
    }

    // MARK: Encoder

    fileprivate final class TreeEncoder: Encoder {
        let codingPath: [any CodingKey]
        let userInfo: [CodingUserInfoKey: Any]
        var node: Node?

        init(codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: Any]) {
            self.codingPath = codingPath
            self.userInfo = userInfo
        }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            // A type may encode its own keys and then hand the same encoder to another value's encode(to:), which
            // adds its keys to the same object.
            let object: ObjectNode
            if case .object(let existing)? = node { object = existing } else { object = ObjectNode(); node = .object(object) }
            return KeyedEncodingContainer(KeyedContainer<Key>(encoder: self, object: object, codingPath: codingPath))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            let array: ArrayNode
            if case .array(let existing)? = node { array = existing } else { array = ArrayNode(); node = .array(array) }
            return UnkeyedContainer(encoder: self, array: array, codingPath: codingPath)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            SingleValueContainer(encoder: self)
        }

        /// The node for one value: ids, dates and `JSONValue` are spelled here; anything else encodes itself.
        func box<T: Encodable>(_ value: T, at key: (any CodingKey)? = nil) throws -> Node {
            switch value {
            case let id as UUID: return .string(id.lowercasedString)
            case let date as Date: return .string(RFC3339.string(from: date))
            case let json as JSONValue: return .json(json)
            case let stored as StoredJSON: return .stored(stored.text)
            case let string as String: return .string(string)
            case let data as Data: return .string(data.base64EncodedString())
            case let url as URL: return .string(url.absoluteString)
            default:
                let child = TreeEncoder(codingPath: key.map { codingPath + [$0] } ?? codingPath, userInfo: userInfo)
                try value.encode(to: child)
                // A value that encoded nothing is an empty object, as with `JSONEncoder`.
                return child.node ?? .object(ObjectNode())
            }
        }
    }

    fileprivate struct KeyedContainer<Key: CodingKey>: NullWritingContainer {
        let encoder: TreeEncoder
        let object: ObjectNode
        let codingPath: [any CodingKey]

        mutating func encodeNil(forKey key: Key) throws { object.set(key.stringValue, .null) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { object.set(key.stringValue, .bool(value)) }
        mutating func encode(_ value: String, forKey key: Key) throws { object.set(key.stringValue, .string(value)) }
        mutating func encode(_ value: Double, forKey key: Key) throws { object.set(key.stringValue, .double(value)) }
        mutating func encode(_ value: Float, forKey key: Key) throws { object.set(key.stringValue, .double(Double(value))) }
        mutating func encode(_ value: Int, forKey key: Key) throws { object.set(key.stringValue, .int(Int64(value))) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { object.set(key.stringValue, .int(Int64(value))) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { object.set(key.stringValue, .int(Int64(value))) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { object.set(key.stringValue, .int(Int64(value))) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { object.set(key.stringValue, .int(value)) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { object.set(key.stringValue, .uint(UInt64(value))) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { object.set(key.stringValue, .uint(UInt64(value))) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { object.set(key.stringValue, .uint(UInt64(value))) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { object.set(key.stringValue, .uint(UInt64(value))) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { object.set(key.stringValue, .uint(value)) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            object.set(key.stringValue, try encoder.box(value, at: key))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectNode()
            object.set(key.stringValue, .object(nested))
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(encoder: encoder, object: nested, codingPath: codingPath + [key]))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let nested = ArrayNode()
            object.set(key.stringValue, .array(nested))
            return UnkeyedContainer(encoder: encoder, array: nested, codingPath: codingPath + [key])
        }

        mutating func superEncoder() -> any Encoder { superEncoder(named: "super") }
        mutating func superEncoder(forKey key: Key) -> any Encoder { superEncoder(named: key.stringValue) }

        private func superEncoder(named name: String) -> any Encoder {
            let child = TreeEncoder(codingPath: codingPath, userInfo: encoder.userInfo)
            object.set(name, .deferred(child))
            return child
        }
    }

    fileprivate struct UnkeyedContainer: UnkeyedEncodingContainer {
        let encoder: TreeEncoder
        let array: ArrayNode
        let codingPath: [any CodingKey]
        var count: Int { array.items.count }

        mutating func encodeNil() throws { array.items.append(.null) }
        mutating func encode(_ value: Bool) throws { array.items.append(.bool(value)) }
        mutating func encode(_ value: String) throws { array.items.append(.string(value)) }
        mutating func encode(_ value: Double) throws { array.items.append(.double(value)) }
        mutating func encode(_ value: Float) throws { array.items.append(.double(Double(value))) }
        mutating func encode(_ value: Int) throws { array.items.append(.int(Int64(value))) }
        mutating func encode(_ value: Int8) throws { array.items.append(.int(Int64(value))) }
        mutating func encode(_ value: Int16) throws { array.items.append(.int(Int64(value))) }
        mutating func encode(_ value: Int32) throws { array.items.append(.int(Int64(value))) }
        mutating func encode(_ value: Int64) throws { array.items.append(.int(value)) }
        mutating func encode(_ value: UInt) throws { array.items.append(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt8) throws { array.items.append(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt16) throws { array.items.append(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt32) throws { array.items.append(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt64) throws { array.items.append(.uint(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws { array.items.append(try encoder.box(value)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectNode()
            array.items.append(.object(nested))
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(encoder: encoder, object: nested, codingPath: codingPath))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let nested = ArrayNode()
            array.items.append(.array(nested))
            return UnkeyedContainer(encoder: encoder, array: nested, codingPath: codingPath)
        }

        mutating func superEncoder() -> any Encoder {
            let child = TreeEncoder(codingPath: codingPath, userInfo: encoder.userInfo)
            array.items.append(.deferred(child))
            return child
        }
    }

    fileprivate struct SingleValueContainer: SingleValueEncodingContainer {
        let encoder: TreeEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }

        mutating func encodeNil() throws { encoder.node = .null }
        mutating func encode(_ value: Bool) throws { encoder.node = .bool(value) }
        mutating func encode(_ value: String) throws { encoder.node = .string(value) }
        mutating func encode(_ value: Double) throws { encoder.node = .double(value) }
        mutating func encode(_ value: Float) throws { encoder.node = .double(Double(value)) }
        mutating func encode(_ value: Int) throws { encoder.node = .int(Int64(value)) }
        mutating func encode(_ value: Int8) throws { encoder.node = .int(Int64(value)) }
        mutating func encode(_ value: Int16) throws { encoder.node = .int(Int64(value)) }
        mutating func encode(_ value: Int32) throws { encoder.node = .int(Int64(value)) }
        mutating func encode(_ value: Int64) throws { encoder.node = .int(value) }
        mutating func encode(_ value: UInt) throws { encoder.node = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt8) throws { encoder.node = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt16) throws { encoder.node = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt32) throws { encoder.node = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt64) throws { encoder.node = .uint(value) }
        mutating func encode<T: Encodable>(_ value: T) throws { encoder.node = try encoder.box(value) }
    }
}

/// A keyed container of `APIJSON`'s: an optional without a value is written as `null`, never left out (the fields
/// a response lists are always present). Both of its encoders' keyed containers take these.
protocol NullWritingContainer: KeyedEncodingContainerProtocol {}

extension NullWritingContainer {
    mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { try encodeOrNull(value, key) }

    private mutating func encodeOrNull<T: Encodable>(_ value: T?, _ key: Key) throws {
        if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }
}
