import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPCompression
import NIOPosix
import Vapor

/// Steward's HTTP/1.1 server: the socket side of every request, in place of Vapor's `HTTPServer`, whose pipeline
/// offers no place for connection limits, a request-head deadline or an answer to malformed requests (it closes the
/// connection in silence). Routing, middleware and responses stay Vapor's: each complete request becomes a Vapor
/// `Request` for `app.responder`.
///
/// Each connection's pipeline, front to back:
/// - `ConnectionGuard`: raw bytes. The head and body deadlines, the idle timeout, and the short answers written
///   without the HTTP encoder (400, 408, 413, 414, 431, 503).
/// - NIO's HTTP/1 response encoder and request decoder (llhttp), its pipelining handler, which hands over one
///   request at a time, and its response compressor, for the responses that ask to be compressed.
/// - `HTTPConnectionHandler`: a request's parts into a Vapor `Request`, the response back out (buffered or
///   streamed), keep-alive, HEAD, and WebSocket upgrades.
///
/// Connections are counted in all and per client address (`ConnectionRegistry`); one beyond either limit gets 503
/// and is closed. On shutdown the listener closes, idle connections close at once, busy ones after their answer,
/// and what is left after `STEWARD_SHUTDOWN_GRACE_SECONDS` is closed.
final class StewardHTTPServer: Server, Sendable {
    private let app: Application
    private let group: any EventLoopGroup
    private let listener = NIOLockedValueBox<(any Channel)?>(nil)
    private let shutdownPromise: EventLoopPromise<Void>
    private let shutDown = NIOLockedValueBox(false)
    let registry: ConnectionRegistry

    init(app: Application) {
        self.app = app
        self.group = app.eventLoopGroup
        self.shutdownPromise = app.eventLoopGroup.any().makePromise(of: Void.self)
        let config = app.appConfig
        // Connections never take the descriptors the process needs for itself.
        var maxTotal = config.httpMaxConnections
        if let budget = ProcessLimits.connectionBudget(), budget < maxTotal {
            app.logger.warning("STEWARD_HTTP_MAX_CONNECTIONS is \(maxTotal), but the open-file limit leaves room for \(budget) connections: using \(budget)")
            maxTotal = budget
        }
        self.registry = ConnectionRegistry(maxTotal: maxTotal, maxPerAddress: config.httpMaxConnectionsPerAddress,
                                           exempt: app.trustedProxies)
    }

    var onShutdown: EventLoopFuture<Void> { shutdownPromise.futureResult }

    /// The bound address once started (port 0 asks for a free one).
    var localAddress: SocketAddress? { listener.withLockedValue { $0?.localAddress } }

    @available(*, noasync, message: "Use the async start() method instead.")
    func start(address: BindAddress?) throws {
        let bootstrap = makeBootstrap()
        do {
            started(try bind(bootstrap, address).wait())
        } catch {
            throw notStarted(error)
        }
    }

    func start(address: BindAddress?) async throws {
        let bootstrap = makeBootstrap()
        do {
            started(try await bind(bootstrap, address).get())
        } catch {
            throw notStarted(error)
        }
    }

    /// A server that could not bind (its port taken) has nothing to stop: its shutdown is complete. Left unfulfilled,
    /// its promise trapped in NIO's check of debug builds when the server was freed, so `swift run steward serve` on
    /// a taken port printed the bind error and then crashed.
    private func notStarted(_ error: any Error) -> any Error {
        completeShutdown()
        return error
    }

    /// Fulfils the shutdown promise the first time only: a stop, or a start that could not bind.
    private func completeShutdown() {
        if shutDown.withLockedValue({ done in defer { done = true }; return !done }) { shutdownPromise.succeed() }
    }

    @available(*, noasync, message: "Use the async shutdown() method instead.")
    func shutdown() {
        _ = try? stop().wait()
    }

    func shutdown() async {
        _ = try? await stop().get()
    }

    private func started(_ channel: any Channel) {
        listener.withLockedValue { $0 = channel }
        app.logger.notice("Server started on \(channel.localAddress.map { "http://\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?")")
    }

    private func bind(_ bootstrap: ServerBootstrap, _ address: BindAddress?) -> EventLoopFuture<any Channel> {
        let configured = app.http.server.configuration
        switch address {
        case .unixDomainSocket(let path):
            return bootstrap.bind(unixDomainSocketPath: path)
        case .hostname(let host, let port):
            return bootstrap.bind(host: host ?? configured.hostname, port: port ?? configured.port)
        case nil:
            return bootstrap.bind(host: configured.hostname, port: configured.port)
        }
    }

    private func makeBootstrap() -> ServerBootstrap {
        let app = self.app
        let registry = self.registry
        let limits = ConnectionGuard.Limits(app.appConfig)
        // `current` builds the router once; `app.responder` itself would build it again for every request.
        let responder = app.responder.current
        return ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.maxMessagesPerRead, value: 256)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
            // A client that half-closes after its request still gets the answer.
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    switch registry.admit(channel) {
                    case .refused(let reason):
                        app.logger.warning("Connection refused: \(reason)", metadata: ["peer": "\(channel.remoteAddress?.ipAddress ?? "?")"])
                        try pipeline.addHandler(RefusedConnectionHandler(detail: reason))
                    case .admitted:
                        let guardHandler = ConnectionGuard(limits: limits, logger: app.logger)
                        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                        // `HTTPConnectionHandler` sets Content-Length and Transfer-Encoding itself: the encoder, not paired
                        // with the decoder as NIO's own pipeline setup pairs them, cannot tell a HEAD's answer from a
                        // GET's, and would chunk a HEAD's answer to a stream and end it with a last chunk.
                        var framing = HTTPResponseEncoder.Configuration()
                        framing.automaticallySetFramingHeaders = false
                        let encoder = HTTPResponseEncoder(configuration: framing)
                        let pipelining = HTTPServerPipelineHandler()
                        let compressor = HTTPResponseCompressor(initialByteBufferCapacity: 0, responseCompressionPredicate: Self.compressWhenAsked)
                        let handler = HTTPConnectionHandler(app: app, responder: responder, connectionGuard: guardHandler,
                                                            maxBodySize: limits.maxBodySize,
                                                            httpHandlers: [encoder, decoder, pipelining, compressor])
                        try pipeline.addHandler(IdleStateHandler(allTimeout: limits.idle))
                        try pipeline.addHandler(guardHandler)
                        try pipeline.addHandler(encoder)
                        try pipeline.addHandler(decoder)
                        try pipeline.addHandler(pipelining)
                        try pipeline.addHandler(compressor)
                        try pipeline.addHandler(handler)
                    }
                }
            }
    }

    /// Only a response that asks for it is compressed (`headers.responseCompression = .enable`: the console's
    /// page and assets), when the client accepts gzip or deflate; the marker header is removed either way.
    private static func compressWhenAsked(_ head: inout HTTPResponseHead, _ supported: Bool) -> HTTPResponseCompressor.CompressionIntent {
        let asked = head.headers.responseCompression == .enable
        head.headers.responseCompression = .unset
        return asked ? .compressIfPossible : .doNotCompress
    }

    /// Stops accepting, asks every connection to finish its answer and close, and closes what is left after the grace.
    private func stop() -> EventLoopFuture<Void> {
        guard let channel = listener.withLockedValue({ current -> (any Channel)? in
            defer { current = nil }
            return current
        }) else { return shutdownPromise.futureResult }
        let registry = self.registry
        let grace = TimeAmount.seconds(Int64(app.appConfig.shutdownGraceSeconds))
        let logger = app.logger
        channel.close(promise: nil)
        let loop = channel.eventLoop
        return channel.closeFuture.flatMap { _ -> EventLoopFuture<Void> in
            let open = registry.openChannels()
            for connection in open {
                connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
            let closed = EventLoopFuture.andAllComplete(open.map { $0.closeFuture }, on: loop)
            let timeout = loop.scheduleTask(in: grace) {
                let left = registry.openChannels()
                if !left.isEmpty { logger.warning("Closing \(left.count) connection(s) still open after the shutdown grace") }
                for connection in left { connection.close(promise: nil) }
            }
            return closed.always { _ in timeout.cancel() }
        }.always { _ in
            self.completeShutdown()
        }
    }
}

extension Application {
    private struct StewardServerKey: StorageKey { typealias Value = StewardHTTPServer }

    /// The one server this application serves with (`app.server`).
    var stewardServer: StewardHTTPServer {
        if let server = storage[StewardServerKey.self] { return server }
        let server = StewardHTTPServer(app: self)
        storage[StewardServerKey.self] = server
        return server
    }
}

/// Open connections, in all and per client address. A trusted proxy's address is exempt from the per-address limit:
/// every client behind it shares it.
final class ConnectionRegistry: Sendable {
    enum Admission { case admitted, refused(String) }

    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var perAddress: [String: Int] = [:]
    }

    let maxTotal: Int
    let maxPerAddress: Int
    private let exempt: [CIDR]
    private let state = NIOLockedValueBox(State())

    init(maxTotal: Int, maxPerAddress: Int, exempt: [CIDR]) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.exempt = exempt
    }

    /// Counts `channel` in when both limits allow, and out again when it closes.
    func admit(_ channel: any Channel) -> Admission {
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        let limited = !(IPAddress(address).map { ip in exempt.contains { $0.contains(ip) } } ?? false)
        let id = ObjectIdentifier(channel)
        let refusal: String? = state.withLockedValue { state in
            if state.channels.count >= maxTotal {
                return "The server holds its limit of \(maxTotal) open connections; try again shortly."
            }
            if limited, state.perAddress[address, default: 0] >= maxPerAddress {
                return "Your address holds its limit of \(maxPerAddress) open connections; close some or try again shortly."
            }
            state.channels[id] = channel
            state.perAddress[address, default: 0] += 1
            return nil
        }
        if let refusal { return .refused(refusal) }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { state in
                state.channels[id] = nil
                let left = state.perAddress[address, default: 1] - 1
                state.perAddress[address] = left > 0 ? left : nil
            }
        }
        return .admitted
    }

    func openChannels() -> [any Channel] { state.withLockedValue { Array($0.channels.values) } }
}
