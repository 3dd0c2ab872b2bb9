import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// What the identity services share: the app, its settings, the clock, the hasher and the recorder. Each service
/// (`AccountRegistration`, `PasswordLogin`, `SessionService`, `AccountRecovery`, `TOTPEnrollment`) is a small
/// value made per call from the app. Every state change writes its audit entry (and its event, when users can see
/// it) in the same transaction.
protocol IdentityService: Sendable {
    var app: Application { get }
}

extension IdentityService {
    var config: AppConfig { app.appConfig }
    /// The pool: for reads only (writes go through `app.writeTransaction`).
    var reads: any Database { app.reads }
    var now: Date { app.wallClock.now() }
    var hasher: PasswordHasher { PasswordHasher(cost: config.bcryptCost, threadPool: app.passwordHashingPool) }
    var recorder: ActivityRecorder { app.activityRecorder }

    /// An audit entry that goes with no other change (a refused login, say), in a write of its own.
    func auditAlone(_ record: AuditRecord) async throws {
        _ = try await app.writeTransaction { [recorder] db in try await recorder.record(audit: record, on: db) }
    }

    /// The time step of `code` if it is the user's current TOTP code and newer than the last one used.
    func totpStep(for user: User, code: String) throws -> Int64? {
        guard let sealed = user.mfaSecret, let secret = Base32.decode(try app.secretBox.open(sealed)) else { return nil }
        return TOTP.matchingStep(code: code, secret: secret, at: now, lastUsedStep: user.mfaLastUsedStep)
    }
}
