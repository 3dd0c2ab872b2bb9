import Foundation

extension APIJSON {
    /// The body of `value` written in one pass, as it is encoded: each container writes its bracket when it opens,
    /// each key and value as it comes, and its closing bracket once the value that opened it has finished encoding.
    /// Nil when `value` encodes in a way one pass cannot follow, and the tree encoder must write it instead:
    /// - a container written to after a later sibling began (a nested container kept and filled afterwards);
    /// - a key given twice in one object (the tree keeps the last value);
    /// - `superEncoder`, or a single value and a container asked of one encoder;
    /// - anything the tree would refuse (a number that is not finite, nesting past `JSONText.maximumDepth`), so
    ///   that its error, which names the path, is the one thrown.
    /// Errors thrown by a type's own `encode(to:)` are thrown from here.
    static func streamed<T: Encodable>(_ value: T, userInfo: [CodingUserInfoKey: Any]) throws -> [UInt8]? {
        let stream = Stream(userInfo: userInfo)
        do {
            try stream.write(value, parent: nil, key: nil)
            stream.close(downTo: 0)
        } catch is Stream.CannotFollow {
            return nil
        }
        return stream.failed ? nil : stream.writer.bytes
    }

    fileprivate final class Stream {
        struct CannotFollow: Error {}

        /// An open container: its frame id, whether it is an object, how many members it has, and an object's keys.
        struct Frame {
            let id: Int
            let isObject: Bool
            var count = 0
            var keys: [String] = []
        }

        var writer = JSONText.Writer()
        let userInfo: [CodingUserInfoKey: Any]
        /// The open containers, innermost last.
        var open: [Frame] = []
        var nextID = 0
        /// Set where a failure cannot be thrown (`superEncoder`, a second kind of container).
        var failed = false

        init(userInfo: [CodingUserInfoKey: Any]) {
            self.userInfo = userInfo
        }

        /// Writes one value where the position for it has been made (after a key and colon, a comma, or at the top).
        func write<T: Encodable>(_ value: T, parent: StreamEncoder?, key: (any CodingKey)?) throws {
            // The types spelled here are told apart by their metadata, which costs far less than a cast attempt per
            // type; `unsafeBitCast` to the very type `T` is.
            if T.self == String.self { return writer.write(unsafeBitCast(value, to: String.self)) }
            if T.self == UUID.self { return writer.write(id: unsafeBitCast(value, to: UUID.self)) }
            if T.self == Date.self { return writer.write(time: unsafeBitCast(value, to: Date.self)) }
            if T.self == StoredJSON.self { return writer.bytes.append(contentsOf: unsafeBitCast(value, to: StoredJSON.self).text.utf8) }
            switch value {
            case let writable as any APIJSONWritable:
                guard open.count + 1 < JSONText.maximumDepth, try writeSelf(writable) else { throw CannotFollow() }
            case let json as JSONValue: guard writer.write(json, depth: 0) else { throw CannotFollow() }
            case let data as Data: writer.write(data.base64EncodedString())
            case let url as URL: writer.write(url.absoluteString)
            default:
                let depth = open.count
                let encoder = StreamEncoder(stream: self, parent: parent, key: key)
                try value.encode(to: encoder)
                if failed { throw CannotFollow() }
                // A value that encoded nothing is an empty object, as with `JSONEncoder`.
                if encoder.frame == nil && !encoder.wroteSingle { writer.append("{}") }
                close(downTo: depth)
            }
        }

        func write(_ number: Double) throws {
            guard writer.write(number) else { throw CannotFollow() }
        }

        func write<I: BinaryInteger>(integer: I) {
            writer.bytes.append(contentsOf: String(integer).utf8)
        }

        /// Opens a container at the position made for it; its id.
        func openContainer(object: Bool) throws -> Int {
            guard open.count + 1 < JSONText.maximumDepth else { throw CannotFollow() }
            nextID += 1
            open.append(Frame(id: nextID, isObject: object))
            writer.bytes.append(object ? UInt8(ascii: "{") : UInt8(ascii: "["))
            return nextID
        }

        /// Makes the position for the next member of container `id` (closing the finished containers inside it).
        func member(of id: Int, key: String?) throws {
            let index: Int
            if let last = open.indices.last, open[last].id == id {
                index = last
            } else {
                guard let found = open.lastIndex(where: { $0.id == id }) else { throw CannotFollow() }
                index = found
                close(downTo: index + 1)
            }
            if open[index].count > 0 { writer.bytes.append(UInt8(ascii: ",")) }
            open[index].count += 1
            if let key {
                if open[index].keys.contains(key) { throw CannotFollow() }
                if open[index].keys.isEmpty { open[index].keys.reserveCapacity(16) }
                open[index].keys.append(key)
                writer.write(key)
                writer.bytes.append(UInt8(ascii: ":"))
            }
        }

        func close(downTo depth: Int) {
            while open.count > depth {
                writer.bytes.append(open.removeLast().isObject ? UInt8(ascii: "}") : UInt8(ascii: "]"))
            }
        }
    }

    fileprivate final class StreamEncoder: Encoder {
        let stream: Stream
        let parent: StreamEncoder?
        let key: (any CodingKey)?
        /// The container this encoder opened, if any.
        var frame: Int?
        var wroteSingle = false

        init(stream: Stream, parent: StreamEncoder?, key: (any CodingKey)?) {
            self.stream = stream
            self.parent = parent
            self.key = key
        }

        var codingPath: [any CodingKey] {
            var path = parent?.codingPath ?? []
            if let key { path.append(key) }
            return path
        }

        var userInfo: [CodingUserInfoKey: Any] { stream.userInfo }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(StreamKeyed<Key>(encoder: self, frame: containerFrame(object: true)))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            StreamUnkeyed(encoder: self, frame: containerFrame(object: false))
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            if frame != nil || wroteSingle { stream.failed = true }
            return StreamSingle(encoder: self)
        }

        /// The container this encoder opened, or a new one. A type may ask its encoder for its container more than
        /// once (or hand the encoder to another value's `encode(to:)`); both then write to the same object.
        private func containerFrame(object: Bool) -> Int {
            if let frame {
                if stream.open.contains(where: { $0.id == frame && $0.isObject == object }) { return frame }
                stream.failed = true
                return frame
            }
            if wroteSingle { stream.failed = true }
            do {
                frame = try stream.openContainer(object: object)
            } catch {
                stream.failed = true
                frame = -1
            }
            return frame!
        }
    }

    fileprivate struct StreamKeyed<Key: CodingKey>: NullWritingContainer {
        let encoder: StreamEncoder
        let frame: Int
        var codingPath: [any CodingKey] { encoder.codingPath }
        private var stream: Stream { encoder.stream }

        private func member(_ key: Key) throws {
            if stream.failed { throw Stream.CannotFollow() }
            try stream.member(of: frame, key: key.stringValue)
        }

        mutating func encodeNil(forKey key: Key) throws { try member(key); stream.writer.append("null") }
        mutating func encode(_ value: Bool, forKey key: Key) throws { try member(key); stream.writer.append(value ? "true" : "false") }
        mutating func encode(_ value: String, forKey key: Key) throws { try member(key); stream.writer.write(value) }
        mutating func encode(_ value: Double, forKey key: Key) throws { try member(key); try stream.write(value) }
        mutating func encode(_ value: Float, forKey key: Key) throws { try member(key); try stream.write(Double(value)) }
        mutating func encode(_ value: Int, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { try member(key); stream.write(integer: value) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try member(key)
            try stream.write(value, parent: encoder, key: key)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            KeyedEncodingContainer(StreamKeyed<NestedKey>(encoder: encoder, frame: nested(key, object: true)))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            StreamUnkeyed(encoder: encoder, frame: nested(key, object: false))
        }

        private func nested(_ key: Key, object: Bool) -> Int {
            do {
                try member(key)
                return try stream.openContainer(object: object)
            } catch {
                stream.failed = true
                return -1
            }
        }

        mutating func superEncoder() -> any Encoder { refuseSuper() }
        mutating func superEncoder(forKey key: Key) -> any Encoder { refuseSuper() }

        private func refuseSuper() -> any Encoder {
            stream.failed = true
            return StreamEncoder(stream: stream, parent: encoder, key: nil)
        }
    }

    fileprivate struct StreamUnkeyed: UnkeyedEncodingContainer, StreamSlot {
        let encoder: StreamEncoder
        let frame: Int
        var count = 0
        var codingPath: [any CodingKey] { encoder.codingPath }
        var stream: Stream { encoder.stream }

        mutating func slot() throws { try member() }

        private mutating func member() throws {
            if stream.failed { throw Stream.CannotFollow() }
            try stream.member(of: frame, key: nil)
            count += 1
        }

        mutating func encode<T: Encodable>(_ value: T) throws {
            try member()
            try stream.write(value, parent: encoder, key: nil)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            KeyedEncodingContainer(StreamKeyed<NestedKey>(encoder: encoder, frame: nested(object: true)))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            StreamUnkeyed(encoder: encoder, frame: nested(object: false))
        }

        private mutating func nested(object: Bool) -> Int {
            do {
                try member()
                return try stream.openContainer(object: object)
            } catch {
                stream.failed = true
                return -1
            }
        }

        mutating func superEncoder() -> any Encoder {
            stream.failed = true
            return StreamEncoder(stream: stream, parent: encoder, key: nil)
        }
    }

    fileprivate struct StreamSingle: SingleValueEncodingContainer, StreamSlot {
        let encoder: StreamEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }
        var stream: Stream { encoder.stream }

        mutating func slot() throws { try claim() }

        /// A single value is written once, in the position its parent made.
        private func claim() throws {
            if stream.failed || encoder.wroteSingle || encoder.frame != nil { throw Stream.CannotFollow() }
            encoder.wroteSingle = true
        }

        mutating func encode<T: Encodable>(_ value: T) throws {
            try claim()
            try stream.write(value, parent: encoder, key: nil)
        }
    }

    /// An unkeyed or single-value container of the stream: each primitive is written where `slot()` makes room.
    fileprivate protocol StreamSlot {
        var stream: Stream { get }
        mutating func slot() throws
    }
}

extension APIJSON.StreamSlot {
    mutating func encodeNil() throws { try slot(); stream.writer.append("null") }
    mutating func encode(_ value: Bool) throws { try slot(); stream.writer.append(value ? "true" : "false") }
    mutating func encode(_ value: String) throws { try slot(); stream.writer.write(value) }
    mutating func encode(_ value: Double) throws { try slot(); try stream.write(value) }
    mutating func encode(_ value: Float) throws { try slot(); try stream.write(Double(value)) }
    mutating func encode(_ value: Int) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: Int8) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: Int16) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: Int32) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: Int64) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: UInt) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: UInt8) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: UInt16) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: UInt32) throws { try slot(); stream.write(integer: value) }
    mutating func encode(_ value: UInt64) throws { try slot(); stream.write(integer: value) }
}

/// A response item that writes its own fields, for the lists that send many of them: no `Codable` call per field.
/// It keeps its `Encodable` conformance, which other encoders (and `APIJSON`'s tree) use; a test holds the two to
/// the same bytes for each such type.
package protocol APIJSONWritable: Encodable {
    func write(to object: inout APIJSON.ObjectWriter) throws
}

extension APIJSON {
    /// Writes one object's members straight into the response: each key (a literal with nothing to escape) and its
    /// value, `null` for an absent one, as the encoder would.
    package struct ObjectWriter {
        fileprivate let stream: Stream
        fileprivate var count = 0
        /// Set when a value cannot be written here (a `JSONValue` too deep or with a number that is not finite).
        fileprivate var refused = false

        fileprivate init(stream: Stream) {
            self.stream = stream
        }

        private mutating func key(_ key: StaticString) {
            stream.writer.bytes.append(count == 0 ? UInt8(ascii: "{") : UInt8(ascii: ","))
            count += 1
            stream.writer.bytes.append(UInt8(ascii: "\""))
            stream.writer.append(key)
            stream.writer.append("\":")
        }

        package mutating func field(_ name: StaticString, _ value: String) { key(name); stream.writer.write(value) }
        package mutating func field(_ name: StaticString, _ value: UUID) { key(name); stream.writer.write(id: value) }
        package mutating func field(_ name: StaticString, _ value: Date) { key(name); stream.writer.write(time: value) }
        package mutating func field(_ name: StaticString, _ value: Bool) { key(name); stream.writer.append(value ? "true" : "false") }
        package mutating func field(_ name: StaticString, _ value: Int) { key(name); stream.write(integer: value) }
        package mutating func field(_ name: StaticString, _ value: Int64) { key(name); stream.write(integer: value) }
        package mutating func field(_ name: StaticString, _ value: StoredJSON) { key(name); stream.writer.bytes.append(contentsOf: value.text.utf8) }
        package mutating func field(_ name: StaticString, _ value: JSONValue) {
            key(name)
            // Counted from its own top, as the tree counts an embedded `JSONValue`.
            if !stream.writer.write(value, depth: 0) { refused = true }
        }

        package mutating func field(_ name: StaticString, _ value: [String]) {
            key(name)
            stream.writer.bytes.append(UInt8(ascii: "["))
            for (index, string) in value.enumerated() {
                if index > 0 { stream.writer.bytes.append(UInt8(ascii: ",")) }
                stream.writer.write(string)
            }
            stream.writer.bytes.append(UInt8(ascii: "]"))
        }

        /// A value that writes its own fields, as a nested object.
        package mutating func field<T: APIJSONWritable>(_ name: StaticString, object value: T) throws {
            key(name)
            if try !stream.writeSelf(value) { refused = true }
        }

        /// An array of values that write their own fields, each a nested object.
        package mutating func field<T: APIJSONWritable>(_ name: StaticString, objects values: [T]) throws {
            key(name)
            stream.writer.bytes.append(UInt8(ascii: "["))
            // By index: this generic code runs unspecialised from the app's module, where `enumerated()` looked up
            // its tuple's type metadata on every item.
            for index in values.indices {
                if index > 0 { stream.writer.bytes.append(UInt8(ascii: ",")) }
                if try !stream.writeSelf(values[index]) { refused = true }
            }
            stream.writer.bytes.append(UInt8(ascii: "]"))
        }

        /// Any other value, through the encoder.
        package mutating func field<T: Encodable>(_ name: StaticString, encoding value: T) throws {
            key(name)
            try stream.write(value, parent: nil, key: nil)
        }

        package mutating func field(_ name: StaticString, _ value: String?) { if let value { field(name, value) } else { null(name) } }
        package mutating func field(_ name: StaticString, _ value: UUID?) { if let value { field(name, value) } else { null(name) } }
        package mutating func field(_ name: StaticString, _ value: Date?) { if let value { field(name, value) } else { null(name) } }
        package mutating func field(_ name: StaticString, _ value: Int64?) { if let value { field(name, value) } else { null(name) } }
        package mutating func field(_ name: StaticString, _ value: JSONValue?) { if let value { field(name, value) } else { null(name) } }
        package mutating func field(_ name: StaticString, _ value: StoredJSON?) { if let value { field(name, value) } else { null(name) } }

        private mutating func null(_ name: StaticString) { key(name); stream.writer.append("null") }
    }
}

extension APIJSON.Stream {
    /// Writes a value that writes itself, in the position made for it; false when it refused a value. Generic
    /// rather than taking `any APIJSONWritable`, so an item larger than an existential's inline buffer (any
    /// response item) is not copied into a box of its own.
    func writeSelf<T: APIJSONWritable>(_ value: T) throws -> Bool {
        var object = APIJSON.ObjectWriter(stream: self)
        try value.write(to: &object)
        writer.append(object.count == 0 ? "{}" : "}")
        return !object.refused
    }
}

extension JSONText.Writer {
    /// A UUID as a JSON string in lower case, written in place (it never needs an escape).
    mutating func write(id: UUID) {
        bytes.append(UInt8(ascii: "\""))
        id.appendLowercased(to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// A time as an RFC 3339 JSON string, written in place (it never needs an escape).
    mutating func write(time: Date) {
        bytes.append(UInt8(ascii: "\""))
        RFC3339.append(time, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }
}
