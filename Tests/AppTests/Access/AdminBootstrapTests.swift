import Fluent
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("AdminBootstrap")
struct AdminBootstrapTests {
    @Test("The first admin comes from STEWARD_ADMIN_EMAIL/PASSWORD, once, with an audit entry and event")
    func fromConfiguration() async throws {
        try await withTestApp(environment: ["STEWARD_ADMIN_EMAIL": "Root@Example.COM", "STEWARD_ADMIN_PASSWORD": "Correct-Horse-9"]) { app in
            let outcome = try await AdminBootstrap(app: app).ensureFirstAdmin()
            #expect(outcome == .created(email: "root@example.com", generatedPassword: nil))
            let user = try #require(try await User.query(on: app.db).first())
            #expect(user.email == "root@example.com")
            #expect(user.status == .active)
            #expect(try await PasswordHasher(cost: 4, threadPool: app.threadPool).verify("Correct-Horse-9", against: user.passwordHash))
            #expect(!user.passwordHash.contains("Correct-Horse-9"))
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "user.created").count() == 1)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "user.created").count() == 1)

            #expect(try await AdminBootstrap(app: app).ensureFirstAdmin() == .alreadyHasUsers)
            #expect(try await User.query(on: app.db).count() == 1)
        }
    }

    @Test("Without a configured password a strong one is generated and works")
    func generated() async throws {
        try await withTestApp(environment: ["STEWARD_ADMIN_PASSWORD": ""]) { app in
            let outcome = try await AdminBootstrap(app: app).ensureFirstAdmin()
            guard case .created(_, let generated?) = outcome else {
                Issue.record("expected a generated password, got \(outcome)")
                return
            }
            #expect(generated.count >= 24)
            #expect(generated.contains { $0.isUppercase } && generated.contains { $0.isLowercase } && generated.contains { $0.isNumber })
            let user = try #require(try await User.query(on: app.db).first())
            #expect(try await PasswordHasher(cost: 4, threadPool: app.threadPool).verify(generated, against: user.passwordHash))
            #expect(AdminBootstrap.generatePassword() != generated)
        }
    }
}
