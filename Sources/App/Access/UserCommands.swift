import Vapor
import StewardFormats

/// `steward user create|list|set-role|unlock|disable|erase`: the same service functions as the admin API.
struct UserCommandGroup: AsyncCommandGroup {
    var help: String { "Manage accounts." }
    var commands: [String: any AnyAsyncCommand] {
        ["create": UserCreateCommand(), "list": UserListCommand(), "set-role": UserSetRoleCommand(),
         "unlock": UserUnlockCommand(), "disable": UserDisableCommand(), "erase": UserEraseCommand()]
    }
}

/// Turns service problems into one-line command failures.
func commandFailure(_ error: any Error) -> any Error {
    switch error {
    case let problem as any ProblemError:
        let fields = problem.fieldProblems.map { "\($0.field) \($0.message)" }.joined(separator: "; ")
        return CommandFailure(fields.isEmpty ? problem.reason : fields)
    default:
        return error
    }
}

struct UserCreateCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "email", help: "Email address.") var email: String?
        @Option(name: "username", help: "Username (3-32 letters, digits, . _ -).") var username: String?
        @Option(name: "password", help: "Password; read from STEWARD_NEW_PASSWORD when omitted.") var password: String?
        @Option(name: "full-name", help: "Full name.") var fullName: String?
        @Option(name: "roles", help: "Comma-separated roles (default viewer).") var roles: String?
        init() {}
    }

    var help: String { "Create an account." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard let email = signature.email, let username = signature.username else {
            throw CommandFailure("user create needs --email and --username")
        }
        guard let password = signature.password ?? ProcessInfo.processInfo.environment["STEWARD_NEW_PASSWORD"] else {
            throw CommandFailure("user create needs --password or STEWARD_NEW_PASSWORD")
        }
        let roles = signature.roles.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
        do {
            let user = try await UserAdminService(app: context.application).create(
                email: email, username: username, password: password, fullName: signature.fullName, roles: roles, actor: .cli)
            context.console.print("created \(user.email) (\(user.id!.lowercasedString))")
        } catch {
            throw commandFailure(error)
        }
    }
}

struct UserListCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "q", help: "Search email, username or name.") var q: String?
        @Option(name: "role", help: "Only this role.") var role: String?
        @Option(name: "status", help: "Only this status.") var status: String?
        init() {}
    }

    var help: String { "List accounts (up to 100, newest first)." }

    func run(using context: CommandContext, signature: Signature) async throws {
        var filter = UserAdminService.Filter()
        filter.q = signature.q
        filter.role = signature.role
        if let raw = signature.status {
            guard let status = User.Status(rawValue: raw) else { throw CommandFailure("--status must be active, inactive, suspended or deleted") }
            filter.status = status
        }
        let (users, _) = try await UserAdminService(app: context.application).list(filter: filter, page: PageRequest(limit: 100))
        for user in users {
            context.console.print("\(user.id.lowercasedString)  \(user.email)  \(user.username)  \(user.status)  \(user.roles.joined(separator: ","))")
        }
        context.console.print("\(users.count) user(s)")
    }
}

struct UserSetRoleCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "email", help: "The user's email.") var email: String
        @Argument(name: "roles", help: "Comma-separated roles, replacing the current ones.") var roles: String
        init() {}
    }

    var help: String { "Replace a user's roles." }

    func run(using context: CommandContext, signature: Signature) async throws {
        do {
            let service = UserAdminService(app: context.application)
            let user = try await service.find(email: signature.email)
            let roles = signature.roles.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let (_, now) = try await service.setRoles(try user.requireID(), roles: roles, actor: .cli)
            context.console.print("\(user.email): \(now.joined(separator: ","))")
        } catch {
            throw commandFailure(error)
        }
    }
}

struct UserUnlockCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "email", help: "The user's email.") var email: String
        init() {}
    }

    var help: String { "Lift a login lockout." }

    func run(using context: CommandContext, signature: Signature) async throws {
        do {
            let service = UserAdminService(app: context.application)
            let user = try await service.find(email: signature.email)
            _ = try await service.unlock(try user.requireID(), actor: .cli)
            context.console.print("unlocked \(user.email)")
        } catch {
            throw commandFailure(error)
        }
    }
}

struct UserDisableCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "email", help: "The user's email.") var email: String
        init() {}
    }

    var help: String { "Set a user's status to inactive; their sessions end." }

    func run(using context: CommandContext, signature: Signature) async throws {
        do {
            let service = UserAdminService(app: context.application)
            let user = try await service.find(email: signature.email)
            _ = try await service.update(try user.requireID(), fields: ["status": "inactive"], actor: .cli)
            context.console.print("disabled \(user.email)")
        } catch {
            throw commandFailure(error)
        }
    }
}

struct UserEraseCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Argument(name: "email", help: "The user's email.") var email: String
        @Option(name: "confirm", help: "The user's id, to confirm: erasure cannot be undone.") var confirm: String?
        init() {}
    }

    var help: String { "Erase a user: their personal data goes, a tombstone keeps the id (STEWARD_ERASE_EXECUTIONS says what becomes of their executions)." }

    func run(using context: CommandContext, signature: Signature) async throws {
        do {
            let service = UserAdminService(app: context.application)
            let user = try await service.find(email: signature.email)
            let id = try user.requireID()
            guard signature.confirm != nil else {
                throw CommandFailure("erasing \(user.email) cannot be undone; run again with --confirm \(id.lowercasedString)")
            }
            let erased = try await UserErasure(app: context.application).erase(id, confirmation: signature.confirm, actor: .cli)
            context.console.print("erased \(id.lowercasedString) (executions: \(erased.executions), \(erased.executionsAffected); workflow runs: \(erased.workflowRunsAffected))")
        } catch {
            throw commandFailure(error)
        }
    }
}

/// `steward apikey create --user EMAIL --scopes a,b [--name N] [--expires-in-days D]`.
struct APIKeyCommandGroup: AsyncCommandGroup {
    var help: String { "Manage API keys." }
    var commands: [String: any AnyAsyncCommand] { ["create": APIKeyCreateCommand()] }
}

struct APIKeyCreateCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "user", help: "Owner's email.") var user: String?
        @Option(name: "scopes", help: "Comma-separated permissions (a subset of the owner's).") var scopes: String?
        @Option(name: "name", help: "A label (default: cli).") var name: String?
        @Option(name: "expires-in-days", help: "Expire after this many days.") var expiresInDays: Int?
        init() {}
    }

    var help: String { "Create an API key and print it (only the key, on its own line, for scripts)." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard let email = signature.user, let scopes = signature.scopes else {
            throw CommandFailure("apikey create needs --user EMAIL and --scopes a,b")
        }
        let app = context.application
        do {
            let owner = try await UserAdminService(app: app).find(email: email)
            let grants = try await UserRole.grants(of: try owner.requireID(), on: app.db)
            let expiresAt = signature.expiresInDays.map { app.wallClock.now().addingTimeInterval(TimeInterval($0) * 86_400) }
            let created = try await APIKeyService(app: app).create(
                name: signature.name ?? "cli", scopes: scopes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
                expiresAt: expiresAt, ownerID: try owner.requireID(), ownerGrants: grants, actor: nil, origin: .system)
            context.console.print(created.key)
        } catch {
            throw commandFailure(error)
        }
    }
}
