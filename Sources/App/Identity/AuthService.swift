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

/// A new session's credentials; `cookieToken` and `csrfToken` only in cookie mode.
struct IssuedSession: Sendable {
    var pair: TokenPairResponse
    var sessionID: UUID
    var cookieToken: String?
}

/// Accounts, logins, sessions, password reset, email verification and TOTP MFA.
/// Every state change writes its audit entry (and event, when users can see it) in the same transaction.
struct AuthService: Sendable {
    /// Two refreshes with the same token this close together get the same new pair.
    static let refreshGraceSeconds: TimeInterval = 10
    static let passwordResetLifetime: TimeInterval = 30 * 60
    static let emailVerificationLifetime: TimeInterval = 24 * 60 * 60
    static let mfaChallengeLifetime: TimeInterval = 5 * 60

    let app: Application

    init(app: Application) {
        self.app = app
    }

    private var config: AppConfig { app.appConfig }
    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.db }

    /// An audit entry that goes with no other change (a refused login, say), in a write of its own.
    private func auditAlone(_ record: AuditRecord) async throws {
        try await app.writeTransaction { [recorder] db in try await recorder.record(audit: record, on: db) }
    }
    private var now: Date { app.wallClock.now() }
    var hasher: PasswordHasher { PasswordHasher(cost: config.bcryptCost, threadPool: app.passwordHashingPool) }
    private var recorder: ActivityRecorder { app.activityRecorder }
    private var tokens: AccessTokens { AccessTokens(app: app) }

    // MARK: - Registration and profile

    func register(_ request: RegisterRequest, origin: RequestOrigin) async throws -> User {
        let email = User.normalise(email: request.email)
        let username = request.username.trimmingCharacters(in: .whitespaces)
        let fullName = request.fullName?.trimmingCharacters(in: .whitespacesAndNewlines)
        var problems = AccountValidation.email(email) + AccountValidation.username(username) + AccountValidation.fullName(fullName)
        problems += PasswordPolicy.problems(password: request.password, email: email, username: username)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }

        try await ensureUnique(email: email, username: username, except: nil)
        let hash = try await hasher.hash(request.password)
        let user = User(email: email, username: username, fullName: fullName?.isEmpty == true ? nil : fullName, passwordHash: hash)
        do {
            try await app.writeTransaction { db in
                try await user.create(on: db)
                try await UserRole.assign(RoleCatalog.defaultRole, to: user.requireID(), by: nil, at: now, on: db)
                let id = try user.requireID().lowercasedString
                try await recorder.record(
                    audit: AuditRecord(action: "auth.register", actorID: user.id, actorType: .user, resourceType: "user",
                                       resourceID: id, origin: origin, details: ["email": .string(email), "username": .string(username)]),
                    event: EventRecord(type: "user.created", actorID: user.id, resourceType: "user", resourceID: id,
                                       data: ["email": .string(email), "username": .string(username)]),
                    on: db)
                try await issueEmailVerification(for: user, on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("The email or username is already taken.")
        }
        return user
    }

    func updateProfile(user: User, fields: [String: JSONValue], origin: RequestOrigin) async throws -> User {
        let allowed: Set<String> = ["fullName", "username"]
        var problems = fields.keys.filter { !allowed.contains($0) }.sorted()
            .map { FieldProblem(field: $0, message: "cannot be changed here") }
        var changes: [String: JSONValue] = [:]
        if let value = fields["username"] {
            guard case .string(let raw) = value else {
                throw HTTPProblem.validation(problems + [FieldProblem(field: "username", message: "must be a string")])
            }
            let username = raw.trimmingCharacters(in: .whitespaces)
            problems += AccountValidation.username(username)
            if username != user.username { changes["username"] = .string(username) }
        }
        if let value = fields["fullName"] {
            switch value {
            case .null: changes["fullName"] = .null
            case .string(let raw):
                let fullName = raw.trimmingCharacters(in: .whitespacesAndNewlines)
                problems += AccountValidation.fullName(fullName)
                changes["fullName"] = fullName.isEmpty ? .null : .string(fullName)
            default: problems.append(FieldProblem(field: "fullName", message: "must be a string or null"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        guard !changes.isEmpty else { return user }
        if case .string(let username) = changes["username"] {
            try await ensureUnique(email: nil, username: username, except: user.id)
            user.username = username
        }
        if let fullName = changes["fullName"] {
            if case .string(let text) = fullName { user.fullName = text } else { user.fullName = nil }
        }
        let id = try user.requireID().lowercasedString
        let changed = changes
        do {
            try await app.writeTransaction { db in
                try await user.save(on: db)
                try await recorder.record(
                    audit: AuditRecord(action: "user.updated", actorID: user.id, actorType: .user, resourceType: "user",
                                       resourceID: id, origin: origin, details: ["fields": .array(changed.keys.sorted().map { .string($0) })]),
                    event: EventRecord(type: "user.updated", actorID: user.id, resourceType: "user", resourceID: id, data: .object(changed)),
                    on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("The username is already taken.")
        }
        return user
    }

    private func ensureUnique(email: String?, username: String?, except id: UUID?) async throws {
        if let email {
            var query = User.query(on: reads).filter(\.$email == email)
            if let id { query = query.filter(\.$id != id) }
            if try await query.count() > 0 { throw HTTPProblem.conflict("The email or username is already taken.") }
        }
        if let username {
            var query = User.query(on: reads).filter(\.$username == username)
            if let id { query = query.filter(\.$id != id) }
            if try await query.count() > 0 { throw HTTPProblem.conflict("The email or username is already taken.") }
        }
    }

    // MARK: - Login and lockout

    func login(_ request: LoginRequest, origin: RequestOrigin) async throws -> LoginOutcome {
        let key = User.normalise(email: request.email)
        try await refuseIfLocked(key: key, origin: origin)

        let user = key.isEmpty ? nil : try await User.query(on: reads).filter(\.$email == key).first()
        // An unknown email is checked against a dummy hash, so both failures take the same time.
        let hash: String
        if let user { hash = user.passwordHash } else { hash = try await dummyHash() }
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
        if user.mfaEnabled {
            let token = SecureToken.generate()
            let challenge = MFAChallenge()
            challenge.id = UUID()
            challenge.$user.id = try user.requireID()
            challenge.tokenHash = SecureToken.hash(token)
            challenge.createdAt = now
            challenge.expiresAt = now.addingTimeInterval(Self.mfaChallengeLifetime)
            challenge.cookie = request.cookie ?? false
            try await app.writeTransaction { db in
                try await user.save(on: db)
                try await challenge.create(on: db)
                try await recorder.record(audit: AuditRecord(
                    action: "auth.login", actorID: user.id, actorType: .user, resourceType: "user",
                    resourceID: user.id?.lowercasedString, outcome: .success, origin: origin,
                    details: ["stage": "password", "mfaRequired": true]), on: db)
            }
            return .mfaRequired(mfaToken: token)
        }
        return .signedIn(try await signIn(user: user, key: key, cookie: request.cookie ?? false, method: "password", origin: origin))
    }

    func verifyMFA(_ request: MFAVerifyRequest, origin: RequestOrigin) async throws -> IssuedSession {
        let hash = SecureToken.hash(request.mfaToken)
        guard let challenge = try await MFAChallenge.query(on: reads).filter(\.$tokenHash == hash).with(\.$user).first(),
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
            let sql = db as! any SQLDatabase
            let row = try await sql.raw("UPDATE mfa_challenges SET used_at = \(bind: now) WHERE id = \(bind: challenge.id!) AND used_at IS NULL RETURNING id").first()
            guard row != nil else { return false }
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

    private func totpStep(for user: User, code: String) throws -> Int64? {
        guard let sealed = user.mfaSecret, let secret = Base32.decode(try app.secretBox.open(sealed)) else { return nil }
        return TOTP.matchingStep(code: code, secret: secret, at: now, lastUsedStep: user.mfaLastUsedStep)
    }

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
            try await LoginThrottle.query(on: db).filter(\.$id == key).delete()
            let issued = try await openSession(for: user, cookie: cookie, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.login", actorID: user.id, actorType: .user, resourceType: "session",
                resourceID: issued.sessionID.lowercasedString, outcome: .success, origin: origin,
                details: ["method": .string(method), "cookie": .bool(cookie)]), on: db)
            return issued
        }
    }

    private func refuseIfLocked(key: String, origin: RequestOrigin) async throws {
        guard let throttle = try await LoginThrottle.find(key, on: reads), let until = throttle.lockedUntil, until > now else { return }
        try await auditAlone(failedLogin(key: key, user: nil, reason: "locked", origin: origin))
        throw AuthError.accountLocked(retryAfterSeconds: Int(until.timeIntervalSince(now).rounded(.up)))
    }

    private func failedLogin(key: String, user: User?, reason: String, origin: RequestOrigin) -> AuditRecord {
        AuditRecord(action: "auth.login", actorID: user?.id, actorType: .user, resourceType: "user",
                    resourceID: user?.id?.lowercasedString, outcome: .failure, origin: origin,
                    details: ["email": .string(key), "reason": .string(reason)])
    }

    /// Counts a failure for `key` (atomically, whatever the number of instances) and locks it at the threshold.
    private func recordFailure(key: String, user: User?, reason: String, origin: RequestOrigin) async throws {
        let now = self.now
        let threshold = config.lockoutThreshold
        let lockUntil = now.addingTimeInterval(TimeInterval(config.lockoutMinutes * 60))
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            try await sql.raw("""
                INSERT INTO login_throttles (key, failed_count, locked_until, updated_at) VALUES (\(bind: key), 0, NULL, \(bind: now))
                ON CONFLICT (key) DO NOTHING
                """).run()
            // A lock that has run out starts the count again.
            try await sql.raw("UPDATE login_throttles SET failed_count = 0, locked_until = NULL WHERE key = \(bind: key) AND locked_until <= \(bind: now)").run()
            let row = try await sql.raw("""
                UPDATE login_throttles SET failed_count = failed_count + 1, updated_at = \(bind: now)
                WHERE key = \(bind: key) AND locked_until IS NULL RETURNING failed_count
                """).first()
            let count = try row?.decode(column: "failed_count", as: Int.self) ?? 0
            let locks = count >= threshold
            if locks {
                try await sql.raw("UPDATE login_throttles SET locked_until = \(bind: lockUntil), failed_count = 0 WHERE key = \(bind: key)").run()
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
                    details: ["email": .string(key), "minutes": .number(Double(config.lockoutMinutes))]), on: db)
            }
        }
    }

    private func dummyHash() async throws -> String {
        if let hash = app.dummyPasswordHash.value { return hash }
        let hash = try await hasher.hash(SecureToken.generate())
        app.dummyPasswordHash.value = hash
        return hash
    }

    // MARK: - Sessions and tokens

    /// Creates a session row, its first refresh token and an access token (inside the caller's transaction).
    func openSession(for user: User, cookie: Bool, origin: RequestOrigin, on db: any Database) async throws -> IssuedSession {
        let now = self.now
        let session = UserSession()
        session.id = UUID()
        session.$user.id = try user.requireID()
        session.ipAddress = origin.ipAddress
        session.userAgent = origin.userAgent
        session.createdAt = now
        session.lastSeenAt = now
        session.idleExpiresAt = now.addingTimeInterval(TimeInterval(config.sessionIdleTimeoutSeconds))
        session.expiresAt = now.addingTimeInterval(TimeInterval(config.sessionAbsoluteTimeoutSeconds))
        var cookieToken: String?
        var csrfToken: String?
        if cookie {
            cookieToken = SecureToken.generate()
            csrfToken = SecureToken.generate()
            session.cookieTokenHash = SecureToken.hash(cookieToken!)
            session.csrfTokenHash = SecureToken.hash(csrfToken!)
        }
        try await session.create(on: db)
        var pair = try await issuePair(user: user, session: session, on: db)
        pair.csrfToken = csrfToken
        return IssuedSession(pair: pair, sessionID: session.id!, cookieToken: cookieToken)
    }

    private func issuePair(user: User, session: UserSession, on db: any Database) async throws -> TokenPairResponse {
        let refresh = SecureToken.generate()
        let record = RefreshToken()
        record.id = UUID()
        record.$session.id = try session.requireID()
        record.tokenHash = SecureToken.hash(refresh)
        record.createdAt = now
        record.expiresAt = min(now.addingTimeInterval(TimeInterval(config.refreshTokenTTLSeconds)), session.expiresAt)
        try await record.create(on: db)
        // The roles claim is informational: authorization reads the role tables on every request.
        let roles = try await UserRole.grants(of: user.requireID(), on: db).roles
        let access = try await tokens.issue(userID: user.requireID(), sessionID: session.requireID(), roles: roles, now: now)
        return TokenPairResponse(accessToken: access, refreshToken: refresh, tokenType: "Bearer",
                                 expiresIn: config.accessTokenTTLSeconds, user: UserResponse(user))
    }

    private enum RefreshResult: Sendable {
        case issued(TokenPairResponse)
        case revoked
        case invalid
    }

    /// Rotates a refresh token. A token used before is accepted once more within the grace window (and gets
    /// the same pair); after it, its reuse revokes the whole session.
    func refresh(_ rawToken: String, origin: RequestOrigin) async throws -> TokenPairResponse {
        let hash = SecureToken.hash(rawToken)
        let now = self.now
        let result = try await app.writeTransaction { db -> RefreshResult in
            let sql = db as! any SQLDatabase
            // Claim first: the write lock (SQLite) or row lock (PostgreSQL) orders concurrent refreshes.
            let claimed = try await sql.raw("""
                UPDATE refresh_tokens SET used_at = \(bind: now) WHERE token_hash = \(bind: hash) AND used_at IS NULL RETURNING id
                """).first()
            guard let token = try await RefreshToken.query(on: db).filter(\.$tokenHash == hash).with(\.$session).first() else {
                return .invalid
            }
            let session = token.session
            guard let user = try await User.find(session.$user.id, on: db) else { return .invalid }
            guard session.isLive(at: now), user.status == .active else { return .revoked }

            if claimed != nil {
                guard token.expiresAt > now else { return .invalid }
                let pair = try await issuePair(user: user, session: session, on: db)
                token.usedAt = now
                token.gracePayload = try app.secretBox.seal(try APIJSON.string(pair))
                try await token.save(on: db)
                session.lastSeenAt = now
                session.idleExpiresAt = min(now.addingTimeInterval(TimeInterval(config.sessionIdleTimeoutSeconds)), session.expiresAt)
                try await session.save(on: db)
                try await recorder.record(audit: AuditRecord(
                    action: "auth.refresh", actorID: user.id, actorType: .user, resourceType: "session",
                    resourceID: session.id?.lowercasedString, origin: origin), on: db)
                return .issued(pair)
            }
            if let usedAt = token.usedAt, now.timeIntervalSince(usedAt) <= Self.refreshGraceSeconds, let payload = token.gracePayload {
                let pair = try JSONDecoder.api.decode(TokenPairResponse.self, from: Data(try app.secretBox.open(payload).utf8))
                return .issued(pair)
            }
            // A rotated token came back after the grace window: assume it was stolen.
            try await revoke(session: session, reason: "refresh_token_reuse", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.refresh_reuse", actorID: user.id, actorType: .user, resourceType: "session",
                resourceID: session.id?.lowercasedString, outcome: .failure, origin: origin), on: db)
            return .revoked
        }
        switch result {
        case .issued(let pair): return pair
        case .revoked: throw AuthError.tokenRevoked
        case .invalid: throw AuthError.invalidRefreshToken
        }
    }

    /// Ends a session now: its access tokens, refresh tokens and cookie stop working on the next request.
    func revoke(session: UserSession, reason: String, actorID: UUID?, origin: RequestOrigin, on db: any Database) async throws {
        guard session.revokedAt == nil else { return }
        session.revokedAt = now
        session.revokedReason = reason
        try await session.save(on: db)
        let id = try session.requireID().lowercasedString
        try await recorder.record(
            audit: AuditRecord(action: "session.revoked", actorID: actorID, actorType: actorID == nil ? .system : .user,
                               resourceType: "session", resourceID: id, origin: origin, details: ["reason": .string(reason)]),
            event: EventRecord(type: "session.revoked", actorID: actorID, resourceType: "session", resourceID: id,
                               data: ["userId": .string(session.$user.id.lowercasedString), "reason": .string(reason)]),
            on: db)
    }

    /// Revokes every live session of a user except `keeping`.
    func revokeSessions(of userID: UUID, except keeping: UUID?, reason: String, actorID: UUID?, origin: RequestOrigin, on db: any Database) async throws {
        var query = UserSession.query(on: db).filter(\.$user.$id == userID).filter(\.$revokedAt == nil)
        if let keeping { query = query.filter(\.$id != keeping) }
        for session in try await query.all() {
            try await revoke(session: session, reason: reason, actorID: actorID, origin: origin, on: db)
        }
    }

    func logout(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard let session = caller.session else { return }
        try await app.writeTransaction { db in
            try await revoke(session: session, reason: "logout", actorID: caller.user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.logout", actorID: caller.user.id, actorType: .user, resourceType: "session",
                resourceID: session.id?.lowercasedString, origin: origin), on: db)
        }
    }

    func sessions(of caller: AuthenticatedCaller) async throws -> [SessionResponse] {
        let now = self.now
        let sessions = try await UserSession.query(on: reads)
            .filter(\.$user.$id == caller.user.requireID())
            .filter(\.$revokedAt == nil)
            .filter(\.$expiresAt > now)
            .filter(\.$idleExpiresAt > now)
            .sort(\.$createdAt, .descending)
            .all()
        return sessions.map { session in
            SessionResponse(id: session.id!, ipAddress: session.ipAddress, userAgent: session.userAgent,
                            createdAt: session.createdAt, lastSeenAt: session.lastSeenAt,
                            expiresAt: min(session.expiresAt, session.idleExpiresAt), current: session.id == caller.session?.id)
        }
    }

    /// Revokes one of the caller's own sessions; another user's id is a 404, like a missing one.
    func revokeOwnSession(id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard let session = try await UserSession.query(on: reads)
            .filter(\.$id == id)
            .filter(\.$user.$id == caller.user.requireID())
            .filter(\.$revokedAt == nil)
            .first()
        else { throw HTTPProblem.notFound("No such session.") }
        try await app.writeTransaction { db in
            try await revoke(session: session, reason: "revoked_by_user", actorID: caller.user.id, origin: origin, on: db)
        }
    }

    func revokeOtherSessions(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        try await app.writeTransaction { db in
            try await revokeSessions(of: caller.user.requireID(), except: caller.session?.id, reason: "revoked_by_user",
                                     actorID: caller.user.id, origin: origin, on: db)
        }
    }

    // MARK: - Passwords

    func changePassword(_ request: ChangePasswordRequest, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = caller.user
        guard try await hasher.verify(request.currentPassword, against: user.passwordHash) else {
            try await auditAlone(AuditRecord(
                action: "auth.password_changed", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, outcome: .failure, origin: origin,
                details: ["reason": "wrong_current_password"]))
            throw HTTPProblem.validation([FieldProblem(field: "currentPassword", message: "is incorrect")])
        }
        let problems = PasswordPolicy.problems(password: request.newPassword, email: user.email, username: user.username, field: "newPassword")
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        if request.newPassword == request.currentPassword {
            throw HTTPProblem.validation([FieldProblem(field: "newPassword", message: "must differ from the current password")])
        }
        user.passwordHash = try await hasher.hash(request.newPassword)
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await revokeSessions(of: user.requireID(), except: caller.session?.id, reason: "password_changed",
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
                outcome: .failure, origin: origin, details: ["email": .string(String(email.prefix(254))), "reason": "no_active_account"]))
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
        let problems = PasswordPolicy.problems(password: request.newPassword, email: user.email, username: user.username, field: "newPassword")
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let hash = try await hasher.hash(request.newPassword)
        try await app.writeTransaction { db in
            try await consume(token: request.token, on: db)
            user.passwordHash = hash
            user.failedLoginCount = 0
            user.lockedUntil = nil
            try await user.save(on: db)
            try await LoginThrottle.query(on: db).filter(\.$id == user.email).delete()
            try await revokeSessions(of: user.requireID(), except: nil, reason: "password_reset", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.password_reset", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }

    // MARK: - Email verification

    func requestEmailVerification(caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = caller.user
        guard user.emailVerifiedAt == nil else { return }
        try await app.writeTransaction { db in
            try await issueEmailVerification(for: user, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.email_verification_requested", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
    }

    private func issueEmailVerification(for user: User, on db: any Database) async throws {
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
        let raw = SecureToken.generate()
        let token = OneTimeToken()
        token.id = UUID()
        token.$user.id = userID
        token.purpose = purpose
        token.tokenHash = SecureToken.hash(raw)
        token.createdAt = now
        token.expiresAt = now.addingTimeInterval(lifetime)
        try await token.create(on: db)
        return raw
    }

    /// Marks a mailed token used, in the transaction that acts on it, so it works exactly once even when two
    /// requests race with it.
    private func consume(token raw: String, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        let used = try await sql.raw("""
            UPDATE one_time_tokens SET used_at = \(bind: now) WHERE token_hash = \(bind: SecureToken.hash(raw)) AND used_at IS NULL RETURNING id
            """).first()
        guard used != nil else { throw OneTimeTokenError.invalid }
    }

    /// The user a mailed token belongs to, if the token is unused, unexpired and the newest of its kind.
    private func redeem(token raw: String, purpose: OneTimeToken.Purpose) async throws -> User {
        guard raw.utf8.count <= 256,
              let token = try await OneTimeToken.query(on: reads)
                .filter(\.$tokenHash == SecureToken.hash(raw))
                .filter(\.$purpose == purpose)
                .with(\.$user)
                .first(),
              token.usedAt == nil, token.expiresAt > now, token.user.status == .active
        else { throw OneTimeTokenError.invalid }
        return token.user
    }

    // MARK: - TOTP

    func enrollTOTP(caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> TOTPEnrollResponse {
        let user = caller.user
        guard !user.mfaEnabled else { throw HTTPProblem.conflict("MFA is already on; disable it first to enrol a new authenticator.") }
        let secret = TOTP.generateSecret()
        user.mfaSecret = try app.secretBox.seal(secret)
        user.mfaLastUsedStep = nil
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.mfa_enrollment_started", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: origin), on: db)
        }
        return TOTPEnrollResponse(secret: secret, otpauthUri: TOTP.provisioningURI(secret: secret, account: user.email, issuer: "Steward"))
    }

    func activateTOTP(code: String, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> [String] {
        let user = caller.user
        guard !user.mfaEnabled else { throw HTTPProblem.conflict("MFA is already on.") }
        guard user.mfaSecret != nil else { throw HTTPProblem.conflict("Call /auth/mfa/totp/enroll first.") }
        guard let step = try totpStep(for: user, code: code) else {
            throw HTTPProblem.validation([FieldProblem(field: "code", message: "is not the current code of the authenticator")])
        }
        let codes = RecoveryCodes.generate(count: 10)
        user.mfaEnabled = true
        user.mfaLastUsedStep = step
        let userID = try user.requireID()
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$user.$id == userID).delete()
            for code in codes {
                let record = RecoveryCode()
                record.id = UUID()
                record.$user.id = userID
                record.codeHash = SecureToken.hash(RecoveryCodes.normalise(code))
                record.createdAt = now
                try await record.create(on: db)
            }
            try await revokeSessions(of: userID, except: caller.session?.id, reason: "mfa_enabled", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.mfa_enabled", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: userID.lowercasedString, origin: origin), on: db)
        }
        return codes
    }

    func disableTOTP(password: String, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = caller.user
        guard try await hasher.verify(password, against: user.passwordHash) else {
            throw HTTPProblem.validation([FieldProblem(field: "password", message: "is incorrect")])
        }
        guard user.mfaEnabled || user.mfaSecret != nil else { return }
        user.mfaEnabled = false
        user.mfaSecret = nil
        user.mfaLastUsedStep = nil
        let userID = try user.requireID()
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$user.$id == userID).delete()
            try await revokeSessions(of: userID, except: caller.session?.id, reason: "mfa_disabled", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.mfa_disabled", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: userID.lowercasedString, origin: origin), on: db)
        }
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

/// MFA recovery codes: 16 base32 characters (80 bits), shown as four groups.
enum RecoveryCodes {
    static func generate(count: Int) -> [String] {
        (0..<count).map { _ in
            var generator = SystemRandomNumberGenerator()
            let data = Data((0..<10).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
            let raw = Array(Base32.encode(data).prefix(16)).map(String.init).joined()
            return stride(from: 0, to: 16, by: 4).map { start in
                String(raw[raw.index(raw.startIndex, offsetBy: start)..<raw.index(raw.startIndex, offsetBy: start + 4)])
            }.joined(separator: "-")
        }
    }

    static func normalise(_ code: String) -> String {
        code.uppercased().filter { $0.isLetter || $0.isNumber }
    }
}

/// Field rules shared by registration and profile updates.
enum AccountValidation {
    static func email(_ email: String) -> [FieldProblem] {
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        let valid = parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && !parts[1].hasPrefix(".")
            && !parts[1].hasSuffix(".") && email.utf8.count <= 254 && !email.contains(where: { $0.isWhitespace || $0.isNewline })
        return valid ? [] : [FieldProblem(field: "email", message: "must be a valid email address")]
    }

    static func username(_ username: String) -> [FieldProblem] {
        let allowed = username.unicodeScalars.allSatisfy { scalar in
            (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                || scalar == "_" || scalar == "-" || scalar == "."
        }
        guard (3...32).contains(username.count), allowed else {
            return [FieldProblem(field: "username", message: "must be 3 to 32 letters, digits, '.', '_' or '-'")]
        }
        return []
    }

    static func fullName(_ fullName: String?) -> [FieldProblem] {
        guard let fullName else { return [] }
        if fullName.count > 200 { return [FieldProblem(field: "fullName", message: "must be at most 200 characters")] }
        if fullName.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return [FieldProblem(field: "fullName", message: "must not contain control characters")]
        }
        return []
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
