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
    case apiKeysNotSupported

    public var status: HTTPResponseStatus {
        switch self {
        case .invalidCredentials, .unauthenticated, .invalidToken, .tokenExpired, .tokenRevoked,
             .invalidRefreshToken, .invalidMFAChallenge, .apiKeysNotSupported: .unauthorized
        case .accountLocked: .locked
        case .csrfMismatch: .forbidden
        }
    }

    public var code: String {
        switch self {
        case .invalidCredentials: "invalid_credentials"
        case .accountLocked: "account_locked"
        case .unauthenticated, .invalidToken, .invalidRefreshToken, .invalidMFAChallenge, .apiKeysNotSupported: "unauthorized"
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
        case .apiKeysNotSupported: "API keys are not accepted yet."
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
