import Fluent
import SQLKit

/// Workflows (a DAG of skill steps), their runs, and each run's steps with the execution that ran them.
struct CreateWorkflows: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Workflow.schema)
            .id()
            .field("slug", .string, .required)
            .field("name", .string, .required)
            .field("description", .string, .required)
            .field("version", .int, .required)
            .field("enabled", .bool, .required)
            .field("steps", .string, .required)
            .field("created_by", .uuid)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "slug")
            .create()
        try await database.schema(WorkflowRun.schema)
            .id()
            .field("workflow_id", .uuid, .required, .references(Workflow.schema, "id", onDelete: .cascade))
            .field("workflow_version", .int, .required)
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("status", .string, .required)
            .field("progress", .int, .required)
            .field("input", .string, .required)
            .field("steps", .string, .required)
            .field("error", .string)
            .field("created_at", .datetime, .required)
            .field("started_at", .datetime)
            .field("finished_at", .datetime)
            .create()
        try await database.schema(WorkflowRunStep.schema)
            .id()
            .field("run_id", .uuid, .required, .references(WorkflowRun.schema, "id", onDelete: .cascade))
            .field("step_id", .string, .required)
            .field("ordinal", .int, .required)
            .field("status", .string, .required)
            .field("attempts", .int, .required)
            .field("execution_id", .uuid)
            .field("retry_at", .datetime)
            .field("error", .string)
            .field("started_at", .datetime)
            .field("completed_at", .datetime)
            .unique(on: "run_id", "step_id")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "workflow_runs_workflow_idx").on(WorkflowRun.schema).column("workflow_id").column("created_at").run()
        try await sql.create(index: "workflow_run_steps_execution_idx").on(WorkflowRunStep.schema).column("execution_id").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(WorkflowRunStep.schema).delete()
        try await database.schema(WorkflowRun.schema).delete()
        try await database.schema(Workflow.schema).delete()
    }
}
