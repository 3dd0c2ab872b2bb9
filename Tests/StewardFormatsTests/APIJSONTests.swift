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
}
