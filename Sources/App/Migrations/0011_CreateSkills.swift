import Fluent
import SQLKit

/// The skills catalogue and favourites, with full-text search over name, description and tags:
/// an FTS5 external-content table kept in sync by triggers on SQLite, a weighted tsvector with a GIN index on
/// PostgreSQL.
struct CreateSkills: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(Skill.schema)
            .id()
            .field("slug", .string, .required)
            .field("name", .string, .required)
            .field("description", .string, .required)
            .field("category", .string, .required)
            .field("tags", .string, .required)
            .field("input_schema", .string, .required)
            .field("runner", .string, .required)
            .field("version", .int, .required)
            .field("enabled", .bool, .required)
            .field("execution_count", .int64, .required, .sql(.default(0)))
            .field("created_by", .uuid, .references(User.schema, "id", onDelete: .setNull))
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "slug")
            .create()
        try await database.schema(SkillFavorite.schema)
            .id()
            .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
            .field("skill_id", .uuid, .required, .references(Skill.schema, "id", onDelete: .cascade))
            .field("created_at", .datetime, .required)
            .unique(on: "user_id", "skill_id")
            .create()
        let sql = database as! any SQLDatabase
        try await sql.create(index: "skills_category_idx").on(Skill.schema).column("category").run()
        try await sql.create(index: "skills_created_idx").on(Skill.schema).column("created_at").run()
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                ALTER TABLE skills ADD COLUMN search tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('simple', coalesce(name, '')), 'A') ||
                    setweight(to_tsvector('simple', coalesce(tags, '')), 'B') ||
                    setweight(to_tsvector('simple', coalesce(description, '')), 'C')
                ) STORED
                """).run()
            try await sql.raw("CREATE INDEX skills_search_idx ON skills USING GIN (search)").run()
        } else {
            try await sql.raw("""
                CREATE VIRTUAL TABLE skills_fts USING fts5(name, description, tags, content='skills', content_rowid='rowid')
                """).run()
            try await sql.raw("""
                CREATE TRIGGER skills_fts_insert AFTER INSERT ON skills BEGIN
                    INSERT INTO skills_fts(rowid, name, description, tags) VALUES (new.rowid, new.name, new.description, new.tags);
                END
                """).run()
            try await sql.raw("""
                CREATE TRIGGER skills_fts_delete AFTER DELETE ON skills BEGIN
                    INSERT INTO skills_fts(skills_fts, rowid, name, description, tags) VALUES ('delete', old.rowid, old.name, old.description, old.tags);
                END
                """).run()
            try await sql.raw("""
                CREATE TRIGGER skills_fts_update AFTER UPDATE ON skills BEGIN
                    INSERT INTO skills_fts(skills_fts, rowid, name, description, tags) VALUES ('delete', old.rowid, old.name, old.description, old.tags);
                    INSERT INTO skills_fts(rowid, name, description, tags) VALUES (new.rowid, new.name, new.description, new.tags);
                END
                """).run()
        }
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        if sql.dialect.name != "postgresql" {
            for trigger in ["skills_fts_insert", "skills_fts_delete", "skills_fts_update"] {
                try await sql.raw("DROP TRIGGER IF EXISTS \(unsafeRaw: trigger)").run()
            }
            try await sql.raw("DROP TABLE IF EXISTS skills_fts").run()
        }
        try await database.schema(SkillFavorite.schema).delete()
        try await database.schema(Skill.schema).delete()
    }
}
