import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats
import StewardSQLite

/// Creates, lists and revokes API keys. Non-admins see only their own keys; another owner's id is a 404.
struct APIKeyService: Sendable {
    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    /// Creates a key for `owner` whose scopes must be a subset of what the owner can do now.
    func create(name rawName: String, scopes rawScopes: [String], expiresAt: Date?, tools: [String]? = nil, ownerID: UUID, ownerGrants: Grants,
                actor: AuthenticatedCaller?, origin: RequestOrigin) async throws -> CreatedAPIKeyResponse {
        let name = rawName.trimmingCharacters(in: .whitespacesAndNewlines)
        var problems: [FieldProblem] = []
        if name.isEmpty || name.count > 100 || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            problems.append(FieldProblem(field: "name", message: "must be 1 to 100 printable characters"))
        }
        let unknown = rawScopes.filter { Permission(rawValue: $0) == nil }
        if !unknown.isEmpty {
            problems.append(FieldProblem(field: "scopes", message: "has unknown permissions: \(unknown.prefix(5).joined(separator: ", "))"))
        }
        if rawScopes.isEmpty { problems.append(FieldProblem(field: "scopes", message: "must name at least one permission")) }
        if let expiresAt, expiresAt <= now { problems.append(FieldProblem(field: "expiresAt", message: "must be in the future")) }
        if let tools { problems += APIKeyToolStore.problems(in: tools) }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        if tools != nil, try await !app.apiKeyTools.isReady(app) { throw APIKeyToolStore.notMigrated }

        let scopes = Set(rawScopes.compactMap(Permission.init(rawValue:)))
        let beyond = scopes.subtracting(ownerGrants.permissions)
        guard beyond.isEmpty else { throw AccessError.scopesExceedOwner(beyond.sorted()) }

        let (secret, prefix) = APIKeyFormat.generate()
        let key = APIKey()
        key.id = UUID()
        key.$user.id = ownerID
        key.name = name
        key.prefix = prefix
        key.keyHash = SecureToken.hash(secret)
        key.scopes = scopes
        key.expiresAt = expiresAt
        key.createdAt = now
        let limit = app.appConfig.maxAPIKeysPerUser
        let now = self.now
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            // Serialise creations for one owner, so the quota holds under parallel requests.
            if sql.dialect.name == "postgresql" {
                _ = try await sql.raw("SELECT id FROM users WHERE id = \(bind: ownerID) FOR UPDATE").all()
            }
            let live = try await APIKey.query(on: db)
                .filter(\.$user.$id == ownerID)
                .filter(\.$revokedAt == nil)
                .group(.or) { $0.filter(\.$expiresAt == nil).filter(\.$expiresAt > now) }
                .count()
            guard live < limit else {
                throw HTTPProblem.conflict("You already have \(limit) API keys, the most allowed; revoke one first.")
            }
            try await key.create(on: db)
            if let tools { try await APIKeyToolStore.write(tools, of: key.requireID(), on: db) }
            let id = key.id!.lowercasedString
            try await app.activityRecorder.record(
                audit: AuditRecord(action: "apikey.created", actorID: actor?.user.id ?? ownerID, actorType: actor?.actorType ?? .system,
                                   resourceType: "api_key", resourceID: id, origin: origin,
                                   details: ["name": .string(name), "scopes": .array(scopes.sorted().map { .string($0.rawValue) }),
                                             "tools": tools.map { .array($0.map(JSONValue.string)) } ?? .null,
                                             "ownerId": .string(ownerID.lowercasedString)]),
                event: EventRecord(type: "apikey.created", actorID: actor?.user.id ?? ownerID, resourceType: "api_key", resourceID: id,
                                   data: ["name": .string(name), "prefix": .string(prefix), "userId": .string(ownerID.lowercasedString)]),
                on: db)
        }
        return CreatedAPIKeyResponse(id: key.id!, name: name, prefix: prefix, key: secret, scopes: scopes.map(\.rawValue).sorted(),
                                     expiresAt: expiresAt, createdAt: key.createdAt, tools: tools)
    }

    /// The caller's keys (every key for admins), newest first.
    func list(caller: AuthenticatedCaller) async throws -> [APIKeyResponse] {
        let keys = try await APIKey.query(on: reads).visible(to: caller, ownedThrough: \.$user).sort(\.$createdAt, .descending)
            .listed(as: APIKeyResponse.self, through: app.sqliteReaders, offLoopOn: app.threadPool)
        guard !keys.isEmpty else { return keys }
        let tools = try await app.apiKeyTools.tools(of: keys.map(\.id), app: app)
        return keys.map { key in
            var key = key
            key.tools = tools[key.id] ?? nil
            return key
        }
    }

    /// Revokes a key; it fails on the very next request.
    func revoke(id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        guard let key = try await APIKey.query(on: reads).visible(to: caller, ownedThrough: \.$user).filter(\.$id == id).first() else { throw HTTPProblem.notFound("No such API key.") }
        guard key.revokedAt == nil else { return }
        try await app.writeTransaction { db in
            try await revoke(key, reason: "revoked", actorID: caller.user.id, actorType: caller.actorType, origin: origin, on: db)
        }
    }

    func revoke(_ key: APIKey, reason: String, actorID: UUID?, actorType: ActorType, origin: RequestOrigin, on db: any Database) async throws {
        key.revokedAt = now
        try await key.save(on: db)
        let id = try key.requireID().lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: "apikey.revoked", actorID: actorID, actorType: actorType, resourceType: "api_key",
                               resourceID: id, origin: origin, details: ["reason": .string(reason)]),
            event: EventRecord(type: "apikey.revoked", actorID: actorID, resourceType: "api_key", resourceID: id,
                               data: ["userId": .string(key.$user.id.lowercasedString), "reason": .string(reason)]),
            on: db)
    }
}
