import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Passwords and mailed tokens: changing the password, resetting it by mail, and verifying the email address.
struct AccountRecovery: IdentityService {
    static let passwordResetLifetime: TimeInterval = 30 * 60
    static let emailVerificationLifetime: TimeInterval = 24 * 60 * 60

    let app: Application


    func changePassword(_ request: ChangePasswordRequest, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = try await caller.account(on: app.db)
        guard try await hasher.verify(request.currentPassword, against: user.passwordHash) else {
            try await auditAlone(AuditRecord(
                action: "auth.password_changed", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, outcome: .failure, origin: origin,
                details: ["reason": "wrong_current_password"]))
            throw HTTPProblem.validation([FieldProblem(field: "currentPassword", message: "is incorrect")])
        }
        let problems = PasswordPolicy.problems(password: request.newPassword, email: user.email, username: user.username, field: "newPassword",
                                                minimumLength: app.settings.passwordMinLength)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        if request.newPassword == request.currentPassword {
            throw HTTPProblem.validation([FieldProblem(field: "newPassword", message: "must differ from the current password")])
        }
        user.passwordHash = try await hasher.hash(request.newPassword)
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await SessionService(app: app).revokeSessions(of: user.requireID(), except: caller.session?.id, reason: "password_changed",
                                     actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.password_changed", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }

    /// Always succeeds from the caller's point of view, so it reveals nothing about which emails exist.
    func requestPasswordReset(email rawEmail: String, origin: RequestOrigin) async throws {
        let email = User.normalise(email: rawEmail)
        guard let user = try await User.query(on: reads).filter(\.$email == email).first(), user.status == .active else {
            try await auditAlone(AuditRecord(
                action: "auth.password_reset_requested", actorID: nil, actorType: .user, resourceType: "user",
                outcome: .failure, origin: origin, details: ["emailDigest": .string(app.auditKeys.emailDigest(email)), "reason": "no_active_account"]))
            return
        }
        try await app.writeTransaction { db in
            let token = try await issueOneTimeToken(for: user, purpose: .passwordReset, lifetime: Self.passwordResetLifetime, on: db)
            try await MailOutbox(app: app).enqueue(
                to: user.email, subject: "Reset your Steward password",
                body: """
                Someone asked to reset the password of your Steward account (\(user.email)).

                To choose a new password, open this link within 30 minutes:
                \(config.publicURL)/reset-password?token=\(MailOutbox.secretPlaceholder)

                If it was not you, ignore this mail: your password stays as it is.
                """,
                secret: token, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.password_reset_requested", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }

    func confirmPasswordReset(_ request: PasswordResetConfirmRequest, origin: RequestOrigin) async throws {
        let user = try await redeem(token: request.token, purpose: .passwordReset)
        let problems = PasswordPolicy.problems(password: request.newPassword, email: user.email, username: user.username, field: "newPassword",
                                                minimumLength: app.settings.passwordMinLength)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let hash = try await hasher.hash(request.newPassword)
        try await app.writeTransaction { db in
            try await consume(token: request.token, on: db)
            user.passwordHash = hash
            user.failedLoginCount = 0
            user.lockedUntil = nil
            try await user.save(on: db)
            try await LoginThrottle.query(on: db).filter(\.$id == app.auditKeys.emailDigest(user.email)).delete()
            try await SessionService(app: app).revokeSessions(of: user.requireID(), except: nil, reason: "password_reset", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.password_reset", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }


    func requestEmailVerification(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = try await caller.account(on: app.db)
        guard user.emailVerifiedAt == nil else { return }
        try await app.writeTransaction { db in
            try await issueEmailVerification(for: user, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.email_verification_requested", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }

    /// Mails a new verification link (inside the caller's transaction); older links stop working.
    func issueEmailVerification(for user: User, on db: any Database) async throws {
        let token = try await issueOneTimeToken(for: user, purpose: .emailVerification, lifetime: Self.emailVerificationLifetime, on: db)
        try await MailOutbox(app: app).enqueue(
            to: user.email, subject: "Confirm your email address",
            body: """
            Confirm that \(user.email) is the address of your Steward account by opening this link within 24 hours:
            \(config.publicURL)/verify-email?token=\(MailOutbox.secretPlaceholder)
            """,
            secret: token, on: db)
    }

    func confirmEmailVerification(token: String, origin: RequestOrigin) async throws {
        let user = try await redeem(token: token, purpose: .emailVerification)
        try await app.writeTransaction { db in
            try await consume(token: token, on: db)
            user.emailVerifiedAt = now
            try await user.save(on: db)
            let id = try user.requireID().lowercasedString
            try await recorder.record(
                audit: AuditRecord(action: "auth.email_verified", actorID: user.id, actorType: .user, resourceType: "user",
                                   resourceID: id, origin: origin),
                event: EventRecord(type: "user.updated", actorID: user.id, resourceType: "user", resourceID: id,
                                   data: ["emailVerified": true]),
                on: db)
        }
    }

    /// Creates a token and retires every older unused one of the same purpose: only the newest works.
    private func issueOneTimeToken(for user: User, purpose: OneTimeToken.Purpose, lifetime: TimeInterval, on db: any Database) async throws -> String {
        let userID = try user.requireID()
        try await OneTimeToken.query(on: db)
            .filter(\.$user.$id == userID)
            .filter(\.$purpose == purpose)
            .filter(\.$usedAt == nil)
            .set(\.$usedAt, to: now)
            .update()
        let token = OneTimeToken()
        token.$user.id = userID
        token.purpose = purpose
        return try await HashedTokens.issue(token, now: now, expiresAt: now.addingTimeInterval(lifetime), on: db)
    }

    /// Marks a mailed token used, in the transaction that acts on it, so it works exactly once even when two
    /// requests race with it.
    private func consume(token raw: String, on db: any Database) async throws {
        guard try await HashedTokens.claim(OneTimeToken.self, raw: raw, now: now, on: db) else { throw OneTimeTokenError.invalid }
    }

    /// The user a mailed token belongs to, if the token is unused, unexpired and the newest of its kind.
    private func redeem(token raw: String, purpose: OneTimeToken.Purpose) async throws -> User {
        guard raw.utf8.count <= 256,
              let token = try await HashedTokens.find(OneTimeToken.self, raw: raw, on: reads)
                .filter(\.$purpose == purpose)
                .with(\.$user)
                .first(),
              token.usedAt == nil, token.expiresAt > now, token.user.status == .active
        else { throw OneTimeTokenError.invalid }
        return token.user
    }
}

/// A password-reset or verification token that does not work (unknown, used, superseded or expired).
enum OneTimeTokenError: ProblemError {
    case invalid
    var status: HTTPResponseStatus { .unprocessableEntity }
    var code: String { "validation_failed" }
    var reason: String { "The token is invalid, expired or already used." }
    var fieldProblems: [FieldProblem] { [FieldProblem(field: "token", message: "is invalid, expired or already used")] }
}
