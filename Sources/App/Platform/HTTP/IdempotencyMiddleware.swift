import Crypto
import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// `Idempotency-Key` on unsafe requests of an authenticated caller: the same key and the same request within
/// 24 hours get the first response again; the same key with a different request is 422; the same key while the
/// first request is still running is 409. Keys are per user. A 5xx answer is not remembered, so it can be retried.
struct IdempotencyMiddleware: AsyncMiddleware {
    static let lifetime: TimeInterval = 24 * 3600
    static let largestRememberedBody = 1 << 20

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        guard [.POST, .PUT, .PATCH, .DELETE].contains(request.method),
              let key = request.headers.first(name: "Idempotency-Key"),
              let caller = request.auth.get(AuthenticatedCaller.self)
        else { return try await next.respond(to: request) }
        guard (1...255).contains(key.utf8.count), key.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7e }) else {
            throw HTTPProblem.validation([FieldProblem(field: "Idempotency-Key", message: "must be 1 to 255 visible ASCII characters")])
        }
        let app = request.application
        let userID = caller.user.id
        // Collecting here keeps the body on the request for the handler.
        let body = try await request.body.collect(max: app.appConfig.maxBodySize).get()
        var digest = SHA256()
        digest.update(data: Data("\(request.method.rawValue) \(request.url.path)\n".utf8))
        if let body { digest.update(data: Data(buffer: body)) }
        let hash = digest.finalize().hexString
        let now = app.wallClock.now()
        let sql = request.db as! any SQLDatabase

        // Reserve the key; a row that is there already answers for it.
        let reserved = try await app.writeStatements { sql in
            try await sql.raw("DELETE FROM idempotency_keys WHERE user_id = \(bind: userID) AND key = \(bind: key) AND expires_at < \(bind: now)").run()
            return try await sql.raw("""
                INSERT INTO idempotency_keys (id, user_id, key, request_hash, created_at, expires_at)
                VALUES (\(bind: UUID.pooledRandom()), \(bind: userID), \(bind: key), \(bind: hash), \(bind: now), \(bind: now.addingTimeInterval(Self.lifetime)))
                ON CONFLICT (user_id, key) DO NOTHING RETURNING id
                """).first()
        }
        if reserved == nil {
            guard let row = try await sql.raw("""
                SELECT request_hash, response_status, response_body, response_type FROM idempotency_keys WHERE user_id = \(bind: userID) AND key = \(bind: key)
                """).first() else { return try await next.respond(to: request) }
            guard let status = try row.decode(column: "response_status", as: Int?.self) else { throw IdempotencyError.inFlight }
            guard try row.decode(column: "request_hash", as: String.self) == hash else { throw IdempotencyError.differentRequest }
            let response = Response(status: HTTPResponseStatus(statusCode: status))
            if let type = try row.decode(column: "response_type", as: String?.self) { response.headers.replaceOrAdd(name: .contentType, value: type) }
            response.body = .init(string: try row.decode(column: "response_body", as: String?.self) ?? "")
            response.headers.replaceOrAdd(name: "Idempotent-Replayed", value: "true")
            return response
        }

        let response: Response
        do {
            response = try await next.respond(to: request)
        } catch {
            // Errors become problem responses further out; remember the 4xx ones like any other answer.
            let problem = ProblemMiddleware(maxBodySize: app.appConfig.maxBodySize).makeResponse(for: error, request: request)
            try await remember(problem, key: key, userID: userID, app: app)
            return problem
        }
        try await remember(response, key: key, userID: userID, app: app)
        return response
    }

    private func remember(_ response: Response, key: String, userID: UUID, app: Application) async throws {
        let body = response.body.buffer.map { String(buffer: $0) } ?? response.body.string
        guard response.status.code < 500, (body?.utf8.count ?? 0) <= Self.largestRememberedBody else {
            try await app.writeStatements { sql in
                try await sql.raw("DELETE FROM idempotency_keys WHERE user_id = \(bind: userID) AND key = \(bind: key)").run()
            }
            return
        }
        let status = Int(response.status.code), type = response.headers.first(name: .contentType)
        try await app.writeStatements { sql in
            try await sql.raw("""
                UPDATE idempotency_keys SET response_status = \(bind: status), response_body = \(bind: body ?? ""),
                    response_type = \(bind: type) WHERE user_id = \(bind: userID) AND key = \(bind: key)
                """).run()
        }
    }
}

/// Misuse of an Idempotency-Key.
enum IdempotencyError: ProblemError {
    case differentRequest
    case inFlight

    var status: HTTPResponseStatus {
        switch self {
        case .differentRequest: .unprocessableEntity
        case .inFlight: .conflict
        }
    }

    var code: String {
        switch self {
        case .differentRequest: "validation_failed"
        case .inFlight: "conflict"
        }
    }

    var reason: String {
        switch self {
        case .differentRequest: "This Idempotency-Key was used with a different request."
        case .inFlight: "A request with this Idempotency-Key is still being processed."
        }
    }

    var fieldProblems: [FieldProblem] {
        self == .differentRequest ? [FieldProblem(field: "Idempotency-Key", message: "was used with a different request")] : []
    }
}
