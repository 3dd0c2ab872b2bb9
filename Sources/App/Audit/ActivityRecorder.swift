import Crypto
import Fluent
import Foundation
import SQLiteKit
import SQLKit
import StewardFormats
import StewardSQLite

/// Names of the rows in `ledger_heads`.
enum LedgerHead {
    static let audit = "audit"
    static let events = "events"
    /// Where retention last cut the audit chain: the seq and hash of the newest deleted entry.
    static let auditPruned = "audit_pruned"
    /// The last event seq the webhook dispatcher has turned into deliveries.
    static let webhookDispatch = "webhook_dispatch"
}

/// Who did something.
public enum ActorType: String, Codable, Sendable {
    case user
    case apiKey = "api_key"
    case system
}

/// Where an action came from; copied into audit entries.
public struct RequestOrigin: Sendable, Equatable {
    public var ipAddress: String?
    public var userAgent: String?
    public var requestID: String?

    public init(ipAddress: String? = nil, userAgent: String? = nil, requestID: String? = nil) {
        self.ipAddress = ipAddress
        self.userAgent = userAgent
        self.requestID = requestID
    }

    public static let system = RequestOrigin()
}

/// An audit entry to write.
public struct AuditRecord: Sendable {
    public enum Outcome: String, Codable, Sendable { case success, failure }

    public var action: String
    public var actorID: UUID?
    public var actorType: ActorType
    public var resourceType: String?
    public var resourceID: String?
    public var outcome: Outcome
    public var origin: RequestOrigin
    public var details: JSONValue

    public init(
        action: String, actorID: UUID?, actorType: ActorType, resourceType: String? = nil, resourceID: String? = nil,
        outcome: Outcome = .success, origin: RequestOrigin = .system, details: JSONValue = [:]
    ) {
        self.action = action
        self.actorID = actorID
        self.actorType = actorType
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.outcome = outcome
        self.origin = origin
        self.details = details
    }
}

/// An event to append to the log.
public struct EventRecord: Sendable {
    public var type: String
    public var actorID: UUID?
    public var resourceType: String
    public var resourceID: String?
    public var data: JSONValue

    public init(type: String, actorID: UUID?, resourceType: String, resourceID: String?, data: JSONValue = [:]) {
        self.type = type
        self.actorID = actorID
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.data = data
    }
}

/// What a write produced. On PostgreSQL the numbers come after the commit (`LedgerSequencer`), so both seqs are nil.
public struct RecordedActivity: Sendable {
    public var auditSeq: Int64?
    public var auditID: UUID?
    public var eventSeq: Int64?
    public var eventID: UUID?
}

/// The one writer of audit entries and events. Call it with the transaction that makes the change it describes,
/// so the change, its audit entry and its event commit or roll back together. On SQLite it numbers them and links
/// the chain itself (the single writer's batch holds the heads); on PostgreSQL it leaves them pending for
/// `LedgerSequencer`.
public struct ActivityRecorder: Sendable {
    /// The PostgreSQL channel that carries the last `seq` of each sequencer pass to every instance.
    static let eventChannel = "steward_events"

    let clock: any WallClock
    /// Keys the audit chain (see `AuditChain`).
    let chainKey: SymmetricKey
    /// Told each new event's `seq` (inside the transaction, SQLite only): the live-stream hub of this process.
    let onEvent: (@Sendable (Int64) -> Void)?

    init(clock: any WallClock, chainKey: SymmetricKey, onEvent: (@Sendable (Int64) -> Void)? = nil) {
        self.clock = clock
        self.chainKey = chainKey
        self.onEvent = onEvent
    }

    /// Writes an audit entry, an event, or both, inside `database`'s transaction (one is opened if there is none).
    @discardableResult
    public func record(audit: AuditRecord? = nil, event: EventRecord? = nil, on database: any Database) async throws -> RecordedActivity {
        let at = AuditChain.truncatedToMilliseconds(clock.now())
        return try await database.joiningTransaction { db in
            let sql = db as! any SQLDatabase
            if sql.dialect.name == "postgresql" { return try await Self.leavePending(audit: audit, event: event, at: at, on: sql) }
            var result = RecordedActivity()
            let names = (audit == nil ? [] : [LedgerHead.audit]) + (event == nil ? [] : [LedgerHead.events])
            let cache = (db as? any WriteBatchDatabase)?.participant(LedgerHeadCache.self)
            let heads = if let cache { try await cache.advance(names, on: sql) } else { try await Self.advance(names, on: sql) }
            if let audit, let head = heads[LedgerHead.audit] {
                let (seq, hash, id) = try await Self.appendAudit(audit, at: at, head: head, key: chainKey, on: sql)
                result.auditID = id
                if let cache {
                    cache.chain(LedgerHead.audit, to: hash)
                } else {
                    try await sql.raw("UPDATE ledger_heads SET last_hash = \(bind: hash) WHERE name = \(bind: LedgerHead.audit)").run()
                }
                result.auditSeq = seq
            }
            if let event, let head = heads[LedgerHead.events] {
                let (seq, id) = try await Self.appendEvent(event, at: at, seq: head.seq, on: sql)
                result.eventSeq = seq
                result.eventID = id
                onEvent?(seq)
            }
            return result
        }
    }

    private static let pendingAuditInsert = FixedStatement.insert(
        into: "pending_audit_logs",
        columns: ["id", "at", "actor_id", "actor_type", "action", "resource_type", "resource_id", "outcome", "ip_address",
                  "user_agent", "request_id", "details"],
        deferrable: true)
    private static let pendingEventInsert = FixedStatement.insert(
        into: "pending_events", columns: ["id", "at", "type", "actor_id", "resource_type", "resource_id", "data"], deferrable: true)

    /// PostgreSQL: leaves the entry and the event for `LedgerSequencer`, which numbers them after the commit. No row
    /// is locked, so writers on every instance commit side by side. The sequencer's holder is woken after the commit.
    private static func leavePending(audit: AuditRecord?, event: EventRecord?, at: Date, on sql: any SQLDatabase) async throws -> RecordedActivity {
        var result = RecordedActivity()
        if let audit {
            let id = UUID.timeOrdered()
            result.auditID = id
            try await sql.run(pendingAuditInsert, [
                id, at, audit.actorID, audit.actorType.rawValue, audit.action, audit.resourceType, audit.resourceID,
                audit.outcome.rawValue, audit.origin.ipAddress, audit.origin.userAgent, audit.origin.requestID, try audit.details.canonicalString(),
            ])
        }
        if let event {
            let id = UUID.timeOrdered()
            try await sql.run(pendingEventInsert, [id, at, event.type, event.actorID, event.resourceType, event.resourceID, try event.data.canonicalString()])
            result.eventID = id
        }
        if audit != nil || event != nil { try await AfterCommit.note(LedgerSequencer.channel, on: sql) }
        return result
    }

    /// Takes the next number of each named ledger row; the rows stay locked until the transaction ends.
    private static func advance(_ names: [String], on sql: any SQLDatabase) async throws -> [String: (seq: Int64, lastHash: String)] {
        guard !names.isEmpty else { return [:] }
        var rows: [any SQLRow] = []
        if sql.dialect.name == "sqlite" {
            // One statement: SQLite's write lock covers the whole database, so there is no row-lock order to keep.
            rows = try await sql.raw("UPDATE ledger_heads SET seq = seq + 1 WHERE name IN (\(binds: names)) RETURNING name, seq, last_hash").all()
        } else {
            // PostgreSQL locks rows in the order it meets them, which moves as rows are rewritten; one statement per
            // row keeps every writer locking audit before events, so two writers never deadlock.
            for name in names {
                rows += try await sql.raw("UPDATE ledger_heads SET seq = seq + 1 WHERE name = \(bind: name) RETURNING name, seq, last_hash").all()
            }
        }
        var heads: [String: (seq: Int64, lastHash: String)] = [:]
        for row in rows {
            heads[try row.decode(column: "name", as: String.self)] = (try row.decode(column: "seq", as: Int64.self), try row.decode(column: "last_hash", as: String.self))
        }
        for name in names where heads[name] == nil { throw LedgerError.missingHead(name) }
        return heads
    }

    private static let auditInsert = FixedStatement.insert(
        into: AuditLog.schema,
        columns: ["id", "seq", "at", "actor_id", "actor_type", "action", "resource_type", "resource_id", "outcome", "ip_address",
                  "user_agent", "request_id", "details", "prev_hash", "hash"])
    private static let eventInsert = FixedStatement.insert(
        into: Event.schema, columns: ["id", "seq", "at", "type", "actor_id", "resource_type", "resource_id", "data"])

    /// Inserts the entry; returns its seq and hash, which the caller records as the chain's new head.
    private static func appendAudit(_ record: AuditRecord, at: Date, head: (seq: Int64, lastHash: String), key: SymmetricKey,
                                    on sql: any SQLDatabase) async throws -> (Int64, String, UUID) {
        let (seq, previous) = head
        let entry = AuditChain.Entry(
            id: UUID.timeOrdered(), seq: seq, at: at, actorID: record.actorID, actorType: record.actorType.rawValue,
            action: record.action, resourceType: record.resourceType, resourceID: record.resourceID,
            outcome: record.outcome.rawValue, ipAddress: record.origin.ipAddress, userAgent: record.origin.userAgent,
            requestID: record.origin.requestID, details: try record.details.canonicalString()
        )
        let hash = AuditChain.hash(of: entry, previous: previous, key: key)
        try await sql.run(auditInsert, [
            entry.id, seq, at, entry.actorID, entry.actorType, entry.action, entry.resourceType, entry.resourceID, entry.outcome,
            entry.ipAddress, entry.userAgent, entry.requestID, entry.details, previous, hash,
        ])
        return (seq, hash, entry.id)
    }

    private static func appendEvent(_ record: EventRecord, at: Date, seq: Int64, on sql: any SQLDatabase) async throws -> (Int64, UUID) {
        let id = UUID.timeOrdered()
        try await sql.run(eventInsert, [id, seq, at, record.type, record.actorID, record.resourceType, record.resourceID, try record.data.canonicalString()])
        return (seq, id)
    }
}

/// The ledger heads of one SQLite write batch. The first audit entry or event of the batch reads the heads it needs,
/// later ones count on from memory, and the writer stores them (`flush`) just before the batch commits: two
/// statements per batch instead of two per entry. Each write's savepoint marks the heads, and a write rolled back
/// to its savepoint restores them, so a failed write leaves no gap in the numbers.
/// The batch holds SQLite's write lock (and the write gate) from the first read to the commit, so nobody else
/// moves the heads meanwhile. Used only on the writer's thread.
final class LedgerHeadCache: WriteBatchParticipant, @unchecked Sendable {
    private typealias Heads = [String: (seq: Int64, lastHash: String)]
    private var heads: Heads = [:]
    private var changed: Set<String> = []
    private var marked: (heads: Heads, changed: Set<String>) = ([:], [])

    /// Takes the next number of each named head, reading the heads not yet known in this batch.
    func advance(_ names: [String], on sql: any SQLDatabase) async throws -> [String: (seq: Int64, lastHash: String)] {
        let missing = names.filter { heads[$0] == nil }
        if !missing.isEmpty {
            for row in try await sql.raw("SELECT name, seq, last_hash FROM ledger_heads WHERE name IN (\(binds: missing))").all() {
                heads[try row.decode(column: "name", as: String.self)] =
                    (try row.decode(column: "seq", as: Int64.self), try row.decode(column: "last_hash", as: String.self))
            }
        }
        var taken: [String: (seq: Int64, lastHash: String)] = [:]
        for name in names {
            guard var head = heads[name] else { throw LedgerError.missingHead(name) }
            head.seq += 1
            heads[name] = head
            changed.insert(name)
            taken[name] = head
        }
        return taken
    }

    /// The hash of the entry just appended to the named chain.
    func chain(_ name: String, to hash: String) {
        heads[name]?.lastHash = hash
    }

    func savepoint() { marked = (heads, changed) }

    func rolledBackToSavepoint() { (heads, changed) = marked }

    /// Stores each head moved in this batch.
    func beforeCommit(_ execute: (String, [SQLiteData]) throws -> Void) throws {
        for name in changed.sorted() {
            if let head = heads[name] {
                try execute("UPDATE ledger_heads SET seq = ?, last_hash = ? WHERE name = ?", [.integer(Int(head.seq)), .text(head.lastHash), .text(name)])
            }
        }
    }
}

enum LedgerError: Error, CustomStringConvertible {
    case missingHead(String)
    var description: String {
        switch self {
        case .missingHead(let name): "ledger head '\(name)' is missing; run `steward migrate`"
        }
    }
}

/// The keyed chain over audit entries: each link is an HMAC-SHA256, under a key kept outside the database, of the
/// entry and the link before it. Whoever can write to the database but lacks the key cannot recompute the chain
/// after changing, inserting or deleting an entry; deleting the newest entries together with the head row, or a
/// prefix together with the prune marker, still verifies, which is what signed checkpoints (`AuditCheckpoint`)
/// are for.
public enum AuditChain {
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The fields that are hashed, in a fixed order.
    struct Entry: Encodable {
        var id: UUID
        var seq: Int64
        var at: Date
        var actorID: UUID?
        var actorType: String
        var action: String
        var resourceType: String?
        var resourceID: String?
        var outcome: String
        var ipAddress: String?
        var userAgent: String?
        var requestID: String?
        var details: String

        init(id: UUID, seq: Int64, at: Date, actorID: UUID?, actorType: String, action: String, resourceType: String?,
             resourceID: String?, outcome: String, ipAddress: String?, userAgent: String?, requestID: String?, details: String) {
            self.id = id; self.seq = seq; self.at = at; self.actorID = actorID; self.actorType = actorType
            self.action = action; self.resourceType = resourceType; self.resourceID = resourceID; self.outcome = outcome
            self.ipAddress = ipAddress; self.userAgent = userAgent; self.requestID = requestID; self.details = details
        }

        init(_ log: AuditLog) {
            self.init(id: log.id ?? UUID(), seq: log.seq, at: log.at, actorID: log.actorID, actorType: log.actorType,
                      action: log.action, resourceType: log.resourceType, resourceID: log.resourceID, outcome: log.outcome,
                      ipAddress: log.ipAddress, userAgent: log.userAgent, requestID: log.requestID, details: log.details)
        }

        /// One line per field, length-prefixed, so no value can imitate a field boundary.
        var canonical: String {
            let millis = Int64((at.timeIntervalSince1970 * 1000).rounded())
            let fields: [String] = [
                id.lowercasedString, String(seq), String(millis), actorID?.lowercasedString ?? "",
                actorType, action, resourceType ?? "", resourceID ?? "", outcome, ipAddress ?? "", userAgent ?? "",
                requestID ?? "", details,
            ]
            return fields.map { "\($0.utf8.count):\($0)" }.joined(separator: "\n")
        }
    }

    static func hash(of entry: Entry, previous: String, key: SymmetricKey) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data((previous + "\n" + entry.canonical).utf8), using: key)).hexString
    }

    /// The unkeyed link the chain used before `KeyAuditChain`; only that migration's revert writes it.
    static func unkeyedHash(of entry: Entry, previous: String) -> String {
        SHA256.hash(data: Data((previous + "\n" + entry.canonical).utf8)).hexString
    }

    /// Timestamps are kept to the millisecond so both databases store exactly what was hashed.
    static func truncatedToMilliseconds(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded(.down) / 1000)
    }

    /// The result of walking the chain.
    public struct Verification: Sendable {
        public var checked: Int
        public var firstBroken: (seq: Int64, id: UUID?, reason: String)?
        public var isIntact: Bool { firstBroken == nil }
    }

    /// Recomputes every link in `seq` order and reports the first that does not hold.
    static func verify(on database: any Database, key: SymmetricKey, batchSize: Int = 1000) async throws -> Verification {
        var previous = genesisHash
        var expectedSeq: Int64 = 1
        var checked = 0
        var lastSeq: Int64 = 0
        // Retention deletes a prefix of the chain and records its last link; the check starts there.
        let sql = database as! any SQLDatabase
        // The head is read first and the walk stops at it: entries appended meanwhile are not mistaken for a gap.
        let head = try await sql.raw("SELECT seq, last_hash FROM ledger_heads WHERE name = \(bind: LedgerHead.audit)").first()
        let headSeq = try head?.decode(column: "seq", as: Int64.self)
        if let pruned = try await sql.raw("SELECT seq, last_hash FROM ledger_heads WHERE name = \(bind: LedgerHead.auditPruned)").first() {
            lastSeq = try pruned.decode(column: "seq", as: Int64.self)
            previous = try pruned.decode(column: "last_hash", as: String.self)
            expectedSeq = lastSeq + 1
        }
        while true {
            var query = AuditLog.query(on: database).filter(\.$seq > lastSeq)
            if let headSeq { query = query.filter(\.$seq <= headSeq) }
            let batch = try await query
                .sort(\.$seq, .ascending)
                .limit(batchSize)
                .all()
            if batch.isEmpty { break }
            for log in batch {
                if log.seq != expectedSeq {
                    return Verification(checked: checked, firstBroken: (log.seq, log.id, "entry \(expectedSeq) is missing"))
                }
                if log.prevHash != previous {
                    return Verification(checked: checked, firstBroken: (log.seq, log.id, "prev_hash does not match the entry before it"))
                }
                let recomputed = hash(of: Entry(log), previous: previous, key: key)
                if recomputed != log.hash {
                    return Verification(checked: checked, firstBroken: (log.seq, log.id, "content does not match its hash"))
                }
                previous = log.hash
                expectedSeq += 1
                checked += 1
                lastSeq = log.seq
            }
        }
        // Deleting the newest entries leaves a valid-looking chain; the head row remembers how far it went.
        if let head, let headSeq {
            let headHash = try head.decode(column: "last_hash", as: String.self)
            if headSeq != lastSeq || headHash != previous {
                return Verification(checked: checked, firstBroken: (lastSeq + 1, nil, "entries after \(lastSeq) are missing (the chain head is at \(headSeq))"))
            }
            // An entry past the head was not appended by the recorder (one statement: no append can slip between).
            if let beyond = try await sql.raw("""
                SELECT MIN(seq) AS seq FROM audit_logs WHERE seq > (SELECT seq FROM ledger_heads WHERE name = \(bind: LedgerHead.audit))
                """).first()?.decode(column: "seq", as: Int64?.self) {
                return Verification(checked: checked, firstBroken: (beyond, nil, "entry \(beyond) is beyond the chain head"))
            }
        }
        return Verification(checked: checked, firstBroken: nil)
    }
}
