import Fluent
import Foundation
import Testing
import Vapor
@testable import App
import StewardFormats
import SQLKit
import StewardPostgres
import StewardSQLite

/// The fast read of every list (`listed()`, `read(from:)`) fills a model from its hand-written property list, not
/// from Fluent's reflection. These tests hold the lists to the models and the reads to what Fluent reads.
@Suite("Listed reads")
struct ListedReadTests {
    private static func complete<M: ListedProperties>(_: M.Type) -> Bool {
        M().listedProperties.flatMap(\.keys).map(\.description).sorted() == M.keys.map(\.description).sorted()
    }

    @Test("Every stored field of each listed model is in its hand-written property list, once")
    func propertyListsAreComplete() {
        #expect(Self.complete(User.self))
        #expect(Self.complete(UserSession.self))
        #expect(Self.complete(UserRole.self))
        #expect(Self.complete(APIKey.self))
        #expect(Self.complete(Skill.self))
        #expect(Self.complete(SkillFavorite.self))
        #expect(Self.complete(Execution.self))
        #expect(Self.complete(ExecutionHistoryEntry.self))
        #expect(Self.complete(Event.self))
        #expect(Self.complete(AuditLog.self))
        #expect(Self.complete(Webhook.self))
        #expect(Self.complete(WebhookDelivery.self))
        #expect(Self.complete(WebhookAttempt.self))
        #expect(Self.complete(Workflow.self))
        #expect(Self.complete(WorkflowRun.self))
        #expect(Self.complete(WorkflowRunStep.self))
        #expect(Self.complete(Schedule.self))
    }

    /// The rows of `M` read each way (Fluent's `all()`, `listed()` through the driver, and on SQLite `listed` on a
    /// direct reader), as Fluent's own JSON coding of the models: equal, field for field.
    static func sameRows<M: ListedProperties>(_: M.Type, on db: any Database, readers: SQLiteReaders?, atLeast: Int = 1,
                                             sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let fluent = try await M.query(on: db).sort(.id).all()
        let listed = try await M.query(on: db).sort(.id).listed()
        let direct = try await M.query(on: db).sort(.id).listed(through: readers)
        #expect(fluent.count >= atLeast, "\(M.self): \(fluent.count) rows", sourceLocation: sourceLocation)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(listed) == encoder.encode(fluent), "\(M.self)", sourceLocation: sourceLocation)
        #expect(try encoder.encode(direct) == encoder.encode(fluent), "\(M.self) on a direct reader", sourceLocation: sourceLocation)
    }

    /// Each row of `M` read straight into `Row` (through the driver, and on SQLite on a direct reader) writes the
    /// same JSON as the response made from the model.
    static func sameItems<M: ListedProperties, Row: RowReadable & Encodable>(_: M.Type, as: Row.Type, from model: (M) -> Row,
                                                                             on db: any Database, readers: SQLiteReaders?,
                                                                             sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let expected = try await M.query(on: db).sort(.id).all().map(model)
        #expect(!expected.isEmpty, "\(M.self) has rows", sourceLocation: sourceLocation)
        for readers in [nil, readers] {
            let items = try await M.query(on: db).sort(.id).listed(as: Row.self, through: readers)
            #expect(try APIJSON.string(items) == APIJSON.string(expected), "\(Row.self), direct: \(readers != nil)", sourceLocation: sourceLocation)
        }
        // An item that writes itself writes what its `Codable` conformance encodes.
        if Row.self is any APIJSONWritable.Type {
            #expect(try APIJSON.string(expected) == String(decoding: try APIJSON.tree(expected), as: UTF8.self),
                    "\(Row.self) writes itself as Codable encodes it", sourceLocation: sourceLocation)
        }
    }

    /// Items that write themselves (`APIJSONWritable`) write the bytes their `Codable` conformance encodes.
    static func writesAsCodable<T: Encodable>(_ items: [T], sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(!items.isEmpty, "\(T.self): some items", sourceLocation: sourceLocation)
        #expect(T.self is any APIJSONWritable.Type, "\(T.self) writes itself", sourceLocation: sourceLocation)
        #expect(try APIJSON.string(items) == String(decoding: try APIJSON.tree(items), as: UTF8.self), "\(T.self)", sourceLocation: sourceLocation)
    }

    @Test("On PostgreSQL a list's rows are read by Steward's row reader, binds of every plain type included, as the driver reads them; on SQLite that reader stands aside")
    func postgresRowReader() async throws {
        try await withTestApp { app in
            try await makeUser(app, email: "rows-1@example.com")
            try await makeUser(app, email: "rows-2@example.com")
            let direct = try #require(app.db as? any DirectRowReading)
            let plain: SQLQueryString = """
                SELECT * FROM users WHERE created_at > \(bind: Date(timeIntervalSince1970: 0)) AND id <> \(bind: UUID())
                AND email <> \(bind: "nobody@example.com") AND \(bind: 1) = \(bind: Int64(1)) AND \(bind: true) AND \(bind: 2.5) > 0
                ORDER BY id
                """
            let rows = try await direct.directRows(plain)
            guard TestDatabase.isPostgres else {
                #expect(rows == nil, "SQLite lists read on its own readers")
                return
            }
            let read = try #require(rows)
            #expect(read.count == 2)
            #expect(read.allSatisfy { $0 is PostgresListRow })
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let fluent = try await User.query(on: app.db).sort(.id).all()
            #expect(try encoder.encode(read.map { try User.read(from: $0) }) == encoder.encode(fluent))
            // Columns are found by name in any order, a name tested for nil and then read included; a repeated
            // name means its first column, even right after the column before its second.
            let named = try #require(try await direct.directRows(SQLQueryString("SELECT 1 AS a, 'x' AS b, NULL::text AS c, 2 AS d, 3 AS a"))?.first)
            #expect(try named.decode(column: "a", as: Int.self) == 1 && named.decode(column: "b", as: String.self) == "x")
            #expect(try named.decodeNil(column: "c") && named.decode(column: "c", as: String?.self) == nil && named.decode(column: "d", as: Int.self) == 2)
            #expect(try named.decode(column: "a", as: Int.self) == 1, "the first of two columns named a")
            #expect(try named.decode(column: "d", as: Int.self) == 2 && named.decode(column: "b", as: String.self) == "x")
            // A bind the reader does not encode leaves the statement to the driver.
            #expect(try await direct.directRows(SQLQueryString("SELECT * FROM users WHERE email = ANY(\(bind: ["a", "b"]))")) == nil)
            // Inside a transaction the driver reads too.
            let leftToDriver = try await app.db.transaction { db async throws -> Bool in
                try await (db as? any DirectRowReading)?.directRows(plain) == nil
            }
            #expect(leftToDriver)
        }
    }

    @Test("Stored workflow steps read by Steward's parser are the steps Foundation's decoder reads")
    func storedSteps() throws {
        let skill = UUID()
        let steps = [
            WorkflowStep(id: "fetch", skillId: skill, input: ["url": "https://example.com/a/b", "n": 3, "deep": [["x": .null], true, .number(2.5)]],
                         dependsOn: [], retry: .init(maxAttempts: 1, backoffSeconds: 0), timeoutSeconds: 300, continueOnFailure: false),
            WorkflowStep(id: "use \"it\"", skillId: skill, input: ["from": "${steps.fetch.output.items.0}", "é": "ü\n"],
                         dependsOn: ["fetch"], retry: .init(maxAttempts: 5, backoffSeconds: 30), timeoutSeconds: 1, continueOnFailure: true),
        ]
        let text = String(decoding: try JSONEncoder.sortedKeys.encode(steps), as: UTF8.self)
        #expect(WorkflowStep.stored(text) == (try JSONDecoder().decode([WorkflowStep].self, from: Data(text.utf8))))
        #expect(WorkflowStep.stored(text) == steps)
        guard case .array(let stored)? = JSONText.parse(text) else { Issue.record("not an array: \(text)"); return }
        #expect(stored.compactMap(WorkflowStep.init(stored:)) == steps, "read by Steward's parser, not the fallback")
        #expect(WorkflowStep.stored("[]").isEmpty && WorkflowStep.stored("not json").isEmpty && WorkflowStep.stored(#"[{"id":"x"}]"#).isEmpty)
    }
}
