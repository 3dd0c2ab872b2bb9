import SQLKit

extension SQLDatabase {
    /// `INSERT INTO table (columns) VALUES (…)` with each value bound, written as one raw statement. For the rows
    /// written on every execution (jobs, executions, events, audit entries): SQLKit's insert builder took longer to
    /// serialize than SQLite took to run the statement (6.6% of the server's CPU while creating and running
    /// executions), while a raw statement serializes almost for free.
    func insertRow(into table: String, columns: [String], values: [any Encodable & Sendable]) async throws {
        precondition(columns.count == values.count, "one value per column")
        if let direct = self as? any DirectSQLiteStatements {
            // The SQLite writer takes the text with `?` placeholders as it is, without SQLKit's serializer.
            let placeholders = repeatElement("?", count: values.count).joined(separator: ", ")
            return try await direct.run(sqlite: "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES (\(placeholders))", values)
        }
        var query: SQLQueryString = "INSERT INTO \(unsafeRaw: table) (\(unsafeRaw: columns.joined(separator: ", "))) VALUES ("
        for (index, value) in values.enumerated() {
            if index > 0 { query.appendInterpolation(unsafeRaw: ", ") }
            query.appendInterpolation(bind: value)
        }
        query.appendInterpolation(unsafeRaw: ")")
        try await raw(query).run()
    }
}

/// A database that runs SQLite statement text (with `?` placeholders) as it is: the SQLite writer's.
protocol DirectSQLiteStatements {
    func run(sqlite sql: String, _ values: [any Encodable & Sendable]) async throws
}
