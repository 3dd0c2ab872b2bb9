import FluentKit
import FluentSQL
import Foundation
import Logging
import NIOCore
import SQLiteKit
import SQLKit
import VaporCSQLite

/// What a write transaction's body sees: a Fluent database and a SQLKit database on the writer's connection,
/// already inside the transaction (nested transactions join it).
package struct WriterDatabase: Database, SQLDatabase, WriteBatchDatabase, DirectSQLiteStatements {
    package let writer: SQLiteWriter
    package let context: DatabaseContext
    package let participants: [any WriteBatchParticipant]

    package func participant<P: WriteBatchParticipant>(_ type: P.Type) -> P? {
        for participant in participants { if let match = participant as? P { return match } }
        return nil
    }

    private static let encoder = SQLiteDataEncoder()

    // MARK: SQLDatabase

    package var logger: Logger { context.logger }
    package var eventLoop: any EventLoop { context.eventLoop }
    package var dialect: any SQLDialect { SQLiteDialect() }
    package var queryLogLevel: Logger.Level? { .trace }

    /// The statement's SQL text and its binds as SQLite values, encoded as the driver encodes them.
    private func statement(_ query: any SQLExpression) throws -> (sql: String, binds: [SQLiteData]) {
        let (sql, rawBinds) = serialize(query)
        logger.trace("Executing query", metadata: ["sql": .string(sql)])
        return (sql, try rawBinds.map { try Self.encoder.encode($0) })
    }

    package func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        let (sql, binds) = try statement(query)
        try await writer.execute(sql, binds, logger: logger, onRow)
    }

    package func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        guard writer.executor.isCurrent else { return eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) } }
        // On the writer's thread (Fluent's calls from a transaction body): run now, answer with a finished future.
        do {
            let (sql, binds) = try statement(query)
            try writer.run(sql, binds, logger: logger, onRow)
            return eventLoop.makeSucceededVoidFuture()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    package func run(sqlite sql: String, _ values: [SQLiteData], collect: Bool) async throws -> [any SQLRow] {
        logger.trace("Executing query", metadata: ["sql": .string(sql)])
        guard collect else {
            try await writer.execute(sql, values, logger: logger) { _ in }
            return []
        }
        let rows = CollectedRows()
        try await writer.execute(sql, values, logger: logger) { rows.rows.append($0) }
        return rows.rows
    }

    package func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await closure(self)
    }

    // MARK: Database

    package var inTransaction: Bool { true }

    package func execute(query: DatabaseQuery, onOutput: @escaping @Sendable (any DatabaseOutput) -> Void) -> EventLoopFuture<Void> {
        var expression = SQLQueryConverter(delegate: WriterConverterDelegate()).convert(query)
        // As the driver does: a create returns the ids it made, unless the model says it has none to return.
        if case .create = query.action, query.customIDKey != .some(.string("")) {
            expression = SQLKit.SQLList([expression, SQLReturning(.init((query.customIDKey ?? .id).description))], separator: SQLRaw(" "))
        }
        return execute(sql: expression) { onOutput(WriterOutput(row: $0, schema: nil)) }
    }

    package func execute(schema: DatabaseSchema) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(SQLiteDirectError(code: SQLITE_MISUSE, message: "schema changes belong in migrations, not write transactions"))
    }

    package func execute(enum: DatabaseEnum) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededFuture(())
    }

    package func transaction<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        closure(self)
    }

    package func withConnection<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        closure(self)
    }
}

/// Rows handed over one by one on the writer's thread, for the caller once the statement is done.
private final class CollectedRows: @unchecked Sendable {
    package var rows: [any SQLRow] = []
}

/// The SQLite driver's type mapping (its delegate is internal to it): only schema conversion consults it.
private struct WriterConverterDelegate: SQLConverterDelegate {
    package func customDataType(_ dataType: DatabaseSchema.DataType) -> (any SQLExpression)? {
        switch dataType {
        case .string, .enum: SQLRaw("TEXT")
        case .datetime: SQLRaw("REAL")
        case .int64: SQLRaw("INTEGER")
        default: nil
        }
    }
}

/// A row as Fluent reads it, with the table prefix Fluent asks for on joins.
private struct WriterOutput: DatabaseOutput {
    package let row: any SQLRow
    package let schema: String?

    package var description: String { String(describing: row) }

    private func column(_ key: FieldKey) -> String {
        (schema.map { .prefix(.prefix(.string($0), "_"), key) } ?? key).description
    }

    package func schema(_ schema: String) -> any DatabaseOutput { WriterOutput(row: row, schema: schema) }
    package func contains(_ key: FieldKey) -> Bool { row.contains(column: column(key)) }
    package func decodeNil(_ key: FieldKey) throws -> Bool { try row.decodeNil(column: column(key)) }
    package func decode<T: Decodable>(_ key: FieldKey, as type: T.Type) throws -> T { try row.decode(column: column(key), as: T.self) }
}
