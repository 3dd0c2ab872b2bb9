import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Signing up, and changing one's own profile.
struct AccountRegistration: IdentityService {
    let app: Application


    func register(_ request: RegisterRequest, origin: RequestOrigin) async throws -> User {
        let email = User.normalise(email: request.email)
        let username = request.username.trimmingCharacters(in: .whitespaces)
        let fullName = request.fullName?.trimmingCharacters(in: .whitespacesAndNewlines)
        var problems = AccountValidation.email(email) + AccountValidation.username(username) + AccountValidation.fullName(fullName)
        problems += PasswordPolicy.problems(password: request.password, email: email, username: username,
                                           minimumLength: app.settings.passwordMinLength)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }

        try await ensureUnique(email: email, username: username, except: nil)
        let hash = try await hasher.hash(request.password)
        let user = User(email: email, username: username, fullName: fullName?.isEmpty == true ? nil : fullName, passwordHash: hash)
        do {
            let defaultRole = app.settings.defaultRole
            try await app.writeTransaction { db in
                try await user.create(on: db)
                try await UserRole.assign(defaultRole, to: user.requireID(), by: nil, at: now, on: db)
                let id = try user.requireID().lowercasedString
                try await recorder.record(
                    audit: AuditRecord(action: "auth.register", actorID: user.id, actorType: .user, resourceType: "user",
                                       resourceID: id, origin: origin, details: ["method": "password"]),
                    event: EventRecord(type: "user.created", actorID: user.id, resourceType: "user", resourceID: id,
                                       data: ["method": "password"]),
                    on: db)
                try await AccountRecovery(app: app).issueEmailVerification(for: user, on: db)
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
