import Fluent
import SQLKit

/// SQLite's full-text index of skills was rewritten on every update of a skill's row, and every execution created
/// updates its skill's row (`execution_count`): each create deleted and re-inserted the skill's name, description
/// and tags in the index. The trigger now fires only when one of those three columns is written.
/// (PostgreSQL's search column is generated from the row, with no trigger.)
struct NarrowSkillSearchTrigger: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await replaceTrigger(on: database, columns: " OF name, description, tags")
    }

    func revert(on database: any Database) async throws {
        try await replaceTrigger(on: database, columns: "")
    }

    private func replaceTrigger(on database: any Database, columns: String) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "sqlite" else { return }
        try await sql.raw("DROP TRIGGER IF EXISTS skills_fts_update").run()
        try await sql.raw("""
            CREATE TRIGGER skills_fts_update AFTER UPDATE\(unsafeRaw: columns) ON skills BEGIN
                INSERT INTO skills_fts(skills_fts, rowid, name, description, tags) VALUES ('delete', old.rowid, old.name, old.description, old.tags);
                INSERT INTO skills_fts(rowid, name, description, tags) VALUES (new.rowid, new.name, new.description, new.tags);
            END
            """).run()
    }
}
