import Crypto
import Fluent
import Foundation
import NIOConcurrencyHelpers
import PostgresNIO
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// Numbers events and audit entries on PostgreSQL after their writers commit.
///
/// Writers never touch `ledger_heads`: `ActivityRecorder` inserts into `pending_events` and `pending_audit_logs`,
/// each row stamped with its transaction's id (`pg_current_xact_id()`, used by `settle`). A pass of the
/// sequencer, in one transaction:
/// 1. locks the `audit` and `events` heads (`FOR UPDATE`), so passes run one at a time, whoever runs them;
/// 2. moves the pending rows it can see, in insertion order, into `events` and `audit_logs`, giving each the next
///    `seq` and (audit) the next link of the keyed chain;
/// 3. stores the heads and sends one `NOTIFY steward_events, '<last seq>'`.
///
/// Why no row is skipped and no reader sees a gap or a change: a pending row is visible to a pass only once its
/// transaction has committed, and it stays in the pending table until a pass numbers it. What is left to number is
/// decided by membership in that table, never by a position such as "rows after the last one numbered", which is
/// what lets a slow transaction's row be passed over in designs that number on insert. Numbers are given only by
/// passes, each committing all of its numbers at once after the one before, so readers see a gap-free prefix of
/// `seq` and a number once seen never changes. Causal order holds too: a write that began after another committed
/// was inserted after it, and is numbered in the same pass or a later one.
///
/// One instance runs passes continuously, the holder of the `ledger_sequencer` lease (`LedgerSequencerLoop`);
/// reads that promise to show the caller's own writes run one themselves when they find rows committed before they
/// started still pending (`settle`). The cost: an event is visible a pass after its commit (see `docs/scaling.md`).
enum LedgerSequencer {
    /// Rows per table moved in one pass.
    static let batchLimit = 500
    static let leaseName = "ledger_sequencer"
    /// Writers' commits wake the lease holder through this channel (see `AfterCommit`).
    static let channel = "steward_ledger"

    struct Pass: Sendable {
        var events = 0
        var audit = 0
        var lastEventSeq: Int64?
        /// The larger of the two counts: a full batch means more may be waiting.
        var moved: Int { max(events, audit) }
    }

    private static let eventColumns = ["id", "seq", "at", "type", "actor_id", "resource_type", "resource_id", "data"]
    private static let auditColumns = ["id", "seq", "at", "actor_id", "actor_type", "action", "resource_type", "resource_id", "outcome",
                                       "ip_address", "user_agent", "request_id", "details", "prev_hash", "hash"]

    // A pass's statements, each of one text (prepared once per connection in a write transaction).
    private static let headsLock = FixedStatement("SELECT name, seq, last_hash FROM ledger_heads WHERE name IN (?, ?) ORDER BY name FOR UPDATE")
    private static let pendingEventsTake = FixedStatement("""
        DELETE FROM pending_events WHERE pos IN (SELECT pos FROM pending_events ORDER BY pos LIMIT ?)
        RETURNING pos, id, at, type, actor_id, resource_type, resource_id, data
        """)
    private static let pendingAuditTake = FixedStatement("""
        DELETE FROM pending_audit_logs WHERE pos IN (SELECT pos FROM pending_audit_logs ORDER BY pos LIMIT ?)
        RETURNING pos, id, at, actor_id, actor_type, action, resource_type, resource_id, outcome, ip_address, user_agent,
                  request_id, details
        """)
    private static let eventsHeadUpdate = FixedStatement("UPDATE ledger_heads SET seq = ? WHERE name = ?")
    private static let auditHeadUpdate = FixedStatement("UPDATE ledger_heads SET seq = ?, last_hash = ? WHERE name = ?")
    private static let notify = FixedStatement("SELECT pg_notify(?, ?)")

    /// One pass on `sql`, which must be inside a transaction.
    static func sequence(on sql: any SQLDatabase, key: SymmetricKey, limit: Int = batchLimit) async throws -> Pass {
        var heads: [String: (seq: Int64, hash: String)] = [:]
        for row in try await sql.all(headsLock, [LedgerHead.audit, LedgerHead.events]) {
            heads[try row.decode(column: "name", as: String.self)] =
                (try row.decode(column: "seq", as: Int64.self), try row.decode(column: "last_hash", as: String.self))
        }
        guard var events = heads[LedgerHead.events], var audit = heads[LedgerHead.audit] else {
            throw LedgerError.missingHead(heads[LedgerHead.events] == nil ? LedgerHead.events : LedgerHead.audit)
        }
        var pass = Pass()

        // Each statement from here takes a fresh snapshot (READ COMMITTED), taken after the lock: it sees every row
        // the previous pass numbered as gone.
        let pendingEvents = try await sql.all(pendingEventsTake, [limit]).map { row in (try row.decode(column: "pos", as: Int64.self), row) }.sorted { $0.0 < $1.0 }
        if !pendingEvents.isEmpty {
            var insert = sql.insert(into: Event.schema).columns(eventColumns)
            for (_, row) in pendingEvents {
                events.seq += 1
                insert = insert.values([
                    SQLBind(try row.decode(column: "id", as: UUID.self)), SQLBind(events.seq), SQLBind(try row.decode(column: "at", as: Date.self)),
                    SQLBind(try row.decode(column: "type", as: String.self)), SQLBind(try row.decode(column: "actor_id", as: UUID?.self)),
                    SQLBind(try row.decode(column: "resource_type", as: String.self)),
                    SQLBind(try row.decode(column: "resource_id", as: String?.self)), SQLBind(try row.decode(column: "data", as: String.self)),
                ])
            }
            try await insert.run()
            pass.events = pendingEvents.count
            pass.lastEventSeq = events.seq
        }

        let pendingAudit = try await sql.all(pendingAuditTake, [limit]).map { row in (try row.decode(column: "pos", as: Int64.self), row) }.sorted { $0.0 < $1.0 }
        if !pendingAudit.isEmpty {
            var insert = sql.insert(into: AuditLog.schema).columns(auditColumns)
            for (_, row) in pendingAudit {
                audit.seq += 1
                let entry = AuditChain.Entry(
                    id: try row.decode(column: "id", as: UUID.self), seq: audit.seq, at: try row.decode(column: "at", as: Date.self),
                    actorID: try row.decode(column: "actor_id", as: UUID?.self), actorType: try row.decode(column: "actor_type", as: String.self),
                    action: try row.decode(column: "action", as: String.self), resourceType: try row.decode(column: "resource_type", as: String?.self),
                    resourceID: try row.decode(column: "resource_id", as: String?.self), outcome: try row.decode(column: "outcome", as: String.self),
                    ipAddress: try row.decode(column: "ip_address", as: String?.self), userAgent: try row.decode(column: "user_agent", as: String?.self),
                    requestID: try row.decode(column: "request_id", as: String?.self), details: try row.decode(column: "details", as: String.self))
                let previous = audit.hash
                audit.hash = AuditChain.hash(of: entry, previous: previous, key: key)
                insert = insert.values([
                    SQLBind(entry.id), SQLBind(entry.seq), SQLBind(entry.at), SQLBind(entry.actorID), SQLBind(entry.actorType),
                    SQLBind(entry.action), SQLBind(entry.resourceType), SQLBind(entry.resourceID), SQLBind(entry.outcome),
                    SQLBind(entry.ipAddress), SQLBind(entry.userAgent), SQLBind(entry.requestID), SQLBind(entry.details),
                    SQLBind(previous), SQLBind(audit.hash),
                ])
            }
            try await insert.run()
            pass.audit = pendingAudit.count
        }

        if pass.events > 0 {
            try await sql.run(eventsHeadUpdate, [events.seq, LedgerHead.events])
            // Every instance's live streams and webhook dispatch hear of the batch once, when it commits.
            try await sql.run(notify, [ActivityRecorder.eventChannel, String(events.seq)])
        }
        if pass.audit > 0 {
            try await sql.run(auditHeadUpdate, [audit.seq, audit.hash, LedgerHead.audit])
        }
        return pass
    }

    /// One pass in a transaction of its own. This instance's live streams hear of its events at once; the others
    /// through the pass's `NOTIFY`.
    static func pass(_ app: Application) async throws -> Pass {
        let key = app.auditKeys.chain
        let pass = try await PostgresTransaction.run(on: app.db) { db in try await sequence(on: db as! any SQLDatabase, key: key) }
        if let last = pass.lastEventSeq { app.eventHubIfPresent?.expect(seq: last) }
        return pass
    }

    /// Returns once every event and audit entry committed before the call is numbered (read-your-writes for the
    /// events and audit APIs, the start of a live stream, checkpoints and retention), running passes itself when
    /// such rows are still pending. Gives up after `timeout` (a database too slow to answer) and lets the caller
    /// read what is numbered. Does nothing on SQLite, which numbers inside the writer.
    static func settle(_ app: Application, timeout: Duration = .seconds(2)) async throws {
        guard app.sqliteWriter == nil, let sql = app.db as? any SQLDatabase, sql.dialect.name == "postgresql" else { return }
        // Before migration 0027 there is nothing pending to wait for. Once the tables exist they stay.
        guard try await pendingTablesExist(app, sql) else { return }
        // The common answer, nothing pending, in one round trip (prepared where that applies).
        guard var state = try await pendingState(app, sql) else { return }
        let deadline = ContinuousClock.now + timeout
        while true {
            guard state.pending else { return }
            guard ContinuousClock.now < deadline else {
                app.logger.notice("Events and audit entries committed before a read are not numbered yet; an open transaction may hold the sequencer back")
                return
            }
            if try await pass(app).moved == 0 { try await Task.sleep(for: .milliseconds(5)) }
            state.pending = try await sql.raw("""
                WITH t AS (SELECT \(bind: state.top)::xid8 AS top) SELECT \(unsafeRaw: pendingBefore("t.top")) AS pending FROM t
                """).first()?.decode(column: "pending", as: Bool.self) ?? false
        }
    }

    /// Whether rows committed before this statement wait in the pending tables, and the statement's snapshot `xmax`:
    /// every transaction that committed before it has an id below that. Both come from one snapshot.
    enum PendingRead: FixedPostgresRead {
        static let name = "ledger_pending"
        static let sql = "\(snapshotTop) SELECT s.top::text AS top, \(pendingBefore("s.top")) AS pending FROM s"
    }

    /// `s`, one row whose `top` is the statement's snapshot `xmax`.
    static let snapshotTop = "WITH s AS (SELECT pg_snapshot_xmax(pg_current_snapshot()) AS top)"

    /// True when a row of a transaction with an id below `top` (an xid8 expression) waits in the pending tables.
    static func pendingBefore(_ top: String) -> String {
        "(EXISTS (SELECT 1 FROM pending_events WHERE tx < \(top)) OR EXISTS (SELECT 1 FROM pending_audit_logs WHERE tx < \(top)))"
    }

    private static func pendingState(_ app: Application, _ sql: any SQLDatabase) async throws -> (top: String, pending: Bool)? {
        let row: (any SQLRow)?
        if let prepared = try await (app.db as? InstrumentedDatabase)?.preparedRows(PendingRead.self, PostgresBindings()) {
            row = prepared.first
        } else {
            row = try await sql.raw(SQLQueryString(PendingRead.sql)).first()
        }
        guard let row else { return nil }
        return (try row.decode(column: "top", as: String.self), try row.decode(column: "pending", as: Bool.self))
    }

    private struct PendingTablesKey: StorageKey { typealias Value = Bool }
    private static let pendingTablesLock = NIOLock()

    private static func pendingTablesExist(_ app: Application, _ sql: any SQLDatabase) async throws -> Bool {
        if pendingTablesLock.withLock({ app.storage[PendingTablesKey.self] ?? false }) { return true }
        let exists = try await sql.raw("SELECT to_regclass('pending_audit_logs') IS NOT NULL AS ready").first()?
            .decode(column: "ready", as: Bool.self) ?? false
        if exists { pendingTablesLock.withLock { app.storage[PendingTablesKey.self] = true } }
        return exists
    }
}

extension Application {
    /// The database after `LedgerSequencer.settle`: reads of `events` and `audit_logs` there include every entry
    /// committed before the call.
    func settledLedger() async throws -> any Database {
        try await LedgerSequencer.settle(self)
        return db
    }
}

/// Runs sequencer passes while this instance holds the `ledger_sequencer` lease (PostgreSQL only).
///
/// The lease is a row with a holder, a term and an expiry on the database's clock. The holder renews it every
/// second for five; any instance takes it over once it has expired, with the next term; a stopping holder gives it
/// up. Two holders at once (a paused process resuming after its lease passed on) cost only wasted work: each pass
/// takes the heads lock, so passes never overlap and never number a row twice.
final class LedgerSequencerLoop: LifecycleHandler, @unchecked Sendable {
    static let leaseSeconds = 5
    static let renewEvery: Duration = .seconds(1)
    /// A pass without being woken, for writes whose wake-up was lost.
    static let idlePoll: Duration = .milliseconds(250)

    let holder = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(UUID().lowercasedString.prefix(8))"
    let signal = JobSignal()
    private let lock = NSLock()
    private var task: Task<Void, Never>?
    private let heldTerm = NIOLockedValueBox<Int64?>(nil)

    /// The lease's term while this instance holds it.
    var term: Int64? { heldTerm.withLockedValue { $0 } }

    func start(_ app: Application) {
        lock.withLock {
            guard task == nil else { return }
            task = Task { await self.run(app) }
        }
    }

    private func run(_ app: Application) async {
        var lastRenewal: ContinuousClock.Instant?
        while !Task.isCancelled {
            do {
                if lastRenewal.map({ ContinuousClock.now - $0 >= Self.renewEvery }) ?? true {
                    let term = try await acquireOrRenew(app)
                    let previous = heldTerm.withLockedValue { held in defer { held = term }; return held }
                    if previous != term {
                        if let term { app.logger.notice("This instance sequences events and audit entries (lease term \(term))") }
                        else if previous != nil { app.logger.notice("This instance no longer sequences events and audit entries") }
                    }
                    lastRenewal = .now
                }
                guard self.term != nil else {
                    try? await Task.sleep(for: Self.renewEvery)
                    continue
                }
                let seen = signal.current
                if try await LedgerSequencer.pass(app).moved == LedgerSequencer.batchLimit { continue }
                await signal.wait(after: seen, timeout: min(Self.idlePoll, Self.renewEvery))
            } catch {
                if Task.isCancelled { break }
                app.logger.warning("Ledger sequencer pass failed: \(String(describing: error))")
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Takes the lease if it is free or expired, or renews it; returns the term held, or nil (also while the
    /// schema is older than migration 0027: `serve` with `STEWARD_AUTO_MIGRATE=false` waits for `steward migrate`).
    private func acquireOrRenew(_ app: Application) async throws -> Int64? {
        let sql = app.db as! any SQLDatabase
        guard try await sql.raw("SELECT to_regclass('leases') IS NOT NULL AS ready").first()?.decode(column: "ready", as: Bool.self) ?? false else {
            return nil
        }
        return try await sql.raw("""
            INSERT INTO leases (name, holder, term, expires_at)
            VALUES (\(bind: LedgerSequencer.leaseName), \(bind: holder), 1, now() + make_interval(secs => \(bind: Self.leaseSeconds)))
            ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                term = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.term ELSE leases.term + 1 END
            WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
            RETURNING term
            """).first()?.decode(column: "term", as: Int64.self)
    }

    func shutdownAsync(_ app: Application) async {
        let running = lock.withLock { () -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        await running?.value
        // Handing over at once: the next instance need not wait for the lease to run out.
        if heldTerm.withLockedValue({ $0 }) != nil, let sql = app.db as? any SQLDatabase {
            try? await sql.raw("""
                UPDATE leases SET expires_at = now() - interval '1 second' WHERE name = \(bind: LedgerSequencer.leaseName) AND holder = \(bind: holder)
                """).run()
            heldTerm.withLockedValue { $0 = nil }
        }
    }
}

extension Application {
    private struct SequencerLoopKey: StorageKey { typealias Value = LedgerSequencerLoop }

    /// Set in `configure` on PostgreSQL; started with the other loops.
    var ledgerSequencerLoop: LedgerSequencerLoop? {
        get { storage[SequencerLoopKey.self] }
        set { storage[SequencerLoopKey.self] = newValue }
    }
}

extension LedgerSequencer {
    /// A page of `events` or `audit_logs` (`query`, ordered by seq) once everything committed before the call is
    /// numbered, as `settle` then `read` would give it. On PostgreSQL the page is read in the same statement as
    /// `settle`'s check that nothing waits, and so under the same snapshot: when nothing waits, which is nearly
    /// always, that is one round trip instead of two; only when rows wait does it settle and `read`. The check and
    /// the page cannot go out as two statements at once: the page's snapshot could then be older than the check's
    /// and miss rows numbered between. Elsewhere (SQLite, which numbers inside its writer; a transaction; a database
    /// before migration 0027) it is `settle` then `read`.
    static func settledPage<M: ListedProperties, Row: RowReadable>(_ query: QueryBuilder<M>, as: Row.Type, descending: Bool, app: Application,
                                                                   read: () async throws -> [Row]) async throws -> [Row] {
        if app.sqliteWriter == nil, !query.database.inTransaction, let sql = app.db as? any SQLDatabase,
           sql.dialect.name == "postgresql", try await pendingTablesExist(app, sql) {
            let rows = try await DirectRowReadingFallback.rows(
                SettledPage(page: query.listedStatement(as: Row.self), descending: descending), on: query.database)
            if let first = rows.first, try !first.decode(column: "settle_pending", as: Bool.self) {
                // An empty page is the one row of the outer join with no page columns.
                return try rows.filter { try !$0.decodeNil(column: "seq") }.map { try Row(row: $0) }
            }
        }
        try await settle(app)
        return try await read()
    }
}

/// `page` under `LedgerSequencer.PendingRead`'s check, in one statement: one row with `settle_pending` true and no
/// page when rows wait to be numbered, else the page's rows (or one empty row).
private struct SettledPage: SQLExpression {
    let page: any SQLExpression
    let descending: Bool

    func serialize(to serializer: inout SQLSerializer) {
        serializer.write("\(LedgerSequencer.snapshotTop), settle AS (SELECT \(LedgerSequencer.pendingBefore("s.top")) AS settle_pending FROM s), page AS (")
        page.serialize(to: &serializer)
        serializer.write(") SELECT settle.settle_pending, page.* FROM settle LEFT JOIN page ON NOT settle.settle_pending ORDER BY page.seq ")
        serializer.write(descending ? "DESC" : "ASC")
    }
}
