import Vapor
import StewardFormats

extension Request {
    private struct RequestIDKey: StorageKey { typealias Value = String }

    /// The id of this request: the client's `X-Request-ID` when it is sane, else a new UUID.
    public var requestID: String {
        get { storage[RequestIDKey.self] ?? id }
        set { storage[RequestIDKey.self] = newValue }
    }
}

/// Gives each request its id, echoes it in `X-Request-ID`, logs one line per request, and counts it in the
/// metrics and the admin stats under its route pattern.
struct RequestContextMiddleware: AsyncMiddleware {
    /// Client-sent ids are accepted only in this shape, so logs cannot be forged through them.
    static func isAcceptable(_ candidate: String) -> Bool {
        guard (1...128).contains(candidate.utf8.count) else { return false }
        return candidate.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E || byte == 0x3A
        }
    }

    let problems: ProblemMiddleware

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        let started = ContinuousClock.now
        let clientID = request.headers.first(name: "X-Request-ID")
        let id = clientID.flatMap { Self.isAcceptable($0) ? $0 : nil } ?? UUID.pooledRandom().lowercasedString
        request.requestID = id
        // Setting metadata rebuilds a stream log handler's prefix: only when the server did not give the logger this id.
        if request.logger[metadataKey: "request-id"] != .string(id) { request.logger[metadataKey: "request-id"] = .string(id) }
        let metrics = request.application.metrics
        metrics.requestStarted()
        defer { metrics.requestFinished() }

        let response: Response
        do {
            response = try await next.respond(to: request)
        } catch {
            response = problems.makeResponse(for: error, request: request)
        }
        response.headers.replaceOrAdd(name: "X-Request-ID", value: id)

        let elapsed = ContinuousClock.now - started
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let route = request.route.map { "/" + $0.path.map(\.description).joined(separator: "/") } ?? "(unmatched)"
        metrics.recordRequest(method: request.method.rawValue, route: route, status: response.status.code, duration: elapsed)
        let method = AppMetrics.methodLabel(request.method.rawValue)
        request.application.requestStats.record(route: "\(method) \(route)", status: response.status.code, milliseconds: milliseconds,
                                                at: request.application.wallClock.now())
        request.logger.info("\(request.method.rawValue) \(route) \(response.status.code)", metadata: [
            "method": .string(request.method.rawValue),
            "route": .string(route),
            "status": .stringConvertible(response.status.code),
            "durationMs": .string(String(format: "%.2f", milliseconds)),
        ])
        return response
    }
}
