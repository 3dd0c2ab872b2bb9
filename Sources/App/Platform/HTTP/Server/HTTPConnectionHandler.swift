import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPCompression
import NIOWebSocket
import StewardFormats
import Vapor

/// A connection's requests, one at a time (NIO's pipelining handler holds the next until this one is answered):
/// the parts of a request into one Vapor `Request` with its body collected (up to `STEWARD_MAX_BODY_SIZE`, 413
/// beyond, before anything is routed), `app.responder`'s `Response` back out, and keep-alive, HEAD, `Expect:
/// 100-continue` and WebSocket upgrades. A parse error is answered by the guard (400, 414 or 431), after the answer
/// under way if there is one.
final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer?)
        /// A body past the limit is being refused; its remaining parts are dropped.
        case refusing
        case responding(HTTPRequestHead)
        case upgraded
    }

    private let app: Application
    private let responder: any Responder
    private let connectionGuard: ConnectionGuard
    private let maxBodySize: Int
    /// The encoder, decoder and pipelining handler, removed on an upgrade.
    private let httpHandlers: [any RemovableChannelHandler]
    private var state = State.idle
    private var keepAlive = true
    /// A parse error met while an answer was under way: answered once that answer is written.
    private var pendingError: (HTTPResponseStatus, String, String)?

    init(app: Application, responder: any Responder, connectionGuard: ConnectionGuard, maxBodySize: Int,
         httpHandlers: [any RemovableChannelHandler]) {
        self.app = app
        self.responder = responder
        self.connectionGuard = connectionGuard
        self.maxBodySize = maxBodySize
        self.httpHandlers = httpHandlers
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            connectionGuard.headReceived()
            if let length = head.headers.first(name: .contentLength).flatMap(Int.init), length > maxBodySize {
                refuseBody(head)
                return
            }
            // RFC 9112, 3.2: an HTTP/1.1 request names exactly one Host, and no request names two. Two let a proxy
            // and Steward read different hosts from one request.
            let hosts = head.headers[canonicalForm: "host"].count
            if hosts > 1 || (hosts == 0 && (head.version.major, head.version.minor) >= (1, 1)) {
                refuse(head, status: .badRequest, code: "bad_request",
                       detail: hosts > 1 ? "The request names more than one Host." : "An HTTP/1.1 request must name its Host.")
                return
            }
            if let refusal = Self.codingRefusal(head) {
                refuse(head, status: refusal.status, code: refusal.code, detail: refusal.detail, headers: refusal.headers)
                return
            }
            // Not to HTTP/1.0 clients, which do not know the status (RFC 9110, 10.1.1).
            if (head.version.major, head.version.minor) >= (1, 1),
               head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                sendContinue(version: head.version, context: context)
            }
            state = .receiving(head, nil)
        case .body(var chunk):
            guard case .receiving(let head, var body) = state else { return }
            state = .idle
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodySize {
                refuseBody(head)
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
            state = .receiving(head, body)
        case .end:
            guard case .receiving(let head, let body) = state else { return }
            connectionGuard.requestEnded()
            state = .responding(head)
            respond(to: head, body: body, context: context)
        }
    }

    /// `100 Continue`, written past the response compressor: it takes one request's `Accept-Encoding` for every
    /// response head it sees, so an informational head written through it left the final answer's head none, and
    /// NIO's queue trapped on the empty take (one `Expect: 100-continue` request, as curl sends for bodies past 1 MB,
    /// stopped the whole process). The pipelining handler below it lets informational heads through.
    private func sendContinue(version: HTTPVersion, context: ChannelHandlerContext) {
        let part = HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: .continue))
        let past = (try? context.pipeline.syncOperations.context(handlerType: HTTPResponseCompressor.self)) ?? context
        past.writeAndFlush(NIOAny(part), promise: nil)
    }

    private func refuse(_ head: HTTPRequestHead, status: HTTPResponseStatus, code: String, detail: String,
                        headers: [(String, String)] = []) {
        report(head, status: status.code, note: detail)
        state = .refusing
        keepAlive = false
        connectionGuard.answerAndClose(status, code: code, detail: detail, headers: headers)
    }

    /// A body in a coding Steward does not undo, refused before it is read: a transfer coding other than chunked
    /// (501, RFC 9112, 6.1; the parser passes `gzip, chunked` through undecoded), or a content coding other than
    /// identity (415 with `Accept-Encoding: identity`, RFC 9110, 15.5.16). Both were read as the body's JSON, and
    /// failed as "not valid JSON".
    static func codingRefusal(_ head: HTTPRequestHead)
        -> (status: HTTPResponseStatus, code: String, detail: String, headers: [(String, String)])? {
        let transfer = head.headers[canonicalForm: "transfer-encoding"].map { $0.lowercased() }
        if let other = transfer.first(where: { $0 != "chunked" }) {
            return (.notImplemented, "not_implemented",
                    "Steward does not decode the transfer coding '\(other)'; send the body chunked or with a Content-Length.", [])
        }
        let hasBody = !transfer.isEmpty || (head.headers.first(name: .contentLength).flatMap(Int.init) ?? 0) > 0
        let content = head.headers[canonicalForm: "content-encoding"].map { $0.lowercased() }
        if hasBody, let other = content.first(where: { $0 != "identity" }) {
            return (.unsupportedMediaType, "unsupported_media_type",
                    "Steward does not decode request bodies in '\(other)'; send the body uncompressed.", [("Accept-Encoding", "identity")])
        }
        return nil
    }

    private func refuseBody(_ head: HTTPRequestHead) {
        report(head, status: 413, note: "body over the limit")
        state = .refusing
        keepAlive = false
        connectionGuard.answerAndClose(.payloadTooLarge, code: "payload_too_large",
                                       detail: "The request body is larger than \(maxBodySize) bytes.")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            app.logger.debug("Connection error: \(error)")
            context.close(promise: nil)
            return
        }
        let answer: (HTTPResponseStatus, String, String)
        switch parseError {
        case .headerOverflow:
            answer = connectionGuard.overflowStatus
        case .invalidEOFState:
            answer = (.badRequest, "bad_request", "The connection ended inside a request.")
            if case .receiving(let head, _) = state {
                state = .idle
                report(head, status: 400, note: "client closed the connection inside the request")
            }
        default:
            answer = (.badRequest, "bad_request", "The request is not valid HTTP/1.1 (\(parseError)).")
        }
        keepAlive = false
        if case .responding = state {
            pendingError = answer
        } else {
            connectionGuard.answerAndClose(answer.0, code: answer.1, detail: answer.2)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RequestTimedOut, case .receiving(let head, _) = state {
            state = .idle
            report(head, status: 408, note: "the body stopped arriving")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .receiving(let head, _) = state {
            state = .idle
            report(head, status: 400, note: "client closed the connection inside the request")
        }
        context.fireChannelInactive()
    }

    /// Logs and counts a request answered (or abandoned) before it was routed, as `RequestContextMiddleware` does
    /// for routed ones, under the route `(unmatched)`.
    private func report(_ head: HTTPRequestHead, status: UInt, note: String) {
        let id = head.headers.first(name: "X-Request-ID").flatMap { RequestContextMiddleware.isAcceptable($0) ? $0 : nil }
            ?? UUID.pooledRandom().lowercasedString
        app.metrics.recordRequest(method: head.method.rawValue, route: "(unmatched)", status: status, duration: .zero)
        app.logger.info("\(head.method.rawValue) (unmatched) \(status): \(note)", metadata: [
            "request-id": .string(id),
            "method": .string(head.method.rawValue),
            "route": "(unmatched)",
            "status": .stringConvertible(status),
        ])
    }

    // MARK: Answering

    private func respond(to head: HTTPRequestHead, body: ByteBuffer?, context: ChannelHandlerContext) {
        // The request's id is settled here, where Vapor's `Request` would otherwise make a UUID with Foundation (which
        // opens, reads and closes /dev/urandom: three system calls a request) for its logger, only for
        // `RequestContextMiddleware` to replace it: the client's `X-Request-ID` when it is acceptable, else a new id
        // in its place, which both then take.
        var headers = head.headers
        if !(headers.first(name: "X-Request-ID").map(RequestContextMiddleware.isAcceptable) ?? false) {
            headers.replaceOrAdd(name: "X-Request-ID", value: UUID.pooledRandom().lowercasedString)
        }
        let request = Request(application: app, method: head.method, url: URI(path: head.uri), version: head.version,
                              headersNoUpdate: headers, collectedBody: body, remoteAddress: context.channel.remoteAddress,
                              logger: app.logger, byteBufferAllocator: context.channel.allocator, on: context.eventLoop)
        let upgradeAsked = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        if upgradeAsked {
            // The decoder stops at an upgrade request; what follows may be another protocol's bytes.
            connectionGuard.passThrough()
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        responder.respond(to: request).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let response):
                if upgradeAsked, response.status == .switchingProtocols, let upgrader = response.upgrader {
                    handler.upgrade(response, upgrader: upgrader, request: request, head: head, context: context)
                } else {
                    // A refused upgrade leaves the decoder stopped: this answer is the connection's last.
                    if upgradeAsked { handler.keepAlive = false }
                    handler.write(response, for: head, context: context)
                }
            case .failure(let error):
                // The middleware answers every error; this is only reached if a responder fails outside it.
                handler.app.logger.error("Responder failed: \(String(reflecting: error))")
                handler.write(Response(status: .internalServerError), for: head, context: context)
            }
        }
    }

    private func write(_ response: Response, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        let status = response.status
        var headers = response.headers
        keepAlive = keepAlive && head.isKeepAlive && !connectionGuard.quiescing
        let bodyless = head.method == .HEAD || status == .noContent || status == .notModified || status.code < 200
        if status == .noContent || status.code < 200 {
            headers.remove(name: .contentLength)
            headers.remove(name: .transferEncoding)
        }
        // The compressor cannot tell a HEAD's answer from a GET's: asked to compress it, it ends the empty body as a
        // 20-byte gzip stream, written after the head, where the client reads the next answer's status line.
        if head.method == .HEAD, headers.responseCompression == .enable { headers.responseCompression = .disable }
        if bodyless {
            // A HEAD's answer keeps a GET's Content-Length, but not Transfer-Encoding: the framing headers are
            // Steward's (the encoder is told not to set them, since it cannot tell a HEAD's answer from a GET's), and
            // a chunked answer's end is its last chunk, which would be a body.
            headers.remove(name: .transferEncoding)
            // A stream's closure holds what the stream needs (an event stream's slot among the user's), and lets it go
            // when it ends: run it against a writer that takes nothing, so it ends at once.
            if let stream = response.storage[StreamedBodyKey.self] {
                let body = stream.write
                Task { try? await body(RefusingBodyWriter()) }
            }
        }
        headers.replaceOrAdd(name: .date, value: HTTPDate.now())

        if !bodyless, response.body.buffer == nil, response.body.count != 0 {
            let stream = response.storage[StreamedBodyKey.self]
            if stream == nil {
                // A stream body Steward did not make: collected first.
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                response.body.collect(on: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    switch result {
                    case .success(let buffer):
                        var headers = headers
                        headers.remove(name: .transferEncoding)
                        headers.replaceOrAdd(name: .contentLength, value: String(buffer?.readableBytes ?? 0))
                        handler.writeWhole(status: status, headers: headers, body: buffer, head: head, context: context)
                    case .failure:
                        context.close(promise: nil)
                    }
                }
                return
            }
            headers.remove(name: .contentLength)
            // An HTTP/1.0 client cannot take chunks: its stream goes unframed, and closing the connection ends it. (It
            // was collected whole before, which an event stream never is: the client got nothing, and the server
            // held every event for it.)
            if (head.version.major, head.version.minor) < (1, 1) {
                keepAlive = false
                headers.remove(name: .transferEncoding)
            } else {
                headers.replaceOrAdd(name: .transferEncoding, value: "chunked")
            }
            headers.replaceOrAdd(name: .connection, value: keepAlive ? "keep-alive" : "close")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            streamID &+= 1
            streamEnded = false
            let writer = ChannelBodyWriter(handler: self, context: context, id: streamID)
            let body = stream!.write
            Task {
                do {
                    try await body(writer)
                    try? await writer.write(.end)
                } catch {
                    try? await writer.write(.error(error))
                }
            }
            return
        }
        if !bodyless, let buffer = response.body.buffer {
            headers.remove(name: .transferEncoding)
            headers.replaceOrAdd(name: .contentLength, value: String(buffer.readableBytes))
            writeWhole(status: status, headers: headers, body: buffer, head: head, context: context)
        } else {
            // An empty body says so, for the client to know where the answer ends.
            if !bodyless {
                headers.remove(name: .transferEncoding)
                headers.replaceOrAdd(name: .contentLength, value: "0")
            }
            writeWhole(status: status, headers: headers, body: nil, head: head, context: context)
        }
    }

    private func writeWhole(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer?, head: HTTPRequestHead,
                            context: ChannelHandlerContext) {
        var headers = headers
        headers.replaceOrAdd(name: .connection, value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if let body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        _ = writeEnd(context: context)
    }

    /// Ends the answer under way. It is over for this handler before its end is written: NIO's pipelining handler
    /// hands over a request that came meanwhile from inside that write, and that request's answer must not be taken
    /// for this one's (when this one's write completed after it was handed over, the pipelined request's
    /// `Connection: close` was answered and the connection then left open). The guard hears of it once the end is
    /// written, and counts the requests still owed an answer, so a half-close meanwhile does not cut this one.
    fileprivate func writeEnd(context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        guard case .responding = state else { return context.writeAndFlush(wrapOutboundOut(.end(nil))) }
        state = .idle
        let last = !keepAlive
        let error = pendingError
        pendingError = nil
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if let (status, code, detail) = error {
            connectionGuard.answerAndClose(status, code: code, detail: detail)
            return written
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        written.whenComplete { _ in
            let (handler, context) = bound.value
            handler.connectionGuard.responseEnded()
            // The last answer, or the client has sent all it will (half-closed) and no request of its is left.
            if last || (handler.connectionGuard.inputClosed && handler.isIdle) { context.close(promise: nil) }
        }
        return written
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    // MARK: Streams

    /// The stream being written; a writer of an earlier one (its task finishing late) writes nothing.
    private var streamID = 0
    private var streamEnded = false

    fileprivate func streamWrite(_ result: BodyStreamResult, id: Int, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        guard id == streamID, !streamEnded else {
            if case .buffer = result { return context.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
            return context.eventLoop.makeSucceededVoidFuture()
        }
        switch result {
        case .buffer(let buffer):
            return context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))))
        case .end:
            streamEnded = true
            return writeEnd(context: context)
        case .error:
            // A stream cut short: the client must not take the part it has for the whole.
            streamEnded = true
            context.close(promise: nil)
            return context.eventLoop.makeSucceededVoidFuture()
        }
    }

    // MARK: Upgrades

    private func upgrade(_ response: Response, upgrader: any Upgrader, request: Request, head: HTTPRequestHead,
                         context: ChannelHandlerContext) {
        state = .upgraded
        let upgrading = NIOLoopBound((self, context, upgrader.applyUpgrade(req: request, res: response)), eventLoop: context.eventLoop)
        let (_, _, protocolUpgrader) = upgrading.value
        protocolUpgrader.buildUpgradeResponse(channel: context.channel, upgradeRequest: head, initialResponseHeaders: response.headers)
            .flatMap { headers -> EventLoopFuture<Void> in
                let (handler, context, _) = upgrading.value
                var headers = headers
                headers.replaceOrAdd(name: .date, value: HTTPDate.now())
                return context.writeAndFlush(handler.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .switchingProtocols,
                                                                                            headers: headers))))
            }.flatMap { () -> EventLoopFuture<Void> in
                // The decoder goes last: removing it hands the bytes it holds past the head to the new protocol.
                let (handler, context, protocolUpgrader) = upgrading.value
                let pipeline = context.pipeline.syncOperations
                for http in handler.httpHandlers where !(http is ByteToMessageHandler<HTTPRequestDecoder>) {
                    pipeline.removeHandler(http, promise: nil)
                }
                return protocolUpgrader.upgrade(context: context, upgradeRequest: head)
            }.whenComplete { result in
                let (handler, context, _) = upgrading.value
                switch result {
                case .success:
                    let pipeline = context.pipeline.syncOperations
                    // Before the decoder hands over any byte past the head, so no frame gets past the guard.
                    if let frames = try? pipeline.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self) {
                        try? pipeline.addHandler(WebSocketFrameGuard(largestMessage: EventStreamController.maxFrameSize), position: .after(frames))
                    }
                    pipeline.removeHandler(handler, promise: nil)
                    for http in handler.httpHandlers where http is ByteToMessageHandler<HTTPRequestDecoder> {
                        pipeline.removeHandler(http, promise: nil)
                    }
                case .failure(let error):
                    handler.app.logger.debug("Upgrade failed: \(error)")
                    context.close(promise: nil)
                }
            }
    }
}

/// A streamed response body's writer onto the connection: each write waits until the bytes are handed to the
/// socket, so a slow client slows the stream rather than filling memory.
private struct ChannelBodyWriter: AsyncBodyStreamWriter {
    let bound: NIOLoopBound<(HTTPConnectionHandler, ChannelHandlerContext)>
    let eventLoop: any EventLoop
    let id: Int

    init(handler: HTTPConnectionHandler, context: ChannelHandlerContext, id: Int) {
        bound = NIOLoopBound((handler, context), eventLoop: context.eventLoop)
        eventLoop = context.eventLoop
        self.id = id
    }

    func write(_ result: BodyStreamResult) async throws {
        let bound = self.bound
        let id = self.id
        try await eventLoop.flatSubmit {
            let (handler, context) = bound.value
            return handler.streamWrite(result, id: id, context: context)
        }.get()
    }
}

/// The writer of a stream whose answer has no body (a HEAD's): every chunk is refused, as by a closed connection.
private struct RefusingBodyWriter: AsyncBodyStreamWriter {
    func write(_ result: BodyStreamResult) async throws {
        if case .buffer = result { throw ChannelError.ioOnClosedChannel }
    }
}

/// A streamed response body that Steward's server writes as it comes (Vapor keeps a body's stream to itself).
/// Set with `Response.stream(_:)`, which also sets the same stream as Vapor's body for in-process tests.
struct StreamedBodyKey: StorageKey {
    typealias Value = StreamedBody
}

struct StreamedBody: Sendable {
    let write: @Sendable (any AsyncBodyStreamWriter) async throws -> Void
}

extension Response {
    /// A body written by `write` as it goes (Server-Sent Events, MCP streams), chunked.
    func stream(_ write: @escaping @Sendable (any AsyncBodyStreamWriter) async throws -> Void) {
        body = .init(asyncStream: write)
        storage[StreamedBodyKey.self] = StreamedBody(write: write)
    }
}
