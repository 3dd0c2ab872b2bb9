import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// What a password login produced.
enum LoginOutcome: Sendable {
    case signedIn(IssuedSession)
    case mfaRequired(mfaToken: String)
}

/// Password login, its MFA second step, and lockout after repeated failures.
struct PasswordLogin: IdentityService {
    static let mfaChallengeLifetime: TimeInterval = 5 * 60

    let app: Application


    func login(_ request: LoginRequest, origin: RequestOrigin) async throws -> LoginOutcome {
        let key = User.normalise(email: request.email)
        try await refuseIfLocked(key: key, origin: origin)

        let user = key.isEmpty ? nil : try await User.query(on: reads).filter(\.$email == key).first()
        // An unknown email is checked against a dummy hash, so both failures take the same time.
        // So does an account with no password (made through an identity provider).
        let hash: String
        if let user, user.hasPassword { hash = user.passwordHash } else { hash = try await dummyHash() }
        let passwordMatches = try await hasher.verify(request.password, against: hash)
        guard let user, passwordMatches else {
            try await recordFailure(key: key, user: user, reason: user == nil ? "unknown_email" : "wrong_password", origin: origin)
            throw AuthError.invalidCredentials
        }
        guard user.status == .active else {
            try await auditAlone(failedLogin(key: key, user: user, reason: "status_\(user.status.rawValue)", origin: origin))
            throw AuthError.invalidCredentials
        }

        // The configured cost changed since this hash was made: upgrade it now that we know the password.
        if hasher.needsRehash(user.passwordHash) {
            user.passwordHash = try await hasher.hash(request.password)
        }
        return try await complete(user: user, key: key, cookie: request.cookie ?? false, method: "password", origin: origin, saving: true)
    }

    /// The end of every first factor (a password, an identity provider): an MFA challenge when the account has
    /// TOTP, else a session. `saving` writes the user's changed fields (a rehashed password) with it.
    func complete(user: User, key: String, cookie: Bool, method: String, origin: RequestOrigin, saving: Bool = false) async throws -> LoginOutcome {
        if user.mfaEnabled {
            let challenge = MFAChallenge()
            challenge.$user.id = try user.requireID()
            challenge.cookie = cookie
            let now = self.now
            let token = try await app.writeTransaction { db in
                if saving { try await user.save(on: db) }
                let token = try await HashedTokens.issue(challenge, now: now, expiresAt: now.addingTimeInterval(Self.mfaChallengeLifetime), on: db)
                try await recorder.record(audit: AuditRecord(
                    action: "auth.login", actorID: user.id, actorType: .user, resourceType: "user",
                    resourceID: user.id?.lowercasedString, outcome: .success, origin: origin,
                    details: ["stage": .string(method), "mfaRequired": true]), on: db)
                return token
            }
            return .mfaRequired(mfaToken: token)
        }
        return .signedIn(try await signIn(user: user, key: key, cookie: cookie, method: method, origin: origin))
    }

    func verifyMFA(_ request: MFAVerifyRequest, origin: RequestOrigin) async throws -> IssuedSession {
        guard let challenge = try await HashedTokens.find(MFAChallenge.self, raw: request.mfaToken, on: reads).with(\.$user).first(),
              challenge.usedAt == nil, challenge.expiresAt > now
        else { throw AuthError.invalidMFAChallenge }
        let user = challenge.user
        let key = user.email
        try await refuseIfLocked(key: key, origin: origin)
        guard user.status == .active, user.mfaEnabled else { throw AuthError.invalidMFAChallenge }

        let totpStep = try totpStep(for: user, code: request.code)
        let recoveryCode = totpStep == nil ? try await matchingRecoveryCode(for: user, code: request.code) : nil
        guard totpStep != nil || recoveryCode != nil else {
            try await recordFailure(key: key, user: user, reason: "wrong_mfa_code", origin: origin)
            throw AuthError.invalidCredentials
        }
        // Consume the challenge and the code atomically, so neither can be replayed.
        let claimed = try await app.writeTransaction { db -> Bool in
            guard try await HashedTokens.claim(MFAChallenge.self, raw: request.mfaToken, now: now, on: db) else { return false }
            let sql = db as! any SQLDatabase
            if let totpStep {
                let updated = try await sql.raw("""
                    UPDATE users SET mfa_last_used_step = \(bind: totpStep)
                    WHERE id = \(bind: user.id!) AND (mfa_last_used_step IS NULL OR mfa_last_used_step < \(bind: totpStep))
                    RETURNING id
                    """).first()
                guard updated != nil else { throw MFAReplay() }
            }
            if let recoveryCode {
                let used = try await sql.raw("UPDATE mfa_recovery_codes SET used_at = \(bind: now) WHERE id = \(bind: recoveryCode.id!) AND used_at IS NULL RETURNING id").first()
                guard used != nil else { throw MFAReplay() }
            }
            return true
        }
        guard claimed else { throw AuthError.invalidMFAChallenge }
        user.mfaLastUsedStep = totpStep ?? user.mfaLastUsedStep
        return try await signIn(user: user, key: key, cookie: challenge.cookie, method: recoveryCode == nil ? "totp" : "recovery_code", origin: origin)
    }

    private struct MFAReplay: Error {}

    private func matchingRecoveryCode(for user: User, code: String) async throws -> RecoveryCode? {
        let hash = SecureToken.hash(RecoveryCodes.normalise(code))
        return try await RecoveryCode.query(on: reads)
            .filter(\.$user.$id == user.requireID())
            .filter(\.$codeHash == hash)
            .filter(\.$usedAt == nil)
            .first()
    }

    /// Resets the failure counter, records the login and opens a session.
    private func signIn(user: User, key: String, cookie: Bool, method: String, origin: RequestOrigin) async throws -> IssuedSession {
        user.lastLoginAt = now
        user.failedLoginCount = 0
        user.lockedUntil = nil
        return try await app.writeTransaction { db in
            try await user.save(on: db)
            try await LoginThrottle.query(on: db).filter(\.$id == app.auditKeys.emailDigest(key)).delete()
            let issued = try await SessionService(app: app).openSession(for: user, cookie: cookie, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.login", actorID: user.id, actorType: .user, resourceType: "session",
                resourceID: issued.sessionID.lowercasedString, outcome: .success, origin: origin,
                details: ["method": .string(method), "cookie": .bool(cookie)]), on: db)
            return issued
        }
    }

    func refuseIfLocked(key: String, origin: RequestOrigin) async throws {
        guard let throttle = try await LoginThrottle.find(app.auditKeys.emailDigest(key), on: reads), let until = throttle.lockedUntil, until > now else { return }
        try await auditAlone(failedLogin(key: key, user: nil, reason: "locked", origin: origin))
        throw AuthError.accountLocked(retryAfterSeconds: Int(until.timeIntervalSince(now).rounded(.up)))
    }

    private func failedLogin(key: String, user: User?, reason: String, origin: RequestOrigin) -> AuditRecord {
        AuditRecord(action: "auth.login", actorID: user?.id, actorType: .user, resourceType: "user",
                    resourceID: user?.id?.lowercasedString, outcome: .failure, origin: origin,
                    details: ["emailDigest": .string(app.auditKeys.emailDigest(key)), "reason": .string(reason)])
    }

    /// Counts a failure for `key` (atomically, whatever the number of instances) and locks it at the threshold.
    private func recordFailure(key: String, user: User?, reason: String, origin: RequestOrigin) async throws {
        let now = self.now
        let threshold = config.lockoutThreshold
        let lockUntil = now.addingTimeInterval(TimeInterval(config.lockoutMinutes * 60))
        let throttleKey = app.auditKeys.emailDigest(key)
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            try await sql.raw("""
                INSERT INTO login_throttles (key, failed_count, locked_until, updated_at) VALUES (\(bind: throttleKey), 0, NULL, \(bind: now))
                ON CONFLICT (key) DO NOTHING
                """).run()
            // A lock that has run out starts the count again.
            try await sql.raw("UPDATE login_throttles SET failed_count = 0, locked_until = NULL WHERE key = \(bind: throttleKey) AND locked_until <= \(bind: now)").run()
            let row = try await sql.raw("""
                UPDATE login_throttles SET failed_count = failed_count + 1, updated_at = \(bind: now)
                WHERE key = \(bind: throttleKey) AND locked_until IS NULL RETURNING failed_count
                """).first()
            let count = try row?.decode(column: "failed_count", as: Int.self) ?? 0
            let locks = count >= threshold
            if locks {
                try await sql.raw("UPDATE login_throttles SET locked_until = \(bind: lockUntil), failed_count = 0 WHERE key = \(bind: throttleKey)").run()
            }
            if let user {
                user.failedLoginCount = locks ? 0 : count
                user.lockedUntil = locks ? lockUntil : user.lockedUntil
                try await sql.raw("UPDATE users SET failed_login_count = \(bind: user.failedLoginCount), locked_until = \(bind: user.lockedUntil) WHERE id = \(bind: user.id!)").run()
            }
            try await recorder.record(audit: failedLogin(key: key, user: user, reason: reason, origin: origin), on: db)
            if locks {
                try await recorder.record(audit: AuditRecord(
                    action: "auth.lockout", actorID: user?.id, actorType: .system, resourceType: "user",
                    resourceID: user?.id?.lowercasedString, outcome: .success, origin: origin,
                    details: ["emailDigest": .string(app.auditKeys.emailDigest(key)), "minutes": .number(Double(config.lockoutMinutes))]), on: db)
            }
        }
    }

    private func dummyHash() async throws -> String {
        if let hash = app.dummyPasswordHash.value { return hash }
        let hash = try await hasher.hash(SecureToken.generate())
        app.dummyPasswordHash.value = hash
        return hash
    }
}

/// Holds the dummy hash used for unknown emails, computed once at the configured cost.
final class DummyPasswordHash: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    var value: String? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

extension Application {
    private struct DummyHashKey: StorageKey { typealias Value = DummyPasswordHash }

    /// Set once in `configure`, before any request can race on the storage.
    var dummyPasswordHash: DummyPasswordHash {
        get { storage[DummyHashKey.self]! }
        set { storage[DummyHashKey.self] = newValue }
    }
}
