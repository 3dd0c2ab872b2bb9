import Fluent
import SQLKit

/// Every list pages newest first by a time and then by id, after a cursor. An index on the time alone leaves the
/// id to a sort: SQLite sorted every row below the cursor (`USE TEMP B-TREE FOR ORDER BY`), so a page cost more
/// the larger the table. Each list's filter, then its time, then the id: one index range read in order, stopping
/// after the page. Where a new index starts with an old one's columns, the old one goes.
struct AddListOrderIndexes: AsyncMigration {
    /// (name, table, columns, the index it replaces with its columns)
    private static let indexes: [(String, String, [String], (String, [String])?)] = [
        ("skills_created_id_idx", Skill.schema, ["created_at", "id"], ("skills_created_idx", ["created_at"])),
        ("skills_category_created_idx", Skill.schema, ["category", "created_at", "id"], ("skills_category_idx", ["category"])),
        ("executions_queued_idx", Execution.schema, ["queued_at", "id"], nil),
        ("executions_user_queued_idx", Execution.schema, ["user_id", "queued_at", "id"], ("executions_user_idx", ["user_id", "queued_at"])),
        ("executions_skill_queued_idx", Execution.schema, ["skill_id", "queued_at", "id"], ("executions_skill_idx", ["skill_id", "queued_at"])),
        ("executions_status_queued_idx", Execution.schema, ["status", "queued_at", "id"], ("executions_status_idx", ["status"])),
        ("users_created_idx", User.schema, ["created_at", "id"], nil),
        ("workflows_created_idx", Workflow.schema, ["created_at", "id"], nil),
        ("workflow_runs_workflow_created_idx", WorkflowRun.schema, ["workflow_id", "created_at", "id"],
         ("workflow_runs_workflow_idx", ["workflow_id", "created_at"])),
        ("schedules_created_idx", Schedule.schema, ["created_at", "id"], nil),
        ("schedules_user_created_idx", Schedule.schema, ["user_id", "created_at", "id"], ("schedules_user_idx", ["user_id", "created_at"])),
        ("webhook_deliveries_hook_created_idx", WebhookDelivery.schema, ["webhook_id", "created_at", "id"],
         ("webhook_deliveries_hook_idx", ["webhook_id", "created_at"])),
    ]

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        for (name, table, columns, replaced) in Self.indexes {
            var create = sql.create(index: name).on(table)
            for column in columns { create = create.column(column) }
            try await create.run()
            if let (old, _) = replaced { try await sql.drop(index: old).run() }
        }
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        for (name, table, _, replaced) in Self.indexes.reversed() {
            if let (old, columns) = replaced {
                var create = sql.create(index: old).on(table)
                for column in columns { create = create.column(column) }
                try await create.run()
            }
            try await sql.drop(index: name).run()
        }
    }
}
