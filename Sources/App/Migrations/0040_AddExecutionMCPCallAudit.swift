import Fluent

/// An MCP call's `mcp.tools_call` audit entry waits on its execution's row until the execution ends (issue 24): the
/// transaction that writes the final status writes the entry with that outcome and empties the column. The call
/// itself then commits nothing of its own after the create.
struct AddExecutionMCPCallAudit: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Execution.schema).field("mcp_call_audit", .string).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema(Execution.schema).deleteField("mcp_call_audit").update()
    }
}
