import Fluent
import Foundation
import NIOConcurrencyHelpers
import StewardFormats
import Vapor

/// `steward mcp --stdio`: the MCP tools over standard input and output, for an agent that starts Steward as a
/// local process. One JSON-RPC message per line each way; logs go to standard error.
///
/// It acts as the user of the API key in `STEWARD_API_KEY` (with the key's scopes and tool allow-list), against the
/// configured database. Both revisions: 2026-07-28 (each request carries its version in `_meta`) and the 2025
/// handshake (`initialize`; the negotiated version then holds for the process). A call's progress is written as
/// `notifications/progress`; `notifications/cancelled` cancels the call's execution. The process runs job workers
/// (`STEWARD_WORKERS`, `0` to leave the runs to a server on the same database).
struct MCPStdioCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Flag(name: "stdio", help: "Speak MCP over standard input and output (the only transport of this command).")
        var stdio: Bool
    }

    var help: String { "Serves the MCP tools over stdin/stdout, as the user of the API key in STEWARD_API_KEY." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard signature.stdio else { throw CommandFailure("Say how to serve: steward mcp --stdio") }
        let app = context.application
        guard let raw = ProcessInfo.processInfo.environment["STEWARD_API_KEY"], !raw.isEmpty else {
            throw CommandFailure("STEWARD_API_KEY must hold the API key (stw_…) the tools run as")
        }
        if try await MigrationService(app: app).pendingCount(on: app.db).pending > 0 {
            throw CommandFailure("migrations are pending; run `steward migrate` first")
        }
        await app.runtimeSettings.load(app)
        guard app.settings.isEnabled(.mcp) else { throw CommandFailure(FeatureDisabled(feature: .mcp).reason) }
        let caller = try await MCPStdio.caller(apiKey: raw, app: app)
        app.settingsWatcher.start(app)
        app.jobWorkers.start(app)
        app.jobNotificationListener?.start(app)
        app.ledgerSequencerLoop?.start(app)
        app.logger.notice("MCP over stdio, as \(caller.user.email)")
        try await MCPStdio(app: app, caller: caller).serve()
    }
}

final class MCPStdio: @unchecked Sendable {
    let app: Application
    let caller: AuthenticatedCaller
    private let output = NIOLock()
    /// The 2025 handshake's version and client, once `initialize` came.
    private let session = NIOLockedValueBox<(version: String, clientName: String?, clientVersion: String?)?>(nil)
    /// Tool calls in flight, by request id, so `notifications/cancelled` can reach them.
    private let calls = NIOLockedValueBox<[JSONRPCID: Task<Void, Never>]>([:])

    init(app: Application, caller: AuthenticatedCaller) {
        self.app = app
        self.caller = caller
    }

    /// The key's caller, checked as an HTTP request's would be.
    static func caller(apiKey raw: String, app: Application) async throws -> AuthenticatedCaller {
        guard let prefix = APIKeyFormat.prefix(of: raw),
              let (key, user, ownerGrants) = try await CallerLookup.apiKey(.apiKeyPrefix(prefix), on: app.db, readers: app.sqliteReaders),
              SecureToken.constantTimeEquals(SecureToken.hash(raw), key.keyHash),
              key.isUsable(at: app.wallClock.now()), user.status == .active
        else { throw CommandFailure("STEWARD_API_KEY is not a usable API key (unknown, revoked, expired, or its user is not active)") }
        var grants = ownerGrants
        grants.permissions.formIntersection(key.scopes)
        return AuthenticatedCaller(user: user, session: nil, apiKey: key, method: .apiKey, grants: grants)
    }

    func write(_ line: String) {
        output.withLock { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    }

    /// Reads lines until standard input ends, then waits for the calls in flight.
    func serve() async throws {
        // Blocking reads on a thread of their own, so no thread of the concurrency pool waits on the pipe.
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let reader = Thread {
            while let line = readLine(strippingNewline: true) { continuation.yield(line) }
            continuation.finish()
        }
        reader.start()
        for await line in lines {
            guard !line.isEmpty else { continue }
            await handle(line)
        }
        for task in calls.withLockedValue({ Array($0.values) }) { await task.value }
    }

    private func handle(_ line: String) async {
        var id: JSONRPCID?
        do {
            var buffer = ByteBuffer()
            buffer.writeString(line)
            guard buffer.readableBytes <= app.appConfig.maxBodySize else { throw JSONRPCError.invalidRequest("The message is larger than STEWARD_MAX_BODY_SIZE.") }
            let message: JSONRPCMessage
            do {
                message = try JSONRPCMessage.read(buffer, id: &id)
            } catch is JSONRPCMessage.ClientResponse {
                return
            }
            let context = try context(for: message)
            app.metrics.recordMCPRequest(method: message.method, outcome: "ok")
            if message.isNotification {
                if message.method == "notifications/cancelled", let raw = message.params["requestId"] {
                    var target: JSONRPCID?
                    if case .string(let text) = raw { target = .string(text) }
                    if case .number(let number) = raw, number == number.rounded(), abs(number) <= 9_007_199_254_740_991 { target = .number(Int64(number)) }
                    if let target, let task = calls.withLockedValue({ $0[target] }) { task.cancel() }
                }
                return
            }
            let requestID = message.id!
            switch message.method {
            case "initialize":
                var version = MCPVersion.legacy[0]
                if case .string(let asked)? = message.params["protocolVersion"], MCPVersion.legacy.contains(asked) { version = asked }
                let (name, clientVersion) = MCPController.clientInfo(message.params["clientInfo"])
                session.withLockedValue { $0 = (version, name, clientVersion) }
                write(JSONRPCResponse.result(requestID, MCPServer.initializeResult(version: version)))
            case "tools/call":
                let call = try MCPToolCall(message.params, id: requestID, context: context)
                let task = Task {
                    let send: MCPToolCall.Send = { [weak self] text in
                        if !text.isEmpty { self?.write(text) }
                        if Task.isCancelled { throw MCPStreamGone() }
                    }
                    do {
                        self.write(JSONRPCResponse.result(requestID, try await call.run(send: send)))
                    } catch is MCPStreamGone {
                        // Cancelled by the client: no answer is due.
                    } catch {
                        self.write(JSONRPCResponse.error(requestID, Self.rpcError(error)))
                    }
                    _ = self.calls.withLockedValue { $0.removeValue(forKey: requestID) }
                }
                calls.withLockedValue { $0[requestID] = task }
            default:
                guard let value = try await MCPServer.answer(message, context) else { throw JSONRPCError.methodNotFound(message.method) }
                write(JSONRPCResponse.result(requestID, value))
            }
        } catch {
            app.metrics.recordMCPRequest(method: "other", outcome: "error")
            // An error to a notification is not answered.
            if id != nil || error is JSONRPCError { write(JSONRPCResponse.error(id, Self.rpcError(error))) }
        }
    }

    private func context(for message: JSONRPCMessage) throws -> MCPContext {
        let meta = message.meta
        if case .string(let version)? = meta[MCPVersion.metaVersion] {
            guard MCPVersion.all.contains(version) else { throw JSONRPCError.unsupportedVersion(version) }
            let (name, clientVersion) = MCPController.clientInfo(meta[MCPVersion.metaClientInfo])
            return MCPContext(app: app, caller: caller, version: version, clientName: name, clientVersion: clientVersion, sessionID: nil, origin: .system)
        }
        let handshake = session.withLockedValue { $0 }
        return MCPContext(app: app, caller: caller, version: handshake?.version ?? MCPVersion.legacy[0], clientName: handshake?.clientName,
                          clientVersion: handshake?.clientVersion, sessionID: nil, origin: .system)
    }

    private static func rpcError(_ error: any Error) -> JSONRPCError {
        if let error = error as? JSONRPCError { return error }
        if let problem = error as? any ProblemError, problem.status.code < 500 { return JSONRPCError(code: -32600, message: problem.reason) }
        return .internalError()
    }
}
