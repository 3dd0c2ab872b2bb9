import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Roles as the tables hold them: the five built-in roles of `RoleCatalog` (fixed) and custom roles that holders of
/// roles:manage create, change and delete. Authorization reads the tables on every request, so a change applies on
/// the next request of every holder, for their tokens and keys alike.
struct RoleService: Sendable {
    let app: Application

    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    /// Every role, built-in ones first (in the catalogue's order), then custom ones by name.
    func all() async throws -> [RoleResponse] {
        let rows = try await (reads as! any SQLDatabase).raw("""
            SELECT r.name AS name, r.description AS description, rp.permission AS permission
            FROM roles r LEFT JOIN role_permissions rp ON rp.role = r.name ORDER BY r.name, rp.permission
            """).all()
        var roles: [String: RoleResponse] = [:]
        for row in rows {
            let name = try row.decode(column: "name", as: String.self)
            let description = try row.decode(column: "description", as: String.self)
            var role = roles[name] ?? RoleResponse(name: name, description: description, permissions: [], builtIn: RoleCatalog.names.contains(name))
            if let permission = try row.decode(column: "permission", as: String?.self) { role.permissions.append(permission) }
            roles[name] = role
        }
        let builtIn = RoleCatalog.names.compactMap { roles[$0] }
        return builtIn + roles.values.filter { !$0.builtIn }.sorted { $0.name < $1.name }
    }

    /// The names of every role, for checking an assignment.
    func names() async throws -> Set<String> {
        Set(try await (reads as! any SQLDatabase).raw("SELECT name FROM roles").all().map { try $0.decode(column: "name", as: String.self) })
    }

    /// The unknown ones among `roles`, as a 422 naming `field`.
    func requireKnown(_ roles: Set<String>, field: String) async throws {
        let known = try await names()
        let unknown = roles.subtracting(known)
        guard unknown.isEmpty else {
            throw HTTPProblem.validation([FieldProblem(field: field, message: "has unknown roles: \(unknown.sorted().prefix(5).joined(separator: ", ")); known: \(known.sorted().joined(separator: ", "))")])
        }
    }

    func create(_ request: RoleCreateRequest, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> RoleResponse {
        var problems = Self.nameProblems(request.name) + Self.descriptionProblems(request.description)
        let (permissions, permissionProblems) = Self.permissions(request.permissions)
        problems += permissionProblems
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        try Self.refuseEscalation(permissions, caller: caller)
        let role = RoleResponse(name: request.name, description: request.description ?? "", permissions: permissions.map(\.rawValue).sorted(), builtIn: false)
        do {
            try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                try await sql.insert(into: "roles").columns("name", "description").values(SQLBind(role.name), SQLBind(role.description)).run()
                try await Self.setPermissions(role.name, role.permissions, on: sql)
                try await app.activityRecorder.record(audit: AuditRecord(
                    action: "role.created", actorID: caller.user.id, actorType: caller.actorType, resourceType: "role",
                    resourceID: role.name, origin: origin,
                    details: ["permissions": .array(role.permissions.map { .string($0) })]), on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("A role named \(role.name) already exists.")
        }
        return role
    }

    func update(_ name: String, fields: [String: JSONValue], caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> RoleResponse {
        guard var role = try await all().first(where: { $0.name == name }) else { throw HTTPProblem.notFound("No role has this name.") }
        guard !role.builtIn else { throw HTTPProblem.conflict("\(name) is a built-in role; built-in roles cannot be changed. Create a custom role instead.") }
        var problems = fields.keys.filter { $0 != "description" && $0 != "permissions" }.sorted()
            .map { FieldProblem(field: $0, message: "cannot be changed") }
        var permissions: Set<Permission>?
        if let value = fields["description"] {
            if case .string(let text) = value { problems += Self.descriptionProblems(text); role.description = text }
            else { problems.append(FieldProblem(field: "description", message: "must be a string")) }
        }
        if let value = fields["permissions"] {
            if case .array(let items) = value, items.allSatisfy({ $0.stringValue != nil }) {
                let (parsed, found) = Self.permissions(items.compactMap(\.stringValue))
                problems += found
                permissions = parsed
            } else {
                problems.append(FieldProblem(field: "permissions", message: "must be an array of permission names"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let before = role.permissions
        if let permissions {
            try Self.refuseEscalation(permissions, caller: caller)
            role.permissions = permissions.map(\.rawValue).sorted()
        }
        let updated = role
        let permissionsChanged = permissions != nil
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            try await sql.update("roles").set("description", to: SQLBind(updated.description)).where("name", .equal, SQLBind(name)).run()
            if permissionsChanged { try await Self.setPermissions(name, updated.permissions, on: sql) }
            try await app.activityRecorder.record(audit: AuditRecord(
                action: "role.updated", actorID: caller.user.id, actorType: caller.actorType, resourceType: "role",
                resourceID: name, origin: origin,
                details: ["from": .array(before.map { .string($0) }), "to": .array(updated.permissions.map { .string($0) }),
                          "fields": .array(fields.keys.sorted().map { .string($0) })]), on: db)
        }
        return updated
    }

    /// Deletes a custom role. One still held needs `reassign`: its holders get that role instead (one they keep
    /// if they hold it already).
    func delete(_ name: String, reassign: String?, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard try await names().contains(name) else { throw HTTPProblem.notFound("No role has this name.") }
        guard !RoleCatalog.names.contains(name) else { throw HTTPProblem.conflict("\(name) is a built-in role; built-in roles cannot be deleted.") }
        guard app.settings.defaultRole != name else {
            throw HTTPProblem.conflict("\(name) is the role new accounts get (setting accounts.defaultRole); make another role the default first.")
        }
        if let reassign {
            guard reassign != name else { throw HTTPProblem.validation([FieldProblem(field: "reassign", message: "must name another role")]) }
            try await requireKnown([reassign], field: "reassign")
        }
        let now = self.now
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let holders = try await sql.raw("SELECT user_id FROM user_roles WHERE role = \(bind: name)").all()
                .map { try $0.decode(column: "user_id", as: UUID.self) }
            if !holders.isEmpty {
                guard let reassign else {
                    throw HTTPProblem.conflict("The role \(name) is held by \(holders.count) user\(holders.count == 1 ? "" : "s"); pass ?reassign=<role> to move them to another role.")
                }
                for user in holders {
                    try await UserRole.assign(reassign, to: user, by: caller.user.id, at: now, on: db)
                }
                try await sql.delete(from: "user_roles").where("role", .equal, SQLBind(name)).run()
            }
            try await sql.delete(from: "roles").where("name", .equal, SQLBind(name)).run()
            try await app.activityRecorder.record(audit: AuditRecord(
                action: "role.deleted", actorID: caller.user.id, actorType: caller.actorType, resourceType: "role",
                resourceID: name, origin: origin,
                details: ["holders": .number(Double(holders.count)), "reassignedTo": reassign.map { .string($0) } ?? .null]), on: db)
        }
    }

    // MARK: Rules

    private static func setPermissions(_ role: String, _ permissions: [String], on sql: any SQLDatabase) async throws {
        try await sql.delete(from: "role_permissions").where("role", .equal, SQLBind(role)).run()
        for permission in permissions {
            try await sql.insert(into: "role_permissions").columns("role", "permission").values(SQLBind(role), SQLBind(permission)).run()
        }
    }

    /// A caller cannot hand out through a role what it cannot do itself.
    private static func refuseEscalation(_ permissions: Set<Permission>, caller: AuthenticatedCaller) throws {
        guard !caller.grants.permissions.contains(.adminFull) else { return }
        let extra = permissions.subtracting(caller.grants.permissions)
        guard extra.isEmpty else {
            throw AccessError.notYours("A role cannot grant permissions you do not hold: \(extra.sorted().map(\.rawValue).joined(separator: ", ")).")
        }
    }

    static func nameProblems(_ name: String) -> [FieldProblem] {
        let scalars = Array(name.unicodeScalars)
        let valid = (2...32).contains(scalars.count) && scalars.first.map { $0 >= "a" && $0 <= "z" } == true
            && scalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" || $0 == "_" }
        return valid ? [] : [FieldProblem(field: "name", message: "must be 2 to 32 lower-case letters, digits, '-' or '_', starting with a letter")]
    }

    static func descriptionProblems(_ description: String?) -> [FieldProblem] {
        guard let description else { return [] }
        if description.count > 200 { return [FieldProblem(field: "description", message: "must be at most 200 characters")] }
        if description.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return [FieldProblem(field: "description", message: "must not contain control characters")]
        }
        return []
    }

    static func permissions(_ names: [String]) -> (Set<Permission>, [FieldProblem]) {
        var permissions: Set<Permission> = []
        var problems: [FieldProblem] = []
        for (index, name) in names.enumerated() {
            if let permission = Permission(rawValue: name) { permissions.insert(permission) }
            else { problems.append(FieldProblem(field: "permissions[\(index)]", message: "is not a permission")) }
        }
        return (permissions, problems)
    }
}

/// `POST /api/v1/roles`.
struct RoleCreateRequest: Content {
    var name: String
    var description: String?
    var permissions: [String]
}
