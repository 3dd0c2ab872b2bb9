import Fluent
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardFormats
import Vapor

/// The MCP endpoint (Streamable HTTP) at `/mcp`, and its Protected Resource Metadata (RFC 9728).
///
/// Two revisions on one endpoint, told apart per request:
/// - **2026-07-28**: every POST stands alone. `MCP-Protocol-Version`, `Mcp-Method` and (for `tools/call` and
///   `resources/read`) `Mcp-Name` must match the body; the version and the client's capabilities travel in
///   `params._meta`. GET and DELETE answer 405.
/// - **2025-11-25** (and 2025-06-18, 2025-03-26): `initialize` opens a session stored in the database, whose id the
///   client sends back in `Mcp-Session-Id`; DELETE ends it.
///
/// Credentials are a bearer access token or an API key, never the session cookie (a browser page must not be able
/// to call tools in its user's name). A request with an `Origin` that is not allowed gets 403 (DNS rebinding).
struct MCPController: RouteCollection {
    static let resourceMetadataPath = "/.well-known/oauth-protected-resource/mcp"

    func boot(routes: any RoutesBuilder) throws {
        let mcp = routes.grouped(FeatureGate(.mcp)).grouped("mcp").grouped(SessionAuthenticator())
        mcp.on(.POST, body: .collect(maxSize: nil), use: post)
        mcp.get(use: get)
        mcp.delete(use: delete)
        routes.get(".well-known", "oauth-protected-resource", "mcp", use: resourceMetadata)
    }

    // MARK: Protected Resource Metadata

    @Sendable
    func resourceMetadata(req: Request) async throws -> Response {
        let config = req.application.appConfig
        let document: JSONValue = [
            "resource": .string(config.publicURL + "/mcp"),
            // Steward's own authorization server arrives with OAuth sign-in; until then none is named.
            "authorization_servers": [],
            "bearer_methods_supported": ["header"],
            "scopes_supported": .array(Permission.allCases.map { .string($0.rawValue) }),
            "resource_name": "Steward MCP",
            "resource_documentation": .string(config.publicURL + "/openapi.yaml"),
        ]
        return Self.json(try document.canonicalString(), status: .ok)
    }

    // MARK: POST

    @Sendable
    func post(req: Request) async throws -> Response {
        let app = req.application
        var id: JSONRPCID?
        var method = "unknown"
        do {
            try Self.checkOrigin(req)
            let caller = try Self.caller(req)
            let message: JSONRPCMessage
            do {
                message = try JSONRPCMessage.read(req.body.data, id: &id)
            } catch is JSONRPCMessage.ClientResponse {
                // A response to a request of ours: Steward sends none, so there is nothing to match it with.
                return Response(status: .accepted)
            }
            method = message.method
            let context = try await context(for: message, req: req, caller: caller)
            try await RateLimiter(app: app).check(
                req, [(app.rateLimitPolicies.apiUser, "mcp:\(caller.user.id.lowercasedString):\(context.clientName ?? "")")], onStoreFailure: .failOpen)
            if message.isNotification {
                try await notification(message, context: context)
                app.metrics.recordMCPRequest(method: method, outcome: "ok")
                return Response(status: .accepted)
            }
            let requestID = message.id!
            if message.method == "tools/call" {
                let call = try MCPToolCall(message.params, id: requestID, context: context)
                // 2026-07-28: a stream, since closing it is how a client cancels. 2025 sessions cancel with
                // notifications/cancelled, so they get a stream only when they asked for progress (some clients,
                // such as the Swift SDK on Linux, accept one but cannot read it).
                if Self.acceptsStream(req), context.isModern || call.progressToken != nil {
                    app.metrics.recordMCPRequest(method: method, outcome: "ok")
                    return stream(call, id: requestID, context: context, req: req)
                }
                let result = try await call.run(send: nil)
                app.metrics.recordMCPRequest(method: method, outcome: "ok")
                return Self.json(JSONRPCResponse.result(requestID, result), status: .ok, session: context.sessionID)
            }
            if message.method == "subscriptions/listen" {
                guard context.isModern else { throw JSONRPCError.methodNotFound(message.method) }
                var wanted = false
                if case .object(let filter)? = message.params["notifications"], filter["toolsListChanged"] == .bool(true) { wanted = true }
                app.metrics.recordMCPRequest(method: method, outcome: "ok")
                return try await listChangedStream(req: req, caller: caller, session: nil,
                                                   subscription: (requestID, wanted), resumeAfter: nil)
            }
            let result = try await answer(message, context: context, req: req)
            app.metrics.recordMCPRequest(method: method, outcome: "ok")
            return Self.json(JSONRPCResponse.result(requestID, result.value), status: .ok, session: result.session ?? context.sessionID)
        } catch let error as JSONRPCError {
            app.metrics.recordMCPRequest(method: method, outcome: "error")
            let response = Self.json(JSONRPCResponse.error(id, error), status: error.status)
            for (name, value) in error.headers { response.headers.replaceOrAdd(name: name, value: value) }
            return response
        } catch let error as any ProblemError where error.status.code < 500 {
            app.metrics.recordMCPRequest(method: method, outcome: "error")
            let code = error.status == .tooManyRequests ? -32000 : -32600
            let response = Self.json(JSONRPCResponse.error(id, JSONRPCError(code: code, message: error.reason)), status: error.status)
            for (name, value) in error.headers { response.headers.replaceOrAdd(name: name, value: value) }
            return response
        } catch {
            app.metrics.recordMCPRequest(method: method, outcome: "error")
            req.logger.error("MCP request failed: \(String(describing: error))")
            return Self.json(JSONRPCResponse.error(id, .internalError()), status: .internalServerError)
        }
    }

    /// The revision, session and client of a message, checked against its headers.
    private func context(for message: JSONRPCMessage, req: Request, caller: AuthenticatedCaller) async throws -> MCPContext {
        let app = req.application
        let headerVersion = req.headers.first(name: "MCP-Protocol-Version")
        let sessionHeader = req.headers.first(name: "Mcp-Session-Id")
        let meta = message.meta
        if message.method == "initialize" {
            return MCPContext(app: app, caller: caller, version: MCPVersion.legacy[0], clientName: nil, clientVersion: nil,
                              sessionID: nil, origin: req.origin)
        }
        // A 2025 session.
        if let sessionHeader {
            guard let sessionID = UUID(text: sessionHeader) else {
                throw JSONRPCError(code: -32600, message: "The session does not exist; initialize a new one.", status: .notFound)
            }
            let session = try await MCPSessions.find(sessionID, caller: caller, app: app)
            if let headerVersion, headerVersion != session.protocolVersion {
                throw JSONRPCError.invalidRequest("MCP-Protocol-Version \(headerVersion) is not the session's version (\(session.protocolVersion)).")
            }
            return MCPContext(app: app, caller: caller, version: session.protocolVersion, clientName: session.clientName,
                              clientVersion: session.clientVersion, sessionID: sessionID, origin: req.origin)
        }
        // 2026-07-28: everything is in the request.
        let bodyVersion: String? = if case .string(let text)? = meta[MCPVersion.metaVersion] { text } else { nil }
        guard let version = headerVersion ?? bodyVersion else {
            throw JSONRPCError.invalidRequest("Send MCP-Protocol-Version: \(MCPVersion.modern) with the request's _meta, or initialize a session.")
        }
        guard version == MCPVersion.modern else {
            if MCPVersion.legacy.contains(version) {
                throw JSONRPCError.invalidRequest("Protocol version \(version) needs a session: send initialize first, then Mcp-Session-Id.")
            }
            throw JSONRPCError.unsupportedVersion(version)
        }
        guard let headerVersion else { throw JSONRPCError.headerMismatch("MCP-Protocol-Version is required.") }
        guard let bodyVersion else {
            throw JSONRPCError.invalidParams("_meta[\"\(MCPVersion.metaVersion)\"] is required.", status: .badRequest)
        }
        guard bodyVersion == headerVersion else {
            throw JSONRPCError.headerMismatch("MCP-Protocol-Version \(headerVersion) does not match the body's \(bodyVersion).")
        }
        guard case .object? = meta[MCPVersion.metaCapabilities] else {
            throw JSONRPCError.invalidParams("_meta[\"\(MCPVersion.metaCapabilities)\"] is required.", status: .badRequest)
        }
        if !message.isNotification {
            guard let methodHeader = req.headers.first(name: "Mcp-Method") else { throw JSONRPCError.headerMismatch("Mcp-Method is required.") }
            guard methodHeader == message.method else {
                throw JSONRPCError.headerMismatch("Mcp-Method \(methodHeader) does not match the body's \(message.method).")
            }
            let nameKey = message.method == "tools/call" ? "name" : message.method == "resources/read" ? "uri" : nil
            if let nameKey, case .string(let bodyName)? = message.params[nameKey] {
                guard let raw = req.headers.first(name: "Mcp-Name") else { throw JSONRPCError.headerMismatch("Mcp-Name is required.") }
                guard let headerName = Self.decodedHeader(raw), headerName == bodyName else {
                    throw JSONRPCError.headerMismatch("Mcp-Name does not match the body's \(nameKey).")
                }
            }
        }
        let (clientName, clientVersion) = Self.clientInfo(meta[MCPVersion.metaClientInfo])
        return MCPContext(app: app, caller: caller, version: version, clientName: clientName, clientVersion: clientVersion,
                          sessionID: nil, origin: req.origin)
    }

    /// `=?base64?…?=` values decoded; plain values as they are.
    static func decodedHeader(_ raw: String) -> String? {
        guard raw.hasPrefix("=?base64?"), raw.hasSuffix("?="), raw.utf8.count >= 11 else { return raw }
        let encoded = String(raw.dropFirst(9).dropLast(2))
        guard let data = Data(base64Encoded: encoded) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    static func clientInfo(_ value: JSONValue?) -> (String?, String?) {
        guard case .object(let info)? = value else { return (nil, nil) }
        func text(_ key: String) -> String? {
            if case .string(let value)? = info[key], !value.isEmpty { return String(value.prefix(200)) }
            return nil
        }
        return (text("name"), text("version"))
    }

    private struct Answer {
        var value: JSONValue
        /// A session opened by this message (initialize).
        var session: UUID?
    }

    private func answer(_ message: JSONRPCMessage, context: MCPContext, req: Request) async throws -> Answer {
        switch message.method {
        case "initialize":
            guard context.sessionID == nil, req.headers.first(name: "Mcp-Session-Id") == nil else {
                throw JSONRPCError.invalidRequest("This request already belongs to a session.")
            }
            var version = MCPVersion.legacy[0]
            if case .string(let asked)? = message.params["protocolVersion"], MCPVersion.legacy.contains(asked) { version = asked }
            let (name, clientVersion) = Self.clientInfo(message.params["clientInfo"])
            let session = try await MCPSessions.open(caller: context.caller, version: version, clientName: name, clientVersion: clientVersion, app: context.app)
            return Answer(value: MCPServer.initializeResult(version: version), session: session)
        default:
            guard let value = try await MCPServer.answer(message, context) else {
                throw JSONRPCError.methodNotFound(message.method, status: context.isModern ? .notFound : .ok)
            }
            return Answer(value: value)
        }
    }

    private func notification(_ message: JSONRPCMessage, context: MCPContext) async throws {
        switch message.method {
        case "notifications/cancelled":
            // Cancels the execution the named request made in this session (2025 revisions).
            guard let sessionID = context.sessionID, let raw = message.params["requestId"] else { return }
            var id: JSONRPCID?
            if case .string(let text) = raw { id = .string(text) }
            if case .number(let number) = raw, number == number.rounded(), abs(number) <= 9_007_199_254_740_991 { id = .number(Int64(number)) }
            guard let id else { return }
            let userID = context.caller.user.id
            if let execution = try await Execution.query(on: context.app.db).filter(\.$mcpSessionID == sessionID)
                .filter(\.$mcpRequestID == id.stored).filter(\.$user.$id == userID).first(), !execution.status.isFinished {
                _ = try? await ExecutionService(app: context.app).cancel(try execution.requireID(), caller: context.caller, origin: context.origin)
            }
        default:
            // notifications/initialized, progress and the rest need no action.
            return
        }
    }

    // MARK: Streams

    static func acceptsStream(_ req: Request) -> Bool {
        req.headers[.accept].contains { $0.lowercased().contains("text/event-stream") }
    }

    /// A `tools/call` answered as an SSE stream: its progress, then its result. Closing the stream cancels the call.
    private func stream(_ call: MCPToolCall, id: JSONRPCID, context: MCPContext, req: Request) -> Response {
        var headers = HTTPHeaders.eventStream
        if let session = context.sessionID { headers.replaceOrAdd(name: "Mcp-Session-Id", value: session.lowercasedString) }
        let response = Response(status: .ok, headers: headers)
        let logger = req.logger
        response.stream({ writer in
            let send: MCPToolCall.Send = { text in
                do {
                    let frame = text.isEmpty ? ":\n\n" : "event: message\ndata: \(text)\n\n"
                    try await writer.write(.buffer(ByteBuffer(string: frame)))
                } catch {
                    throw MCPStreamGone()
                }
            }
            let text: String
            do {
                text = JSONRPCResponse.result(id, try await call.run(send: send))
            } catch is MCPStreamGone {
                try? await writer.write(.end)
                return
            } catch let error as JSONRPCError {
                text = JSONRPCResponse.error(id, error)
            } catch let error as any ProblemError where error.status.code < 500 {
                text = JSONRPCResponse.error(id, JSONRPCError(code: -32600, message: error.reason))
            } catch {
                logger.error("MCP tool call failed: \(String(describing: error))")
                text = JSONRPCResponse.error(id, .internalError())
            }
            try? await writer.write(.buffer(ByteBuffer(string: "event: message\ndata: \(text)\n\n")))
            try? await writer.write(.end)
        })
        return response
    }

    /// Events after which the caller's tool list may differ: a skill created, changed or deleted, and the
    /// caller's own account changed (roles, status).
    private static let catalogueEvents = StreamFilter(types: ["skill.*", "user.updated"], resourceID: nil)

    private static func changesCatalogue(_ event: StreamEvent, for userID: UUID) -> Bool {
        event.type.hasPrefix("skill.") || (event.type == "user.updated" && event.resourceID == userID.lowercasedString)
    }

    /// An SSE stream of `notifications/tools/list_changed`: a 2025 session's GET stream (`session`), or a
    /// 2026-07-28 `subscriptions/listen` (`subscription`: its request id, and whether the client asked for tool
    /// changes), which first acknowledges and tags every notification with the subscription id.
    private func listChangedStream(req: Request, caller: AuthenticatedCaller, session: UUID?, subscription: (id: JSONRPCID, tools: Bool)?,
                                   resumeAfter: Int64?) async throws -> Response {
        guard let credential = StreamCredential(caller) else { throw JSONRPCError(code: -32001, message: "No credential.", status: .unauthorized) }
        let app = req.application
        let hub = app.eventHub
        let settings = await hub.settings
        let userID = caller.user.id
        let subscriber = StreamSubscriber(userID: userID, credential: credential, grants: caller.grants, filter: Self.catalogueEvents,
                                          capacity: settings.bufferEvents)
        let floor: Int64
        do {
            floor = try await hub.register(subscriber)
        } catch let error as StreamError {
            throw JSONRPCError(code: -32000, message: error.reason, status: error.status, headers: error.headers)
        }
        var headers = HTTPHeaders.eventStream
        if let session { headers.replaceOrAdd(name: "Mcp-Session-Id", value: session.lowercasedString) }
        let response = Response(status: .ok, headers: headers)
        let logger = req.logger
        response.stream({ writer in
            let done = EventStreamController.cutWhenStuck(subscriber, writer: writer, grace: settings.closeGrace)
            var meta: JSONValue? = nil
            if let subscription { meta = [MCPVersion.metaSubscriptionID: subscription.id.json] }
            func notification(_ method: String, _ params: [String: JSONValue], id: Int64?) -> ByteBuffer {
                var params = params
                if let meta { params["_meta"] = meta }
                let line = id.map { "id: \($0)\n" } ?? ""
                return ByteBuffer(string: "event: message\n\(line)data: \(JSONRPCResponse.notification(method, .object(params)))\n\n")
            }
            let sendsTools = subscription?.tools ?? true
            var cursor = resumeAfter ?? floor
            do {
                if subscription != nil {
                    let agreed: [String: JSONValue] = sendsTools ? ["toolsListChanged": true] : [:]
                    try await writer.write(.buffer(notification("notifications/subscriptions/acknowledged", ["notifications": .object(agreed)], id: nil)))
                } else {
                    try await writer.write(.buffer(ByteBuffer(string: ":\n\n")))
                }
                if let resumeAfter, sendsTools {
                    var missed: Int64?
                    cursor = try await StreamReplay.replay(after: resumeAfter, upTo: floor, filter: Self.catalogueEvents, subscriber: subscriber, db: app.db) { event in
                        if Self.changesCatalogue(event, for: userID) { missed = event.seq }
                    }
                    // What changed while the client was away: one notice is enough.
                    if let missed { try await writer.write(.buffer(notification("notifications/tools/list_changed", [:], id: missed))) }
                }
                _ = try await subscriber.follow(after: max(cursor, floor), heartbeat: settings.heartbeat) { event in
                    if sendsTools, Self.changesCatalogue(event, for: userID) {
                        try await writer.write(.buffer(notification("notifications/tools/list_changed", [:], id: subscription == nil ? event.seq : nil)))
                    }
                } beat: {
                    try await writer.write(.buffer(ByteBuffer(string: ":\n\n")))
                }
                // Ended by the server (shutdown, a revoked credential): a 2026 subscription gets its closing result.
                if let subscription {
                    let result: JSONValue = ["resultType": "complete", "_meta": [MCPVersion.metaSubscriptionID: subscription.id.json]]
                    try await writer.write(.buffer(ByteBuffer(string: "event: message\ndata: \(JSONRPCResponse.result(subscription.id, result))\n\n")))
                }
            } catch {
                logger.debug("MCP notification stream ended: \(String(describing: error))")
            }
            subscriber.finish()
            await hub.unregister(subscriber)
            done.withLockedValue { $0 = true }
            try? await writer.write(.end)
        })
        return response
    }

    // MARK: GET and DELETE

    /// A 2025 session's stream for server messages: `notifications/tools/list_changed` whenever the caller's
    /// catalogue may have changed, each with the event's seq as its SSE id, so `Last-Event-ID` resumes from the
    /// event log. 2026-07-28 has no GET (it has `subscriptions/listen`).
    @Sendable
    func get(req: Request) async throws -> Response {
        do {
            try Self.checkOrigin(req)
            let caller = try Self.caller(req)
            guard let raw = req.headers.first(name: "Mcp-Session-Id") else {
                return Self.methodNotAllowed()
            }
            guard let sessionID = UUID(text: raw) else {
                throw JSONRPCError(code: -32600, message: "The session does not exist; initialize a new one.", status: .notFound)
            }
            _ = try await MCPSessions.find(sessionID, caller: caller, app: req.application)
            guard Self.acceptsStream(req) else { throw JSONRPCError(code: -32600, message: "Accept text/event-stream.", status: .notAcceptable) }
            var resumeAfter: Int64?
            if let raw = req.headers.first(name: "Last-Event-ID") {
                guard let value = Int64(raw.trimmingCharacters(in: .whitespaces)), value >= 0 else {
                    throw JSONRPCError.invalidRequest("Last-Event-ID must be an event id this stream sent.")
                }
                resumeAfter = value
            }
            let response = try await listChangedStream(req: req, caller: caller, session: sessionID, subscription: nil, resumeAfter: resumeAfter)
            return response
        } catch let error as JSONRPCError {
            return Self.failure(error)
        }
    }

    /// Ends a 2025 session.
    @Sendable
    func delete(req: Request) async throws -> Response {
        do {
            try Self.checkOrigin(req)
            let caller = try Self.caller(req)
            guard let raw = req.headers.first(name: "Mcp-Session-Id") else { return Self.methodNotAllowed() }
            guard let sessionID = UUID(text: raw) else {
                throw JSONRPCError(code: -32600, message: "The session does not exist.", status: .notFound)
            }
            try await MCPSessions.close(sessionID, caller: caller, app: req.application)
            return Response(status: .noContent)
        } catch let error as JSONRPCError {
            return Self.failure(error)
        }
    }

    // MARK: Checks and answers

    /// A present `Origin` must be the public URL's or one of `STEWARD_CORS_ORIGINS`.
    static func checkOrigin(_ req: Request) throws {
        guard req.headers.first(name: .origin) != nil else { return }
        do {
            try EventStreamController.checkOrigin(req)
        } catch {
            throw JSONRPCError(code: -32600, message: "This Origin may not use the MCP endpoint.", status: .forbidden)
        }
    }

    /// The caller from a bearer token or API key; 401 with where to find the resource metadata otherwise.
    static func caller(_ req: Request) throws -> AuthenticatedCaller {
        let metadata = req.application.appConfig.publicURL + resourceMetadataPath
        guard let caller = req.auth.get(AuthenticatedCaller.self), caller.method != .cookie else {
            let reason = req.authenticationFailure.map { _ in #", error="invalid_token""# } ?? ""
            throw JSONRPCError(code: -32001, message: "Authentication required: send Authorization: Bearer with an access token or API key.",
                               status: .unauthorized, headers: ["WWW-Authenticate": #"Bearer resource_metadata="\#(metadata)""# + reason])
        }
        return caller
    }

    static func json(_ text: String, status: HTTPResponseStatus, session: UUID? = nil) -> Response {
        var headers = HTTPHeaders()
        headers.contentType = .json
        if let session { headers.replaceOrAdd(name: "Mcp-Session-Id", value: session.lowercasedString) }
        return Response(status: status, headers: headers, body: .init(string: text))
    }

    static func failure(_ error: JSONRPCError) -> Response {
        let response = json(JSONRPCResponse.error(nil, error), status: error.status)
        for (name, value) in error.headers { response.headers.replaceOrAdd(name: name, value: value) }
        return response
    }

    static func methodNotAllowed() -> Response {
        let response = failure(JSONRPCError(code: -32600, message: "Protocol version \(MCPVersion.modern) uses POST only; GET and DELETE need a 2025 session.",
                                            status: .methodNotAllowed))
        response.headers.replaceOrAdd(name: .allow, value: "POST")
        return response
    }
}
