import FluentKit
import FluentSQLiteDriver
import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLiteKit
import SQLiteNIO
import SQLKit
import StewardSQLite
import Testing
import VaporCSQLite

/// The storage engine on its own, without the app: a real SQLite file in a temporary directory, the writer's
/// batches, its hooks, and the direct readers.
@Suite("SQLite writer and readers")
struct SQLiteWriterTests {
    /// A database file of its own, with the writer open on it and a `things` table.
    struct Store {
        let directory: URL
        let path: String
        let writer: SQLiteWriter

        static func open() async throws -> Store {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("steward-sqlite-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let path = directory.appendingPathComponent("test.sqlite").path
            let writer = try await SQLiteWriter.open(
                path: path, busyTimeoutMilliseconds: 5_000, synchronous: "NORMAL",
                configuration: DatabaseConfigurationFactory.sqlite(.file(path)).make(), logger: Logger(label: "test"),
                pageSizeLimit: nil, observer: nil, gate: WriteGate())
            try await writer.statements { sql in
                try await sql.raw("CREATE TABLE things (name TEXT PRIMARY KEY NOT NULL)").run()
                try await sql.raw("CREATE TABLE counters (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)").run()
                try await sql.raw("INSERT INTO counters (id, value) VALUES (1, 0)").run()
            }
            return Store(directory: directory, path: path, writer: writer)
        }

        func insert(_ name: String, on db: any Database) async throws {
            try await (db as! any SQLDatabase).raw("INSERT INTO things (name) VALUES (\(bind: name))").run()
        }

        func names() async throws -> Set<String> {
            let readers = SQLiteReaders(path: path, limit: 1, observer: nil, logger: Logger(label: "test"))
            defer { readers.close() }
            let rows = try #require(try readers.read("SELECT name FROM things", []))
            return Set(try rows.map { try $0.decode(column: "name", as: String.self) })
        }

        /// Runs `body` with a fresh store, closed afterwards whatever happens.
        static func with(_ body: (Store) async throws -> Void) async throws {
            let store = try await open()
            do {
                try await body(store)
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }

        func close() async {
            await writer.close()
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Counts the writes of one batch in memory and writes the count back once, before the commit, as the
    /// app's ledger heads do.
    final class WriteCounter: WriteBatchParticipant, @unchecked Sendable {
        var count = 0
        var atSavepoint = 0
        let batches: NIOLockedValueBox<[Int]>

        init(batches: NIOLockedValueBox<[Int]>) { self.batches = batches }

        func savepoint() { atSavepoint = count }
        func rolledBackToSavepoint() { count = atSavepoint }
        func beforeCommit(_ execute: (String, [SQLiteData]) throws -> Void) throws {
            batches.withLockedValue { $0.append(count) }
            try execute("UPDATE counters SET value = value + ? WHERE id = 1", [.integer(count)])
        }
    }

    @Test("Writes that arrive together commit together; one that fails is rolled back alone and its error reaches only its caller")
    func failingWriteFailsAlone() async throws {
        try await Store.with { store in
            struct Refused: Error {}
            let results = await withTaskGroup(of: (Int, Bool).self) { group in
                for index in 0..<40 {
                    group.addTask {
                        do {
                            try await store.writer.transaction { db in
                                try await store.insert("thing-\(index)", on: db)
                                if index % 10 == 3 {
                                    try await store.insert("half-of-\(index)", on: db)
                                    throw Refused()
                                }
                            }
                            return (index, true)
                        } catch {
                            return (index, error is Refused ? false : true)
                        }
                    }
                }
                var results: [Int: Bool] = [:]
                for await (index, ok) in group { results[index] = ok }
                return results
            }
            let failed = Set(results.filter { !$0.value }.keys)
            #expect(failed == [3, 13, 23, 33])
            let expected = Set((0..<40).filter { !failed.contains($0) }.map { "thing-\($0)" })
            let names = try await store.names()
            #expect(names == expected, "no row of a failed write, every row of the others")
        }
    }

    @Test("No batch holds more than the limit; participants see each batch, follow its rollbacks, and write back before the commit")
    func batchesAndParticipants() async throws {
        try await Store.with { store in
            let batches = NIOLockedValueBox<[Int]>([])
            store.writer.addBatchParticipant { WriteCounter(batches: batches) }
            let commits = NIOLockedValueBox(0)
            store.writer.afterCommit { commits.withLockedValue { $0 += 1 } }
            struct Refused: Error {}
            let total = SQLiteWriter.batchLimit * 3
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<total {
                    group.addTask {
                        try? await store.writer.transaction { db in
                            let counter = try #require((db as? any WriteBatchDatabase)?.participant(WriteCounter.self))
                            counter.count += 1
                            try await store.insert("thing-\(index)", on: db)
                            if index % 7 == 0 { throw Refused() }
                        }
                    }
                }
            }
            let committed = (0..<total).filter { $0 % 7 != 0 }.count
            let names = try await store.names()
            #expect(names.count == committed)
            let readers = SQLiteReaders(path: store.path, limit: 1, observer: nil, logger: Logger(label: "test"))
            defer { readers.close() }
            let counter = try #require(try readers.read("SELECT value FROM counters WHERE id = 1", []))
            #expect(try counter[0].decode(column: "value", as: Int.self) == committed, "rolled-back writes are not counted")
            let sizes = batches.withLockedValue { $0 }
            #expect(sizes.reduce(0, +) == committed)
            #expect(sizes.allSatisfy { $0 <= SQLiteWriter.batchLimit })
            #expect(sizes.count >= 3, "\(total) writes need at least three batches")
            #expect(commits.withLockedValue { $0 } == sizes.count, "afterCommit runs once per committed batch")
        }
    }

    @Test("A caller hears back only after its commit: the afterCommit hook has run and another connection reads the row")
    func answersAfterCommit() async throws {
        try await Store.with { store in
            let committed = NIOLockedValueBox(false)
            store.writer.afterCommit { committed.withLockedValue { $0 = true } }
            try await store.writer.transaction { db in try await store.insert("visible", on: db) }
            #expect(committed.withLockedValue { $0 })
            let names = try await store.names()
            #expect(names == ["visible"])
        }
    }

    @Test("Readers read committed rows with bound values; with no connection allowed they answer nil, and the caller uses the pool")
    func readers() async throws {
        try await Store.with { store in
            try await store.writer.transaction { db in
                try await store.insert("a'; DROP TABLE things; --", on: db)
                try await store.insert("b", on: db)
            }
            let readers = SQLiteReaders(path: store.path, limit: 2, observer: nil, logger: Logger(label: "test"))
            let rows = try #require(try readers.read("SELECT name FROM things WHERE name = ?", [.text("a'; DROP TABLE things; --")]))
            #expect(rows.count == 1)
            #expect(try readers.read("SELECT count(*) AS n FROM things", [])?.first?.decode(column: "n", as: Int.self) == 2)
            #expect(throws: SQLiteDirectError.self) { _ = try readers.read("INSERT INTO things (name) VALUES ('c')", []) }
            readers.close()
            #expect(try readers.read("SELECT 1", []) == nil, "a closed reader sends reads back to the pool")
            let none = SQLiteReaders(path: store.path, limit: 0, observer: nil, logger: Logger(label: "test"))
            #expect(try none.read("SELECT 1", []) == nil)
        }
    }

    @Test("A reader that would wait for a lock answers nil at once (the caller falls back to the pool), and reads again once the lock is gone")
    func busyReaderFallsBack() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("steward-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("busy.sqlite").path
        // A connection that keeps the whole file to itself: WAL in exclusive locking mode holds its lock after a write.
        let holder = try DirectSQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
        for statement in ["PRAGMA journal_mode = WAL", "CREATE TABLE things (name TEXT)", "PRAGMA locking_mode = EXCLUSIVE",
                          "INSERT INTO things (name) VALUES ('held')"] {
            try holder.execute(statement, []) { _ in }
        }
        let readers = SQLiteReaders(path: path, limit: 1, observer: nil, logger: Logger(label: "test"))
        defer { readers.close() }
        let started = ContinuousClock.now
        #expect(try readers.read("SELECT name FROM things", []) == nil)
        #expect(ContinuousClock.now - started < .milliseconds(500), "the reader did not wait")
        holder.close()
        let rows = try #require(try readers.read("SELECT name FROM things", []))
        #expect(try rows.map { try $0.decode(column: "name", as: String.self) } == ["held"])
    }

    @Test("The direct connections and the driver link one and the same SQLite library")
    func oneSQLiteLibrary() async throws {
        try await Store.with { store in
            let connection = try await SQLiteConnection.open(storage: .file(path: store.path)).get()
            let driverRows = try await connection.query("SELECT sqlite_source_id() AS id").get()
            try await connection.close().get()
            let driver = try #require(driverRows.first?.column("id")?.string)
            #expect(driver == String(cString: sqlite_nio_sqlite3_sourceid()))
        }
    }
}
