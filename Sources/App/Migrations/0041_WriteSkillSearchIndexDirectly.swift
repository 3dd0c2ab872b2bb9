import Fluent
import SQLKit

/// On PostgreSQL, the skill search index takes each skill's entries when it is written instead of through GIN's
/// pending list (`fastupdate`). With the pending list on, entries wait there until a vacuum or 4 MB of them, and
/// every search reads the whole list: just after 1,000 skills were created (all of them pending), the index's part
/// of a search took 0.40 ms against 0.06 ms once they were in the index, and PostgreSQL spent 525-551 µs of CPU per
/// search request against 363-393 µs with this change. Skills are written seldom and searched often, which is the
/// case the pending list does not suit. What is pending now is moved into the index. SQLite's full-text index has
/// no such list.
struct WriteSkillSearchIndexDirectly: AsyncMigration {
    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "postgresql" else { return }
        try await sql.raw("ALTER INDEX skills_search_idx SET (fastupdate = off)").run()
        try await sql.raw("SELECT gin_clean_pending_list('skills_search_idx'::regclass)").run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "postgresql" else { return }
        try await sql.raw("ALTER INDEX skills_search_idx RESET (fastupdate)").run()
    }
}
