import NIOConcurrencyHelpers
import Vapor
import StewardFormats

/// Server address, limits, encoders and the middleware stack.
enum HTTPSetup {
    static func configure(_ app: Application, _ config: AppConfig) {
        app.http.server.configuration.hostname = config.host
        app.http.server.configuration.port = config.port
        app.http.server.configuration.shutdownTimeout = .seconds(Int64(config.shutdownGraceSeconds))
        // Steward's own server (`StewardHTTPServer`): connection limits, head and body deadlines, and answers to
        // malformed requests, none of which Vapor's server has a place for. It reads the address above.
        app.servers.use { app in app.stewardServer }
        app.routes.defaultMaxBodySize = ByteCount(value: config.maxBodySize)
        app.routes.caseInsensitive = false

        // Bodies are JSON and nothing else: Vapor's default configuration also decodes plain text, forms and
        // multipart, so such a body reached a JSON route as a 422 about its fields instead of the contract's 415.
        // Query strings keep their decoder; plain text stays for responses (metrics). JSON is read strictly
        // (`StrictJSONDecoder`).
        var content = ContentConfiguration()
        content.use(encoder: APIJSONContentEncoder(), for: .json)
        content.use(decoder: StrictJSONDecoder(decoder: JSONDecoder.api), for: .json)
        content.use(encoder: PlaintextEncoder(), for: .plainText)
        content.use(urlEncoder: URLEncodedFormEncoder())
        content.use(urlDecoder: URLEncodedFormDecoder())
        ContentConfiguration.global = content

        app.trustedProxies = config.trustedProxies.compactMap(CIDR.init)
        app.rateLimitStore = config.rateLimitStore == .database ? DatabaseRateLimitStore(app: app) : MemoryRateLimitStore()
        app.requestStats = RequestStats()
        app.metricsScrape = MetricsScrape()

        // Registered after the thread pools and workers, so it stops first: they outlive the requests that use them.
        app.lifecycle.use(RequestDrain())

        let problems = ProblemMiddleware(maxBodySize: config.maxBodySize)
        // As chains, which share one Task (`MiddlewareChain`); Vapor's CORS middleware is not asynchronous, and
        // stays between them when it is on.
        var middleware = Middlewares()
        if let cors = corsMiddleware(config) {
            middleware.use(RequestContextMiddleware(problems: problems))
            middleware.use(cors)
            middleware.use(MiddlewareChain(SecurityHeadersMiddleware(), problems))
        } else {
            middleware.use(MiddlewareChain(RequestContextMiddleware(problems: problems), SecurityHeadersMiddleware(), problems))
        }
        app.middleware = middleware
    }

    private static func corsMiddleware(_ config: AppConfig) -> CORSMiddleware? {
        guard !config.corsOrigins.isEmpty else { return nil }
        let allowed: CORSMiddleware.AllowOriginSetting = config.corsOrigins.contains("*")
            ? .all : .any(config.corsOrigins)
        return CORSMiddleware(configuration: .init(
            allowedOrigin: allowed,
            allowedMethods: [.GET, .POST, .PUT, .PATCH, .DELETE, .OPTIONS],
            allowedHeaders: [.accept, .authorization, .contentType, .origin, "X-Request-ID", "X-API-Key",
                             "X-CSRF-Token", "Idempotency-Key", "Last-Event-ID"],
            allowCredentials: !config.corsOrigins.contains("*"),
            cacheExpiration: 600,
            exposedHeaders: [HTTPHeaders.Name("X-Request-ID"), .retryAfter, HTTPHeaders.Name("RateLimit"), HTTPHeaders.Name("RateLimit-Policy"), .location]
        ))
    }
}

/// On shutdown, waits (up to `STEWARD_SHUTDOWN_GRACE_SECONDS`) for request handlers still running after the server
/// stopped accepting, before the thread pools and the database go away under them. A login queued for bcrypt
/// when SIGTERM arrives would otherwise resume against a closed database.
struct RequestDrain: LifecycleHandler {
    func shutdownAsync(_ application: Application) async {
        let deadline = ContinuousClock.now + .seconds(application.appConfig.shutdownGraceSeconds)
        while application.metrics.requestsInFlight > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = application.metrics.requestsInFlight
        if left > 0 { application.logger.warning("Shutting down with \(left) request(s) still running after the grace period") }
    }
}

/// Request bodies as RFC 8259 defines JSON. `JSONDecoder` on Linux lets a trailing comma pass, and reports bytes that
/// are not UTF-8 as a value of the wrong type where it meets them; here a body that is not one JSON text (checked with
/// `JSONText`) is refused as such, a 400, before the decoder reads it. So is a body with the NUL character (`\u0000`)
/// in any string or key (`NULCharacter`).
struct StrictJSONDecoder: ContentDecoder {
    let decoder: JSONDecoder

    func decode<D: Decodable>(_ decodable: D.Type, from body: ByteBuffer, headers: HTTPHeaders) throws -> D {
        try decode(D.self, from: body, headers: headers, userInfo: [:])
    }

    func decode<D: Decodable>(_ decodable: D.Type, from body: ByteBuffer, headers: HTTPHeaders,
                              userInfo: [CodingUserInfoKey: any Sendable]) throws -> D {
        guard let value = JSONText.parse(body) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "The body is not valid JSON."))
        }
        if NULCharacter.isIn(value) { throw NULCharacter(place: "The body") }
        return try decoder.decode(D.self, from: body, headers: headers, userInfo: userInfo)
    }
}

/// Steward refuses the NUL character (U+0000) in any text of a request: its path, its query and the strings and keys
/// of a JSON body, on both databases, with 400 `bad_request`. PostgreSQL cannot store it in text (SQLSTATE 22021)
/// and would fail the statement that binds it, so what SQLite would read as a name that matches nothing was a 500
/// there; a JSON value stored as text (an execution's input) could hold it, but one rule for all text is simpler to
/// rely on than one per field. `ProblemMiddleware` checks the address; `StrictJSONDecoder` the body.
struct NULCharacter: ProblemError {
    var place: String

    var status: HTTPResponseStatus { .badRequest }
    var code: String { "bad_request" }
    var reason: String { "\(place) contains the NUL character (U+0000), which Steward does not accept in any text." }

    /// Whether a string or key anywhere in `value` holds NUL.
    static func isIn(_ value: JSONValue) -> Bool {
        switch value {
        case .string(let text): text.utf8.contains(0)
        case .array(let items): items.contains(where: isIn)
        case .object(let members): members.contains { $0.key.utf8.contains(0) || isIn($0.value) }
        case .null, .bool, .number: false
        }
    }

    /// Whether the request's address (path or query) holds NUL, which can only arrive percent-encoded.
    static func isIn(address: String) -> Bool {
        var last = (UInt8(0), UInt8(0))
        for byte in address.utf8 {
            if byte == UInt8(ascii: "0"), last == (UInt8(ascii: "%"), UInt8(ascii: "0")) { return true }
            last = (last.1, byte)
        }
        return false
    }
}
