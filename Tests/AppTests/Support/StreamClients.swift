import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOWebSocket
import Testing
import Vapor
import WebSocketKit
@testable import App
import StewardFormats

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing if it takes longer than `seconds`.
func within<T: Sendable>(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            throw TimedOut(what: what)
        }
        let value = try await group.next()!
        group.cancelAll()
        return value
    }
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 5, _ what: String, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TimedOut(what: what)
}

extension Application {
    /// Serves on a free loopback port for `body`; event streams are closed before the server stops.
    func withLiveServer(_ body: (Int) async throws -> Void) async throws {
        try await server.start(address: .hostname("127.0.0.1", port: 0))
        let port = try #require(stewardServer.localAddress?.port)
        do {
            try await body(port)
        } catch {
            await eventHub.shutdown()
            await server.shutdown()
            throw error
        }
        await eventHub.shutdown()
        await server.shutdown()
    }

    /// Writes one event through the real writer, in its own transaction, as a service would.
    @discardableResult
    func writeEvent(_ type: String = "execution.progress", owner: UUID?, resourceType: String = "execution",
                    resourceID: String = UUID().uuidString.lowercased(), data: [String: JSONValue] = [:]) async throws -> Int64 {
        var payload = data
        if let owner { payload["userId"] = .string(owner.uuidString.lowercased()) }
        let record = EventRecord(type: type, actorID: owner, resourceType: resourceType, resourceID: resourceID, data: .object(payload))
        let recorder = activityRecorder
        let recorded = try await writeTransaction { db in try await recorder.record(event: record, on: db) }
        return try #require(try await numbered(recorded).event)
    }
}

/// A queue a producer fills and a test drains with a timeout.
final class Mailbox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    private var finished = false
    private var waiter: CheckedContinuation<T?, Never>?

    func push(_ item: T) {
        let waiting = lock.withLock { () -> CheckedContinuation<T?, Never>? in
            if let waiter { self.waiter = nil; return waiter }
            items.append(item)
            return nil
        }
        waiting?.resume(returning: item)
    }

    func finish() {
        let waiting = lock.withLock { () -> CheckedContinuation<T?, Never>? in
            finished = true
            defer { waiter = nil }
            return waiter
        }
        waiting?.resume(returning: nil)
    }

    private func cancelWait() {
        let waiting = lock.withLock { () -> CheckedContinuation<T?, Never>? in
            defer { waiter = nil }
            return waiter
        }
        waiting?.resume(returning: nil)
    }

    /// The next item; nil when finished; throws on timeout.
    func next(timeout: Double, what: String) async throws -> T? {
        let timer = Task {
            try await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
            self.cancelWait()
        }
        defer { timer.cancel() }
        let value = await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let immediate = lock.withLock { () -> (Bool, T?) in
                if !items.isEmpty { return (true, items.removeFirst()) }
                if finished { return (true, nil) }
                waiter = continuation
                return (false, nil)
            }
            if immediate.0 { continuation.resume(returning: immediate.1) }
        }
        if value == nil, !lock.withLock({ finished }) { throw TimedOut(what: what) }
        return value
    }
}

/// One Server-Sent Events message, or a comment line.
struct SSEMessage: Sendable, Equatable {
    var id: String?
    var event: String?
    var data: String
    var comment: String?

    var seq: Int64? { id.flatMap(Int64.init) }
}

/// A streaming SSE client over AsyncHTTPClient. It reads only while `reading` is on, so a test can play a client
/// that stops reading (TCP back-pressure then reaches the server).
final class SSEClient: @unchecked Sendable {
    let status: HTTPResponseStatus
    let headers: HTTPHeaders
    private let messages = Mailbox<SSEMessage>()
    private let task: Task<Void, Never>
    private let gate: NIOLockedValueBox<Bool>
    let ended = NIOLockedValueBox(false)
    let bodyText: NIOLockedValueBox<String>

    static func open(port: Int, path: String = "/api/v1/events/stream", headers: [(String, String)], reading: Bool = true,
                     post body: String? = nil) async throws -> SSEClient {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return SSEClient(response: response, reading: reading)
    }

    private init(response: HTTPClientResponse, reading: Bool) {
        status = response.status
        headers = response.headers
        let gate = NIOLockedValueBox(reading)
        self.gate = gate
        let bodyText = NIOLockedValueBox("")
        self.bodyText = bodyText
        let continuation = messages
        let ended = self.ended
        task = Task {
            var pending = ""
            do {
                for try await chunk in response.body {
                    while !gate.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                    let text = String(buffer: chunk)
                    bodyText.withLockedValue { $0 += text }
                    pending += text
                    while let range = pending.range(of: "\n\n") {
                        let block = String(pending[..<range.lowerBound])
                        pending = String(pending[range.upperBound...])
                        continuation.push(Self.parse(block))
                    }
                }
            } catch {}
            ended.withLockedValue { $0 = true }
            continuation.finish()
        }
    }

    private static func parse(_ block: String) -> SSEMessage {
        var message = SSEMessage(data: "")
        var data: [String] = []
        for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix(":") { message.comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces); continue }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let field = String(line[..<colon])
            var value = String(line[line.index(after: colon)...])
            if value.hasPrefix(" ") { value.removeFirst() }
            switch field {
            case "id": message.id = value
            case "event": message.event = value
            case "data": data.append(value)
            default: break
            }
        }
        message.data = data.joined(separator: "\n")
        return message
    }

    /// Every message until the server ends the stream; throws if it has not ended within `timeout`.
    func untilEnd(timeout: Double = 3) async throws -> [SSEMessage] {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var all: [SSEMessage] = []
        while ContinuousClock.now < deadline {
            guard let message = try await next(timeout: timeout) else { return all }
            all.append(message)
        }
        throw TimedOut(what: "the SSE stream to end")
    }

    func resumeReading() { gate.withLockedValue { $0 = true } }

    /// The next message of any kind; nil when the stream ended.
    func next(timeout: Double = 5) async throws -> SSEMessage? {
        try await messages.next(timeout: timeout, what: "an SSE message")
    }

    /// The next message that carries an event (skipping comments and `retry:`); nil when the stream ended.
    func nextEvent(timeout: Double = 5) async throws -> SSEMessage? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            let left = Double((deadline - ContinuousClock.now).components.attoseconds) / 1e18 + Double((deadline - ContinuousClock.now).components.seconds)
            guard let message = try await next(timeout: max(0.01, left)) else { return nil }
            if message.event != nil { return message }
        }
        throw TimedOut(what: "an SSE event")
    }

    func close() {
        task.cancel()
    }
}

/// A WebSocket client: every text frame it receives, and how the server closed it.
final class WSClient: @unchecked Sendable {
    let socket: WebSocket
    private let inbox: Mailbox<String>

    static func connect(port: Int, query: String = "", headers: HTTPHeaders = [:]) async throws -> WSClient {
        let box = NIOLockedValueBox<WebSocket?>(nil)
        let inbox = Mailbox<String>()
        try await WebSocket.connect(scheme: "ws", host: "127.0.0.1", port: port, path: "/api/v1/ws",
                                    query: query.isEmpty ? nil : String(query.dropFirst()), headers: headers,
                                    configuration: .init(maxFrameSize: 1 << 20), on: MultiThreadedEventLoopGroup.singleton) { ws in
            box.withLockedValue { $0 = ws }
            ws.onText { _, text in inbox.push(text) }
            ws.onClose.whenComplete { _ in inbox.finish() }
        }
        try await eventually(5, "the WebSocket upgrade") { box.withLockedValue { $0 } != nil }
        let socket = try #require(box.withLockedValue { $0 })
        return WSClient(socket: socket, inbox: inbox)
    }

    private init(socket: WebSocket, inbox: Mailbox<String>) {
        self.socket = socket
        self.inbox = inbox
    }

    func send(_ json: String) async throws {
        try await socket.send(json)
    }

    /// The next text frame as JSON; nil once the socket closed.
    func next(timeout: Double = 5) async throws -> [String: JSONValue]? {
        guard let text = try await inbox.next(timeout: timeout, what: "a WebSocket message") else { return nil }
        guard case .object(let object) = JSONValue.parse(text) else { return ["raw": .string(text)] }
        return object
    }

    /// The next frame that is an event (not a control message).
    func nextEvent(timeout: Double = 5) async throws -> [String: JSONValue]? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            guard let message = try await next(timeout: timeout) else { return nil }
            if message["op"] == nil { return message }
        }
        throw TimedOut(what: "a WebSocket event")
    }

    /// Waits for the server to close the socket; returns the close code.
    func closed(timeout: Double = 5) async throws -> WebSocketErrorCode? {
        let socket = self.socket
        try await within(timeout, "the WebSocket to close") { try await socket.onClose.get() }
        return socket.closeCode
    }

    func close() async {
        try? await socket.close()
    }
}

/// A bare TCP connection, for peers that misbehave on purpose (never answer pings, send oversized frames).
final class RawConnection: @unchecked Sendable {
    private let channel: any Channel
    private let received: NIOLockedValueBox<[UInt8]>

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<[UInt8]>
        init(_ received: NIOLockedValueBox<[UInt8]>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLockedValue { $0 += Array(buffer.readableBytesView) }
        }
    }

    static func connect(port: Int) async throws -> RawConnection {
        let received = NIOLockedValueBox<[UInt8]>([])
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(received)) } }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    private init(channel: any Channel, received: NIOLockedValueBox<[UInt8]>) {
        self.channel = channel
        self.received = received
    }

    var bytes: [UInt8] { received.withLockedValue { $0 } }
    var text: String { String(decoding: bytes, as: UTF8.self) }
    var isOpen: Bool { channel.isActive }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Shuts the sending side (TCP FIN) and keeps reading.
    func halfClose() async throws {
        try await channel.close(mode: .output).get()
    }

    /// Opens a WebSocket by hand: the upgrade request, then nothing more unless the test sends it.
    func upgrade(path: String, headers: [String: String]) async throws {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        try await send(Array((request + "\r\n").utf8))
        try await eventually(5, "the 101 answer") { self.text.contains("\r\n\r\n") }
    }

    /// A masked client frame.
    static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let mask: [UInt8] = [1, 2, 3, 4]
        if payload.count < 126 {
            bytes.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes.append(0x80 | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(0x80 | 127)
            bytes += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        bytes += mask
        bytes += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return bytes
    }

    /// Waits for the server to close the socket. Past `timeout` the test closes it itself and throws, so a
    /// connection the server keeps open fails the test at the timeout rather than at the server's idle timeout.
    func waitClosed(timeout: Double) async throws {
        let gaveUp = NIOLockedValueBox(false)
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            gaveUp.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        try? await channel.closeFuture.get()
        deadline.cancel()
        if gaveUp.withLockedValue({ $0 }) { throw TimedOut(what: "the server to close the connection") }
    }

    func close() async {
        try? await channel.close()
    }
}
