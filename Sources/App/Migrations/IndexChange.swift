import SQLKit

/// A new index, and the narrower one it replaces (whose columns it starts with) if any: the shape of migrations
/// that add or widen indexes (0028-0030, 0034). Those migrations run through it, so a change here changes what they do.
struct IndexChange: Sendable {
    let name: String
    let table: String
    let columns: [String]
    let replaced: (name: String, columns: [String])?

    init(_ name: String, on table: String, _ columns: [String], replacing replaced: (String, [String])? = nil) {
        self.name = name
        self.table = table
        self.columns = columns
        self.replaced = replaced
    }

    /// Creates each new index, then drops the one it replaces.
    static func apply(_ changes: [IndexChange], on sql: any SQLDatabase) async throws {
        for change in changes {
            try await create(change.name, on: change.table, change.columns, sql)
            if let old = change.replaced { try await sql.drop(index: old.name).run() }
        }
    }

    /// The reverse, last change first: the replaced index back, then the new one dropped.
    static func undo(_ changes: [IndexChange], on sql: any SQLDatabase) async throws {
        for change in changes.reversed() {
            if let old = change.replaced { try await create(old.name, on: change.table, old.columns, sql) }
            try await sql.drop(index: change.name).run()
        }
    }

    private static func create(_ name: String, on table: String, _ columns: [String], _ sql: any SQLDatabase) async throws {
        try await columns.reduce(sql.create(index: name).on(table)) { $0.column($1) }.run()
    }
}
