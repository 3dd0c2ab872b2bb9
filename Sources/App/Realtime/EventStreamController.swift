import Fluent
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Vapor
import StewardSQLite

/// Live events: `GET /api/v1/events/stream` (Server-Sent Events), `GET /api/v1/ws` (WebSocket) and
/// `POST /api/v1/ws/ticket`. Both transports replay what a client missed from the log, then go live from the
/// hub with no gap and no duplicate, and carry only events the caller may read.
struct EventStreamController: RouteCollection {
    static let maxFrameSize = 64 * 1024

    func boot(routes: any RoutesBuilder) throws {
        routes.grouped("events", "stream").grouped(RequireCaller()).get(use: sse)
        routes.grouped("ws", "ticket").grouped(RequireCaller()).post(use: ticket)
        // Authenticates itself: a ticket in the query is an alternative to headers and cookies.
        routes.get("ws", use: webSocket)
    }

    // MARK: Tickets

    @Sendable
    func ticket(req: Request) async throws -> Response {
        let issued = try await StreamTickets.issue(for: try req.caller, app: req.application)
        let response = try await issued.encodeResponse(status: .created, for: req)
        response.headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        return response
    }

    // MARK: Server-Sent Events

    @Sendable
    func sse(req: Request) async throws -> Response {
        let caller = try req.caller
        let (filter, filterProblems) = StreamFilter.fromQuery(req)
        var problems = filterProblems
        var after: Int64?
        // EventSource reconnects to the same URL with Last-Event-ID: the header wins over ?after=.
        if let raw = req.headers.first(name: "Last-Event-ID") {
            if let value = Int64(raw.trimmingCharacters(in: .whitespaces)), value >= 0 { after = value } else {
                problems.append(FieldProblem(field: "Last-Event-ID", message: "must be the seq of an event (0 or more)"))
            }
        } else if let raw = req.queryText("after") {
            if let value = Int64(raw), value >= 0 { after = value } else {
                problems.append(FieldProblem(field: "after", message: "must be a sequence number (0 or more)"))
            }
        }
        guard problems.isEmpty, let filter else { throw HTTPProblem.validation(problems) }
        guard let credential = StreamCredential(caller) else { throw AuthError.unauthenticated }

        let app = req.application
        let hub = app.eventHub
        let settings = await hub.settings
        let subscriber = StreamSubscriber(userID: caller.user.id, credential: credential, grants: caller.grants,
                                          filter: filter, capacity: settings.bufferEvents)
        let floor = try await hub.register(subscriber)
        let logger = req.logger
        let resumeAfter = after

        let response = Response(status: .ok, headers: .eventStream)
        response.stream({ writer in
            let done = Self.cutWhenStuck(subscriber, writer: writer, grace: settings.closeGrace)
            var cursor = resumeAfter ?? floor
            var failed = false
            do {
                try await writer.write(.buffer(ByteBuffer(string: "retry: 2000\n\n")))
                if let resumeAfter {
                    cursor = try await StreamReplay.replay(after: resumeAfter, upTo: floor, filter: filter, subscriber: subscriber, db: app.db) { event in
                        try await writer.write(.buffer(Self.frame(event)))
                    }
                }
                cursor = try await subscriber.follow(after: max(cursor, floor), heartbeat: settings.heartbeat) { event in
                    try await writer.write(.buffer(Self.frame(event)))
                } beat: {
                    try await writer.write(.buffer(ByteBuffer(string: ": heartbeat\n\n")))
                }
                if let reason = subscriber.closeReason {
                    try await writer.write(.buffer(Self.closingFrame(reason, lastSeq: cursor)))
                }
            } catch {
                failed = true
                logger.debug("Event stream ended: \(String(describing: error))")
            }
            subscriber.finish()
            await hub.unregister(subscriber)
            done.withLockedValue { $0 = true }
            if failed { try? await writer.write(.error(StreamCut())) } else { try? await writer.write(.end) }
        })
        return response
    }

    /// A stream closed by the server ends on its own; one stuck writing to a client that stopped reading is cut
    /// after `grace`. The stream sets the returned flag once it has ended by itself.
    static func cutWhenStuck(_ subscriber: StreamSubscriber, writer: any AsyncBodyStreamWriter, grace: Duration) -> NIOLockedValueBox<Bool> {
        let done = NIOLockedValueBox(false)
        subscriber.whenClosed { _ in
            Task {
                try? await Task.sleep(for: grace)
                if done.withLockedValue({ !$0 }) { try? await writer.write(.error(StreamCut())) }
            }
        }
        return done
    }

    /// `id:` is the seq, so a reconnecting EventSource sends it back as Last-Event-ID.
    static func frame(_ event: StreamEvent) -> ByteBuffer {
        ByteBuffer(string: "id: \(event.seq)\nevent: \(event.type)\ndata: \(event.json)\n\n")
    }

    /// The last frame of a stream the server ends. It has no `id:`, so Last-Event-ID stays at the last event.
    static func closingFrame(_ reason: StreamSubscriber.CloseReason, lastSeq: Int64) -> ByteBuffer {
        switch reason {
        case .revoked:
            return ByteBuffer(string: "event: session.revoked\ndata: {\"reason\":\"revoked\",\"message\":\"The session or key behind this stream was revoked, or its user disabled.\"}\n\n")
        case .slowConsumer:
            return ByteBuffer(string: "event: stream.closed\ndata: {\"reason\":\"slow_consumer\",\"lastSeq\":\(lastSeq),\"message\":\"The client did not keep up; reconnect with Last-Event-ID to resume.\"}\n\n")
        case .shutdown:
            return ByteBuffer(string: "event: stream.closed\ndata: {\"reason\":\"shutdown\",\"lastSeq\":\(lastSeq),\"message\":\"The server is restarting; reconnect with Last-Event-ID to resume.\"}\n\n")
        }
    }

    struct StreamCut: Error {}

    // MARK: WebSocket

    @Sendable
    func webSocket(req: Request) async throws -> Response {
        let app = req.application
        let userID: UUID
        let credential: StreamCredential
        let grants: Grants
        if let token = req.queryText("ticket") {
            guard let redeemed = try await StreamTickets.redeem(token, app: app),
                  let current = try await EventHub.currentGrants(of: redeemed.credential, now: app.wallClock.now(), on: app.db, readers: app.sqliteReaders)
            else { throw StreamAuthError.invalidTicket }
            (userID, credential, grants) = (redeemed.userID, redeemed.credential, current)
        } else {
            let caller = try req.caller
            if caller.method == .cookie { try Self.checkOrigin(req) }
            guard let callerCredential = StreamCredential(caller) else { throw AuthError.unauthenticated }
            (userID, credential, grants) = (caller.user.id, callerCredential, caller.grants)
        }
        guard req.headers.first(name: .upgrade)?.lowercased() == "websocket", req.headers.first(name: "Sec-WebSocket-Key") != nil else {
            throw StreamAuthError.upgradeRequired
        }
        let hub = app.eventHub
        let settings = await hub.settings
        let subscriber = StreamSubscriber(userID: userID, credential: credential, grants: grants, filter: nil, capacity: settings.bufferEvents)
        // Refuse over the caps with a plain 429 while that is still possible; the upgrade registers for real.
        try await hub.check(subscriber)
        let upgraded: @Sendable (Request, WebSocket) -> Void = { req, ws in
            let stream = WebSocketStream(app: app, subscriber: subscriber, settings: settings, ws: ws, logger: req.logger)
            let pings = NIOLockedValueBox(0)
            stream.attach(outstandingPings: pings)
            Task { await stream.run(outstandingPings: pings) }
        }
        return req.webSocket(maxFrameSize: WebSocketMaxFrameSize(integerLiteral: Self.maxFrameSize), onUpgrade: upgraded)
    }

    /// A cookie rides along on cross-site WebSocket requests too: only origins the server trusts may use it.
    static func checkOrigin(_ req: Request) throws {
        let config = req.application.appConfig
        guard let origin = req.headers.first(name: .origin)?.lowercased() else { throw StreamAuthError.originNotAllowed }
        var allowed = Set(config.corsOrigins.filter { $0 != "*" }.map { $0.lowercased() })
        if let url = URL(string: config.publicURL), let scheme = url.scheme, let host = url.host {
            allowed.insert(url.port.map { "\(scheme)://\(host):\($0)" } ?? "\(scheme)://\(host)")
        }
        guard allowed.contains(origin) else { throw StreamAuthError.originNotAllowed }
    }
}

enum StreamAuthError: ProblemError {
    case invalidTicket
    case originNotAllowed
    case upgradeRequired

    var status: HTTPResponseStatus {
        switch self {
        case .invalidTicket: .unauthorized
        case .originNotAllowed: .forbidden
        case .upgradeRequired: .upgradeRequired
        }
    }

    var code: String {
        switch self {
        case .invalidTicket: "unauthorized"
        case .originNotAllowed: "forbidden"
        case .upgradeRequired: "upgrade_required"
        }
    }

    var reason: String {
        switch self {
        case .invalidTicket: "The ticket is invalid, expired or already used; ask for a new one."
        case .originNotAllowed: "This origin may not open a WebSocket with the session cookie; use a ticket or a bearer token."
        case .upgradeRequired: "This endpoint speaks WebSocket only."
        }
    }

    var headers: HTTPHeaders {
        self == .upgradeRequired ? ["Upgrade": "websocket", "Connection": "Upgrade"] : [:]
    }
}

extension HTTPHeaders {
    /// The headers of every SSE answer: the media type, no caching, and no buffering by a proxy in front (nginx).
    static var eventStream: HTTPHeaders {
        var headers = HTTPHeaders()
        headers.contentType = HTTPMediaType(type: "text", subType: "event-stream", parameters: ["charset": "utf-8"])
        headers.replaceOrAdd(name: .cacheControl, value: "no-cache")
        headers.replaceOrAdd(name: "X-Accel-Buffering", value: "no")
        return headers
    }
}

/// Replays events from the log for a stream that resumes.
enum StreamReplay {
    /// Sends every event in (`after`, `upTo`] that the stream wants and may see; returns the last seq covered.
    static func replay(after: Int64, upTo floor: Int64, filter: StreamFilter, subscriber: StreamSubscriber, db: any Database,
                       send: (StreamEvent) async throws -> Void) async throws -> Int64 {
        var cursor = after
        while cursor < floor, subscriber.closeReason == nil {
            var query = Event.query(on: db).filter(\.$seq > cursor).filter(\.$seq <= floor).sort(\.$seq).limit(500)
            if let resourceID = filter.resourceID { query = query.filter(\.$resourceID == resourceID) }
            let events = try await query.listed()
            guard !events.isEmpty else { break }
            let grants = subscriber.grants
            for event in events {
                let streamEvent = try StreamEvent(event)
                cursor = event.seq
                if filter.matches(streamEvent), streamEvent.visible(to: subscriber.userID, grants: grants) {
                    try await send(streamEvent)
                }
            }
        }
        return max(cursor, floor)
    }
}
