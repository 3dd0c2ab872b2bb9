import Fluent
import SQLKit

/// MCP (issue 24): the sessions of clients that speak the 2025 protocol revisions, kept in the database so any
/// instance serves any session and a restart loses none; and, on executions, where each came from.
///
/// - `mcp_sessions`: one row per `initialize`, bound to the credential that made it (a login session or an API key).
/// - `executions.origin`: `api` (the REST API, and every execution before this migration), `mcp`, `schedule` or
///   `workflow`; with the MCP client's name and version, the session and the JSON-RPC id of the call. The unique
///   index on (session, request id) is what keeps a retried call from running twice.
struct CreateMCPSessions: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("mcp_sessions")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("session_id", .uuid)
            .field("api_key_id", .uuid)
            .field("protocol_version", .string, .required)
            .field("client_name", .string)
            .field("client_version", .string)
            .field("created_at", .datetime, .required)
            .field("last_seen_at", .datetime, .required)
            .field("closed_at", .datetime)
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "mcp_sessions_user_id_idx").on("mcp_sessions").column("user_id").run()

        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        try await database.schema("executions").field("origin", .string, .required, .sql(.default("api"))).update()
        try await database.schema("executions").field("client_name", .string).update()
        try await database.schema("executions").field("client_version", .string).update()
        try await database.schema("executions").field("mcp_session_id", .uuid).update()
        try await database.schema("executions").field("mcp_request_id", .string).update()
        try await sql.raw("""
            UPDATE executions SET origin = CASE WHEN schedule_id IS NOT NULL THEN 'schedule' ELSE 'api' END
            """).run()
        try await sql.raw("""
            UPDATE executions SET origin = 'workflow'
            WHERE id IN (SELECT execution_id FROM workflow_run_steps WHERE execution_id IS NOT NULL)
            """).run()
        try await sql.raw("""
            CREATE UNIQUE INDEX executions_mcp_request_idx ON executions (mcp_session_id, mcp_request_id)
            WHERE mcp_session_id IS NOT NULL
            """).run()
        try await sql.create(index: "executions_origin_queued_idx").on("executions").column("origin").column("queued_at").column("id").run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.drop(index: "executions_origin_queued_idx").run()
        try await sql.drop(index: "executions_mcp_request_idx").run()
        for column in ["mcp_request_id", "mcp_session_id", "client_version", "client_name", "origin"] {
            try await database.schema("executions").deleteField(FieldKey(stringLiteral: column)).update()
        }
        try await database.schema("mcp_sessions").delete()
    }
}
