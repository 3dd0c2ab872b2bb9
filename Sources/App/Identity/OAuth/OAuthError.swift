import Vapor
import StewardFormats

/// Why a sign-in with an identity provider did not happen; each maps to a stable problem code.
enum OAuthError: ProblemError, Equatable {
    case unknownProvider
    case redirectNotAllowed
    /// The callback's `state` is missing, unknown, used, expired, for another provider, or not this browser's.
    case invalidState
    /// Discovery or the keys could not be read (and nothing usable is cached).
    case providerUnavailable(String)
    /// The provider answered the callback with an error, or refused the code (a PKCE mismatch among others).
    case providerRefused(String)
    case invalidIDToken(String)
    case accountExists
    case identityInUse
    case signupDisabled
    case accountInactive
    case emailRequired
    case invalidCode
    case lastSignInMethod

    var status: HTTPResponseStatus {
        switch self {
        case .unknownProvider: .notFound
        case .redirectNotAllowed: .unprocessableEntity
        case .invalidState, .invalidCode: .badRequest
        case .providerUnavailable: .serviceUnavailable
        case .providerRefused, .invalidIDToken: .unauthorized
        case .accountExists, .identityInUse, .lastSignInMethod: .conflict
        case .signupDisabled, .accountInactive, .emailRequired: .forbidden
        }
    }

    var code: String {
        switch self {
        case .unknownProvider: "not_found"
        case .redirectNotAllowed: "validation_failed"
        case .invalidState: "invalid_oauth_state"
        case .providerUnavailable: "provider_unavailable"
        case .providerRefused: "provider_refused"
        case .invalidIDToken: "invalid_id_token"
        case .accountExists: "account_exists"
        case .identityInUse: "identity_in_use"
        case .signupDisabled: "signup_disabled"
        case .accountInactive: "account_inactive"
        case .emailRequired: "email_required"
        case .invalidCode: "invalid_oauth_code"
        case .lastSignInMethod: "last_sign_in_method"
        }
    }

    var reason: String {
        switch self {
        case .unknownProvider: "No identity provider is configured under this id."
        case .redirectNotAllowed: "redirect is not one of the URLs a sign-in may return to (STEWARD_OAUTH_REDIRECT_URLS)."
        case .invalidState: "The sign-in state is missing, expired, already used or from another browser; start the sign-in again."
        case .providerUnavailable(let detail): "The identity provider cannot be reached: \(detail)"
        case .providerRefused(let detail): "The identity provider refused the sign-in: \(detail)"
        case .invalidIDToken(let detail): "The identity provider's ID token is not valid: \(detail)"
        case .accountExists: "An account with this email already exists. Sign in with its password, then link this identity from the account."
        case .identityInUse: "This identity is already linked to another account."
        case .signupDisabled: "No account is linked to this identity, and sign-up with an identity provider is turned off."
        case .accountInactive: "The account linked to this identity is not active."
        case .emailRequired: "The identity provider did not give an email address, which a new account needs."
        case .invalidCode: "The sign-in code is invalid, expired or already used; start the sign-in again."
        case .lastSignInMethod: "This is the account's last way to sign in; set a password (through a password reset) before unlinking it."
        }
    }

    var fieldProblems: [FieldProblem] {
        self == .redirectNotAllowed ? [FieldProblem(field: "redirect", message: "is not an allowed redirect URL")] : []
    }

    var headers: HTTPHeaders {
        if case .providerUnavailable = self { return ["Retry-After": "30"] }
        return [:]
    }
}

/// A problem a login callback stored with its one-time code, answered by the exchange.
struct StoredOAuthProblem: ProblemError {
    var statusCode: Int
    var code: String
    var detail: String

    init(_ error: OAuthError) {
        statusCode = Int(error.status.code)
        code = error.code
        detail = error.reason
    }

    var status: HTTPResponseStatus { HTTPResponseStatus(statusCode: statusCode) }
    var reason: String { detail }

    var json: JSONValue {
        ["status": .number(Double(statusCode)), "code": .string(code), "detail": .string(detail)]
    }

    init?(json text: String) {
        guard case .object(let fields)? = JSONText.parse(text),
              case .number(let status)? = fields["status"], case .string(let code)? = fields["code"],
              case .string(let detail)? = fields["detail"] else { return nil }
        statusCode = Int(status)
        self.code = code
        self.detail = detail
    }
}
