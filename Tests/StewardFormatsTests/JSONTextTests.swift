@testable import StewardFormats
import Foundation
import Testing

/// `JSONText` replaced `JSONEncoder`/`JSONDecoder` for stored JSON (event data, audit details, job payloads, input).
/// Stored text must not change with it: audit details are hashed into the chain and events are served as stored.
/// So the writer is checked byte for byte against the encoder it replaced, and the parser against the decoder.
@Suite("Stored JSON text")
struct JSONTextTests {
    private static let hostileStrings: [String] = [
        "", "plain", "quote \" and backslash \\ and slash /", "http://example.com/a/b?c=d&e=f",
        "\u{0}\u{1}\u{7}\u{8}\u{9}\u{A}\u{B}\u{C}\u{D}\u{E}\u{1F}\u{20}\u{7F}", "tab\tnew\nline\r\n",
        "é ü ß 中文 日本語 한국어", "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈", "\u{2028}\u{2029}\u{FEFF}\u{FFFD}", "e\u{301} vs é",
        "'; DROP TABLE executions; --", "<script>alert(1)</script>", "\\u0041 is not an escape here", "{\"nested\": \"json\"}",
        String(repeating: "long ", count: 400),
    ]

    private static let numbers: [Double] = [
        0, -0.0, 1, -1, 42, 1.5, -2.25, 0.1, 1e-7, -1e-7, 3.141592653589793, 1e15, 1e15 - 1, -1e15 + 1, 1e15 + 0.5,
        123_456_789_012_345_680, 1e21, 1e300, -1e300, 9_007_199_254_740_992, 9_007_199_254_740_994, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
        -.greatestFiniteMagnitude, 2.5e-308, 100, 1e14 + 0.25,
    ]

    private static func encoderText(_ value: JSONValue) -> String {
        String(decoding: (try? JSONEncoder.canonical.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    /// Values of every shape, drawn from a seeded generator so a failure can be replayed.
    private static func randomValue(_ random: inout SeededRandom, depth: Int = 0) -> JSONValue {
        switch random.next(upTo: depth > 3 ? 4 : 6) {
        case 0: return .null
        case 1: return .bool(random.next(upTo: 2) == 0)
        case 2:
            return .number(random.next(upTo: 2) == 0 ? numbers[random.next(upTo: numbers.count)]
                : Double(Int(random.next(upTo: 2_000_000)) - 1_000_000) / Double([1, 10, 1000, 7][random.next(upTo: 4)]))
        case 3: return .string(hostileStrings[random.next(upTo: hostileStrings.count)] + String(random.next(upTo: 100)))
        case 4: return .array((0..<random.next(upTo: 5)).map { _ in randomValue(&random, depth: depth + 1) })
        default:
            var object: [String: JSONValue] = [:]
            for _ in 0..<random.next(upTo: 6) {
                let key = ["a", "B", "b", "_", "Z", "aa", "a b", "10", "9", "é", "E", "z\"", "/k", "\u{1}"][random.next(upTo: 14)]
                object[key + (random.next(upTo: 3) == 0 ? "x" : "")] = randomValue(&random, depth: depth + 1)
            }
            return .object(object)
        }
    }

    @Test("The canonical text is byte for byte what the JSON encoder wrote, for hostile strings, numbers and nesting")
    func writerMatchesEncoder() throws {
        for string in Self.hostileStrings {
            #expect(try JSONValue.string(string).canonicalString() == Self.encoderText(.string(string)))
            #expect(try JSONValue.object([string: .string(string)]).canonicalString() == Self.encoderText(.object([string: .string(string)])))
        }
        for number in Self.numbers {
            #expect(try JSONValue.number(number).canonicalString() == Self.encoderText(.number(number)), "\(number)")
        }
        var random = SeededRandom(seed: 0x5354_4557)
        for _ in 0..<2_000 {
            let value = Self.randomValue(&random)
            let text = try value.canonicalString()
            #expect(text == Self.encoderText(value))
            // What is written reads back as the same value.
            #expect(JSONValue.parse(text) == value)
        }
        // Keys in UTF-8 byte order, not alphabetical or case-insensitive.
        #expect(try JSONValue.object(["b": 1, "B": 2, "a": 3, "é": 4, "z": 5, "10": 6, "9": 7]).canonicalString()
            == #"{"10":6,"9":7,"B":2,"a":3,"b":1,"z":5,"é":4}"#)
    }

    @Test("Values JSON cannot hold are errors, never null: numbers that are not finite, nesting deeper than the parser reads")
    func refusedValues() throws {
        for value: JSONValue in [.number(.nan), .number(.infinity), ["ok": 1, "bad": .array([.number(-.infinity)])]] {
            #expect(throws: JSONTextError.notFinite) { try value.canonicalString() }
        }
        var deep: JSONValue = 1
        for _ in 0..<512 { deep = .array([deep]) }
        #expect(throws: JSONTextError.nestedTooDeeply) { try deep.canonicalString() }
        #expect(throws: JSONTextError.nestedTooDeeply) { try JSONValue.object(["data": deep]).canonicalString() }
        var shallow: JSONValue = 1
        for _ in 0..<511 { shallow = .array([shallow]) }
        let text = try shallow.canonicalString()
        #expect(text == Self.encoderText(shallow))
        #expect(JSONText.parse(text) == shallow, "what is written, the parser reads back")
    }

    @Test("Nesting is counted in levels of arrays and objects")
    func nesting() {
        #expect(!JSONValue.number(1).exceedsNesting(0))
        #expect(JSONValue.array([]).exceedsNesting(0))
        #expect(!JSONValue.array([]).exceedsNesting(1))
        var value: JSONValue = ["leaf": true]
        for _ in 0..<63 { value = .array([value]) }
        #expect(!value.exceedsNesting(64))
        #expect(JSONValue.object(["x": value]).exceedsNesting(64))
    }

    @Test("Flat string arrays and maps write as the general writer does")
    func flatWriters() throws {
        #expect(JSONText.canonical(strings: ["a", "\"q\"", "é"]) == (try JSONValue.array(["a", "\"q\"", "é"]).canonicalString()))
        #expect(JSONText.canonical(stringMap: ["b": "1", "B": "2", "a": "\n"]) == (try JSONValue.object(["b": "1", "B": "2", "a": "\n"]).canonicalString()))
    }

    @Test("The parser reads what the JSON decoder read, and turns what it refused into a string value")
    func parserMatchesDecoder() {
        let texts = [
            #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, " \t\r\n[1, 2.5, -3e2, 0.000001, 1E+2, -0] ", #""just a string""#,
            "42", "true", "null", #""\u00e9\u0000\n\t\"\\\/ \ud83d\ude00""#, #"{"k":"v","k":"w"}"#, #"{"k":1,"x":2,"k":3,"k":{"a":1},"y":[{"k":0,"k":9}]}"#, #"{"":{}}"#, "[[],[[]],{}]",
            // Not JSON: each must come back as the string itself.
            "", " ", "{", "}", "[1 2]", #"{"a" 1}"#, "{a:1}", "'single'", "tru", "nul", "01", "1.", ".5", "-",
            "1e", "+1", "NaN", "Infinity", "1e400", "[1] x", #""unterminated"#, "\"raw\ncontrol\"", #""\x""#, #""\u12""#,
            #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, "plain text", "<xml/>",
            String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
        ]
        for text in texts {
            let decoded = (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .string(text)
            #expect(JSONValue.parse(text) == decoded, "\(text.prefix(40))")
        }
        // Stricter than the decoder in one way: a trailing comma is not JSON (stored text never has one).
        #expect(JSONValue.parse("[1,]") == .string("[1,]"))
        #expect(JSONValue.parse(#"{"a":1,}"#) == .string(#"{"a":1,}"#))
        #expect(JSONValue.parse(#"{"a":[1,"x"]}"#) == ["a": [1, "x"]])
        #expect(JSONValue.parse("not json") == .string("not json"))
    }
}

/// SplitMix64: reproducible values for the generated cases.
struct SeededRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func next(upTo bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// The fast paths behind ids and timestamps must give exactly what Foundation gave: ids are stored and compared as
/// text, and timestamps are part of every API body and event.
@Suite("Id and timestamp text")
struct IDTextTests {
    @Test("UUID text is Foundation's, both cases, and parses back; anything else is refused as Foundation refuses it")
    func uuidText() {
        for id in (0..<500).map({ _ in UUID() }) + [UUID.pooledRandom(), .timeOrdered(), UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))] {
            #expect(id.uppercasedString == id.uuidString)
            #expect(id.lowercasedString == id.uuidString.lowercased())
            #expect(UUID(text: id.uuidString) == id)
            #expect(UUID(text: id.lowercasedString) == id)
        }
        for text in ["", "not-a-uuid", "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
                     "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456_426614174000", "g23e4567-e89b-12d3-a456-426614174000",
                     "{123e4567-e89b-12d3-a456-426614174000}", "１23e4567-e89b-12d3-a456-42661417400"] {
            #expect(UUID(text: text) == nil, "\(text)")
            #expect(UUID(uuidString: text) == nil, "\(text)")
        }
        // Stricter than Foundation's C scanner, which skips white space before each pair of digits and stops at a NUL.
        #expect(UUID(text: " 123e4567-e89b-12d3-a456-42661417400") == nil)
        #expect(UUID(text: "123e4567-e89b-12d3-a456-426614174000\u{0}") == nil)
        // Pooled ids are version 4 (random) and all different.
        let pooled = (0..<5_000).map { _ in UUID.pooledRandom() }
        #expect(Set(pooled).count == pooled.count)
        #expect(pooled.allSatisfy { $0.uuidString[$0.uuidString.index($0.uuidString.startIndex, offsetBy: 14)] == "4" })
        #expect(pooled.allSatisfy { "89AB".contains($0.uuidString[$0.uuidString.index($0.uuidString.startIndex, offsetBy: 19)]) })
    }

    @Test("RFC 3339 timestamps are what Foundation's ISO 8601 formatters wrote, fractions cut, across leap years and eras")
    func timestamps() {
        var random = SeededRandom(seed: 3339)
        var dates: [Date] = [Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: -1), Date(timeIntervalSince1970: 0.999),
                             Date(timeIntervalSince1970: -0.5), Date(timeIntervalSince1970: 951_782_400), Date(timeIntervalSince1970: 4_107_542_399.9),
                             Date(timeIntervalSince1970: 253_402_300_799), Date(timeIntervalSince1970: -62_135_596_800), Date(),
                             .distantPast, .distantFuture, Date(timeIntervalSince1970: 1e13)]
        for _ in 0..<3_000 {
            dates.append(Date(timeIntervalSince1970: Double(Int64(random.next() % 16_000_000_000) - 6_000_000_000) + Double(random.next(upTo: 1000)) / 1000))
        }
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: false)
        let formatter = ISO8601DateFormatter()
        for date in dates {
            #expect(RFC3339.string(from: date) == date.formatted(style), "\(date.timeIntervalSince1970)")
            #expect(RFC3339.string(from: date) == formatter.string(from: date), "\(date.timeIntervalSince1970)")
            // Written in place into a response's bytes, after what is there already, the same text.
            var bytes = Array("x".utf8)
            RFC3339.append(date, to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == "x" + formatter.string(from: date), "\(date.timeIntervalSince1970)")
        }
    }

    @Test("A UUID written in place into a response's bytes is its lower-case text, after what is there already")
    func uuidBytes() {
        var random = SeededRandom(seed: 4122)
        var ids = [UUID(uuidString: "EA14DDD4-1FC9-4A5B-9C3D-0123456789AB")!, UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))]
        for _ in 0..<500 {
            let bytes = (0..<16).map { _ in UInt8(random.next(upTo: 256)) }
            ids.append(UUID(uuid: bytes.withUnsafeBytes { $0.loadUnaligned(as: uuid_t.self) }))
        }
        for id in ids {
            var bytes = Array("[".utf8)
            id.appendLowercased(to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == "[" + id.uuidString.lowercased())
            #expect(id.lowercasedString == id.uuidString.lowercased())
        }
    }

    @Test("A key is found in canonical text at any depth, and not in a string value or a longer key")
    func keySearch() {
        #expect(JSONText.mayHaveKey("headers", in: #"{"headers":{"a":"b"},"type":"http"}"#))
        #expect(JSONText.mayHaveKey("headers", in: #"{"body":{"headers":1}}"#))
        #expect(!JSONText.mayHaveKey("headers", in: #"{"name":"echo","type":"builtin"}"#))
        #expect(!JSONText.mayHaveKey("headers", in: #"{"note":"headers","xheaders":1}"#))
        #expect(!JSONText.mayHaveKey("headers", in: #"{"note":"\"headers\":"}"#), "escaped quotes in a value")
        #expect(!JSONText.mayHaveKey("headers", in: ""))
    }
}
