import Foundation
import Fluent
import SQLKit

/// Seals the header values of HTTP-runner skills (`skills.runner.headers`) and webhooks (`webhooks.headers`) with
/// the encryption key: they often carry API keys, and were stored in the clear. Header names stay readable.
/// Revert opens them again, so a downgrade finds plain values as it expects.
struct SealHeaderValues: AsyncMigration {
    let box: SecretBox

    func prepare(on database: any Database) async throws {
        try await rewrite(on: database) { try box.seal($0) }
    }

    func revert(on database: any Database) async throws {
        try await rewrite(on: database) { try box.open($0) }
    }

    private func rewrite(on database: any Database, _ transform: (String) throws -> String) async throws {
        let sql = database as! any SQLDatabase
        for row in try await sql.raw("SELECT id, runner FROM skills WHERE runner LIKE '%\"headers\"%'").all() {
            let id = try row.decode(column: "id", as: UUID.self)
            let rewritten = try EncryptionRotation.rewrite(try row.decode(column: "runner", as: String.self), shape: .runnerHeaders, transform)
            try await sql.raw("UPDATE skills SET runner = \(bind: rewritten) WHERE id = \(bind: id)").run()
        }
        for row in try await sql.raw("SELECT id, headers FROM webhooks WHERE headers <> '{}'").all() {
            let id = try row.decode(column: "id", as: UUID.self)
            let rewritten = try EncryptionRotation.rewrite(try row.decode(column: "headers", as: String.self), shape: .valueMap, transform)
            try await sql.raw("UPDATE webhooks SET headers = \(bind: rewritten) WHERE id = \(bind: id)").run()
        }
    }
}
