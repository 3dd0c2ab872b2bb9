import Foundation
import StewardFormats
import Vapor

/// `POST /auth/register`.
struct RegisterRequest: Content {
    var email: String
    var username: String
    var password: String
    var fullName: String?
}

/// `POST /auth/login`.
struct LoginRequest: Content {
    var email: String
    var password: String
    var cookie: Bool?
}

/// `POST /auth/mfa/verify`.
struct MFAVerifyRequest: Content {
    var mfaToken: String
    var code: String
}

/// `POST /auth/refresh`.
struct RefreshRequest: Content {
    var refreshToken: String
}

/// `POST /auth/change-password`.
struct ChangePasswordRequest: Content {
    var currentPassword: String
    var newPassword: String
}

/// `POST /auth/password-reset/request`.
struct PasswordResetRequest: Content {
    var email: String
}

/// `POST /auth/password-reset/confirm`.
struct PasswordResetConfirmRequest: Content {
    var token: String
    var newPassword: String
}

/// `POST /auth/verify-email/confirm`.
struct VerifyEmailConfirmRequest: Content {
    var token: String
}

/// `POST /auth/mfa/totp/activate`.
struct TOTPActivateRequest: Content {
    var code: String
}

/// `DELETE /auth/mfa/totp`.
struct TOTPDisableRequest: Content {
    var password: String
}

/// A user as the API shows it: never a hash or secret.
struct UserResponse: Content, Equatable {
    var id: UUID
    var email: String
    var username: String
    var fullName: String?
    var status: String
    var emailVerified: Bool
    var emailVerifiedAt: Date?
    var mfaEnabled: Bool
    var lastLoginAt: Date?
    var createdAt: Date?
    var updatedAt: Date?

    init(_ user: User) {
        self.init(CallerUser(user))
    }

    init(_ user: CallerUser) {
        id = user.id
        email = user.email
        username = user.username
        fullName = user.fullName
        status = user.status.rawValue
        emailVerified = user.emailVerifiedAt != nil
        emailVerifiedAt = user.emailVerifiedAt
        mfaEnabled = user.mfaEnabled
        lastLoginAt = user.lastLoginAt
        createdAt = user.createdAt
        updatedAt = user.updatedAt
    }
}

/// The answer to a successful login, MFA verification or refresh.
struct TokenPairResponse: Content, Equatable {
    var accessToken: String
    var refreshToken: String
    var tokenType: String
    var expiresIn: Int
    var user: UserResponse
    var csrfToken: String?
}

/// The answer to a login that needs a second factor.
struct MFARequiredResponse: Content {
    var mfaRequired: Bool
    var mfaToken: String
}

/// `GET /auth/me`.
struct MeResponse: Content {
    var user: UserResponse
    var roles: [String]
    var permissions: [String]
}

extension UserResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("email", email)
        object.field("username", username)
        object.field("fullName", fullName)
        object.field("status", status)
        object.field("emailVerified", emailVerified)
        object.field("emailVerifiedAt", emailVerifiedAt)
        object.field("mfaEnabled", mfaEnabled)
        object.field("lastLoginAt", lastLoginAt)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
    }
}

extension MeResponse: APIJSONWritable {
    /// `GET /auth/me` answers every authenticated client's first question, often: written without `Codable`.
    func write(to object: inout APIJSON.ObjectWriter) throws {
        try object.field("user", object: user)
        object.field("roles", roles)
        object.field("permissions", permissions)
    }
}

/// One of the caller's sessions.
struct SessionResponse: Content {
    var id: UUID
    var ipAddress: String?
    var userAgent: String?
    var createdAt: Date
    var lastSeenAt: Date
    var expiresAt: Date
    var current: Bool
}

/// The list envelope every collection uses.
struct ListResponse<Item: Content>: Content {
    var items: [Item]
    var nextCursor: String?
}

extension ListResponse: APIJSONWritable where Item: APIJSONWritable {
    /// A page of items that write themselves, written without `Codable`'s containers around them.
    func write(to object: inout APIJSON.ObjectWriter) throws {
        try object.field("items", objects: items)
        object.field("nextCursor", nextCursor)
    }
}

/// `POST /auth/mfa/totp/enroll`.
struct TOTPEnrollResponse: Content {
    var secret: String
    var otpauthUri: String
}

/// `POST /auth/mfa/totp/activate`.
struct RecoveryCodesResponse: Content {
    var recoveryCodes: [String]
}
