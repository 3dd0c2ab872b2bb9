import Fluent
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import Vapor

/// A skill's output schema and MCP tool annotations (canonical JSON texts), kept in `skill_tool_fields`.
struct SkillToolFields: Sendable, Equatable {
    var outputSchema: String?
    var annotations: String

    /// What a skill without a row has: no output schema, no hints.
    static let none = SkillToolFields(outputSchema: nil, annotations: "{}")
}

/// Reads and writes `skill_tool_fields`, with a cache by skill id and version: a skill's fields change only with
/// its version (an update bumps it in the same transaction), so lists, tool catalogues and runs read the table
/// once per skill version and process, on any instance.
///
/// Until migration 0032 has run (a server started before a second process migrates), every skill reads as
/// `.none` and setting the fields is refused with 409; the table's existence is asked again on each use until it
/// is there.
final class SkillToolFieldStore: Sendable {
    private struct Cached: Sendable {
        var version: Int
        var fields: SkillToolFields
    }

    private let cache = NIOLockedValueBox<[UUID: Cached]>([:])
    private let ready = NIOLockedValueBox(false)
    /// Entries kept before the cache starts over (a catalogue larger than this reads the table more often).
    static let capacity = 20_000

    static let notMigrated = HTTPProblem.conflict("Output schemas and annotations need migration 0032; run `steward migrate`.")

    /// Forgets everything (after a migration is reverted).
    func reset() {
        ready.withLockedValue { $0 = false }
        cache.withLockedValue { $0.removeAll() }
    }

    func isReady(_ app: Application) async throws -> Bool {
        if ready.withLockedValue({ $0 }) { return true }
        let exists = try await SchemaProbe.tableExists("skill_tool_fields", app: app)
        if exists { ready.withLockedValue { $0 = true } }
        return exists
    }

    /// The fields of each skill (by id, at the version given); skills without a row get `.none`.
    func fields(for skills: [(id: UUID, version: Int)], app: Application) async throws -> [UUID: SkillToolFields] {
        var found: [UUID: SkillToolFields] = [:]
        var missing: [(id: UUID, version: Int)] = []
        cache.withLockedValue { cache in
            for skill in skills {
                if let hit = cache[skill.id], hit.version == skill.version { found[skill.id] = hit.fields } else { missing.append(skill) }
            }
        }
        guard !missing.isEmpty else { return found }
        guard try await isReady(app) else {
            for skill in missing { found[skill.id] = SkillToolFields.none }
            return found
        }
        let sql = app.db as! any SQLDatabase
        let rows = try await sql.select().columns("skill_id", "output_schema", "annotations").from("skill_tool_fields")
            .where("skill_id", .in, missing.map(\.id)).all()
        var read: [UUID: SkillToolFields] = [:]
        for row in rows {
            read[try row.decode(column: "skill_id", as: UUID.self)] = SkillToolFields(
                outputSchema: try row.decode(column: "output_schema", as: String?.self), annotations: try row.decode(column: "annotations", as: String.self))
        }
        cache.withLockedValue { cache in
            if cache.count + missing.count > Self.capacity { cache.removeAll() }
            for skill in missing {
                let fields = read[skill.id] ?? SkillToolFields.none
                found[skill.id] = fields
                cache[skill.id] = Cached(version: skill.version, fields: fields)
            }
        }
        return found
    }

    /// Stores a skill's fields, inside the transaction that changes the skill (and its version).
    static func write(_ fields: SkillToolFields, of skillID: UUID, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            INSERT INTO skill_tool_fields (skill_id, output_schema, annotations) VALUES (\(bind: skillID), \(bind: fields.outputSchema), \(bind: fields.annotations))
            ON CONFLICT (skill_id) DO UPDATE SET output_schema = excluded.output_schema, annotations = excluded.annotations
            """).run()
    }
}

extension Application {
    private struct SkillToolFieldStoreKey: StorageKey { typealias Value = SkillToolFieldStore }
    private static let skillToolFieldsLock = NIOLock()

    var skillToolFields: SkillToolFieldStore {
        Self.skillToolFieldsLock.withLock {
            if let existing = storage[SkillToolFieldStoreKey.self] { return existing }
            let made = SkillToolFieldStore()
            storage[SkillToolFieldStoreKey.self] = made
            return made
        }
    }
}
