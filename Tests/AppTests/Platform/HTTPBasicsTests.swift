import Foundation
import Logging
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// A body shape the test route decodes, to exercise the real decoding and error path.
private struct Widget: Content {
    var name: String
    var count: Int
    var tags: [String]
}

/// Routes that exist only in these tests, to drive the shared middleware through a real handler.
private func registerProbeRoutes(_ app: Application) {
    let probe = app.grouped("test-probe")
    probe.post("widgets") { req async throws -> Widget in
        try req.content.decode(Widget.self)
    }
    probe.get("widgets", ":id") { req async throws -> String in
        try req.uuidParameter("id").uuidString
    }
    probe.get("explode") { _ async throws -> String in
        throw ProbeFailure(secret: "postgres://admin:hunter2@db/steward SELECT * FROM users")
    }
}

final class LogSink: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var lines: [String] { lock.withLock { stored } }
    func append(_ line: String) { lock.withLock { stored.append(line) } }
}

private struct ProbeFailure: Error, CustomStringConvertible {
    let secret: String
    var description: String { secret }
}

/// Sends requests as a new admin (signed in with a bearer token), JSON bodies marked as such.
private func adminSender(_ app: Application, email: String) async throws
    -> @Sendable (HTTPMethod, String, String?) async throws -> TestingHTTPResponse {
    let admin = try await makeUser(app, email: email)
    _ = try await UserAdminService(app: app).setRoles(try admin.requireID(), roles: ["admin"], actor: .cli)
    let token = try await login(app, email: email).accessToken
    return { method, path, json in
        var headers = bearer(token)
        if json != nil { headers.add(name: .contentType, value: "application/json") }
        return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
    }
}

@Suite("HTTP basics")
struct HTTPBasicsTests {
    @Test("Every response carries X-Request-ID: echoed when sane, generated otherwise")
    func requestID() async throws {
        try await withTestApp { app in
            try await app.live().test(.GET, "/health/live", headers: ["X-Request-ID": "abc-123.trace:7"]) { res throws in
                #expect(res.headers.first(name: "X-Request-ID") == "abc-123.trace:7")
            }
            try await app.live().test(.GET, "/health/live") { res throws in
                let id = res.headers.first(name: "X-Request-ID") ?? ""
                #expect(UUID(uuidString: id) != nil)
            }
            let hostile = "x\" injected=1 <script>" + String(repeating: "a", count: 300)
            try await app.live().test(.GET, "/health/live", headers: ["X-Request-ID": hostile]) { res throws in
                let id = res.headers.first(name: "X-Request-ID") ?? ""
                #expect(id != hostile)
                #expect(UUID(uuidString: id) != nil)
            }
        }
    }

    @Test("Every request logs one line: method, route pattern, status, duration, request id")
    func requestLogLine() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            let sink = LogSink()
            var logger = Logger(label: "steward.test") { label in JSONLogHandler(label: label, write: { sink.append($0) }) }
            logger.logLevel = .info
            app.logger = logger
            let id = UUID().uuidString
            try await app.live().test(.GET, "/test-probe/widgets/\(id)", headers: ["X-Request-ID": "log-line-1"]) { res throws in
                #expect(res.status == .ok)
            }
            let requestLines = sink.lines.map(JSONValue.parse).compactMap { value -> [String: JSONValue]? in
                guard case .object(let object) = value, object["requestId"] == "log-line-1" else { return nil }
                return object
            }
            #expect(requestLines.count == 1)
            let line = try #require(requestLines.first)
            #expect(line["method"] == "GET")
            #expect(line["route"] == "/test-probe/widgets/:id", "the pattern, never the raw path with its id")
            #expect(line["status"] == "200")
            #expect(line["durationMs"] != nil)
            #expect(!sink.lines.joined().contains(id))
        }
    }

    @Test("Security headers: nosniff, frame deny, no-referrer")
    func securityHeaders() async throws {
        try await withTestApp { app in
            for path in ["/health/live", "/no/such/route"] {
                try await app.live().test(.GET, path) { res throws in
                    #expect(res.headers.first(name: "X-Content-Type-Options") == "nosniff")
                    #expect(res.headers.first(name: "X-Frame-Options") == "DENY")
                    #expect(res.headers.first(name: "Referrer-Policy") == "no-referrer")
                }
            }
        }
    }

    @Test("An unknown route is a 404 problem+json with the request id")
    func unknownRoute() async throws {
        try await withTestApp { app in
            try await app.live().test(.GET, "/api/v1/nothing-here", headers: ["X-Request-ID": "req-404"]) { res throws in
                #expect(res.status == .notFound)
                #expect(res.headers.first(name: .contentType)?.hasPrefix("application/problem+json") == true)
                let problem = try res.problem()
                #expect(problem.code == "not_found")
                #expect(problem.status == 404)
                #expect(problem.type == "https://steward.dev/problems/not_found")
                #expect(problem.requestId == "req-404")
            }
        }
    }

    @Test("Malformed JSON, trailing commas and bytes that are not UTF-8 included, is 400 bad_request, and the server keeps serving")
    func malformedJSON() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            for body in ["{\"name\": \"a\",", "not json", "{\"name\": \"a\", \"count\": 1, \"tags\": [}", "\u{0}\u{1}",
                         // A trailing comma is not JSON, though Foundation's decoder lets it pass.
                         #"{"name": "a", "count": 1, "tags": [],}"#, #"{"name": "a", "count": 1, "tags": ["x",]}"#] {
                try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": "application/json"], body: .init(string: body)) { res throws in
                    #expect(res.status == .badRequest, "body: \(body)")
                    #expect(try res.problem().code == "bad_request")
                }
            }
            // Bytes that are not UTF-8 inside a string: not JSON (RFC 8259), though the decoder reports a wrong type there.
            for bytes in [[0xFF], [0xC3, 0x28], [0xED, 0xA0, 0x80], [0xE0, 0x80, 0x80]] as [[UInt8]] {
                var body = ByteBuffer(string: #"{"name": ""#)
                body.writeBytes(bytes)
                body.writeString(#"", "count": 1, "tags": []}"#)
                try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": "application/json"], body: body) { res throws in
                    #expect(res.status == .badRequest, "bytes: \(bytes)")
                    #expect(try res.problem().code == "bad_request")
                }
            }
            try await app.live().test(.GET, "/health/live") { res throws in #expect(res.status == .ok) }
        }
    }

    @Test("Wrong types and missing fields are 422 validation_failed naming the field")
    func wrongShapes() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            let cases: [(String, String)] = [
                (#"{"name": "a", "count": "three", "tags": []}"#, "count"),
                (#"{"name": "a", "tags": []}"#, "count"),
                (#"{"name": null, "count": 1, "tags": []}"#, "name"),
                (#"{"name": "a", "count": 1, "tags": ["x", 5]}"#, "tags[1]"),
                // Foundation does not say which field held the fraction, so the problem names the body.
                (#"{"name": "a", "count": 1.5, "tags": []}"#, "body"),
                (#"[1, 2, 3]"#, "body"),
            ]
            for (body, field) in cases {
                try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": "application/json"], body: .init(string: body)) { res throws in
                    #expect(res.status == .unprocessableEntity, "body: \(body)")
                    let problem = try res.problem()
                    #expect(problem.code == "validation_failed")
                    #expect(problem.errors?.first?.field == field, "body: \(body) gave \(String(describing: problem.errors))")
                }
            }
        }
    }

    @Test("A client that hangs up in the middle of its body is a client abort: a 4xx in logs and metrics, never a 5xx or an error line")
    func clientAbortMidBody() async throws {
        try await withTestApp { app in
            let sink = LogSink()
            var logger = Logger(label: "steward.test") { label in JSONLogHandler(label: label, write: { sink.append($0) }) }
            logger.logLevel = .info
            app.logger = logger
            try await app.withLiveServer { port in
                let raw = try await RawConnection.connect(port: port)
                let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + "Content-Length: 1000\r\nX-Request-ID: abort-1\r\n\r\n{\"email\": \"someone@exa"
                try await raw.send(Array(head.utf8))
                try await Task.sleep(for: .milliseconds(100))
                await raw.close()
                try await eventually(5, "the request's log line") {
                    sink.lines.contains { JSONValue.parse($0).object?["requestId"] == "abort-1" }
                }
            }
            let line = try #require(sink.lines.map(JSONValue.parse).compactMap(\.object).first { $0["requestId"] == "abort-1" && $0["status"] != nil })
            let status = Int(line["status"]?.stringValue ?? "") ?? 0
            #expect((400..<500).contains(status), "\(line)")
            #expect(!sink.lines.contains { $0.contains("Unhandled error") }, "\(sink.lines)")
            #expect(try await metricValue(app, #"steward_http_request_duration_seconds_count{method="POST",route="/api/v1/auth/login",status="5xx"}"#) == nil)
        }
    }

    @Test("A body over STEWARD_MAX_BODY_SIZE is 413 payload_too_large")
    func oversizedBody() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_BODY_SIZE": "1kb"]) { app in
            registerProbeRoutes(app)
            let big = #"{"name": ""# + String(repeating: "x", count: 4096) + #"", "count": 1, "tags": []}"#
            try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": "application/json"], body: .init(string: big)) { res throws in
                #expect(res.status == .payloadTooLarge)
                #expect(try res.problem().code == "payload_too_large")
            }
            try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": "application/json"], body: .init(string: #"{"name": "ok", "count": 1, "tags": []}"#)) { res throws in
                #expect(res.status == .ok)
            }
        }
    }

    @Test("A body that is not JSON is 415 unsupported_media_type, whatever type it claims")
    func wrongContentType() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            // Types Vapor can decode by default (plain text, forms, multipart) are refused like unknown ones.
            for type in ["application/x-unknown", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                try await app.live().test(.POST, "/test-probe/widgets", headers: ["Content-Type": type], body: .init(string: "name=a")) { res throws in
                    #expect(res.status == .unsupportedMediaType, "\(type)")
                    #expect(try res.problem().code == "unsupported_media_type", "\(type)")
                }
            }
        }
    }

    @Test("An invalid UUID in a path is 404, like a missing resource; hostile paths never 500")
    func invalidIDs() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            let valid = UUID().uuidString
            try await app.live().test(.GET, "/test-probe/widgets/\(valid)") { res throws in
                #expect(res.status == .ok)
                #expect(res.body.string == valid)
            }
            for id in ["not-a-uuid", "1", "%27%20OR%201%3D1--", "..%2F..%2Fetc%2Fpasswd", "%2500", String(repeating: "9", count: 2000)] {
                try await app.live().test(.GET, "/test-probe/widgets/\(id)") { res throws in
                    #expect(res.status == .notFound, "id: \(id)")
                    #expect(try res.problem().code == "not_found")
                }
            }
        }
    }

    @Test("The NUL character in a path, a query or a JSON body is 400 bad_request, on SQLite as on PostgreSQL (where it was a 500)")
    func nulCharacter() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            let send = try await adminSender(app, email: "nul-admin@example.com")
            for path in ["/api/v1/skills/a%00b", "/api/v1/skills?category=a%00b", "/api/v1/skills?q=a%00b", "/api/v1/users?q=a%00b",
                         "/api/v1/executions?clientName=a%00b", "/api/v1/audit-logs?action=a%00b", "/api/v1/audit-logs?resourceId=%00"] {
                let res = try await send(.GET, path, nil)
                #expect(res.status == .badRequest, "\(path): \(res.status)")
                #expect(try res.problem().code == "bad_request")
                #expect(try res.problem().detail?.contains("NUL") == true)
            }
            // In a body: a field (login, before any account is looked up) and a JSON value (an execution's input).
            let login = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                                            body: .init(string: #"{"email": "nul-admin\u0000@example.com", "password": "x"}"#))
            #expect(login.status == .badRequest)
            #expect(try login.problem().code == "bad_request")
            let run = try await send(.POST, "/api/v1/executions", #"{"skillId": "echo", "input": {"text": "a\u0000b"}}"#)
            #expect(run.status == .badRequest)
            #expect(try await Execution.query(on: app.db).count() == 0, "nothing was queued")
            // What only looks like NUL is text like any other: an escaped backslash before "u0000", and "%2500".
            let escaped = try await app.testing().sendRequest(.POST, "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                                              body: .init(string: #"{"email": "nul-admin\\u0000@example.com", "password": "x"}"#))
            #expect(escaped.status == .unauthorized)
            #expect(try await send(.GET, "/api/v1/skills?q=%2500", nil).status == .ok)
            #expect(try await send(.POST, "/api/v1/executions", #"{"skillId": "echo", "input": {"text": "a\\u0000b"}}"#).status == .accepted)
        }
    }

    @Test("A time outside RFC 3339's years (0001-9999), in a query, a cursor or a body, is 422 naming it; on PostgreSQL it ended the process")
    func timesOutOfRange() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let send = try await adminSender(app, email: "times-admin@example.com")
            func cursor(at: Double) -> String { PageRequest.encode(.init(at: at, id: UUID())) }
            for (path, field) in [("/api/v1/executions?from=999999-01-01T00:00:00Z", "from"), ("/api/v1/audit-logs?to=-0001-01-01T00:00:00Z", "to"),
                                  ("/api/v1/executions?to=10000-01-01T00:00:00Z", "to"),
                                  ("/api/v1/executions?cursor=\(cursor(at: 1e20))", "cursor"), ("/api/v1/audit-logs?cursor=\(cursor(at: -1e15))", "cursor")] {
                let res = try await send(.GET, path, nil)
                #expect(res.status == .unprocessableEntity, "\(path): \(res.status)")
                #expect(try res.problem().errors?.map(\.field) == [field], "\(path)")
            }
            let farKey = try await send(.POST, "/api/v1/api-keys", #"{"name": "far", "scopes": ["skills:read"], "expiresAt": "999999-01-01T00:00:00Z"}"#)
            #expect(farKey.status == .unprocessableEntity)
            #expect(try farKey.problem().errors?.map(\.field) == ["expiresAt"])
            // The last second RFC 3339 can write is still a time like any other.
            #expect(try await send(.GET, "/api/v1/executions?from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z", nil).status == .ok)
            #expect(try await send(.POST, "/api/v1/api-keys", #"{"name": "late", "scopes": ["skills:read"], "expiresAt": "9999-12-31T23:59:59Z"}"#).status == .created)
            #expect(try await app.testing().sendRequest(.GET, "/health/live").status == .ok)
        }
    }

    @Test("A 500 says nothing of the error: no SQL, no secret, no stack")
    func internalErrorsDoNotLeak() async throws {
        try await withTestApp { app in
            registerProbeRoutes(app)
            try await app.live().test(.GET, "/test-probe/explode") { res throws in
                #expect(res.status == .internalServerError)
                let problem = try res.problem()
                #expect(problem.code == "internal")
                #expect(!res.body.string.contains("hunter2"))
                #expect(!res.body.string.contains("SELECT"))
                #expect(!res.body.string.contains("ProbeFailure"))
            }
        }
    }

    @Test("CORS answers preflight for configured origins only")
    func cors() async throws {
        try await withTestApp(environment: ["STEWARD_CORS_ORIGINS": "https://app.example.com"]) { app in
            let preflight: HTTPHeaders = ["Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"]
            try await app.live().test(.OPTIONS, "/health/live", headers: preflight) { res throws in
                #expect(res.headers.first(name: "Access-Control-Allow-Origin") == "https://app.example.com")
            }
            try await app.live().test(.GET, "/health/live", headers: ["Origin": "https://evil.example.com"]) { res throws in
                #expect(res.headers.first(name: "Access-Control-Allow-Origin") != "https://evil.example.com")
            }
        }
        try await withTestApp { app in
            try await app.live().test(.GET, "/health/live", headers: ["Origin": "https://app.example.com"]) { res throws in
                #expect(res.headers.first(name: "Access-Control-Allow-Origin") == nil)
            }
        }
    }
}
