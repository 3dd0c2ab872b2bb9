import AsyncHTTPClient
import Fluent
import Foundation
import NIOCore
import NIOWebSocket
import SQLKit
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// A signed-in user for stream tests.
private struct Person {
    let id: UUID
    let email: String
    let token: String
}

private func person(_ app: Application, _ name: String, roles: [String] = ["viewer"]) async throws -> Person {
    let email = "\(name)-\(UUID().uuidString.prefix(6).lowercased())@example.com"
    let user = try await makeUser(app, email: email)
    if roles != ["viewer"] { _ = try await UserAdminService(app: app).setRoles(try user.requireID(), roles: roles, actor: .cli) }
    return Person(id: try user.requireID(), email: email, token: try await login(app, email: email).accessToken)
}

private func auth(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }

/// Shorter timings so heartbeats, pings and grace periods fit in a test.
private func quick(_ app: Application, _ change: @escaping @Sendable (inout StreamSettings) -> Void = { _ in }) async {
    await app.eventHub.update { settings in
        settings.heartbeat = .milliseconds(200)
        settings.pingInterval = .milliseconds(200)
        settings.closeGrace = .milliseconds(500)
        change(&settings)
    }
}

@Suite("Realtime: Server-Sent Events")
struct SSETests {
    @Test("HEAD of the event stream answers its head alone and holds no stream: the user's cap stays free")
    func headHoldsNoStream() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_STREAMS_PER_USER": "2"]) { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                for _ in 0..<3 {
                    let connection = try await RawConnection.connect(port: port)
                    try await connection.send(Array(("HEAD /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(alice.token)\r\n\r\n"
                        + "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").utf8))
                    try await connection.waitClosed(timeout: 10)
                    let parts = connection.text.components(separatedBy: "\r\n\r\n")
                    #expect(parts[0].hasPrefix("HTTP/1.1 200 OK"), "\(connection.text)")
                    #expect(parts[0].lowercased().contains("content-type: text/event-stream"), "\(parts[0])")
                    // Nothing between the HEAD's head and the next status line (a chunked answer's last chunk was).
                    #expect(parts.count > 1 && parts[1].hasPrefix("HTTP/1.1 200 OK"), "\(connection.text)")
                }
                try await eventually(5, "no stream held") { await app.eventHub.openStreams == 0 }
                let one = try await SSEClient.open(port: port, headers: auth(alice.token))
                let two = try await SSEClient.open(port: port, headers: auth(alice.token))
                #expect([one.status, two.status] == [.ok, .ok])
                one.close(); two.close()
            }
        }
    }

    @Test("An HTTP/1.0 client gets the event stream as it comes, unframed, on a connection that closes after it")
    func http10Stream() async throws {
        try await withTestApp { app in
            await quick(app)
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let connection = try await RawConnection.connect(port: port)
                try await connection.send(Array("GET /api/v1/events/stream HTTP/1.0\r\nAuthorization: Bearer \(alice.token)\r\n\r\n".utf8))
                try await eventually(5, "the stream's head") { connection.text.contains("\r\n\r\n") }
                let seq = try await app.writeEvent("execution.progress", owner: alice.id, data: ["progress": 40])
                try await eventually(5, "the event") { connection.text.contains("id: \(seq)\n") }
                let parts = connection.text.components(separatedBy: "\r\n\r\n")
                #expect(parts[0].hasPrefix("HTTP/1.0 200 OK"), "\(parts[0])")
                #expect(parts[0].lowercased().contains("connection: close"), "\(parts[0])")
                #expect(!parts[0].lowercased().contains("transfer-encoding"), "\(parts[0])")
                // No chunk sizes: the body is the event stream's own text.
                #expect(parts.dropFirst().joined().hasPrefix("retry: "), "\(connection.text)")
                await connection.close()
            }
        }
    }

    @Test("A stream sends id = seq and event = type, disables proxy buffering, and beats every heartbeat")
    func framesAndHeaders() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let stream = try await SSEClient.open(port: port, headers: auth(alice.token))
                #expect(stream.status == .ok)
                #expect(stream.headers.first(name: "Content-Type")?.hasPrefix("text/event-stream") == true)
                #expect(stream.headers.first(name: "Cache-Control") == "no-cache")
                #expect(stream.headers.first(name: "X-Accel-Buffering") == "no")

                let seq = try await app.writeEvent("execution.progress", owner: alice.id, data: ["progress": 40])
                let message = try #require(try await stream.nextEvent())
                #expect(message.seq == seq)
                #expect(message.event == "execution.progress")
                guard case .object(let event) = JSONValue.parse(message.data) else { Issue.record("data is not JSON"); return }
                #expect(event["seq"] == .number(Double(seq)))
                #expect(event["type"] == "execution.progress")

                // Idle: heartbeat comments keep proxies from closing the connection.
                var sawHeartbeat = false
                for _ in 0..<10 {
                    if let next = try await stream.next(timeout: 2), next.comment == "heartbeat" { sawHeartbeat = true; break }
                }
                #expect(sawHeartbeat)
                stream.close()
            }
        }
    }

    @Test("resourceId filters the stream whatever the case the client spells the id in")
    func resourceFilterAnyCase() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            let resource = UUID()
            try await app.withLiveServer { port in
                let upper = try await SSEClient.open(port: port, path: "/api/v1/events/stream?resourceId=\(resource.uuidString)", headers: auth(alice.token))
                let lower = try await SSEClient.open(port: port, path: "/api/v1/events/stream?resourceId=\(resource.uuidString.lowercased())", headers: auth(alice.token))
                try await app.writeEvent("execution.progress", owner: alice.id, resourceID: UUID().uuidString.lowercased())
                let seq = try await app.writeEvent("execution.progress", owner: alice.id, resourceID: resource.uuidString.lowercased())
                for stream in [upper, lower] {
                    let message = try #require(try await stream.nextEvent())
                    #expect(message.seq == seq, "only the filtered resource's event")
                    #expect(JSONValue.parse(message.data).object?["resourceId"] == .string(resource.uuidString.lowercased()))
                    stream.close()
                }
            }
        }
    }

    @Test("Reconnecting with Last-Event-ID replays what was missed, then goes live: no gap, no duplicate, in order")
    func replayAtSwitchOver() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                // Events keep being written while the client drops and reconnects.
                let writer = Task {
                    var written: [Int64] = []
                    for index in 0..<120 {
                        written.append(try await app.writeEvent(owner: alice.id, data: ["n": .number(Double(index))]))
                        if index % 10 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                    }
                    return written
                }
                var received: [Int64] = []
                var first = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*&after=0", headers: auth(alice.token))
                while received.count < 15, let message = try await first.nextEvent() { received.append(try #require(message.seq)) }
                first.close()
                // Reconnect several times mid-flow, each time from the last id seen.
                for _ in 0..<3 {
                    first = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*&after=0",
                                                     headers: auth(alice.token) + [("Last-Event-ID", String(received.last!))])
                    let target = received.count + 20
                    while received.count < target, let message = try await first.nextEvent() { received.append(try #require(message.seq)) }
                    first.close()
                }
                let written = try await writer.value
                let last = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*",
                                                    headers: auth(alice.token) + [("Last-Event-ID", String(received.last!))])
                while received.count < written.count, let message = try await last.nextEvent() { received.append(try #require(message.seq)) }
                last.close()
                #expect(received == written, "every event exactly once, in seq order")
            }
        }
    }

    @Test("A viewer never receives another user's events; an admin receives everyone's")
    func authorisation() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            let bob = try await person(app, "bob")
            let admin = try await person(app, "root", roles: ["admin"])
            try await app.withLiveServer { port in
                let bobStream = try await SSEClient.open(port: port, headers: auth(bob.token))
                let adminStream = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*", headers: auth(admin.token))
                let hidden = try await app.writeEvent("execution.succeeded", owner: alice.id)
                let unowned = try await app.writeEvent("execution.progress", owner: nil)
                let mine = try await app.writeEvent("execution.succeeded", owner: bob.id)
                // Bob's first event is his own: Alice's and the unowned one never reach him.
                let first = try #require(try await bobStream.nextEvent())
                #expect(first.seq == mine)
                #expect(!bobStream.bodyText.withLockedValue { $0 }.contains("\"seq\":\(hidden)"))
                var adminSeqs: [Int64] = []
                while adminSeqs.count < 3, let message = try await adminStream.nextEvent() { adminSeqs.append(try #require(message.seq)) }
                #expect(adminSeqs == [hidden, unowned, mine])

                // Replay is filtered the same way.
                let replay = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*&after=0", headers: auth(bob.token))
                #expect(try await replay.nextEvent()?.seq == mine)
                bobStream.close(); adminStream.close(); replay.close()
            }
        }
    }

    @Test("Revoking the session ends its SSE stream within a second with a session.revoked event")
    func revocationEndsStream() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            let other = try await login(app, email: alice.email).accessToken
            try await app.withLiveServer { port in
                let revoked = try await SSEClient.open(port: port, headers: auth(alice.token))
                let survivor = try await SSEClient.open(port: port, headers: auth(other))
                try await eventually(2, "both streams open") { await app.eventHub.openStreams == 2 }
                let logout = try await app.testing().sendRequest(.POST, "/api/v1/auth/logout", headers: bearer(alice.token))
                // Timed from the moment the revocation is committed and answered.
                let started = ContinuousClock.now
                #expect(logout.status == .noContent || logout.status == .ok, "\(logout.body.string)")
                let last = try await revoked.untilEnd().last { $0.event != nil }
                #expect(ContinuousClock.now - started < .seconds(1))
                #expect(last?.event == "session.revoked")
                #expect(last?.id == nil, "the closing frame does not move Last-Event-ID")
                // The other session's stream is untouched.
                let seq = try await app.writeEvent(owner: alice.id)
                var seen: Int64?
                while seen == nil, let message = try await survivor.nextEvent() { if message.seq == seq { seen = message.seq } }
                #expect(seen == seq)
                survivor.close()
            }
        }
    }

    @Test("Disabling the user and revoking an API key close their streams")
    func disableAndKeyRevocation() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let admin = try await person(app, "root", roles: ["admin"])
            let dev = try await person(app, "dev", roles: ["developer"])
            let created = try await app.testing().sendRequest(.POST, "/api/v1/api-keys",
                headers: ["Authorization": "Bearer \(dev.token)", "Content-Type": "application/json"],
                body: .init(string: #"{"name": "cli", "scopes": ["executions:read"]}"#))
            let key = try created.content.decode(CreatedAPIKeyResponse.self)
            try await app.withLiveServer { port in
                let keyStream = try await SSEClient.open(port: port, headers: [("X-API-Key", key.key)])
                #expect(keyStream.status == .ok)
                let revoke = try await app.testing().sendRequest(.DELETE, "/api/v1/api-keys/\(key.id)", headers: bearer(dev.token))
                #expect(revoke.status == .noContent)
                var last = try await keyStream.untilEnd().last { $0.event != nil }
                #expect(last?.event == "session.revoked")

                let userStream = try await SSEClient.open(port: port, headers: auth(dev.token))
                let suspend = try await app.testing().sendRequest(.PATCH, "/api/v1/users/\(dev.id)",
                    headers: ["Authorization": "Bearer \(admin.token)", "Content-Type": "application/json"],
                    body: .init(string: #"{"status": "suspended"}"#))
                let started = ContinuousClock.now
                #expect(suspend.status == .ok, "\(suspend.body.string)")
                last = try await userStream.untilEnd().last { $0.event != nil }
                #expect(last?.event == "session.revoked")
                #expect(ContinuousClock.now - started < .seconds(1))
            }
        }
    }

    @Test("Streams per user are capped: the extra one gets 429, and closing one frees a slot")
    func perUserCap() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_STREAMS_PER_USER": "2"]) { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            let bob = try await person(app, "bob")
            try await app.withLiveServer { port in
                let one = try await SSEClient.open(port: port, headers: auth(alice.token))
                let two = try await SSEClient.open(port: port, headers: auth(alice.token))
                let three = try await SSEClient.open(port: port, headers: auth(alice.token))
                #expect(three.status == .tooManyRequests)
                #expect(three.headers.first(name: "Content-Type")?.hasPrefix("application/problem+json") == true)
                // The cap is per user: Bob still gets in.
                let bobs = try await SSEClient.open(port: port, headers: auth(bob.token))
                #expect(bobs.status == .ok)
                #expect(try await metricValue(app, "steward_event_streams_open") == 3, "/metrics counts the open streams")
                // A WebSocket counts too, refused before the upgrade.
                let ws = try await RawConnection.connect(port: port)
                try await ws.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                #expect(ws.text.hasPrefix("HTTP/1.1 429"))
                await ws.close()
                one.close()
                // The next heartbeat finds the client gone.
                try await eventually(5, "the closed stream to free its slot") { await app.eventHub.openStreams == 2 }
                let again = try await SSEClient.open(port: port, headers: auth(alice.token))
                #expect(again.status == .ok)
                two.close(); again.close(); bobs.close(); three.close()
            }
        }
    }

    @Test("The instance-wide cap refuses any user's extra stream with 429")
    func globalCap() async throws {
        try await withTestApp(environment: ["STEWARD_MAX_STREAMS": "2"]) { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            let bob = try await person(app, "bob")
            try await app.withLiveServer { port in
                let one = try await SSEClient.open(port: port, headers: auth(alice.token))
                let two = try await SSEClient.open(port: port, headers: auth(bob.token))
                let three = try await SSEClient.open(port: port, headers: auth(bob.token))
                #expect([one.status, two.status] == [.ok, .ok])
                #expect(three.status == .tooManyRequests)
                #expect(three.headers.first(name: "Retry-After") != nil)
                one.close(); two.close(); three.close()
            }
        }
    }

    @Test("A session that expires while its stream is open is noticed by the periodic check")
    func expiryNoticed() async throws {
        try await withTestApp(environment: ["STEWARD_SESSION_IDLE_TIMEOUT": "300"]) { app in
            let (_, clock) = app.useTestDoubles()
            await quick(app) { $0.revalidateEvery = .milliseconds(200) }
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let stream = try await SSEClient.open(port: port, headers: auth(alice.token))
                try await Task.sleep(for: .milliseconds(500))
                #expect(await app.eventHub.openStreams == 1, "a live session keeps its stream")
                clock.advance(by: 301)
                let last = try await stream.untilEnd().last { $0.event != nil }
                #expect(last?.event == "session.revoked")
            }
        }
    }

    @Test("A client that stops reading is disconnected as a slow consumer and resumes from its last seq")
    func slowConsumer() async throws {
        try await withTestApp(environment: ["STEWARD_STREAM_BUFFER": "8"]) { app in
            app.useTestDoubles()
            // A long grace, so the closing frame is still there when the client reads again.
            await quick(app) { $0.closeGrace = .seconds(10) }
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let slow = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*", headers: auth(alice.token), reading: false)
                let fast = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*", headers: auth(alice.token))
                try await eventually(2, "both streams open") { await app.eventHub.openStreams == 2 }
                let padding = String(repeating: "x", count: 32 * 1024)
                var written: [Int64] = []
                var fastSeen: [Int64] = []
                // Large events, a few per transaction, until the kernel's buffers and the stream's queue are full.
                for _ in 0..<400 {
                    written.append(try await app.writeEvent(owner: alice.id, data: ["padding": .string(padding)]))
                    while fastSeen.count < written.count, let message = try await fast.nextEvent() { fastSeen.append(try #require(message.seq)) }
                    if await app.eventHub.openStreams == 1 { break }
                }
                try await eventually(10, "the slow stream to be dropped") { await app.eventHub.openStreams == 1 }
                #expect(fastSeen == written, "a client that keeps up is never dropped")

                slow.resumeReading()
                var got: [Int64] = []
                var closing: SSEMessage?
                for message in try await slow.untilEnd(timeout: 10) where message.event != nil {
                    if let seq = message.seq { got.append(seq) } else { closing = message }
                }
                #expect(got == Array(written.prefix(got.count)), "what arrived is an unbroken prefix")
                #expect(got.count < written.count)
                #expect(closing?.event == "stream.closed")
                #expect(closing?.data.contains("\"reason\":\"slow_consumer\"") == true)
                // Resuming from the last seq received delivers the rest.
                let resumed = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*",
                                                       headers: auth(alice.token) + [("Last-Event-ID", String(got.last ?? 0))])
                while got.count < written.count, let message = try await resumed.nextEvent() { got.append(try #require(message.seq)) }
                #expect(got == written)
                resumed.close(); fast.close()
            }
        }
    }

    @Test("Shutting down ends every stream with a reason instead of holding the server up")
    func shutdownEndsStreams() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            let port = try #require(app.stewardServer.localAddress?.port)
            let stream = try await SSEClient.open(port: port, headers: auth(alice.token))
            let ws = try await WSClient.connect(port: port, headers: bearer(alice.token))
            try await eventually(2, "both streams open") { await app.eventHub.openStreams == 2 }
            let started = ContinuousClock.now
            await app.eventHub.shutdown()
            let last = try await stream.untilEnd().last { $0.event != nil }
            #expect(last?.event == "stream.closed")
            #expect(last?.data.contains("shutdown") == true)
            #expect(try await ws.closed() == .goingAway)
            await app.server.shutdown()
            #expect(ContinuousClock.now - started < .seconds(3))
            // New streams are refused once the hub has closed.
            #expect(await app.eventHub.openStreams == 0)
        }
    }

    @Test("Bad stream parameters get 422; no credentials get 401")
    func badInput() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                for (path, header) in [("?types=DROP%20TABLE", nil), ("?after=-5", nil), ("?after=abc", nil), ("", "not-a-number"),
                                       ("?resourceId=" + String(repeating: "a", count: 300), nil)] {
                    var headers = auth(alice.token)
                    if let header { headers.append(("Last-Event-ID", header)) }
                    let stream = try await SSEClient.open(port: port, path: "/api/v1/events/stream" + path, headers: headers)
                    #expect(stream.status == .unprocessableEntity, "\(path) \(header ?? "")")
                    stream.close()
                }
                let anonymous = try await SSEClient.open(port: port, headers: [])
                #expect(anonymous.status == .unauthorized)
                anonymous.close()
            }
        }
    }
}

@Suite("Realtime: WebSocket")
struct WebSocketTests {
    @Test("subscribe with after replays then goes live; unsubscribe stops events; bad or too deeply nested messages get an error")
    func subscribeProtocol() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            let earlier = try await app.writeEvent("execution.succeeded", owner: alice.id)
            try await app.writeEvent("skill.created", owner: nil, resourceType: "skill")
            try await app.withLiveServer { port in
                let ws = try await WSClient.connect(port: port, headers: bearer(alice.token))
                try await ws.send(#"{"op":"subscribe","types":["execution.*"],"after":0}"#)
                let ack = try #require(try await ws.next())
                #expect(ack["op"] == "subscribed")
                #expect(try await ws.nextEvent()?["seq"] == .number(Double(earlier)))
                let live = try await app.writeEvent("execution.progress", owner: alice.id)
                #expect(try await ws.nextEvent()?["seq"] == .number(Double(live)))

                try await ws.send(#"{"op":"unsubscribe"}"#)
                #expect(try await ws.next()?["op"] == "unsubscribed")
                try await app.writeEvent("execution.progress", owner: alice.id)
                try await ws.send("not json")
                let error = try #require(try await ws.next())
                #expect(error["op"] == "error", "no event arrives after unsubscribe; the next frame is the error")
                try await ws.send(#"{"op":"subscribe","types":["DROP TABLE"]}"#)
                #expect(try await ws.next()?["op"] == "error")
                // Read as request bodies are: a message nested past 64 levels is refused, whatever it asks for.
                let deep = String(repeating: "[", count: 64) + "1" + String(repeating: "]", count: 64)
                try await ws.send(#"{"op":"subscribe","types":["execution.*"],"extra":\#(deep)}"#)
                let refused = try #require(try await ws.next())
                #expect(refused["op"] == "error" && refused["message"]?.stringValue?.contains("64 levels") == true, "\(refused)")
                await ws.close()
            }
        }
    }

    @Test("Tickets: single use, 30 s, and they carry the session's identity")
    func tickets() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let issued = try await app.testing().sendRequest(.POST, "/api/v1/ws/ticket", headers: bearer(alice.token))
                #expect(issued.status == .created)
                let ticket = try issued.content.decode(StreamTickets.Issued.self)
                #expect(ticket.expiresAt.timeIntervalSince(clock.now()) <= 30.001)

                let ws = try await WSClient.connect(port: port, query: "?ticket=\(ticket.ticket)")
                try await ws.send(#"{"op":"subscribe"}"#)
                #expect(try await ws.next()?["op"] == "subscribed")
                let seq = try await app.writeEvent(owner: alice.id)
                #expect(try await ws.nextEvent()?["seq"] == .number(Double(seq)))
                await ws.close()

                // Used once: the same ticket is refused.
                let reuse = try await RawConnection.connect(port: port)
                try await reuse.upgrade(path: "/api/v1/ws?ticket=\(ticket.ticket)", headers: [:])
                #expect(reuse.text.hasPrefix("HTTP/1.1 401"))
                await reuse.close()

                // Expired after 30 s.
                let late = try await app.testing().sendRequest(.POST, "/api/v1/ws/ticket", headers: bearer(alice.token))
                let lateTicket = try late.content.decode(StreamTickets.Issued.self)
                clock.advance(by: 31)
                let expired = try await RawConnection.connect(port: port)
                try await expired.upgrade(path: "/api/v1/ws?ticket=\(lateTicket.ticket)", headers: [:])
                #expect(expired.text.hasPrefix("HTTP/1.1 401"))
                await expired.close()

                #expect(try await app.testing().sendRequest(.POST, "/api/v1/ws/ticket").status == .unauthorized)
            }
        }
    }

    @Test("The session cookie opens a WebSocket only from an allowed Origin")
    func cookieNeedsOrigin() async throws {
        try await withTestApp(environment: ["STEWARD_CORS_ORIGINS": "https://app.example.com"]) { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            let cookieLogin = try await app.testing().sendRequest(.POST, "/api/v1/auth/login",
                headers: ["Content-Type": "application/json"], body: .init(string: #"{"email":"\#(alice.email)","password":"\#(strongPassword)","cookie":true}"#))
            let cookie = try #require(cookieLogin.headers.setCookie?[SessionAuthenticator.cookieName]?.string)
            try await app.withLiveServer { port in
                let cookieHeader = "\(SessionAuthenticator.cookieName)=\(cookie)"
                let foreign = try await RawConnection.connect(port: port)
                try await foreign.upgrade(path: "/api/v1/ws", headers: ["Cookie": cookieHeader, "Origin": "https://evil.example"])
                #expect(foreign.text.hasPrefix("HTTP/1.1 403"))
                await foreign.close()
                let missing = try await RawConnection.connect(port: port)
                try await missing.upgrade(path: "/api/v1/ws", headers: ["Cookie": cookieHeader])
                #expect(missing.text.hasPrefix("HTTP/1.1 403"))
                await missing.close()
                let allowed = try await WSClient.connect(port: port, headers: ["Cookie": cookieHeader, "Origin": "https://app.example.com"])
                try await allowed.send(#"{"op":"subscribe"}"#)
                #expect(try await allowed.next()?["op"] == "subscribed")
                await allowed.close()
            }
        }
    }

    @Test("Revocation closes a WebSocket with 1008 within a second")
    func revocationCloses() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let ws = try await WSClient.connect(port: port, headers: bearer(alice.token))
                try await ws.send(#"{"op":"subscribe"}"#)
                #expect(try await ws.next()?["op"] == "subscribed")
                let logout = try await app.testing().sendRequest(.POST, "/api/v1/auth/logout", headers: bearer(alice.token))
                let started = ContinuousClock.now
                #expect(logout.status.code < 300)
                let code = try await ws.closed(timeout: 2)
                #expect(code == .policyViolation)
                #expect(ContinuousClock.now - started < .seconds(1))
            }
        }
    }

    @Test("A frame over 64 KiB is closed with 1009")
    func oversizedFrame() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let ws = try await WSClient.connect(port: port, headers: bearer(alice.token))
                try await ws.send(#"{"op":"subscribe","types":[""# + String(repeating: "a", count: 70_000) + #""]}"#)
                let code = try await ws.closed(timeout: 5)
                #expect(code == .messageTooLarge)

                // The same message in two 40 KB fragments is refused too.
                let raw = try await RawConnection.connect(port: port)
                try await raw.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                let handshake = raw.bytes.count
                let half = Array(repeating: UInt8(ascii: "a"), count: 40_000)
                try await raw.send(RawConnection.frame(opcode: 0x1, payload: half, fin: false))
                try await raw.send(RawConnection.frame(opcode: 0x0, payload: half, fin: true))
                try await eventually(5, "the close frame") { raw.bytes.count >= handshake + 4 }
                #expect(Array(raw.bytes[handshake..<handshake + 4]) == [0x88, 0x02, 0x03, 0xF1], "close 1009")
                await raw.close()
            }
        }
    }

    @Test("Frames that break RFC 6455 fail the connection with close 1002 (1007 for text that is not UTF-8); a valid close is echoed")
    func protocolViolations() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let alice = try await person(app, "alice")
            let message = Array(#"{"op":"subscribe"}"#.utf8)
            let cases: [(String, [UInt8], [UInt8])] = [
                ("an unmasked text frame", [0x81, UInt8(message.count)] + message, [0x03, 0xEA]),
                ("a reserved bit set", [0xC1] + RawConnection.frame(opcode: 0x1, payload: message).dropFirst(), [0x03, 0xEA]),
                ("a reserved opcode", RawConnection.frame(opcode: 0x3, payload: [0x61]), [0x03, 0xEA]),
                ("a close with code 999", RawConnection.frame(opcode: 0x8, payload: [0x03, 0xE7]), [0x03, 0xEA]),
                ("a close with a one-byte payload", RawConnection.frame(opcode: 0x8, payload: [0x03]), [0x03, 0xEA]),
                ("a close reason that is not UTF-8", RawConnection.frame(opcode: 0x8, payload: [0x03, 0xE8, 0xFF, 0xFE]), [0x03, 0xEF]),
                ("a text frame that is not UTF-8", RawConnection.frame(opcode: 0x1, payload: [0x7B, 0xFF, 0x7D]), [0x03, 0xEF]),
                ("a text message whose fragments are not UTF-8 together",
                 RawConnection.frame(opcode: 0x1, payload: [0x22, 0xE2, 0x82], fin: false) + RawConnection.frame(opcode: 0x0, payload: [0x22]), [0x03, 0xEF]),
                ("a valid close, 1000 with a reason", RawConnection.frame(opcode: 0x8, payload: [0x03, 0xE8] + Array("bye".utf8)), [0x03, 0xE8]),
            ]
            try await app.withLiveServer { port in
                for (name, bytes, code) in cases {
                    let raw = try await RawConnection.connect(port: port)
                    try await raw.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                    #expect(raw.text.hasPrefix("HTTP/1.1 101"), "\(name)")
                    let handshake = raw.bytes.count
                    try? await raw.send(bytes)
                    try await raw.waitClosed(timeout: 5)
                    let answer = Array(raw.bytes[handshake...])
                    #expect(Array(answer.prefix(4)) == [0x88, 0x02] + code, "\(name): \(answer.prefix(16))")
                }
                // UTF-8 split between fragments inside one character is still one valid message: answered, not closed.
                let raw = try await RawConnection.connect(port: port)
                try await raw.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                let handshake = raw.bytes.count
                let subscribe = Array(#"{"op":"subscribe","resourceId":"\#u{20AC}"}"#.utf8)
                let cut = subscribe.firstIndex(of: 0xE2)! + 1
                try await raw.send(RawConnection.frame(opcode: 0x1, payload: Array(subscribe[..<cut]), fin: false)
                    + RawConnection.frame(opcode: 0x0, payload: Array(subscribe[cut...])))
                try await eventually(5, "an answer") { raw.bytes.count > handshake }
                #expect(raw.bytes[handshake] == 0x81, "a text frame, not a close: \(raw.text.suffix(120))")
                #expect(raw.isOpen)
                await raw.close()
            }
        }
    }

    @Test("A single frame over 64 KiB gets close 1009, and the connection is cut even if the peer never answers")
    func oversizedSingleFrame() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app) { $0.pingInterval = .seconds(30) }
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let raw = try await RawConnection.connect(port: port)
                try await raw.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                let handshake = raw.bytes.count
                try await raw.send(RawConnection.frame(opcode: 0x1, payload: Array(repeating: UInt8(ascii: "a"), count: 70 * 1024)))
                try await eventually(5, "the close frame") { raw.bytes.count >= handshake + 4 }
                #expect(Array(raw.bytes[handshake..<handshake + 4]) == [0x88, 0x02, 0x03, 0xF1], "close 1009")
                // The peer never answers the close frame; the server closes the TCP connection after the grace (0.5 s
                // here), not only after missed pings (30 s here).
                try await raw.waitClosed(timeout: 5)
            }
        }
    }

    @Test("A peer that stops answering pings is dropped after two missed pongs; one that answers stays")
    func pingTimeout() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            await quick(app)
            let alice = try await person(app, "alice")
            try await app.withLiveServer { port in
                let healthy = try await WSClient.connect(port: port, headers: bearer(alice.token))
                let dead = try await RawConnection.connect(port: port)
                try await dead.upgrade(path: "/api/v1/ws", headers: ["Authorization": "Bearer \(alice.token)"])
                #expect(dead.text.hasPrefix("HTTP/1.1 101"))
                try await eventually(2, "both sockets registered") { await app.eventHub.openStreams == 2 }
                // Pings every 200 ms: two go unanswered, then the connection is cut after the grace period.
                try await dead.waitClosed(timeout: 4)
                try await eventually(2, "the dead peer's slot to be freed") { await app.eventHub.openStreams == 1 }
                // The healthy client answered every ping and is still subscribed.
                try await healthy.send(#"{"op":"subscribe"}"#)
                #expect(try await healthy.next()?["op"] == "subscribed")
                await healthy.close()
            }
        }
    }
}

@Suite("Realtime: two instances on one PostgreSQL", .enabled(if: TestDatabase.isPostgres, "needs PostgreSQL (runs in the PostgreSQL leg)"))
struct CrossInstanceTests {
    @Test("STEWARD_DATABASE_LISTEN_URL sends the LISTEN connection to its own URL (around a transaction pooler) while queries use DATABASE_URL",
          .enabled(if: TestDatabase.isPostgres), .timeLimit(.minutes(1)))
    func separateListenURL() async throws {
        let base = try #require(TestDatabase.postgresURL)
        let role = "steward_listener"
        // Another login role on the same server: its sessions are told apart from the pool's in pg_stat_activity.
        try await withTestApp { setup in
            try await (setup.db as! any SQLDatabase).raw("""
                DO $$ BEGIN
                  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'steward_listener') THEN
                    CREATE ROLE steward_listener LOGIN PASSWORD 'listener-password';
                  END IF;
                END $$
                """).run()
        }
        var components = try #require(URLComponents(string: base))
        components.user = role
        components.password = "listener-password"
        let listenURL = try #require(components.string)
        try await withTestApp(environment: ["STEWARD_DATABASE_LISTEN_URL": listenURL]) { app in
            app.jobNotificationListener?.start(app)
            defer { Task { await app.jobNotificationListener?.shutdownAsync(app) } }
            let sql = app.db as! any SQLDatabase
            try await eventually(20, "a LISTEN session of the listener role") {
                let rows = try await sql.raw("SELECT query FROM pg_stat_activity WHERE usename = \(bind: role)").all()
                return try rows.contains { try $0.decode(column: "query", as: String?.self)?.uppercased().hasPrefix("LISTEN") == true }
            }
            let poolRows = try await sql.raw("SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()").all()
            #expect(try poolRows.first?.decode(column: "usename", as: String.self) == "steward", "queries still use DATABASE_URL")
        }
    }

    @Test("An event committed on instance A reaches a subscriber on instance B through LISTEN/NOTIFY; polling catches up without it")
    func crossInstanceDelivery() async throws {
        let directoryA = try TemporaryDirectory()
        let directoryB = try TemporaryDirectory()
        defer { directoryA.remove(); directoryB.remove() }
        // Instances of one deployment share their signing secret, so a token from A works on B.
        let shared = ["STEWARD_JWT_SECRET": String(repeating: "s3cret-", count: 6)]
        let a = try await makeTestApp(directory: directoryA, environment: shared)
        let b = try await makeTestApp(directory: directoryB, environment: shared, freshDatabase: false, migrate: false)
        do {
            a.useTestDoubles(); b.useTestDoubles()
            let alice = try await person(a, "alice")
            // B hears of new events only through notifications: its own polling is made too slow to matter.
            await b.eventHub.update { $0.fallbackPoll = .seconds(60) }
            b.jobNotificationListener?.start(b)
            try await b.withLiveServer { port in
                let stream = try await SSEClient.open(port: port, path: "/api/v1/events/stream?types=execution.*", headers: auth(alice.token))
                #expect(stream.status == .ok)
                try await Task.sleep(for: .milliseconds(300))  // B's listener connects
                var sent: [Int64] = []
                for _ in 0..<5 { sent.append(try await a.writeEvent(owner: alice.id)) }
                var got: [Int64] = []
                while got.count < sent.count, let message = try await stream.nextEvent(timeout: 3) { got.append(try #require(message.seq)) }
                #expect(got == sent, "in seq order, each once")

                // Notifications lost (listener down): the hub catches up from the log on its next look.
                await b.jobNotificationListener?.shutdownAsync(b)
                await b.eventHub.update { $0.fallbackPoll = .milliseconds(200) }
                b.eventHub.poke()
                let missed = try await a.writeEvent(owner: alice.id)
                #expect(try await stream.nextEvent(timeout: 3)?.seq == missed)
                stream.close()
            }
        } catch {
            try? await b.asyncShutdown(); try? await a.asyncShutdown()
            throw error
        }
        try await b.asyncShutdown()
        try await a.asyncShutdown()
    }
}
