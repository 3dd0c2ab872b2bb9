import Vapor

/// One field-level validation problem inside a problem response.
public struct FieldProblem: Content, Equatable, Sendable {
    public var field: String
    public var message: String
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }
}

/// An RFC 9457 problem body, the only error shape the API returns.
public struct ProblemDetails: Content, Sendable {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String?
    public var code: String
    public var errors: [FieldProblem]?
    public var requestId: String?
}

/// An error the API reports with a stable machine-readable `code`.
public protocol ProblemError: AbortError {
    var code: String { get }
    var fieldProblems: [FieldProblem] { get }
}

extension ProblemError {
    public var fieldProblems: [FieldProblem] { [] }
}

/// Errors of the HTTP layer itself, shared by every controller.
public enum HTTPProblem: ProblemError {
    case validation([FieldProblem])
    case notFound(String = "The resource does not exist.")
    case conflict(String)

    public var status: HTTPResponseStatus {
        switch self {
        case .validation: .unprocessableEntity
        case .notFound: .notFound
        case .conflict: .conflict
        }
    }

    public var code: String {
        switch self {
        case .validation: "validation_failed"
        case .notFound: "not_found"
        case .conflict: "conflict"
        }
    }

    public var reason: String {
        switch self {
        case .validation(let problems): problems.count == 1 ? "\(problems[0].field) \(problems[0].message)" : "The request has \(problems.count) invalid fields."
        case .notFound(let detail): detail
        case .conflict(let detail): detail
        }
    }

    public var fieldProblems: [FieldProblem] {
        if case .validation(let problems) = self { return problems }
        return []
    }
}

extension ProblemDetails {
    /// The stable code for a status when the error carries none of its own.
    static func code(for status: HTTPResponseStatus) -> String {
        switch status.code {
        case 400: "bad_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 409: "conflict"
        case 413: "payload_too_large"
        case 415: "unsupported_media_type"
        case 422: "validation_failed"
        case 423: "account_locked"
        case 429: "rate_limited"
        case 503: "unavailable"
        case 500...599: "internal"
        default: "error"
        }
    }

    /// The problem for `status` and `code`: its type URL and title follow from them.
    init(status: HTTPResponseStatus, code: String, detail: String?, errors: [FieldProblem]? = nil, requestId: String?) {
        self.init(type: "https://steward.dev/problems/\(code)", title: Self.title(for: status), status: Int(status.code),
                  detail: detail, code: code, errors: errors, requestId: requestId)
    }

    static func title(for status: HTTPResponseStatus) -> String {
        status.reasonPhrase.isEmpty ? "Error" : status.reasonPhrase
    }
}
