import Fluent
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// Re-seals every value sealed at rest under the current encryption key (`steward keys rotate-encryption`).
///
/// The rotation: set the new key as `STEWARD_ENCRYPTION_KEY` and the old one in `STEWARD_ENCRYPTION_PREVIOUS_KEYS`
/// on every instance, restart them (they seal under the new key and open under either), run this, then drop the
/// old key. Each row is rewritten only if it still holds what was read, so a value changed meanwhile is kept.
struct EncryptionRotation: Sendable {
    let app: Application

    /// Where sealed values live, and how they sit in their column.
    struct Column: Sendable {
        enum Shape: Sendable {
            /// The column is one sealed value.
            case whole
            /// A JSON object of header names to sealed values.
            case valueMap
            /// A skill's runner settings, whose `headers` values are sealed.
            case runnerHeaders
        }
        var table: String
        var column: String
        var shape: Shape
    }

    static let columns: [Column] = [
        Column(table: "users", column: "mfa_secret", shape: .whole),
        Column(table: "refresh_tokens", column: "grace_payload", shape: .whole),
        Column(table: "mail_outbox", column: "secret", shape: .whole),
        Column(table: "webhooks", column: "secret", shape: .whole),
        Column(table: "webhooks", column: "previous_secret", shape: .whole),
        Column(table: "webhooks", column: "headers", shape: .valueMap),
        Column(table: "skills", column: "runner", shape: .runnerHeaders),
    ]

    struct Report: Sendable {
        /// Rows rewritten under the current key, by `table.column`.
        var resealed: [String: Int] = [:]
        /// Rows whose value no configured key opens, by `table.column`; they are left as they are.
        var unopened: [String: Int] = [:]
    }

    func run() async throws -> Report {
        var report = Report()
        let box = app.secretBox
        for column in Self.columns {
            let name = "\(column.table).\(column.column)"
            let rows = try await (app.db as! any SQLDatabase)
                .raw("SELECT id, \(ident: column.column) AS value FROM \(ident: column.table) WHERE \(ident: column.column) IS NOT NULL").all()
            var changes: [(id: UUID, old: String, new: String)] = []
            for row in rows {
                let id = try row.decode(column: "id", as: UUID.self)
                let old = try row.decode(column: "value", as: String.self)
                do {
                    let new = try Self.reseal(old, shape: column.shape, box: box)
                    if new != old { changes.append((id, old, new)) }
                } catch {
                    report.unopened[name, default: 0] += 1
                }
            }
            guard !changes.isEmpty else { continue }
            let batch = changes
            let written = try await app.writeTransaction { db in
                let sql = db as! any SQLDatabase
                var count = 0
                for change in batch {
                    let updated = try await sql.raw("""
                        UPDATE \(ident: column.table) SET \(ident: column.column) = \(bind: change.new)
                        WHERE id = \(bind: change.id) AND \(ident: column.column) = \(bind: change.old) RETURNING id
                        """).all()
                    count += updated.count
                }
                return count
            }
            report.resealed[name] = written
        }
        return report
    }

    static func reseal(_ stored: String, shape: Column.Shape, box: SecretBox) throws -> String {
        try rewrite(stored, shape: shape) { try box.seal(box.open($0)) }
    }

    /// The stored column text with `transform` applied to each sealed value in it (the whole text, each header
    /// value, or each runner header value); text holding none comes back unchanged. Also used by the migration
    /// that first sealed the header values.
    static func rewrite(_ stored: String, shape: Column.Shape, _ transform: (String) throws -> String) throws -> String {
        switch shape {
        case .whole:
            return try transform(stored)
        case .valueMap:
            let map = Webhook.headerMap(stored)
            guard !map.isEmpty else { return stored }
            return JSONText.canonical(stringMap: try map.mapValues(transform))
        case .runnerHeaders:
            let runner = JSONValue.parse(stored)
            guard case .object(let fields) = runner, fields["headers"] != nil else { return stored }
            return try Skill.mappingHeaderValues(of: runner, transform).canonicalString()
        }
    }
}

/// `steward keys rotate-encryption`.
struct KeysCommandGroup: AsyncCommandGroup {
    var help: String { "Manage keys." }
    var commands: [String: any AnyAsyncCommand] { ["rotate-encryption": RotateEncryptionCommand()] }
}

struct RotateEncryptionCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String {
        "Re-seal every encrypted value under STEWARD_ENCRYPTION_KEY; STEWARD_ENCRYPTION_PREVIOUS_KEYS opens the old ones meanwhile."
    }

    func run(using context: CommandContext, signature: Signature) async throws {
        let report = try await EncryptionRotation(app: context.application).run()
        for column in EncryptionRotation.columns {
            let name = "\(column.table).\(column.column)"
            context.console.print("\(name): \(report.resealed[name] ?? 0) re-sealed" + (report.unopened[name].map { ", \($0) opened by no configured key" } ?? ""))
        }
        let unopened = report.unopened.values.reduce(0, +)
        if unopened > 0 {
            throw CommandFailure("\(unopened) value(s) opened under no configured key and were left as they are; add the key they were sealed with to STEWARD_ENCRYPTION_PREVIOUS_KEYS and run again")
        }
        context.console.print("every sealed value is under the current key; STEWARD_ENCRYPTION_PREVIOUS_KEYS can be emptied")
    }
}
