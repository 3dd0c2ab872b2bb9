import Foundation
import Logging
import Testing
@testable import App
import StewardFormats

private final class LineSink: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var lines: [String] { lock.withLock { stored } }
    func append(_ line: String) { lock.withLock { stored.append(line) } }
}

@Suite("JSONLogHandler")
struct JSONLogHandlerTests {
    @Test("STEWARD_LOG_FORMAT=json writes one JSON object per line with level, message, requestId and fields")
    func oneObjectPerLine() throws {
        let sink = LineSink()
        var logger = Logger(label: "test") { label in JSONLogHandler(label: label, write: { sink.append($0) }) }
        logger[metadataKey: "request-id"] = "req-42"
        logger.info("GET /health/live 200", metadata: ["status": "200", "note": "line\nbreak \"quoted\""])

        #expect(sink.lines.count == 1)
        let line = try #require(sink.lines.first)
        #expect(!line.contains("\n"))
        guard case .object(let object) = JSONValue.parse(line) else {
            Issue.record("not a JSON object: \(line)")
            return
        }
        #expect(object["level"] == "info")
        #expect(object["message"] == "GET /health/live 200")
        #expect(object["requestId"] == "req-42")
        #expect(object["note"] == "line\nbreak \"quoted\"")
        #expect(object["ts"] != nil)
    }
}
