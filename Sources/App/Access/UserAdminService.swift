import Fluent
import FluentSQL
import Foundation
import SQLKit
import Vapor
import StewardFormats
import StewardSQLite

/// Administration of accounts: search, status, soft delete, roles and unlock. The CLI calls the same functions.
/// The last active admin can never be demoted, disabled or deleted.
struct UserAdminService: Sendable {
    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }
    private var recorder: ActivityRecorder { app.activityRecorder }

    /// Who is acting, for audit entries: a caller over HTTP, or the CLI (system).
    struct Actor: Sendable {
        var id: UUID?
        var type: ActorType
        var origin: RequestOrigin

        static let cli = Actor(id: nil, type: .system, origin: .system)

        init(id: UUID?, type: ActorType, origin: RequestOrigin) {
            self.id = id
            self.type = type
            self.origin = origin
        }

        init(_ caller: AuthenticatedCaller, origin: RequestOrigin) {
            self.init(id: caller.user.id, type: caller.actorType, origin: origin)
        }
    }

    /// Filters of `GET /users`.
    struct Filter: Sendable {
        var q: String?
        var role: String?
        var status: User.Status?
    }

    func list(filter: Filter, page: PageRequest) async throws -> ([AdminUserResponse], String?) {
        var query = User.query(on: reads)
        if let q = filter.q?.trimmingCharacters(in: .whitespaces), !q.isEmpty {
            // q is bound and matched literally: its % and _ are no wildcards.
            let needle = String(q.lowercased().prefix(100))
            func contains(_ text: any SQLExpression) -> DatabaseQuery.Filter {
                .sql(TextContains(text: SQLFunction("lower", args: text), needle: needle))
            }
            query = query.group(.or) { group in
                group.filter(contains(SQLColumn("email"))).filter(contains(SQLColumn("username")))
                    .filter(contains(SQLFunction("coalesce", args: SQLColumn("full_name"), SQLLiteral.string(""))))
            }
        }
        if let status = filter.status { query = query.filter(\.$status == status) }
        if let role = filter.role {
            let holders = try await UserRole.query(on: reads).filter(\.$role == role).listed().map(\.$user.id)
            query = query.filter(\.$id ~~ holders)
        }
        let unfiltered = filter.q == nil && filter.status == nil && filter.role == nil
        // Each item carries its roles (`AdminUserResponse.extraColumns`): one statement per page.
        let (users, next) = try await query.newestFirst(as: AdminUserResponse.self, by: "created_at", { ($0.createdAt, $0.id) }, page: page,
                                                        through: app.sqliteReaders, offLoopOn: unfiltered ? nil : app.threadPool)
        return (users, next)
    }

    func find(_ id: UUID) async throws -> (User, [String]) {
        guard let user = try await User.find(id, on: reads) else { throw HTTPProblem.notFound("No such user.") }
        return (user, try await UserRole.grants(of: id, on: reads).roles)
    }

    func find(email: String) async throws -> User {
        guard let user = try await User.query(on: reads).filter(\.$email == User.normalise(email: email)).first() else {
            throw HTTPProblem.notFound("No user with that email.")
        }
        return user
    }

    /// Applies an admin PATCH: `fullName` and `status` only; anything else is 422 and nothing is written.
    func update(_ id: UUID, fields: [String: JSONValue], actor: Actor) async throws -> (User, [String]) {
        let allowed: Set<String> = ["fullName", "status"]
        var problems = fields.keys.filter { !allowed.contains($0) }.sorted()
            .map { FieldProblem(field: $0, message: "cannot be set here") }
        var newStatus: User.Status?
        var fullName: String??
        if let value = fields["status"] {
            if case .string(let raw) = value, let status = User.Status(rawValue: raw), status != .deleted {
                newStatus = status
            } else {
                problems.append(FieldProblem(field: "status", message: "must be active, inactive or suspended (DELETE the user to delete it)"))
            }
        }
        if let value = fields["fullName"] {
            switch value {
            case .null: fullName = .some(nil)
            case .string(let text):
                let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
                problems += AccountValidation.fullName(trimmed)
                fullName = .some(trimmed.isEmpty ? nil : trimmed)
            default: problems.append(FieldProblem(field: "fullName", message: "must be a string or null"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let (user, roles) = try await find(id)
        let requestedStatus = newStatus, requestedName = fullName
        try await app.writeTransaction { db in
            if let newStatus = requestedStatus, newStatus != user.status {
                if newStatus != .active { try await ensureNotLastAdmin(user, on: db, change: "disable") }
                try await changeStatus(user, to: newStatus, actor: actor, on: db)
            }
            if let fullName = requestedName {
                user.fullName = fullName
                try await user.save(on: db)
                let userID = try user.requireID().lowercasedString
                try await recorder.record(
                    audit: AuditRecord(action: "user.updated", actorID: actor.id, actorType: actor.type, resourceType: "user",
                                       resourceID: userID, origin: actor.origin, details: ["fields": ["fullName"]]),
                    event: EventRecord(type: "user.updated", actorID: actor.id, resourceType: "user", resourceID: userID,
                                       data: ["fullName": fullName.map { .string($0) } ?? .null]),
                    on: db)
            }
        }
        return (user, roles)
    }

    /// Sets a status; anything but `active` also ends the user's sessions and keys.
    private func changeStatus(_ user: User, to status: User.Status, actor: Actor, on db: any Database) async throws {
        let previous = user.status
        user.status = status
        try await user.save(on: db)
        let userID = try user.requireID()
        if status != .active {
            try await SessionService(app: app).revokeSessions(of: userID, except: nil, reason: "status_\(status.rawValue)",
                                                           actorID: actor.id, origin: actor.origin, on: db)
        }
        if status == .deleted {
            let keys = try await APIKey.query(on: db).filter(\.$user.$id == userID).filter(\.$revokedAt == nil).all()
            for key in keys {
                try await APIKeyService(app: app).revoke(key, reason: "user_deleted", actorID: actor.id, actorType: actor.type,
                                                         origin: actor.origin, on: db)
            }
        }
        try await recorder.record(
            audit: AuditRecord(action: status == .deleted ? "user.deleted" : "user.status_changed", actorID: actor.id,
                               actorType: actor.type, resourceType: "user", resourceID: userID.lowercasedString,
                               origin: actor.origin, details: ["from": .string(previous.rawValue), "to": .string(status.rawValue)]),
            event: EventRecord(type: "user.updated", actorID: actor.id, resourceType: "user", resourceID: userID.lowercasedString,
                               data: ["status": .string(status.rawValue)]),
            on: db)
    }

    /// Soft delete: status `deleted`, every session and key revoked. The row stays for the audit trail.
    func delete(_ id: UUID, actor: Actor) async throws {
        let (user, _) = try await find(id)
        guard user.status != .deleted else { return }
        try await app.writeTransaction { db in
            try await ensureNotLastAdmin(user, on: db, change: "delete")
            try await changeStatus(user, to: .deleted, actor: actor, on: db)
        }
    }

    /// Replaces a user's roles.
    func setRoles(_ id: UUID, roles requested: [String], actor: Actor) async throws -> (User, [String]) {
        let roles = Set(requested)
        try await RoleService(app: app).requireKnown(roles, field: "roles")
        let (user, current) = try await find(id)
        let userID = try user.requireID()
        try await app.writeTransaction { db in
            if current.contains(RoleCatalog.admin), !roles.contains(RoleCatalog.admin) {
                try await ensureNotLastAdmin(user, on: db, change: "demote")
            }
            try await UserRole.query(on: db).filter(\.$user.$id == userID).filter(\.$role !~ Array(roles)).delete()
            for role in roles.sorted() {
                try await UserRole.assign(role, to: userID, by: actor.id, at: now, on: db)
            }
            try await recorder.record(
                audit: AuditRecord(action: "user.roles_changed", actorID: actor.id, actorType: actor.type, resourceType: "user",
                                   resourceID: userID.lowercasedString, origin: actor.origin,
                                   details: ["from": .array(current.map { .string($0) }), "to": .array(roles.sorted().map { .string($0) })]),
                event: EventRecord(type: "user.updated", actorID: actor.id, resourceType: "user", resourceID: userID.lowercasedString,
                                   data: ["roles": .array(roles.sorted().map { .string($0) })]),
                on: db)
        }
        return (user, roles.sorted())
    }

    /// Lifts a login lock on the user's email.
    func unlock(_ id: UUID, actor: Actor) async throws -> (User, [String]) {
        let (user, roles) = try await find(id)
        user.failedLoginCount = 0
        user.lockedUntil = nil
        try await app.writeTransaction { db in
            try await user.save(on: db)
            try await LoginThrottle.query(on: db).filter(\.$id == app.auditKeys.emailDigest(user.email)).delete()
            try await recorder.record(audit: AuditRecord(
                action: "user.unlocked", actorID: actor.id, actorType: actor.type, resourceType: "user",
                resourceID: user.id?.lowercasedString, origin: actor.origin), on: db)
        }
        return (user, roles)
    }

    /// Creates an account with the given roles (the CLI's `user create`).
    func create(email: String, username: String, password: String, fullName: String?, roles: [String], actor: Actor) async throws -> User {
        try await RoleService(app: app).requireKnown(Set(roles), field: "roles")
        let user = try await AccountRegistration(app: app).register(
            RegisterRequest(email: email, username: username, password: password, fullName: fullName), origin: actor.origin)
        if !roles.isEmpty {
            _ = try await setRoles(try user.requireID(), roles: roles, actor: actor)
        }
        return user
    }

    /// Refuses a change that would leave no active admin.
    func ensureNotLastAdmin(_ user: User, on db: any Database, change: String) async throws {
        let userID = try user.requireID()
        let isAdmin = try await UserRole.query(on: db).filter(\.$user.$id == userID).filter(\.$role == RoleCatalog.admin).count() > 0
        guard isAdmin, user.status == .active else { return }
        let adminIDs = try await UserRole.query(on: db).filter(\.$role == RoleCatalog.admin).all().map(\.$user.id)
        let otherActiveAdmins = try await User.query(on: db)
            .filter(\.$id ~~ adminIDs).filter(\.$id != userID).filter(\.$status == .active).count()
        guard otherActiveAdmins > 0 else {
            throw HTTPProblem.conflict("This is the last active admin; it cannot be \(change == "demote" ? "demoted" : change == "disable" ? "disabled" : change == "erase" ? "erased" : "deleted"). Make another user admin first.")
        }
    }
}
