import Fluent
import SQLKit

/// What an MCP client is told about a skill beyond its input (issue 24): an optional output schema (the same JSON
/// Schema subset as inputs; a run whose output does not match it fails) and the tool annotations
/// (`readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`), as canonical JSON.
///
/// A table of their own rather than columns on `skills`: the skills routes' reads keep their shape, so a server
/// running while this migration is still pending (a second process migrating) answers them as before, with no
/// output schema and no annotations, instead of failing (`SkillToolFieldStore`).
struct AddSkillToolFields: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("skill_tool_fields")
            .field("skill_id", .uuid, .identifier(auto: false), .references("skills", "id", onDelete: .cascade))
            .field("output_schema", .string)
            .field("annotations", .string, .required)
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("skill_tool_fields").delete()
    }
}
