import Fluent
import SQLKit

/// Every list pages newest first by a time and then by id, after a cursor. An index on the time alone leaves the
/// id to a sort: SQLite sorted every row below the cursor (`USE TEMP B-TREE FOR ORDER BY`), so a page cost more
/// the larger the table. Each list's filter, then its time, then the id: one index range read in order, stopping
/// after the page. Where a new index starts with an old one's columns, the old one goes.
struct AddListOrderIndexes: AsyncMigration {
    private static let indexes: [IndexChange] = [
        .init("skills_created_id_idx", on: Skill.schema, ["created_at", "id"], replacing: ("skills_created_idx", ["created_at"])),
        .init("skills_category_created_idx", on: Skill.schema, ["category", "created_at", "id"], replacing: ("skills_category_idx", ["category"])),
        .init("executions_queued_idx", on: Execution.schema, ["queued_at", "id"]),
        .init("executions_user_queued_idx", on: Execution.schema, ["user_id", "queued_at", "id"],
              replacing: ("executions_user_idx", ["user_id", "queued_at"])),
        .init("executions_skill_queued_idx", on: Execution.schema, ["skill_id", "queued_at", "id"],
              replacing: ("executions_skill_idx", ["skill_id", "queued_at"])),
        .init("executions_status_queued_idx", on: Execution.schema, ["status", "queued_at", "id"], replacing: ("executions_status_idx", ["status"])),
        .init("users_created_idx", on: User.schema, ["created_at", "id"]),
        .init("workflows_created_idx", on: Workflow.schema, ["created_at", "id"]),
        .init("workflow_runs_workflow_created_idx", on: WorkflowRun.schema, ["workflow_id", "created_at", "id"],
              replacing: ("workflow_runs_workflow_idx", ["workflow_id", "created_at"])),
        .init("schedules_created_idx", on: Schedule.schema, ["created_at", "id"]),
        .init("schedules_user_created_idx", on: Schedule.schema, ["user_id", "created_at", "id"],
              replacing: ("schedules_user_idx", ["user_id", "created_at"])),
        .init("webhook_deliveries_hook_created_idx", on: WebhookDelivery.schema, ["webhook_id", "created_at", "id"],
              replacing: ("webhook_deliveries_hook_idx", ["webhook_id", "created_at"])),
    ]

    func prepare(on database: any Database) async throws {
        try await IndexChange.apply(Self.indexes, on: database as! any SQLDatabase)
    }

    func revert(on database: any Database) async throws {
        try await IndexChange.undo(Self.indexes, on: database as! any SQLDatabase)
    }
}
