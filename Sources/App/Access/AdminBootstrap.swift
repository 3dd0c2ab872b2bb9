import Fluent
import Vapor
import StewardFormats

/// Creates the first admin account when the database has no user yet.
public struct AdminBootstrap: Sendable {
    let app: Application

    public init(app: Application) {
        self.app = app
    }

    /// What happened, for the log and for tests.
    public enum Outcome: Equatable, Sendable {
        case alreadyHasUsers
        case created(email: String, generatedPassword: String?)
    }

    /// Creates the admin from configuration, or with a generated password that is printed once.
    @discardableResult
    public func ensureFirstAdmin() async throws -> Outcome {
        let config = app.appConfig
        if try await User.query(on: app.db).count() > 0 { return .alreadyHasUsers }

        let generated = config.adminPassword == nil ? Self.generatePassword() : nil
        let password = config.adminPassword ?? generated!
        let hash = try await PasswordHasher(cost: config.bcryptCost, threadPool: app.passwordHashingPool).hash(password)
        let user = User(email: config.adminEmail, username: "admin", fullName: "Administrator", passwordHash: hash)
        user.emailVerifiedAt = app.wallClock.now()

        do {
            try await app.writeTransaction { db in
                try await user.create(on: db)
                let id = try user.requireID()
                try await UserRole.assign(RoleCatalog.admin, to: id, by: nil, at: app.wallClock.now(), on: db)
                try await app.activityRecorder.record(
                    audit: AuditRecord(action: "user.created", actorID: nil, actorType: .system, resourceType: "user",
                                       resourceID: id.lowercasedString, details: ["reason": "bootstrap"]),
                    event: EventRecord(type: "user.created", actorID: nil, resourceType: "user",
                                       resourceID: id.lowercasedString, data: ["reason": "bootstrap"]),
                    on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            // Another instance created it first.
            return .alreadyHasUsers
        }
        if let generated {
            app.logger.warning("Created the first admin \(user.email) with the generated password \(generated) — store it now, it is not shown again.")
        } else {
            app.logger.notice("Created the first admin \(user.email) from STEWARD_ADMIN_EMAIL/STEWARD_ADMIN_PASSWORD.")
        }
        return .created(email: user.email, generatedPassword: generated)
    }

    /// 24 characters from 57 unambiguous symbols (about 140 bits), then one of each class.
    static func generatePassword() -> String {
        let alphabet = Array("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
        var generator = SystemRandomNumberGenerator()
        let body = (0..<24).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] }
        // Guarantee every class so the password passes any policy.
        return String(body) + "7aZ"
    }
}
