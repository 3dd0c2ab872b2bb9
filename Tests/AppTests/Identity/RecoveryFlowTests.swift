import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

private func post(_ app: Application, _ path: String, _ body: [String: String], headers: HTTPHeaders = [:]) async throws -> TestingHTTPResponse {
    try await app.testing().sendRequest(.POST, path, headers: headers, beforeRequest: { req in try req.json(body) })
}

@Suite("Password reset and email verification")
struct RecoveryFlowTests {
    @Test("Reset request always answers 202; only a real account gets a mail")
    func noEnumeration() async throws {
        try await withTestApp { app in
            let (mailer, _) = app.useTestDoubles()
            try await makeUser(app, email: "real@example.com")
            try await MailOutbox(app: app).deliverDue()
            let before = mailer.sent.count
            #expect(try await post(app, "/api/v1/auth/password-reset/request", ["email": "nobody@example.com"]).status == .accepted)
            #expect(try await post(app, "/api/v1/auth/password-reset/request", ["email": "REAL@example.com"]).status == .accepted)
            try await MailOutbox(app: app).deliverDue()
            #expect(mailer.sent.count == before + 1)
            #expect(mailer.sent.last?.to == "real@example.com")
        }
    }

    @Test("Reset confirm sets the password, revokes every session, and the token works once")
    func resetFlow() async throws {
        try await withTestApp { app in
            let (mailer, _) = app.useTestDoubles()
            try await makeUser(app, email: "forgot@example.com")
            let session = try await login(app, email: "forgot@example.com")
            _ = try await post(app, "/api/v1/auth/password-reset/request", ["email": "forgot@example.com"])
            try await MailOutbox(app: app).deliverDue()
            let token = try #require(mailer.token(to: "forgot@example.com"))
            #expect(token.count >= 22, "at least 128 bits")

            let weak = try await post(app, "/api/v1/auth/password-reset/confirm", ["token": token, "newPassword": "password"])
            #expect(weak.status == .unprocessableEntity)

            let confirm = try await post(app, "/api/v1/auth/password-reset/confirm", ["token": token, "newPassword": "Brand-New-Secret-7"])
            #expect(confirm.status == .noContent)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(session.accessToken)).status == .unauthorized)
            _ = try await login(app, email: "forgot@example.com", password: "Brand-New-Secret-7")

            let again = try await post(app, "/api/v1/auth/password-reset/confirm", ["token": token, "newPassword": "Another-Secret-8"])
            #expect(again.status == .unprocessableEntity)
            #expect(try again.problem().errors?.first?.field == "token")
        }
    }

    @Test("Only the newest reset token works, and tokens expire after 30 minutes")
    func newestAndExpiry() async throws {
        try await withTestApp { app in
            let (mailer, clock) = app.useTestDoubles()
            try await makeUser(app, email: "twice@example.com")
            _ = try await post(app, "/api/v1/auth/password-reset/request", ["email": "twice@example.com"])
            try await MailOutbox(app: app).deliverDue()
            let first = try #require(mailer.token(to: "twice@example.com"))
            _ = try await post(app, "/api/v1/auth/password-reset/request", ["email": "twice@example.com"])
            try await MailOutbox(app: app).deliverDue()
            let second = try #require(mailer.token(to: "twice@example.com"))
            #expect(first != second)
            #expect(try await post(app, "/api/v1/auth/password-reset/confirm", ["token": first, "newPassword": "Brand-New-Secret-7"]).status == .unprocessableEntity)

            clock.advance(by: 31 * 60)
            #expect(try await post(app, "/api/v1/auth/password-reset/confirm", ["token": second, "newPassword": "Brand-New-Secret-7"]).status == .unprocessableEntity)
        }
    }

    @Test("The log mailer never writes the token; the database stores only its hash")
    func tokensStayOutOfLogs() async throws {
        try await withTestApp { app in
            let (mailer, _) = app.useTestDoubles()
            try await makeUser(app, email: "quiet@example.com")
            _ = try await post(app, "/api/v1/auth/password-reset/request", ["email": "quiet@example.com"])
            try await MailOutbox(app: app).deliverDue()
            let mail = try #require(mailer.sent.last)
            let token = try #require(mailer.token(to: "quiet@example.com"))
            #expect(!mail.redactedBody.contains(token))
            #expect(mail.redactedBody.contains("[redacted]"))
            let stored = try await OneTimeToken.query(on: app.db).all()
            #expect(stored.allSatisfy { $0.tokenHash != token })
            #expect(stored.contains { $0.tokenHash == SecureToken.hash(token) })
            // Sent mail keeps no secret.
            #expect(try await OutboxMail.query(on: app.db).filter(\.$status == .sent).all().allSatisfy { $0.secret == nil })
        }
    }

    @Test("Email verification: registering mails a token; confirming marks the address verified")
    func verifyEmail() async throws {
        try await withTestApp { app in
            let (mailer, clock) = app.useTestDoubles()
            try await makeUser(app, email: "verify@example.com")
            try await MailOutbox(app: app).deliverDue()
            let token = try #require(mailer.token(to: "verify@example.com"))
            #expect(try await post(app, "/api/v1/auth/verify-email/confirm", ["token": "wrong"]).status == .unprocessableEntity)
            #expect(try await post(app, "/api/v1/auth/verify-email/confirm", ["token": token]).status == .noContent)
            let pair = try await login(app, email: "verify@example.com")
            #expect(pair.user.emailVerified)
            #expect(try await post(app, "/api/v1/auth/verify-email/confirm", ["token": token]).status == .unprocessableEntity)

            // A new request is 202, and a verification token lives 24 hours.
            try await makeUser(app, email: "late@example.com")
            let late = try await login(app, email: "late@example.com")
            #expect(try await post(app, "/api/v1/auth/verify-email/request", [:], headers: bearer(late.accessToken)).status == .accepted)
            try await MailOutbox(app: app).deliverDue()
            let lateToken = try #require(mailer.token(to: "late@example.com"))
            clock.advance(by: 24 * 3600 + 1)
            #expect(try await post(app, "/api/v1/auth/verify-email/confirm", ["token": lateToken]).status == .unprocessableEntity)
        }
    }

    @Test("Change password: wrong current is 422; success revokes other sessions and the new password works")
    func changePassword() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "change@example.com")
            let current = try await login(app, email: "change@example.com")
            let other = try await login(app, email: "change@example.com")
            let wrong = try await post(app, "/api/v1/auth/change-password", ["currentPassword": "Nope-Nope-1", "newPassword": "Brand-New-Secret-7"], headers: bearer(current.accessToken))
            #expect(wrong.status == .unprocessableEntity)
            #expect(try wrong.problem().errors?.first?.field == "currentPassword")

            let ok = try await post(app, "/api/v1/auth/change-password", ["currentPassword": strongPassword, "newPassword": "Brand-New-Secret-7"], headers: bearer(current.accessToken))
            #expect(ok.status == .noContent)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(current.accessToken)).status == .ok)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(other.accessToken)).status == .unauthorized)
            _ = try await login(app, email: "change@example.com", password: "Brand-New-Secret-7")
            let old = try await post(app, "/api/v1/auth/login", ["email": "change@example.com", "password": strongPassword])
            #expect(old.status == .unauthorized)
        }
    }
}

@Suite("TOTP MFA")
struct MFATests {
    /// Enrols and activates TOTP for a fresh user; returns the secret, recovery codes and the session's pair.
    private func enrol(_ app: Application, clock: TestClock, email: String) async throws -> (Data, [String], TokenPairResponse) {
        try await makeUser(app, email: email)
        let pair = try await login(app, email: email)
        let enrolled = try await post(app, "/api/v1/auth/mfa/totp/enroll", [:], headers: bearer(pair.accessToken))
        #expect(enrolled.status == .ok)
        let body = try enrolled.content.decode(TOTPEnrollResponse.self)
        #expect(body.otpauthUri.hasPrefix("otpauth://totp/Steward:"))
        #expect(body.otpauthUri.contains("secret=\(body.secret)"))
        let secret = try #require(Base32.decode(body.secret))
        #expect(secret.count == 20)

        let wrong = try await post(app, "/api/v1/auth/mfa/totp/activate", ["code": "000000"], headers: bearer(pair.accessToken))
        #expect(wrong.status == .unprocessableEntity)
        let code = TOTP.code(secret: secret, step: TOTP.step(at: clock.now()))
        let activated = try await post(app, "/api/v1/auth/mfa/totp/activate", ["code": code], headers: bearer(pair.accessToken))
        #expect(activated.status == .ok)
        let codes = try activated.content.decode(RecoveryCodesResponse.self).recoveryCodes
        #expect(codes.count == 10)
        #expect(Set(codes).count == 10)
        return (secret, codes, pair)
    }

    private func mfaToken(_ app: Application, email: String) async throws -> String {
        let res = try await post(app, "/api/v1/auth/login", ["email": email, "password": strongPassword])
        #expect(res.status == .ok)
        let body = try res.json()
        #expect(body["mfaRequired"] == true)
        #expect(body["accessToken"] == nil)
        guard case .string(let token) = body["mfaToken"] else { throw Abort(.internalServerError, reason: "no mfaToken") }
        return token
    }

    @Test("With MFA on, login answers mfaRequired; the mfaToken works only at /mfa/verify, and a code is accepted once")
    func loginWithTOTP() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let (secret, _, _) = try await enrol(app, clock: clock, email: "mfa@example.com")
            clock.advance(by: 30)

            let token = try await mfaToken(app, email: "mfa@example.com")
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(token)).status == .unauthorized)

            let code = TOTP.code(secret: secret, step: TOTP.step(at: clock.now()))
            let verified = try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": code])
            #expect(verified.status == .ok)
            let pair = try verified.content.decode(TokenPairResponse.self)
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/auth/me", headers: bearer(pair.accessToken)).status == .ok)

            // The challenge is single-use, and the same code is refused on a new login (replay within its window).
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": code]).status == .unauthorized)
            let second = try await mfaToken(app, email: "mfa@example.com")
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": second, "code": code]).status == .unauthorized)
        }
    }

    @Test("Codes are accepted for the current step ±1 only; the mfaToken expires after 5 minutes")
    func window() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let (secret, _, _) = try await enrol(app, clock: clock, email: "window@example.com")
            clock.advance(by: 300)
            let step = TOTP.step(at: clock.now())
            let token = try await mfaToken(app, email: "window@example.com")
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": TOTP.code(secret: secret, step: step + 2)]).status == .unauthorized)
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": TOTP.code(secret: secret, step: step - 2)]).status == .unauthorized)
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": TOTP.code(secret: secret, step: step + 1)]).status == .ok)

            clock.advance(by: 120)
            let stale = try await mfaToken(app, email: "window@example.com")
            clock.advance(by: 301)
            let code = TOTP.code(secret: secret, step: TOTP.step(at: clock.now()))
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": stale, "code": code]).status == .unauthorized)
        }
    }

    @Test("A recovery code signs in once; wrong codes count toward the lockout")
    func recoveryCodesAndLockout() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let (_, codes, _) = try await enrol(app, clock: clock, email: "recover@example.com")
            let token = try await mfaToken(app, email: "recover@example.com")
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": token, "code": codes[0].lowercased()]).status == .ok)
            let again = try await mfaToken(app, email: "recover@example.com")
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": again, "code": codes[0]]).status == .unauthorized)

            for _ in 1...4 {
                #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": again, "code": "123456"]).status == .unauthorized)
            }
            #expect(try await post(app, "/api/v1/auth/mfa/verify", ["mfaToken": again, "code": codes[1]]).status == .locked)
            #expect(try await post(app, "/api/v1/auth/login", ["email": "recover@example.com", "password": strongPassword]).status == .locked)
        }
    }

    @Test("The TOTP secret is stored encrypted; disabling needs the password and turns MFA off")
    func disable() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let (secret, _, pair) = try await enrol(app, clock: clock, email: "off@example.com")
            let stored = try #require(try await User.query(on: app.db).filter(\.$email == "off@example.com").first())
            #expect(stored.mfaEnabled)
            #expect(stored.mfaSecret?.hasPrefix("v1.") == true)
            #expect(stored.mfaSecret?.contains(Base32.encode(secret)) == false)

            let wrong = try await app.testing().sendRequest(.DELETE, "/api/v1/auth/mfa/totp", headers: bearer(pair.accessToken), beforeRequest: { req in
                try req.json(["password": "Wrong-Password-1"])
            })
            #expect(wrong.status == .unprocessableEntity)
            let ok = try await app.testing().sendRequest(.DELETE, "/api/v1/auth/mfa/totp", headers: bearer(pair.accessToken), beforeRequest: { req in
                try req.json(["password": strongPassword])
            })
            #expect(ok.status == .noContent)
            _ = try await login(app, email: "off@example.com")
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "auth.mfa_disabled").count() == 1)
        }
    }
}

@Suite("TOTP")
struct TOTPTests {
    @Test("RFC 6238 SHA-1 test vectors", arguments: [
        (Int64(59), "94287082"), (Int64(1_111_111_109), "07081804"), (Int64(1_111_111_111), "14050471"),
        (Int64(1_234_567_890), "89005924"), (Int64(2_000_000_000), "69279037"), (Int64(20_000_000_000), "65353130"),
    ])
    func vectors(time: Int64, expected: String) {
        let secret = Data("12345678901234567890".utf8)
        let step = TOTP.step(at: Date(timeIntervalSince1970: TimeInterval(time)))
        #expect(TOTP.code(secret: secret, step: step, digits: 8) == expected)
        #expect(TOTP.code(secret: secret, step: step) == String(expected.suffix(6)))
    }

    @Test("Base32 round-trips and matches RFC 4648")
    func base32() {
        #expect(Base32.encode(Data("foobar".utf8)) == "MZXW6YTBOI")
        #expect(Base32.decode("MZXW6YTBOI") == Data("foobar".utf8))
        #expect(Base32.decode("not base32!") == nil)
    }
}

@Suite("Mail outbox")
struct MailOutboxTests {
    @Test("STEWARD_MAIL=file:<dir> writes one RFC 5322 .eml per mail")
    func fileMailer() async throws {
        let mailDirectory = try TemporaryDirectory()
        defer { mailDirectory.remove() }
        try await withTestApp(environment: ["STEWARD_MAIL": "file:\(mailDirectory.path)"]) { app in
            try await makeUser(app, email: "eml@example.com")
            #expect(try await MailOutbox(app: app).deliverDue() == 1)
            let files = try FileManager.default.contentsOfDirectory(atPath: mailDirectory.path)
            #expect(files.count == 1)
            let file = try #require(files.first)
            let text = try String(contentsOfFile: mailDirectory.path + "/" + file, encoding: .utf8)
            #expect(text.contains("To: eml@example.com\r\n"))
            #expect(text.contains("Subject: Confirm your email address\r\n"))
            #expect(text.contains("MIME-Version: 1.0\r\n"))
            #expect(text.contains("\r\n\r\n"))
            #expect(text.range(of: #"token=[A-Za-z0-9_-]{40,}"#, options: .regularExpression) != nil)
        }
    }

    @Test("A failing transport retries with back-off, and queued mail survives a restart")
    func retriesAndRestart() async throws {
        struct Down: Mailer { func send(_ mail: Mail) async throws { throw MailError.transport("connection refused") } }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try await makeTestApp(directory: directory)
        let clock = TestClock()
        first.wallClock = clock
        first.mailer = Down()
        try await makeUser(first, email: "retry@example.com")
        #expect(try await MailOutbox(app: first).deliverDue() == 0)
        let pending = try #require(try await OutboxMail.query(on: first.db).first())
        #expect(pending.status == .pending)
        #expect(pending.attempts == 1)
        #expect(pending.lastError?.contains("connection refused") == true)
        try await first.asyncShutdown()

        let second = try await makeTestApp(directory: directory, freshDatabase: false)
        do {
            let mailer = CapturingMailer()
            second.mailer = mailer
            second.wallClock = clock
            #expect(try await MailOutbox(app: second).deliverDue() == 0, "not due before its back-off")
            clock.advance(by: 31)
            #expect(try await MailOutbox(app: second).deliverDue() == 1)
            #expect(mailer.sent.first?.to == "retry@example.com")
        } catch {
            try? await second.asyncShutdown()
            throw error
        }
        try await second.asyncShutdown()
    }
}
