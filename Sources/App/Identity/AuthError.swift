import Vapor

/// Authentication failures; each maps to a stable problem code.
public enum AuthError: ProblemError {
    case invalidCredentials
    case accountLocked(retryAfterSeconds: Int)
    case unauthenticated
    case invalidToken
    case tokenExpired
    case tokenRevoked
    case invalidRefreshToken
    case invalidMFAChallenge
    case csrfMismatch
    case invalidAPIKey
    case apiKeyInURL

    public var status: HTTPResponseStatus {
        switch self {
        case .invalidCredentials, .unauthenticated, .invalidToken, .tokenExpired, .tokenRevoked,
             .invalidRefreshToken, .invalidMFAChallenge, .invalidAPIKey, .apiKeyInURL: .unauthorized
        case .accountLocked: .locked
        case .csrfMismatch: .forbidden
        }
    }

    public var code: String {
        switch self {
        case .invalidCredentials: "invalid_credentials"
        case .accountLocked: "account_locked"
        case .unauthenticated, .invalidToken, .invalidRefreshToken, .invalidMFAChallenge, .invalidAPIKey, .apiKeyInURL: "unauthorized"
        case .tokenExpired: "token_expired"
        case .tokenRevoked: "token_revoked"
        case .csrfMismatch: "forbidden"
        }
    }

    public var reason: String {
        switch self {
        case .invalidCredentials: "The email or password is incorrect."
        case .accountLocked: "Too many failed attempts; try again later."
        case .unauthenticated: "Authentication is required."
        case .invalidToken: "The access token is invalid."
        case .tokenExpired: "The access token has expired."
        case .tokenRevoked: "The session has ended; sign in again."
        case .invalidRefreshToken: "The refresh token is invalid or expired."
        case .invalidMFAChallenge: "The MFA token is invalid or expired; sign in again."
        case .csrfMismatch: "The X-CSRF-Token header is missing or does not match the session."
        case .invalidAPIKey: "The API key is invalid, expired or revoked."
        case .apiKeyInURL: "API keys are never accepted in the URL; send them in the Authorization or X-API-Key header."
        }
    }

    public var headers: HTTPHeaders {
        switch self {
        case .accountLocked(let seconds): ["Retry-After": String(max(1, seconds))]
        case .csrfMismatch, .invalidCredentials: [:]
        default: ["WWW-Authenticate": #"Bearer realm="steward""#]
        }
    }
}

/// Authorization failures: the caller is known but may not do this.
public enum AccessError: ProblemError {
    case missingPermission(Permission)
    case interactiveOnly
    case scopesExceedOwner([Permission])
    case notYours(String)

    public var status: HTTPResponseStatus { .forbidden }
    public var code: String { "forbidden" }
    public var reason: String {
        switch self {
        case .missingPermission(let permission): "This needs the \(permission.rawValue) permission."
        case .interactiveOnly: "API keys cannot do this; sign in as a user."
        case .scopesExceedOwner(let extra): "A key cannot have permissions its owner lacks: \(extra.map(\.rawValue).joined(separator: ", "))."
        case .notYours(let reason): reason
        }
    }
}
