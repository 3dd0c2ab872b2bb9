import Fluent
import SQLKit

/// The per-user cap counts a user's queued and running executions on every create: by user and status, that count
/// reads only those rows instead of every execution the user ever ran.
struct AddExecutionActiveIndex: AsyncMigration {
    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.create(index: "executions_user_status_idx").on(Execution.schema).column("user_id").column("status").run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.drop(index: "executions_user_status_idx").run()
    }
}
