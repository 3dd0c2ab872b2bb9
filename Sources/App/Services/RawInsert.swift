import SQLKit

extension SQLDatabase {
    /// `INSERT INTO table (columns) VALUES (…)` with each value bound, written as one raw statement. For the rows
    /// written on every execution (jobs, executions, events, audit entries): SQLKit's insert builder took longer to
    /// serialize than SQLite took to run the statement (6.6% of the server's CPU while creating and running
    /// executions), while a raw statement serializes almost for free.
    func insertRow(into table: String, columns: [String], values: [any Encodable & Sendable]) async throws {
        precondition(columns.count == values.count, "one value per column")
        var query: SQLQueryString = "INSERT INTO \(unsafeRaw: table) (\(unsafeRaw: columns.joined(separator: ", "))) VALUES ("
        for (index, value) in values.enumerated() {
            if index > 0 { query.appendInterpolation(unsafeRaw: ", ") }
            query.appendInterpolation(bind: value)
        }
        query.appendInterpolation(unsafeRaw: ")")
        try await raw(query).run()
    }
}
