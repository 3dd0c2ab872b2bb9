import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Turning TOTP MFA on and off, with its recovery codes. (The MFA step of a login is in `PasswordLogin`.)
struct TOTPEnrollment: IdentityService {
    let app: Application


    func enrollTOTP(caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> TOTPEnrollResponse {
        let user = try await caller.account(on: app.db)
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
        let user = try await caller.account(on: app.db)
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
            try await SessionService(app: app).revokeSessions(of: userID, except: caller.session?.id, reason: "mfa_enabled", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.mfa_enabled", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: userID.lowercasedString, origin: origin), on: db)
        }
        return codes
    }

    func disableTOTP(password: String, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let user = try await caller.account(on: app.db)
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
            try await SessionService(app: app).revokeSessions(of: userID, except: caller.session?.id, reason: "mfa_disabled", actorID: user.id, origin: origin, on: db)
            try await recorder.record(audit: AuditRecord(
                action: "auth.mfa_disabled", actorID: user.id, actorType: .user, resourceType: "user",
                resourceID: userID.lowercasedString, origin: origin), on: db)
        }
    }
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
