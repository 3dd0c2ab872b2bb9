import NIOCore
import NIOHTTP1
import NIOPosix
import StewardFormats
import Vapor

/// The front of a connection's pipeline: it sees the raw bytes before the HTTP decoder does.
///
/// - **Head deadline.** A request head must arrive whole within `head` of its first byte, however slowly the bytes
///   trickle in (a client sending one byte every few seconds never trips the idle timeout). Otherwise 408.
/// - **Body deadline.** A body may pause at most `body` between two reads. Otherwise 408.
/// - **Idle.** A connection that reads and writes nothing for `idle` is closed (`IdleStateHandler` tells).
/// - **Short answers.** Malformed requests, and requests cut short, get an RFC 9457 problem written here, after
///   any answer already under way, then the connection closes: the client reads the answer before the close.
///
/// The HTTP handler behind tells it where the request stands (`headReceived`, `requestEnded`, `responseEnded`).
/// Timers are set at the end of a read, so a head or a body that arrives within one read sets none.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Limits: Sendable {
        var head: TimeAmount
        var body: TimeAmount
        var idle: TimeAmount
        var maxBodySize: Int

        init(_ config: AppConfig) {
            head = .seconds(Int64(config.httpHeadTimeoutSeconds))
            body = .seconds(Int64(config.httpBodyTimeoutSeconds))
            idle = .seconds(Int64(config.httpIdleTimeoutSeconds))
            maxBodySize = config.maxBodySize
        }
    }

    private enum Phase {
        /// Between requests. `since` is when the next head's first byte came, if it has.
        case awaitingHead(since: NIODeadline?)
        /// The head is in; its body (if any) is arriving.
        case body
        /// The request is whole and its answer is under way.
        case responding
        /// Upgraded (or about to be): bytes pass through untouched, no deadline applies.
        case passThrough
        /// A short answer was written; what the client still sends is dropped until the connection closes.
        case closing
    }

    private let limits: Limits
    private let logger: Logger
    private var phase = Phase.awaitingHead(since: nil)
    /// Whether the current head's request line ended within the parser's limit for a target: tells 414 from 431.
    private var requestLineComplete = false
    /// Requests read whole whose answers are not yet written.
    private var unanswered = 0
    /// The current head's bytes before its first line feed, while they are being counted.
    private var requestLineBytes = 0
    /// NIO's parser refuses a target (as any header field) past 80 KiB; the line also holds the method and version.
    private static let longestRequestLine = 80 * 1024 + "OPTIONS  HTTP/1.1\r".utf8.count
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// The server is stopping: the answer under way is the connection's last.
    private(set) var quiescing = false
    /// The client half-closed: it sends nothing more, and the connection closes once its answer is written.
    private(set) var inputClosed = false

    init(limits: Limits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .closing:
            return
        case .awaitingHead(let since):
            if since == nil { phase = .awaitingHead(since: .now()) }
            // Where the line feed is, not whether one came: a read that holds the whole head has one even when the
            // target alone overflowed the parser.
            if !requestLineComplete, requestLineBytes <= Self.longestRequestLine {
                let bytes = unwrapInboundIn(data).readableBytesView
                if let end = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                    requestLineBytes += end - bytes.startIndex
                    requestLineComplete = requestLineBytes <= Self.longestRequestLine
                } else {
                    requestLineBytes += bytes.count
                }
            }
        case .body, .responding, .passThrough:
            break
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch phase {
        case .awaitingHead(let since?):
            if timer == nil { arm(at: since + limits.head, context: context, detail: "The request head did not arrive in time.") }
        case .body:
            timer?.cancel()
            arm(at: .now() + limits.body, context: context, detail: "The request body stopped arriving.")
        default:
            break
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            logger.debug("Closing an idle connection")
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent { quiescing = true }
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            switch phase {
            case .closing, .awaitingHead(since: nil):
                // Nothing asked and nothing owed: the client is done.
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func arm(at deadline: NIODeadline, context: ChannelHandlerContext, detail: String) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            // The HTTP handler logs a request whose head it has.
            context.fireUserInboundEventTriggered(RequestTimedOut())
            handler.answerAndClose(.requestTimeout, code: "request_timeout", detail: detail, context: context)
        }
    }

    // MARK: Told by the HTTP handler

    func headReceived() {
        timer?.cancel()
        timer = nil
        phase = .body
    }

    func requestEnded() {
        timer?.cancel()
        timer = nil
        unanswered += 1
        phase = .responding
    }

    /// An answer's last byte was written. The connection waits for a head again only once every request read whole
    /// is answered: NIO's pipelining handler hands over the next request from inside the write of an answer's end,
    /// so that request may be under way already, and a half-close must not close the connection under it.
    func responseEnded() {
        unanswered = max(0, unanswered - 1)
        guard unanswered == 0, case .responding = phase else { return }
        phase = .awaitingHead(since: nil)
        requestLineComplete = false
        requestLineBytes = 0
    }

    /// An upgrade was asked for: from now on the bytes may be another protocol's.
    func passThrough() {
        timer?.cancel()
        timer = nil
        phase = .passThrough
    }

    /// 414 or 431 for a head past the parser's limit, by whether its request line had ended.
    var overflowStatus: (HTTPResponseStatus, String, String) {
        requestLineComplete
            ? (.requestHeaderFieldsTooLarge, "headers_too_large", "The request's header fields are too large.")
            : (.uriTooLong, "uri_too_long", "The request line (method and target) is too long.")
    }

    /// Writes a problem answer straight to the socket, half-closes, and closes once the client does (or after 2 s).
    func answerAndClose(_ status: HTTPResponseStatus, code: String, detail: String, headers: [(String, String)] = []) {
        guard let context else { return }
        answerAndClose(status, code: code, detail: detail, headers: headers, context: context)
    }

    private func answerAndClose(_ status: HTTPResponseStatus, code: String, detail: String, headers: [(String, String)] = [],
                                context: ChannelHandlerContext) {
        if case .closing = phase { return }
        timer?.cancel()
        timer = nil
        phase = .closing
        logger.debug("Answered \(status.code) \(code) and closing", metadata: ["peer": "\(context.channel.remoteAddress?.ipAddress ?? "?")"])
        let bytes = RawProblem.response(status, code: code, detail: detail, headers: headers, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }
}

/// Told down the pipeline when the guard answers 408.
struct RequestTimedOut {}

/// Answers a connection beyond the limits with 503 and closes it.
final class RefusedConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let detail: String

    init(detail: String) { self.detail = detail }

    func channelActive(context: ChannelHandlerContext) {
        let bytes = RawProblem.response(.serviceUnavailable, code: "too_many_connections", detail: detail,
                                        headers: [("Retry-After", "1")], allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
    }
}

/// A whole HTTP/1.1 problem response as bytes, for answers written below the HTTP encoder (the request was never
/// parsed, or the connection is about to close). Same body as `ProblemMiddleware` writes, without a request id.
enum RawProblem {
    static func response(_ status: HTTPResponseStatus, code: String, detail: String, headers: [(String, String)],
                         allocator: ByteBufferAllocator) -> ByteBuffer {
        let problem = ProblemDetails(status: status, code: code, detail: detail, requestId: nil)
        let body = (try? APIJSON.encode(problem)) ?? Array(#"{"status":\#(status.code),"code":"\#(code)"}"#.utf8)
        var text = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n"
        text += "Content-Type: application/problem+json; charset=utf-8\r\n"
        text += "Content-Length: \(body.count)\r\n"
        text += "Connection: close\r\n"
        text += "Date: \(HTTPDate.now())\r\n"
        text += "X-Content-Type-Options: nosniff\r\n"
        text += "Cache-Control: no-store\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        var buffer = allocator.buffer(capacity: text.utf8.count + body.count)
        buffer.writeString(text)
        buffer.writeBytes(body)
        return buffer
    }
}

/// The `Date` header's IMF-fixdate (RFC 9110 §5.6.7), computed at most once a second per thread.
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Each thread's own: never shared.
    private final class Cache: @unchecked Sendable {
        var second = -1
        var text = ""
    }

    private static let cache = ThreadSpecificVariable<Cache>()

    static func now() -> String {
        let second = time(nil)
        let cache: Cache
        if let existing = Self.cache.currentValue {
            cache = existing
        } else {
            cache = Cache()
            Self.cache.currentValue = cache
        }
        if cache.second == second { return cache.text }
        var parts = tm()
        var clock = second
        gmtime_r(&clock, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        cache.text = "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        cache.second = second
        return cache.text
    }
}
