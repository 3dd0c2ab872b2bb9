import Foundation
import NIOConcurrencyHelpers

/// One open stream (an SSE response or a WebSocket) as the hub sees it: who it belongs to, what it asked for,
/// and a bounded queue of events waiting to be written to it.
///
/// The hub offers every new event; the subscriber keeps those that match its filter and that its caller may read.
/// When the queue is full the client is not keeping up: the subscriber closes as a slow consumer instead of
/// buffering without bound, and the client resumes from the last `seq` it received.
final class StreamSubscriber: @unchecked Sendable {
    /// Why a stream ended on the server's side.
    enum CloseReason: String, Sendable {
        case revoked
        case slowConsumer = "slow_consumer"
        case shutdown
    }

    enum Item: Sendable {
        case event(StreamEvent)
        /// Time to send a heartbeat (SSE) or a ping (WebSocket).
        case tick
        /// A text frame from a WebSocket client, handled in order with the events.
        case message(String)
    }

    let id = UUID()
    let userID: UUID
    let credential: StreamCredential
    let items: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let lock = NIOLock()
    private var _grants: Grants
    private var _filter: StreamFilter?
    private var _closeReason: CloseReason?
    private var tickPending = false
    private var onClose: (@Sendable (CloseReason) -> Void)?

    init(userID: UUID, credential: StreamCredential, grants: Grants, filter: StreamFilter?, capacity: Int) {
        self.userID = userID
        self.credential = credential
        _grants = grants
        _filter = filter
        (items, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(capacity))
    }

    var grants: Grants {
        get { lock.withLock { _grants } }
        set { lock.withLock { _grants = newValue } }
    }

    /// nil while a WebSocket has no subscription.
    var filter: StreamFilter? {
        get { lock.withLock { _filter } }
        set { lock.withLock { _filter = newValue } }
    }

    var closeReason: CloseReason? { lock.withLock { _closeReason } }

    /// Called once, from whichever thread closes the stream, so the transport can end at once.
    func whenClosed(_ body: @escaping @Sendable (CloseReason) -> Void) {
        let already = lock.withLock { () -> CloseReason? in
            if _closeReason == nil { onClose = body }
            return _closeReason
        }
        if let already { body(already) }
    }

    /// Queues the events this stream wants and may see.
    func offer(_ events: [StreamEvent]) {
        let (filter, grants, closed) = lock.withLock { (_filter, _grants, _closeReason != nil) }
        guard !closed, let filter else { return }
        for event in events where filter.matches(event) && event.visible(to: userID, grants: grants) {
            if case .dropped = continuation.yield(.event(event)) {
                close(.slowConsumer)
                return
            }
        }
    }

    /// At most one tick waits in the queue, so a stalled client's ticks never crowd out its events.
    func tick() {
        let queue = lock.withLock { () -> Bool in
            guard !tickPending, _closeReason == nil else { return false }
            tickPending = true
            return true
        }
        if queue { continuation.yield(.tick) }
    }

    /// The consumer took the tick.
    func tickTaken() {
        lock.withLock { tickPending = false }
    }

    /// Queues a client's message; a client whose queue is full is not reading what it asked for.
    func receive(_ text: String) {
        if case .dropped = continuation.yield(.message(text)) { close(.slowConsumer) }
    }

    /// Ends the stream; the first reason wins.
    func close(_ reason: CloseReason) {
        let hook = lock.withLock { () -> (@Sendable (CloseReason) -> Void)? in
            guard _closeReason == nil else { return nil }
            _closeReason = reason
            defer { onClose = nil }
            return onClose
        }
        continuation.finish()
        hook?(reason)
    }

    /// Feeds a server-sent stream until it closes: each event after `cursor` once, in `seq` order, and a heartbeat
    /// whenever one is due on a tick. Returns the last `seq` passed on.
    func follow(after cursor: Int64, heartbeat: Duration, event: (StreamEvent) async throws -> Void,
                beat: () async throws -> Void) async throws -> Int64 {
        var cursor = cursor
        var lastBeat = ContinuousClock.now
        for await item in items {
            if closeReason != nil { break }
            switch item {
            case .event(let next):
                guard next.seq > cursor else { continue }
                try await event(next)
                cursor = next.seq
            case .tick:
                tickTaken()
                if ContinuousClock.now - lastBeat >= heartbeat {
                    lastBeat = .now
                    try await beat()
                }
            case .message:
                continue
            }
        }
        return cursor
    }

    /// Ends the queue when the client went away (no reason to report).
    func finish() {
        continuation.finish()
    }
}
