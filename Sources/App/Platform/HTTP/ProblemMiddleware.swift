import NIOHTTP1
import SQLiteNIO
import StewardFormats
import StewardSQLite
import PostgresNIO
import Vapor

/// Turns every error into an RFC 9457 problem response; a 500 never shows internals.
struct ProblemMiddleware: AsyncMiddleware {
    let maxBodySize: Int

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        let response: Response
        do {
            if NULCharacter.isIn(address: request.url.string) { throw NULCharacter(place: "The address") }
            response = try await next.respond(to: request)
        } catch {
            response = makeResponse(for: error, request: request)
        }
        // Every answer of a rate-limited route says where the caller stands (IETF RateLimit headers).
        RateLimitHeaders.apply(request.rateLimitDecisions, to: &response.headers)
        return response
    }

    func makeResponse(for error: any Error, request: Request) -> Response {
        let (status, code, detail, fields, headers) = classify(error, request: request)
        if status.code >= 500 {
            request.logger.error("Unhandled error", metadata: ["error": "\(String(reflecting: error))"])
        }
        let body = ProblemDetails(status: status, code: code, detail: detail, errors: fields.isEmpty ? nil : fields,
                                  requestId: request.requestID)
        var responseHeaders = headers
        responseHeaders.replaceOrAdd(name: .contentType, value: "application/problem+json; charset=utf-8")
        let response = Response(status: status, headers: responseHeaders)
        do {
            response.body = .init(data: try APIJSON.data(body))
        } catch {
            response.body = .init(string: #"{"status":500,"code":"internal","title":"Internal Server Error"}"#)
        }
        return response
    }

    private func classify(_ error: any Error, request: Request)
        -> (HTTPResponseStatus, String, String?, [FieldProblem], HTTPHeaders)
    {
        switch error {
        case let problem as any ProblemError:
            return (problem.status, problem.code, problem.reason, problem.fieldProblems, problem.headers)
        case let sqlite as SQLiteError where Self.lockContention.contains(sqlite.reason):
            // The database stayed locked past the busy timeout: a transient overload, not a bug.
            return (.serviceUnavailable, "unavailable", "The database is busy; retry shortly.", [], ["Retry-After": "1"])
        case let sqlite as SQLiteDirectError where sqlite.isBusy:
            return (.serviceUnavailable, "unavailable", "The database is busy; retry shortly.", [], ["Retry-After": "1"])
        case let postgres as PSQLError where Self.isOutage(postgres):
            // PostgreSQL is down, restarting or out of connections: the request did nothing, and may be sent again.
            return (.serviceUnavailable, "unavailable", "The database cannot be reached; retry shortly.", [], ["Retry-After": "2"])
        case let postgres as PSQLError where postgres.serverInfo?[.sqlState] == "22021":
            // Text PostgreSQL cannot store (the NUL character) that reached a statement past the request's checks.
            return (.badRequest, "bad_request", "The request holds text the database cannot store (the NUL character).", [], [:])
        case is ConnectionPoolTimeoutError, is ConnectionPoolError:
            return (.serviceUnavailable, "unavailable", "No database connection came free in time; retry shortly.", [], ["Retry-After": "2"])
        case is HTTPParserError:
            // The body could not be read to its end: most often the client closed the connection mid-body. That is
            // the client's doing, not a server error; no one is left to read this answer.
            return (.badRequest, "bad_request", "The request could not be read to its end.", [], [:])
        case let decoding as DecodingError:
            return Self.classify(decoding, body: request.body.data)
        case let validations as ValidationsError:
            let fields = validations.failures.compactMap { failure -> FieldProblem? in
                guard let reason = failure.result.failureDescription else { return nil }
                return FieldProblem(field: failure.key.description, message: reason)
            }
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.", fields, [:])
        case let abort as any AbortError:
            let status = abort.status
            var detail: String? = abort.reason
            switch status {
            case .payloadTooLarge:
                detail = "The request body is larger than the limit of \(maxBodySize) bytes."
            case .unsupportedMediaType:
                detail = "Send the body as application/json."
            case .notFound where abort.reason == status.reasonPhrase:
                detail = "No resource at \(request.method.rawValue) \(request.url.path)."
            default:
                if status.code >= 500 { detail = "An unexpected error occurred." }
            }
            return (status, ProblemDetails.code(for: status), detail, [], status.code >= 500 ? [:] : abort.headers)
        default:
            return (.internalServerError, "internal", "An unexpected error occurred.", [], [:])
        }
    }

    /// Connection failures, and the server's own refusals while it shuts down, starts or is full (SQLSTATE class
    /// 08, 57P01-57P03, 53300). Errors of a statement (constraints, syntax) are not outages.
    static func isOutage(_ error: PSQLError) -> Bool {
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed:
            // clientClosedConnection: a statement sent while the connection was closing, most often after the
            // server ended the session (57P01 in a fast shutdown), so the statement never ran.
            return true
        case .server:
            guard let state = error.serverInfo?[.sqlState] else { return false }
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300"].contains(state)
        default:
            return false
        }
    }

    static let lockContention: Set<SQLiteError.Reason> = [.busy, .busyTimeout, .busyInSnapshot, .busyInRecovery, .locked]

    /// Malformed JSON is a 400; well-formed JSON of the wrong shape is a 422 naming the field.
    static func classify(_ error: DecodingError, body: ByteBuffer?) -> (HTTPResponseStatus, String, String?, [FieldProblem], HTTPHeaders) {
        func path(_ codingPath: [any CodingKey], _ extra: (any CodingKey)? = nil) -> String {
            let keys = codingPath + (extra.map { [$0] } ?? [])
            let rendered = keys.map { key in key.intValue.map { "[\($0)]" } ?? key.stringValue }
                .reduce("") { partial, item in
                    item.hasPrefix("[") || partial.isEmpty ? partial + item : partial + "." + item
                }
            return rendered.isEmpty ? "body" : rendered
        }
        // Whatever the decoder made of it, a body that is not JSON (bad syntax, or bytes that are not UTF-8, which
        // the decoder reports as a wrong type where they stand) is malformed.
        let notJSON: (HTTPResponseStatus, String, String?, [FieldProblem], HTTPHeaders) =
            (.badRequest, "bad_request", "The request body is not valid JSON.", [], [:])
        if let body, !JSONText.isJSON(body) { return notJSON }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            // Foundation on Linux reports some type errors (1.5 for an integer) as invalid JSON with no path; a body
            // that parses has the wrong shape, not the wrong syntax.
            guard body != nil else { return notJSON }
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.",
                    [FieldProblem(field: "body", message: "has a value of the wrong type (for example a fraction where an integer is required)")], [:])
        case .dataCorrupted(let context):
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.",
                    [FieldProblem(field: path(context.codingPath), message: "has an invalid value")], [:])
        case .keyNotFound(let key, let context):
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.",
                    [FieldProblem(field: path(context.codingPath, key), message: "is required")], [:])
        case .valueNotFound(let type, let context):
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.",
                    [FieldProblem(field: path(context.codingPath), message: "must be \(typeName(type)), not null")], [:])
        case .typeMismatch(let type, let context):
            return (.unprocessableEntity, "validation_failed", "The request has invalid fields.",
                    [FieldProblem(field: path(context.codingPath), message: "must be \(typeName(type))")], [:])
        @unknown default:
            return (.badRequest, "bad_request", "The request body could not be read.", [], [:])
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "a boolean"
        case is UUID.Type: return "a UUID"
        case is Date.Type: return "an RFC 3339 timestamp"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "a valid value"
        }
    }
}
