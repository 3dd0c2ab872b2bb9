import Fluent
import FluentSQL
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import StewardSQLite
import Testing
import Vapor
@testable import App

/// `EXPLAIN …` before the statement a query builder makes.
private struct Explain: SQLExpression {
    let prefix: String
    let statement: any SQLExpression

    func serialize(to serializer: inout SQLSerializer) {
        serializer.write(prefix)
        statement.serialize(to: &serializer)
    }
}

/// Fluent's conversion of a query to SQL needs a delegate only for schema types, which a SELECT never uses.
private struct SelectOnly: SQLConverterDelegate {
    func customDataType(_ dataType: DatabaseSchema.DataType) -> (any SQLExpression)? { nil }
}

/// The plan's lines, from the database that would run the query. On PostgreSQL sequential scans and sorts are
/// turned off for the statement, since with a few rows they are the cheapest plan whatever the indexes: a plan that
/// still has one is a plan with no index for the list's order. On SQLite the plan is a direct reader's, where the
/// lists run: its connections keep one plan whatever is bound (the query planner stability guarantee), which the
/// driver's connections do not.
private func plan<M: Model>(_ builder: QueryBuilder<M>, adding extra: [any SQLExpression] = [], on db: any Database,
                            readers: SQLiteReaders?) async throws -> [String] {
    var query = builder.query
    // Fluent names the model's columns when the query runs; the plan is of the same statement.
    query.fields = M.keys.map { .path([$0], schema: M.schema) } + extra.map { .custom($0) }
    let statement = SQLQueryConverter(delegate: SelectOnly()).convert(query)
    let base = (db as? InstrumentedDatabase)?.base ?? db
    if let sql = base as? any SQLDatabase, sql.dialect.name == "sqlite" {
        let readers = try #require(readers, "SQLite lists read through the direct readers")
        let rows = try #require(try await readers.read(Explain(prefix: "EXPLAIN QUERY PLAN ", statement: statement), of: sql, offLoopOn: nil))
        return try rows.map { try $0.decode(column: "detail", as: String.self) }
    }
    return try await base.withConnection { connection in
        let sql = connection as! any SQLDatabase
        let lines = NIOLockedValueBox<[String]>([])
        try await sql.raw("SET enable_seqscan = off").run()
        try await sql.raw("SET enable_sort = off").run()
        do {
            try await sql.execute(sql: Explain(prefix: "EXPLAIN ", statement: statement)) { row in
                let line = (try? row.decode(column: "QUERY PLAN", as: String.self)) ?? ""
                lines.withLockedValue { $0.append(line) }
            }
        } catch {
            try await sql.raw("RESET ALL").run()
            throw error
        }
        try await sql.raw("RESET ALL").run()
        return lines.withLockedValue { $0 }
    }
}

/// A plan that reads the page through an index in the list's order: no full scan of the table, no sort; and through
/// `index` when given (a filter that another index's order would only skip through).
private func expectIndexedOrder(_ lines: [String], _ list: String, table: String, using index: String? = nil) {
    let text = lines.joined(separator: "\n")
    if let index { #expect(text.contains(index), "\(list) does not read \(index): \(text)") }
    #expect(!text.contains("TEMP B-TREE") && !text.contains("Sort"), "\(list) sorts: \(text)")
    #expect(!lines.contains { $0.hasSuffix("SCAN \(table)") } && !text.contains("Seq Scan"), "\(list) scans the table: \(text)")
    #expect(text.contains("INDEX") || text.contains("Index"), "\(list) uses no index: \(text)")
}

@Suite("List query plans")
struct ListPlanTests {
    @Test("Every list reads its page through an index in its order, on the first page and after a cursor, with each filter")
    func listsUseIndexes() async throws {
        try await withTestApp { app in
            let db = app.db, readers = app.sqliteReaders
            let cursor = App.PageRequest(cursor: .init(at: Date().timeIntervalSince1970, id: UUID()))
            let first = App.PageRequest()
            let someone = UUID()
            func page<M: Model>(_ builder: QueryBuilder<M>, by date: FieldKey, _ page: App.PageRequest) -> QueryBuilder<M> where M.IDValue == UUID {
                builder.newestFirstPage(by: date, page: page)
            }
            for request in [first, cursor] {
                let after = request.cursor == nil ? "first page" : "after a cursor"
                expectIndexedOrder(try await plan(page(Skill.query(on: db), by: "created_at", request), on: db, readers: readers), "skills, \(after)", table: "skills")
                expectIndexedOrder(try await plan(page(Skill.query(on: db).filter("category", .equal, "finance"), by: "created_at", request), on: db, readers: readers),
                                   "skills by category, \(after)", table: "skills")
                expectIndexedOrder(try await plan(page(Execution.query(on: db), by: "queued_at", request), on: db, readers: readers),
                                   "all executions, \(after)", table: "executions")
                expectIndexedOrder(try await plan(page(Execution.query(on: db).filter("user_id", .equal, someone), by: "queued_at", request), on: db, readers: readers),
                                   "a user's executions, \(after)", table: "executions")
                expectIndexedOrder(try await plan(page(Execution.query(on: db).filter("status", .equal, "failed"), by: "queued_at", request), on: db, readers: readers),
                                   "executions by status, \(after)", table: "executions")
                expectIndexedOrder(try await plan(page(Execution.query(on: db).filter("skill_id", .equal, someone), by: "queued_at", request), on: db, readers: readers),
                                   "executions of a skill, \(after)", table: "executions")
                // The users page reads each user's roles in the same statement, through the (user_id, role) index.
                let users = try await plan(page(User.query(on: db), by: "created_at", request), adding: AdminUserResponse.extraColumns, on: db, readers: readers)
                expectIndexedOrder(users, "users, \(after)", table: "users")
                #expect(users.contains { $0.contains("user_roles") && ($0.contains("INDEX") || $0.contains("Index")) }
                        && !users.contains { $0.hasSuffix("SCAN user_roles") }, "the roles subquery: \(users.joined(separator: "\n"))")
                expectIndexedOrder(try await plan(page(Workflow.query(on: db), by: "created_at", request), on: db, readers: readers), "workflows, \(after)", table: "workflows")
                expectIndexedOrder(try await plan(page(WorkflowRun.query(on: db).filter("workflow_id", .equal, someone), by: "created_at", request), on: db, readers: readers),
                                   "a workflow's runs, \(after)", table: "workflow_runs")
                expectIndexedOrder(try await plan(page(Schedule.query(on: db), by: "created_at", request), on: db, readers: readers), "schedules, \(after)", table: "schedules")
                expectIndexedOrder(try await plan(page(Schedule.query(on: db).filter("user_id", .equal, someone), by: "created_at", request), on: db, readers: readers),
                                   "a user's schedules, \(after)", table: "schedules")
                // The audit log pages by seq (AuditLogService.list), with each filter.
                func audit(_ filter: (QueryBuilder<AuditLog>) -> QueryBuilder<AuditLog>) -> QueryBuilder<AuditLog> {
                    var query = filter(AuditLog.query(on: db))
                    if request.cursor != nil { query = query.filter("seq", .lessThan, Int64(1_000)) }
                    return query.sort("seq", .descending).limit(request.limit + 1)
                }
                expectIndexedOrder(try await plan(audit { $0 }, on: db, readers: readers), "the audit log, \(after)", table: "audit_logs")
                expectIndexedOrder(try await plan(audit { $0.filter("actor_id", .equal, someone) }, on: db, readers: readers), "the audit log by actor, \(after)", table: "audit_logs")
                expectIndexedOrder(try await plan(audit { $0.filter("action", .equal, "skill.created") }, on: db, readers: readers), "the audit log by action, \(after)", table: "audit_logs")
                expectIndexedOrder(try await plan(audit { $0.filter("resource_type", .equal, "skill").filter("resource_id", .equal, "x") }, on: db, readers: readers),
                                   "the audit log by resource, \(after)", table: "audit_logs")
                expectIndexedOrder(try await plan(page(WebhookDelivery.query(on: db).filter("webhook_id", .equal, someone), by: "created_at", request), on: db, readers: readers),
                                   "a webhook's deliveries, \(after)", table: "webhook_deliveries")
                // The event log pages oldest first by seq (EventController), whole or for one resource.
                func events(_ filter: (QueryBuilder<Event>) -> QueryBuilder<Event>) -> QueryBuilder<Event> {
                    filter(Event.query(on: db)).filter("seq", .greaterThan, Int64(request.cursor == nil ? 0 : 1_000)).sort("seq").limit(request.limit + 1)
                }
                expectIndexedOrder(try await plan(events { $0 }, on: db, readers: readers), "the event log, \(after)", table: "events")
                expectIndexedOrder(try await plan(events { $0.filter("resource_id", .equal, "x") }, on: db, readers: readers), "the event log of a resource, \(after)",
                                   table: "events", using: "events_resource_id_seq_idx")
            }
        }
    }
}
