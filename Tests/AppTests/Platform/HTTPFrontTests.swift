import Foundation
import NIOCore
import Testing
import StewardFormats
import Vapor
@testable import App

/// Steward's own HTTP server (`StewardHTTPServer`) as a misbehaving client meets it: malformed requests, slow
/// senders and too many connections, each over a real socket.
@Suite("HTTP front")
struct HTTPFrontTests {
    /// The status line and the problem's code of what the server wrote, once it closed the connection.
    private func answer(to bytes: [UInt8], port: Int, halfClose: Bool = false) async throws -> (status: String, code: String?, text: String) {
        let connection = try await RawConnection.connect(port: port)
        try? await connection.send(bytes)
        if halfClose { try? await connection.halfClose() }
        try await connection.waitClosed(timeout: 10)
        let text = connection.text
        let status = text.components(separatedBy: "\r\n").first ?? ""
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().first ?? ""
        let code = JSONValue.parse(body).object?["code"]?.stringValue
        return (status, code, text)
    }

    @Test("Twenty-one kinds of malformed request each get a 400, 414, 415, 431 or 501 problem, then the connection closes; the server goes on serving")
    func malformedRequests() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                let long = String(repeating: "a", count: 100_000)
                let cases: [(String, [UInt8], String, String)] = [
                    ("Content-Length with chunked", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("negative Content-Length", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("20-digit Content-Length", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("a space in the path", Array("GET /health/ live HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("raw invalid UTF-8 in the path", Array("GET /health/".utf8) + [0xFF, 0xFE] + Array(" HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("an unknown method", Array("FROB /health/live HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("a header without a colon", Array("GET /health/live HTTP/1.1\r\nHost x\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("bare line feeds", Array("GET /health/live HTTP/1.1\nHost: x\n\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("the HTTP/2 preface", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("TLS bytes on the plain port", [0x16, 0x03, 0x01, 0x00, 0xF4, 0x01, 0x00, 0x00, 0xF0, 0x03, 0x03] + [UInt8](repeating: 0, count: 64), "HTTP/1.1 400", "bad_request"),
                    ("a 100 KB request line", Array("GET /\(long)".utf8), "HTTP/1.1 414", "uri_too_long"),
                    ("a 140 KB URL", Array("GET /\(long)\(String(repeating: "b", count: 40_000)) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "HTTP/1.1 414", "uri_too_long"),
                    ("an HTTP/1.1 request without Host", Array("GET /health/live HTTP/1.1\r\nAccept: */*\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("two Host headers", Array("GET /health/live HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                    ("a transfer coding other than chunked", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".utf8),
                     "HTTP/1.1 501", "not_implemented"),
                    ("a gzip-coded body", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd".utf8),
                     "HTTP/1.1 415", "unsupported_media_type"),
                    ("a 100 KB query, the whole head in one write", Array("GET /api/v1/skills?q=\(long) HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
                     "HTTP/1.1 414", "uri_too_long"),
                    ("a 90 KB header after a short line", Array("GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "c", count: 90_000))\r\n\r\n".utf8),
                     "HTTP/1.1 431", "headers_too_large"),
                    ("a 1 MB header", Array("GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "c", count: 1_000_000))\r\n\r\n".utf8), "HTTP/1.1 431", "headers_too_large"),
                    ("a body declared past the limit", Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n".utf8), "HTTP/1.1 413", "payload_too_large"),
                    ("a connection ended inside the head", Array("GET /health/live HTTP/1.1\r\nHost: x\r\n".utf8), "HTTP/1.1 400", "bad_request"),
                ]
                for (name, bytes, status, code) in cases {
                    let answer = try await answer(to: bytes, port: port, halfClose: name == "a connection ended inside the head")
                    #expect(answer.status.hasPrefix(status), "\(name): \(answer.text.prefix(300))")
                    #expect(answer.code == code, "\(name): \(answer.text.prefix(300))")
                    #expect(answer.text.lowercased().contains("content-type: application/problem+json"), "\(name)")
                    if code == "unsupported_media_type" { #expect(answer.text.lowercased().contains("accept-encoding: identity"), "\(name)") }
                }
                let healthy = try await answer(to: Array("GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), port: port)
                #expect(healthy.status == "HTTP/1.1 200 OK")
                // The identity coding is no coding: the route answers (a wrong password here).
                let identity = try await answer(to: Array(("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + "Content-Encoding: identity\r\nConnection: close\r\nContent-Length: 43\r\n\r\n{\"email\":\"a@example.com\",\"password\":\"nope\"}").utf8), port: port)
                #expect(identity.status == "HTTP/1.1 401 Unauthorized", "\(identity.text)")
                // HTTP/1.0 has no Host requirement.
                let old = try await answer(to: Array("GET /health/live HTTP/1.0\r\n\r\n".utf8), port: port)
                #expect(old.status == "HTTP/1.0 200 OK", "\(old.text)")
            }
        }
    }

    @Test("A client that half-closes after a whole request still gets its answer, and then the connection closes")
    func halfClose() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                let answer = try await answer(to: Array("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n".utf8), port: port, halfClose: true)
                #expect(answer.status == "HTTP/1.1 200 OK", "\(answer.text)")
                #expect(answer.text.hasSuffix(#"{"status":"ok"}"#))
            }
        }
    }

    @Test("Expect: 100-continue gets 100 Continue, then the answer once the body comes; the connection and the server go on serving")
    func expectContinue() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                let body = #"{"email": "nobody@example.com", "password": "not-the-password"}"#
                let connection = try await RawConnection.connect(port: port)
                // As curl sends a larger body: the head first, the body only once the server says to go on.
                try await connection.send(Array(("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + "Accept-Encoding: gzip\r\nExpect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\n\r\n").utf8))
                try await eventually(5, "100 Continue") { connection.text.contains("\r\n\r\n") }
                #expect(connection.text.hasPrefix("HTTP/1.1 100 Continue\r\n"), "\(connection.text)")
                try await connection.send(Array(body.utf8))
                try await eventually(5, "the login's answer") { connection.text.contains("invalid_credentials") }
                #expect(connection.text.contains("HTTP/1.1 401 Unauthorized"), "\(connection.text)")
                // The same connection takes the next request, with nothing of the first left over.
                let before = connection.bytes.count
                try await connection.send(Array("GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
                try await connection.waitClosed(timeout: 10)
                let next = String(decoding: connection.bytes[before...], as: UTF8.self)
                #expect(next.hasPrefix("HTTP/1.1 200 OK"), "\(next)")
                #expect(next.hasSuffix(#"{"status":"ok"}"#), "\(next)")
                // An HTTP/1.0 client is not sent 100 Continue (RFC 9110, 10.1.1); it gets the answer alone.
                let old = try await answer(to: Array(("POST /api/v1/auth/login HTTP/1.0\r\nContent-Type: application/json\r\n"
                    + "Expect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)").utf8), port: port)
                #expect(old.status == "HTTP/1.0 401 Unauthorized", "\(old.text)")
                #expect(!old.text.contains("100 Continue"))
            }
        }
    }

    @Test("Pipelined requests are answered in order; the connection closes after the one that asks for it, or after the last once the client half-closes")
    func pipelined() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                let connection = try await RawConnection.connect(port: port)
                let request = "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Request-ID: pipelined-%d\r\n%@\r\n"
                try await connection.send(Array((String(format: request, 1, "") + String(format: request, 2, "")
                    + String(format: request, 3, "Connection: close\r\n")).utf8))
                try await connection.waitClosed(timeout: 10)
                let ids = connection.text.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id:") }
                #expect(ids.map { $0.split(separator: " ").last.map(String.init) } == ["pipelined-1", "pipelined-2", "pipelined-3"],
                        "\(connection.text)")
                let connections = connection.text.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("connection:") }
                #expect(connections.map { $0.lowercased() } == ["connection: keep-alive", "connection: keep-alive", "connection: close"])

                // Pipelined, then half-closed: every request is answered whole before the connection closes.
                let halfClosed = try await RawConnection.connect(port: port)
                try await halfClosed.send(Array((String(format: request, 4, "") + String(format: request, 5, "")).utf8))
                try await halfClosed.halfClose()
                try await halfClosed.waitClosed(timeout: 10)
                let answered = halfClosed.text.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id:") }
                #expect(answered.map { $0.split(separator: " ").last.map(String.init) } == ["pipelined-4", "pipelined-5"], "\(halfClosed.text)")
                #expect(halfClosed.text.hasSuffix(#"{"status":"ok"}"#))
            }
        }
    }

    @Test("HEAD of a page served compressed answers with its head alone, so the next answer on the connection is read whole")
    func headOfCompressedPage() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                let connection = try await RawConnection.connect(port: port)
                try await connection.send(Array(("HEAD /console HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
                    + "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").utf8))
                try await connection.waitClosed(timeout: 10)
                let answers = connection.text.components(separatedBy: "\r\n\r\n")
                #expect(answers.count == 3, "\(connection.text)")
                #expect(answers[0].hasPrefix("HTTP/1.1 200 OK"), "\(answers[0])")
                #expect(!answers[0].lowercased().contains("content-encoding"), "\(answers[0])")
                #expect(answers[0].lowercased().contains("content-type: text/html"), "\(answers[0])")
                // Nothing between the HEAD's head and the next status line.
                #expect(answers.count > 1 && answers[1].hasPrefix("HTTP/1.1 200 OK"), "\(connection.text)")
                #expect(answers.last == #"{"status":"ok"}"#, "\(connection.text)")
                // The same page by GET is still compressed for a client that accepts gzip.
                let get = try await RawConnection.connect(port: port)
                try await get.send(Array("GET /console HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n".utf8))
                try await get.waitClosed(timeout: 10)
                #expect(get.text.lowercased().contains("content-encoding: gzip"), "\(get.text.prefix(600))")
            }
        }
    }

    @Test("Serving on a port already taken fails with the bind error, and nothing else breaks")
    func portTaken() async throws {
        try await withTestApp { app in
            try await app.withLiveServer { port in
                do {
                    let second = StewardHTTPServer(app: app)
                    await #expect(throws: (any Error).self) { try await second.start(address: .hostname("127.0.0.1", port: port)) }
                }
                // The second server is gone (freed above, which trapped in debug builds); the first still serves.
                let answer = try await answer(to: Array("GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), port: port)
                #expect(answer.status == "HTTP/1.1 200 OK")
            }
        }
    }

    @Test("A head dribbled one byte at a time gets 408 at STEWARD_HTTP_HEAD_TIMEOUT_SECONDS, though every byte resets the idle timer")
    func slowHead() async throws {
        try await withTestApp(environment: ["STEWARD_HTTP_HEAD_TIMEOUT_SECONDS": "2", "STEWARD_HTTP_IDLE_TIMEOUT_SECONDS": "60"]) { app in
            try await app.withLiveServer { port in
                let connection = try await RawConnection.connect(port: port)
                let started = ContinuousClock.now
                let head = Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: \(String(repeating: "z", count: 40))\r\n\r\n".utf8)
                for byte in head where connection.isOpen && connection.bytes.isEmpty {
                    try? await connection.send([byte])
                    try await Task.sleep(for: .milliseconds(200))
                }
                try await connection.waitClosed(timeout: 10)
                let elapsed = ContinuousClock.now - started
                #expect(connection.text.hasPrefix("HTTP/1.1 408"), "\(connection.text)")
                #expect(connection.text.contains(#""code":"request_timeout""#))
                #expect(elapsed < .seconds(5), "cut at the 2 s deadline, not after the whole head (\(elapsed))")
            }
        }
    }

    @Test("A body that stops short of its Content-Length gets 408 after STEWARD_HTTP_BODY_TIMEOUT_SECONDS, and is logged as such")
    func stalledBody() async throws {
        try await withTestApp(environment: ["STEWARD_HTTP_BODY_TIMEOUT_SECONDS": "2", "STEWARD_HTTP_IDLE_TIMEOUT_SECONDS": "60"]) { app in
            let sink = LogSink()
            var logger = Logger(label: "steward.test") { label in JSONLogHandler(label: label, write: { sink.append($0) }) }
            logger.logLevel = .info
            app.logger = logger
            try await app.withLiveServer { port in
                let connection = try await RawConnection.connect(port: port)
                let started = ContinuousClock.now
                try await connection.send(Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\nX-Request-ID: stalled-1\r\n\r\n{\"email\":".utf8))
                try await connection.waitClosed(timeout: 10)
                #expect(connection.text.hasPrefix("HTTP/1.1 408"), "\(connection.text)")
                #expect(ContinuousClock.now - started < .seconds(5))
            }
            let line = try #require(sink.lines.map(JSONValue.parse).compactMap(\.object).first { $0["requestId"] == "stalled-1" })
            #expect(line["status"]?.stringValue == "408", "\(line)")
        }
    }

    @Test("Connections past the per-address limit get 503 too_many_connections with Retry-After; closing one lets the next in")
    func perAddressLimit() async throws {
        try await withTestApp(environment: ["STEWARD_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "3"]) { app in
            try await app.withLiveServer { port in
                // Each is served before the next opens: connections are admitted on their own event loops, so
                // without the wait a later one could be counted before an earlier one.
                let request = Array("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                var opened: [RawConnection] = []
                for _ in 0..<3 {
                    let connection = try await RawConnection.connect(port: port)
                    try await connection.send(request)
                    try await eventually(5, "an answer on a held connection") { connection.text.hasPrefix("HTTP/1.1 200") }
                    opened.append(connection)
                }
                let held = opened
                let refused = try await answer(to: [], port: port)
                #expect(refused.status == "HTTP/1.1 503 Service Unavailable", "\(refused.text)")
                #expect(refused.code == "too_many_connections")
                #expect(refused.text.contains("Retry-After: 1"))
                // The held connections are still served as usual.
                try await held[0].send(request)
                try await eventually(5, "a second answer on a held connection") {
                    held[0].text.components(separatedBy: "HTTP/1.1 200").count == 3
                }
                await held[1].close()
                try await eventually(5, "a new connection to be served") {
                    let next = try await answer(to: Array("GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), port: port)
                    return next.status == "HTTP/1.1 200 OK"
                }
                for connection in held { await connection.close() }
            }
        }
    }

    @Test("The total limit holds for every address, and a trusted proxy is exempt from the per-address one")
    func totalLimit() async throws {
        try await withTestApp(environment: ["STEWARD_HTTP_MAX_CONNECTIONS": "4", "STEWARD_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "2",
                                            "STEWARD_TRUSTED_PROXIES": "127.0.0.1/32"]) { app in
            try await app.withLiveServer { port in
                var held: [RawConnection] = []
                for _ in 0..<4 { held.append(try await RawConnection.connect(port: port)) }
                try await Task.sleep(for: .milliseconds(200))
                #expect(held.allSatisfy { $0.isOpen && $0.bytes.isEmpty }, "four connections from the trusted proxy, past its per-address limit of 2")
                let refused = try await answer(to: [], port: port)
                #expect(refused.code == "too_many_connections", "\(refused.text)")
                #expect(refused.text.contains("limit of 4 open connections"), "\(refused.text)")
                for connection in held { await connection.close() }
            }
        }
    }
}
