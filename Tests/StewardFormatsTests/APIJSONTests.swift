import Foundation
import Testing
@testable import StewardFormats

@Suite("APIJSON")
struct APIJSONTests {
    private struct Inner: Codable, Equatable {
        var id: UUID
        var note: String?
    }

    private struct Sample: Codable, Equatable {
        var id: UUID
        var ids: [UUID]
        var byName: [String: UUID]
        var optionalID: UUID?
        var missing: String?
        var count: Int
        var ratio: Double
        var at: Date
        var payload: JSONValue
        var inner: Inner
        var inners: [Inner?]
    }

    @Test("Ids are lower case at any depth; missing optionals are null; dates RFC 3339; JSON values as stored")
    func shape() throws {
        let id = UUID(uuidString: "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB")!
        let sample = Sample(id: id, ids: [id], byName: ["a": id], optionalID: id, missing: nil, count: -3, ratio: 0.25,
                            at: Date(timeIntervalSince1970: 1_795_000_000), payload: ["z": 1, "a": ["B": "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB"]],
                            inner: Inner(id: id, note: nil), inners: [nil, Inner(id: id, note: "n")])
        let text = try APIJSON.string(sample)
        let lower = "ea14ddd4-1fc9-4a5b-9c3d-0123456789ab"
        #expect(text == #"{"id":"\#(lower)","ids":["\#(lower)"],"byName":{"a":"\#(lower)"},"optionalID":"\#(lower)","missing":null,"count":-3,"#
            + #""ratio":0.25,"at":"2026-11-18T11:06:40Z","payload":{"a":{"B":"EA14DDD4-1FC9-4A5B-9C3D-0123456789AB"},"z":1},"#
            + #""inner":{"id":"\#(lower)","note":null},"inners":[null,{"id":"\#(lower)","note":"n"}]}"#,
            "a string that happens to hold an upper-case id is data and stays as it is")
        // What it writes reads back as the same value, with Foundation's decoder too.
        #expect(try JSONDecoder.api.decode(Sample.self, from: Data(text.utf8)) == sample)
    }

    /// Writes its own key, then hands the same encoder to another value, as `RequestWindow` does.
    private struct Flattened: Encodable {
        struct Figures: Encodable {
            var count: Int
            var p50Ms: Double?
        }

        var minutes: Int
        var figures: Figures

        private enum CodingKeys: String, CodingKey { case minutes }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(minutes, forKey: .minutes)
            try figures.encode(to: encoder)
        }
    }

    @Test("Types that write their own keys into one object, and values that are not finite")
    func edges() throws {
        let object = try #require(JSONText.parse(try APIJSON.string(Flattened(minutes: 1, figures: .init(count: 0, p50Ms: nil))))?.object)
        #expect(object == ["minutes": 1, "count": 0, "p50Ms": .null], "own keys and the figures' keys, flat: \(object)")
        #expect(throws: EncodingError.self) { try APIJSON.encode(["x": Double.nan]) }
        #expect(try APIJSON.string([String]()) == "[]")
        #expect(try APIJSON.string("a\"b\n") == #""a\"b\n""#)
    }

    /// Fills a nested container after writing a later key of its parent: one pass cannot follow it.
    private struct Interleaved: Encodable {
        private enum Keys: String, CodingKey { case box, after, inside }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            var box = container.nestedContainer(keyedBy: Keys.self, forKey: .box)
            try container.encode(1, forKey: .after)
            try box.encode("late", forKey: .inside)
        }
    }

    /// Gives one key twice: the tree keeps the last value.
    private struct Repeated: Encodable {
        private enum Keys: String, CodingKey { case a }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(1, forKey: .a)
            try container.encode(2, forKey: .a)
        }
    }

    /// Encodes its parent's part through `superEncoder`, as classes that inherit `Codable` do.
    private struct WithSuper: Encodable {
        private enum Keys: String, CodingKey { case own }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode("x", forKey: .own)
            try Inner(id: UUID(uuidString: "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB")!, note: nil).encode(to: container.superEncoder())
        }
    }

    /// Fills nested containers one after the other, as hand-written encoders usually do.
    private struct Sequential: Encodable {
        private enum Keys: String, CodingKey { case first, list, last }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            var first = container.nestedContainer(keyedBy: Keys.self, forKey: .first)
            try first.encode(true, forKey: .last)
            var list = container.nestedUnkeyedContainer(forKey: .list)
            try list.encode(1.5)
            var inner = list.nestedUnkeyedContainer()
            try inner.encodeNil()
            try list.encode("s")
            try container.encode(StoredJSON(canonical: #"{"a":[1,{"b":null}]}"#), forKey: .last)
        }
    }

    private struct Nothing: Encodable {
        func encode(to encoder: any Encoder) throws {}
    }

    @Test("One pass writes the tree's bytes; what it cannot follow goes to the tree, with the tree's result")
    func onePass() throws {
        let id = UUID(uuidString: "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB")!
        let sample = Sample(id: id, ids: [id, id], byName: ["a": id], optionalID: nil, missing: "m\u{1}\"", count: Int.max, ratio: -1e300,
                            at: Date(timeIntervalSince1970: 0), payload: ["k": [true, .null, .number(1.25)]], inner: Inner(id: id, note: nil),
                            inners: [])
        func same<T: Encodable>(_ value: T, streamed expected: Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let tree = String(decoding: try APIJSON.tree(value), as: UTF8.self)
            #expect(String(decoding: try APIJSON.encode(value), as: UTF8.self) == tree, sourceLocation: sourceLocation)
            let streamed = try APIJSON.streamed(value, userInfo: [:])
            #expect((streamed != nil) == expected, "taken in one pass: \(streamed != nil)", sourceLocation: sourceLocation)
            if let streamed { #expect(String(decoding: streamed, as: UTF8.self) == tree, sourceLocation: sourceLocation) }
        }
        try same(sample, streamed: true)
        try same([sample, sample], streamed: true)
        try same(Flattened(minutes: 2, figures: .init(count: 3, p50Ms: 0.5)), streamed: true)
        try same(Sequential(), streamed: true)
        try same(Nothing(), streamed: true)
        try same([Nothing()], streamed: true)
        try same(["x": [[String: Int]]()] as [String: [[String: Int]]], streamed: true)
        try same(Interleaved(), streamed: false)
        try same(Repeated(), streamed: false)
        try same(WithSuper(), streamed: false)
        #expect(try APIJSON.string(Sequential()) == #"{"first":{"last":true},"list":[1.5,[null],"s"],"last":{"a":[1,{"b":null}]}}"#)
        #expect(try APIJSON.string(Interleaved()) == #"{"box":{"inside":"late"},"after":1}"#)
        #expect(try APIJSON.string(Repeated()) == #"{"a":2}"#)
        #expect(try APIJSON.string(Nothing()) == "{}")
        // Refusals are the tree's, naming where.
        #expect(throws: EncodingError.self) { try APIJSON.encode(Sample(id: id, ids: [], byName: [:], optionalID: nil, missing: nil, count: 0,
                                                                       ratio: .infinity, at: Date(), payload: .null,
                                                                       inner: Inner(id: id, note: nil), inners: [])) }
        var deep: JSONValue = 1
        for _ in 0..<600 { deep = [deep] }
        #expect(throws: EncodingError.self) { try APIJSON.encode(["deep": deep]) }
    }

    /// Writes its own fields, in its `Codable` order.
    private struct Writes: Codable, APIJSONWritable {
        var id: UUID
        var name: String
        var note: String?
        var count: Int
        var total: Int64?
        var on: Bool
        var at: Date
        var when: Date?
        var payload: JSONValue
        var stored: StoredJSON
        var extra: JSONValue?
        var part: Part
        var parts: [Part]

        /// A nested value that writes itself too.
        struct Part: Codable, APIJSONWritable {
            var name: String
            var value: JSONValue

            func write(to object: inout APIJSON.ObjectWriter) {
                object.field("name", name)
                object.field("value", value)
            }
        }

        func write(to object: inout APIJSON.ObjectWriter) throws {
            object.field("id", id)
            object.field("name", name)
            object.field("note", note)
            object.field("count", count)
            object.field("total", total)
            object.field("on", on)
            object.field("at", at)
            object.field("when", when)
            object.field("payload", payload)
            object.field("stored", stored)
            object.field("extra", extra)
            try object.field("part", object: part)
            try object.field("parts", objects: parts)
        }
    }

    @Test("A value that writes itself gives the bytes its Codable conformance gives; one it cannot write goes to the tree")
    func writesItself() throws {
        let id = UUID(uuidString: "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB")!
        let value = Writes(id: id, name: "a \"quoted\" name\n", note: nil, count: -7, total: 1 << 40, on: true, at: Date(timeIntervalSince1970: 1),
                           when: nil, payload: ["b": [1, .null], "a": "x"], stored: StoredJSON(canonical: #"{"k":[true]}"#), extra: nil,
                           part: .init(name: "one", value: ["z": 1, "y": [false]]), parts: [.init(name: "two", value: .null), .init(name: "é\t", value: .number(2.5))])
        let tree = String(decoding: try APIJSON.tree([value, value]), as: UTF8.self)
        #expect(try APIJSON.string([value, value]) == tree)
        #expect(try APIJSON.streamed([value], userInfo: [:]) != nil, "written in one pass")
        var deep: JSONValue = 1
        for _ in 0..<600 { deep = [deep] }
        var refused = value
        refused.payload = deep
        #expect(try APIJSON.streamed([refused], userInfo: [:]) == nil, "too deep for one pass: the tree decides")
        #expect(throws: EncodingError.self) { try APIJSON.encode([refused]) }
        // A nested value's refusal is the whole response's.
        var nested = value
        nested.parts = [.init(name: "deep", value: deep)]
        #expect(try APIJSON.streamed([nested], userInfo: [:]) == nil, "a nested value too deep for one pass: the tree decides")
        #expect(throws: EncodingError.self) { try APIJSON.encode([nested]) }
        var empty = value
        empty.parts = []
        #expect(try APIJSON.string([empty]) == String(decoding: try APIJSON.tree([empty]), as: UTF8.self))
    }
}
