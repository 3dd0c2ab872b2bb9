import Fluent
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Vapor
import NIOWebSocket
import WebSocketKit
import StewardFormats

/// One WebSocket at `/api/v1/ws`. The client sends
/// `{"op":"subscribe","types":["execution.*"],"resourceId":"…","after":42}` (every field optional) and
/// `{"op":"unsubscribe"}`; the server answers `{"op":"subscribed",…}`, `{"op":"unsubscribed"}` or
/// `{"op":"error","message":…}`, and sends each event as its JSON object. Client messages, replays and live
/// events are handled in one queue, so a subscription's replay always comes before its live events.
///
/// Close codes: 1008 when the credentials are revoked, 1013 for a slow consumer or a full server, 1001 on
/// shutdown, 1009 for a frame over 64 KiB; a peer that misses two pings in a row is dropped.
struct WebSocketStream {
    let app: Application
    let subscriber: StreamSubscriber
    let settings: StreamSettings
    let ws: WebSocket
    let logger: Logger

    private struct ClientMessage: Decodable {
        var op: String
        var types: [String]?
        var resourceId: String?
        var after: Int64?
    }

    /// Installs the frame handlers; called on the socket's event loop as the upgrade completes, so no frame
    /// the client sends right after connecting is missed.
    func attach(outstandingPings: NIOLockedValueBox<Int>) {
        let subscriber = self.subscriber
        let closeGrace = settings.closeGrace
        ws.onText { ws, text in
            // Frames are capped at 64 KiB by the decoder; a message sent in several fragments is capped here.
            if text.utf8.count > EventStreamController.maxFrameSize {
                ws.close(code: .messageTooLarge, promise: nil)
                // RFC 6455 7.1.7: after failing the connection the server closes it, answered or not.
                ws.pingInterval = TimeAmount(closeGrace)
            } else {
                subscriber.receive(text)
            }
        }
        ws.onBinary { ws, _ in
            ws.send(Self.control(["op": "error", "message": "Send JSON text frames."]))
        }
        ws.onPong { _, _ in outstandingPings.withLockedValue { $0 = 0 } }
        ws.onClose.whenComplete { _ in subscriber.finish() }
    }

    func run(outstandingPings: NIOLockedValueBox<Int>) async {
        let hub = app.eventHub
        let subscriber = self.subscriber
        let ws = self.ws
        let grace = settings.closeGrace
        subscriber.whenClosed { reason in
            let code: WebSocketErrorCode = switch reason {
            case .revoked: .policyViolation
            case .slowConsumer: .unknown(1013)
            case .shutdown: .goingAway
            }
            ws.eventLoop.execute {
                ws.close(code: code, promise: nil)
                // A peer that never answers the close frame is cut after one more unanswered ping.
                ws.pingInterval = TimeAmount(grace)
            }
        }
        do {
            _ = try await hub.register(subscriber)
        } catch {
            try? await ws.send(Self.control(["op": "error", "message": .string((error as? StreamError)?.reason ?? "The stream could not open.")]))
            try? await ws.close(code: .unknown(1013))
            return
        }

        var cursor: Int64 = .max
        var lastPing = ContinuousClock.now
        do {
            stream: for await item in subscriber.items {
                if subscriber.closeReason != nil { break }
                switch item {
                case .event(let event):
                    guard subscriber.filter != nil, event.seq > cursor else { continue }
                    try await ws.send(event.json)
                    cursor = event.seq
                case .tick:
                    subscriber.tickTaken()
                    if ws.closeCode != nil {
                        // A close began without us: WebSocketKit answers a frame over the decoder's limit, or a
                        // malformed one, with a close frame (1009, 1002) and then reads nothing more, so the peer's
                        // answer would never arrive. Cut the connection if it is not closed within the grace.
                        ws.eventLoop.execute { ws.pingInterval = TimeAmount(grace) }
                        break stream
                    }
                    guard ContinuousClock.now - lastPing >= settings.pingInterval else { continue }
                    lastPing = .now
                    let missed = outstandingPings.withLockedValue { count -> Int in
                        count += 1
                        return count - 1
                    }
                    if missed >= settings.missedPongLimit {
                        // The peer is gone: say so, and cut the connection if the close frame goes unanswered.
                        logger.debug("WebSocket peer missed \(missed) pings; dropping it")
                        ws.close(code: .goingAway, promise: nil)
                        ws.pingInterval = TimeAmount(settings.closeGrace)
                        break stream
                    }
                    try await ws.sendPing()
                case .message(let text):
                    cursor = try await handle(text, cursor: cursor)
                }
            }
            if let reason = subscriber.closeReason {
                let lastSeq: JSONValue = cursor == .max ? .null : .number(Double(cursor))
                try? await ws.send(Self.control(["op": "closing", "reason": .string(reason.rawValue), "lastSeq": lastSeq]))
            }
        } catch {
            logger.debug("WebSocket stream ended: \(String(describing: error))")
        }
        subscriber.finish()
        await hub.unregister(subscriber)
        if !ws.isClosed, subscriber.closeReason == nil { try? await ws.close(code: .goingAway) }
    }

    /// Applies one client message; returns the new cursor (events at or below it are not sent again).
    private func handle(_ text: String, cursor: Int64) async throws -> Int64 {
        // Read as request bodies are: the strict reader first, the nesting limit, then the message's shape.
        guard let value = JSONText.parse(text), !value.exceedsNesting(JSONLimits.maximumNesting),
              let message = try? JSONDecoder().decode(ClientMessage.self, from: Data(text.utf8))
        else {
            try await ws.send(Self.control(["op": "error", "message": .string("Messages are JSON objects nested at most \(JSONLimits.maximumNesting) levels, such as {\"op\":\"subscribe\",\"types\":[\"execution.*\"]}.")]))
            return cursor
        }
        switch message.op {
        case "subscribe":
            let (filter, problems) = StreamFilter.validated(types: message.types ?? [], resourceID: message.resourceId)
            guard let filter else {
                try await ws.send(Self.control(["op": "error", "message": .string(problems.map { "\($0.field) \($0.message)" }.joined(separator: "; "))]))
                return cursor
            }
            if let after = message.after, after < 0 {
                try await ws.send(Self.control(["op": "error", "message": "after must be a sequence number (0 or more)"]))
                return cursor
            }
            // Set the filter first, then read the hub's position: everything after it arrives live under the new
            // filter, everything up to it comes from the log.
            subscriber.filter = filter
            let floor = await app.eventHub.position
            try await ws.send(Self.control([
                "op": "subscribed", "types": .array(filter.types.map { .string($0) }),
                "resourceId": filter.resourceID.map { .string($0) } ?? .null,
                "after": .number(Double(message.after ?? floor)),
            ]))
            guard let after = message.after else { return floor }
            return try await StreamReplay.replay(after: after, upTo: floor, filter: filter, subscriber: subscriber, db: app.db) { event in
                try await ws.send(event.json)
            }
        case "unsubscribe":
            subscriber.filter = nil
            try await ws.send(Self.control(["op": "unsubscribed"]))
            return cursor
        default:
            try await ws.send(Self.control(["op": "error", "message": "op must be subscribe or unsubscribe"]))
            return cursor
        }
    }

    /// A control message: flat members, so it always has JSON text.
    static func control(_ object: [String: JSONValue]) -> String {
        (try? JSONValue.object(object).canonicalString()) ?? #"{"op":"error","message":"unwritable"}"#
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
