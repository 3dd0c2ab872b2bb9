import Fluent
import SQLKit

/// A job's group (for webhook deliveries, the endpoint), so workers can skip groups they cannot run now.
struct AddJobGroupKey: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Job.schema).field("group_key", .string).update()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "jobs_group_idx").on(Job.schema).column("group_key").run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.drop(index: "jobs_group_idx").run()
        try await database.schema(Job.schema).deleteField("group_key").update()
    }
}
