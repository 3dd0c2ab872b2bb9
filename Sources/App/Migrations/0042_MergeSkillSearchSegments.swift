import Fluent
import SQLKit

/// On SQLite, the skill search index (FTS5) keeps few segments. Each skill write adds a segment, and FTS5 by default
/// merges them only once 16 pile up at one level (`crisismerge`) or, a little at a time, once 4 do (`automerge`); a
/// search reads every segment for each of its prefix terms. After 1,000 skills created one by one the index had 18
/// segments, and the benchmark's search (two prefix terms, 100 matches) took 275 µs in Python's SQLite; with
/// `crisismerge` at 2, which merges two segments of a level as soon as they exist, it had 3 and took 223 µs (one
/// segment, after `optimize`: 211 µs). Skills are written seldom and searched often: each write pays for at most
/// a handful of merges of small segments. The index is merged into one segment once here. PostgreSQL's index is
/// migration 0041's.
struct MergeSkillSearchSegments: AsyncMigration {
    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "sqlite" else { return }
        try await sql.raw("INSERT INTO skills_fts(skills_fts, rank) VALUES ('crisismerge', 2)").run()
        try await sql.raw("INSERT INTO skills_fts(skills_fts) VALUES ('optimize')").run()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        guard sql.dialect.name == "sqlite" else { return }
        try await sql.raw("INSERT INTO skills_fts(skills_fts, rank) VALUES ('crisismerge', 16)").run()
    }
}
