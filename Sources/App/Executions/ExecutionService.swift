import Fluent
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// An execution as the API shows it.
struct ExecutionResponse: Content, Equatable, RowReadable {
    var id: UUID
    var skillId: UUID
    var userId: UUID
    var status: String
    var progress: Int
    var input: JSONValue
    var output: JSONValue?
    var error: String?
    var attempt: Int
    var queuedAt: Date
    var startedAt: Date?
    var finishedAt: Date?
    var durationMs: Int64?
    var scheduleId: UUID?
    var scheduledFor: Date?
    var origin: String
    var clientName: String?
    var clientVersion: String?

    init(_ execution: Execution) {
        id = execution.id!
        skillId = execution.skillID
        userId = execution.$user.id
        status = execution.status.rawValue
        progress = execution.progress
        input = execution.inputValue
        output = execution.output.map(JSONValue.parse)
        error = execution.error
        attempt = execution.attempt
        queuedAt = execution.queuedAt
        startedAt = execution.startedAt
        finishedAt = execution.finishedAt
        durationMs = execution.durationMs
        scheduleId = execution.scheduleID
        scheduledFor = execution.scheduledFor
        origin = execution.origin
        clientName = execution.clientName
        clientVersion = execution.clientVersion
    }

    /// An execution as the API shows it, read straight from its row (the columns of `Execution`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        skillId = try row.decode(column: "skill_id", as: UUID.self)
        userId = try row.decode(column: "user_id", as: UUID.self)
        status = try row.decode(column: "status", as: String.self)
        progress = try row.decode(column: "progress", as: Int.self)
        input = JSONValue.parse(try row.decode(column: "input", as: String.self))
        output = try row.optional("output", as: String.self).map(JSONValue.parse)
        error = try row.optional("error", as: String.self)
        attempt = try row.decode(column: "attempt", as: Int.self)
        queuedAt = try row.decode(column: "queued_at", as: Date.self)
        startedAt = try row.optional("started_at", as: Date.self)
        finishedAt = try row.optional("finished_at", as: Date.self)
        durationMs = try row.optional("duration_ms", as: Int64.self)
        scheduleId = try row.optional("schedule_id", as: UUID.self)
        scheduledFor = try row.optional("scheduled_for", as: Date.self)
        origin = try row.decode(column: "origin", as: String.self)
        clientName = try row.optional("client_name", as: String.self)
        clientVersion = try row.optional("client_version", as: String.self)
    }

    /// The object as event data: what `APIJSON` writes for it, built directly (it runs inside every transition's
    /// transaction). Ids in lower case, every field present (`null` when empty), times RFC 3339 to the second.
    var json: JSONValue {
        .object([
            "id": .string(id.lowercasedString), "skillId": .string(skillId.lowercasedString), "userId": .string(userId.lowercasedString),
            "status": .string(status), "progress": .number(Double(progress)), "input": input, "attempt": .number(Double(attempt)),
            "queuedAt": .string(Self.timestamp(queuedAt)),
            "output": output ?? .null,
            "error": error.map(JSONValue.string) ?? .null,
            "startedAt": startedAt.map { .string(Self.timestamp($0)) } ?? .null,
            "finishedAt": finishedAt.map { .string(Self.timestamp($0)) } ?? .null,
            "durationMs": durationMs.map { .number(Double($0)) } ?? .null,
            "scheduleId": scheduleId.map { .string($0.lowercasedString) } ?? .null,
            "scheduledFor": scheduledFor.map { .string(Self.timestamp($0)) } ?? .null,
            "origin": .string(origin),
            "clientName": clientName.map(JSONValue.string) ?? .null,
            "clientVersion": clientVersion.map(JSONValue.string) ?? .null,
        ])
    }

    private static func timestamp(_ date: Date) -> String {
        RFC3339.string(from: date)
    }
}

/// Executions: create (validated against the skill's schema), read, cancel, rollback, history and stats.
/// Every transition writes its history line, `execution.*` event and audit entry in one transaction.
struct ExecutionService: Sendable {
    static let runKind = "execution.run"
    static let rollbackKind = "execution.rollback"

    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    // MARK: - Create

    /// `adjust` fills what the caller knows of where the execution came from (an MCP call's client and id).
    func create(skillReference: String, input: JSONValue, caller: AuthenticatedCaller, origin: RequestOrigin,
                trigger: ScheduleTrigger? = nil, adjust: (Execution) -> Void = { _ in }) async throws -> Execution {
        try await create(skill: try await SkillService(app: app).find(skillReference, on: reads), input: input, caller: caller,
                         origin: origin, trigger: trigger, adjust: adjust)
    }

    /// The same, for a skill the caller has read already.
    func create(skill: Skill, input: JSONValue, caller: AuthenticatedCaller, origin: RequestOrigin,
                trigger: ScheduleTrigger? = nil, adjust: (Execution) -> Void = { _ in }) async throws -> Execution {
        let execution = try await prepare(skill: skill, input: input, caller: caller)
        execution.scheduleID = trigger?.scheduleID
        execution.scheduledFor = trigger?.occurrence
        if trigger != nil { execution.origin = Execution.Origin.schedule.rawValue }
        adjust(execution)
        do {
            try await app.writeTransaction { db in
                try await checkCap(for: execution.$user.id, exclusive: false, on: db)
                try await insert(execution, caller: caller, origin: origin, on: db)
            }
        } catch is NearCap {
            // Nothing was written: the body stopped before the insert, so running it again is safe.
            try await app.writeTransaction { db in
                try await checkCap(for: execution.$user.id, exclusive: true, on: db)
                try await insert(execution, caller: caller, origin: origin, on: db)
            }
        }
        return execution
    }

    /// How many of one user's creates may be in flight at once on PostgreSQL, far from the cap.
    static let capLanes = 8

    /// A create that found its user too close to the cap for the shared path (PostgreSQL); retried exclusively.
    private struct NearCap: Error {}

    /// Refuses a new execution when its user already has the cap's number queued or running. Runs in the create's
    /// write transaction, so concurrent creates can never pass the cap together. On SQLite the one writer runs
    /// them one after the other.
    ///
    /// On PostgreSQL a create holds one of `capLanes` transaction locks of its user (`pg_advisory_xact_lock`)
    /// until it commits, so at most that many are in flight, uncommitted and invisible to one another. Holding a
    /// lane, a create counts the committed active executions: if even with every other lane's insert it stays
    /// within the cap, it goes on, beside up to seven others of the same user, each waiting only for its own
    /// commit. Otherwise it stops before inserting (`NearCap`) and runs again exclusively: it takes every lane, in
    /// order, so it counts after every create in flight has committed, and no other create of the user runs until
    /// it commits. A user far from the cap thus does not queue their creates one commit after another; one at the
    /// cap is counted exactly. The count is the sum of the user's rows in `execution_active_shards` (migration 0039),
    /// which a trigger keeps: the create names its lane in `steward.cap_lane`, so its insert adds to its lane's row,
    /// which no other transaction writes while it holds the lane.
    private func checkCap(for userID: UUID, exclusive: Bool, on db: any Database) async throws {
        let cap = app.settings.maxConcurrentExecutionsPerUser
        let sql = db as! any SQLDatabase
        let active: Int
        if sql.dialect.name == "sqlite" {
            // The count its triggers keep (migration 0023).
            active = try await sql.first(Self.activeCount, [userID])?.decode(column: "active", as: Int.self) ?? 0
        } else {
            if exclusive {
                for lane in 0..<Self.capLanes {
                    try await sql.raw("SELECT pg_advisory_xact_lock(\(bind: Self.capLockKey(userID, lane: lane)))").run()
                }
                try await sql.raw("SELECT set_config('steward.cap_lane', '0', true)").run()
            } else {
                try await takeLane(of: userID, on: sql)
            }
            active = try await sql.first(Self.activeShardSum, [userID])?.decode(column: "active", as: Int.self) ?? 0
            if !exclusive, active + Self.capLanes > cap { throw NearCap() }
        }
        guard active < cap else { throw ExecutionError.tooManyActive(cap) }
    }

    /// Takes a free lane of the user's if there is one (tried from a random one on), else waits for a random one.
    private func takeLane(of userID: UUID, on sql: any SQLDatabase) async throws {
        let first = Int.random(in: 0..<Self.capLanes)
        let keys = (0..<Self.capLanes).map { Self.capLockKey(userID, lane: (first + $0) % Self.capLanes) }
        let tried = try await sql.first(Self.laneTry, keys)
        if tried == nil {
            try await sql.raw("""
                SELECT pg_advisory_xact_lock(\(bind: keys[0])), set_config('steward.cap_lane', \(bind: String(keys[0] & 15)), true)
                """).run()
        }
    }

    /// The first of the keys (one per lane) whose lock is free, taken. No ORDER BY: the scan tries the keys in the
    /// array's order and stops at the first it gets. The lane taken (the key's low bits) is named for the count's
    /// trigger.
    private static let laneTry = FixedStatement("""
        SELECT set_config('steward.cap_lane', (key & 15)::text, true) FROM unnest(ARRAY[\(repeatElement("?", count: capLanes).joined(separator: ", "))]::bigint[]) AS key
        WHERE pg_try_advisory_xact_lock(key) LIMIT 1
        """)

    /// The advisory lock of one of a user's lanes on PostgreSQL: the last 64 (random) bits of the user's id, in a
    /// space of its own, with the lane in the low bits (two users sharing a key only wait for each other).
    static func capLockKey(_ userID: UUID, lane: Int = 0) -> Int64 {
        let bytes = userID.uuid
        let lastHalf = [bytes.8, bytes.9, bytes.10, bytes.11, bytes.12, bytes.13, bytes.14, bytes.15].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Int64(bitPattern: (lastHalf ^ 0x5354_4557_4341_5031) & ~UInt64(0xF) | UInt64(lane))  // "STEWCAP1"
    }

    /// Checks a run request (skill enabled, input valid) and builds the execution, unsaved. Reads through `db`,
    /// which may be a transaction's. The concurrency cap is checked by `create`, in its transaction.
    func prepare(skillReference: String, input: JSONValue, caller: AuthenticatedCaller, on db: any Database) async throws -> Execution {
        try await prepare(skill: try await SkillService(app: app).find(skillReference, on: db), input: input, caller: caller)
    }

    func prepare(skill: Skill, input: JSONValue, caller: AuthenticatedCaller) async throws -> Execution {
        guard skill.enabled else { throw HTTPProblem.conflict("The skill '\(skill.slug)' is disabled.") }
        if let problem = JSONLimits.nestingProblem(input, field: "input") { throw HTTPProblem.validation([problem]) }
        let problems = try await JSONSchemaSubset.validateOffLoop(input, against: skill.inputSchema)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let userID = caller.user.id

        let execution = Execution()
        execution.id = UUID.timeOrdered()
        execution.skillID = try skill.requireID()
        execution.$user.id = userID
        execution.status = .queued
        execution.progress = 0
        execution.input = try input.canonicalString()
        execution.parsedInput = input
        execution.attempt = 0
        execution.cancelRequested = false
        execution.queuedAt = now
        execution.origin = Execution.Origin.api.rawValue
        return execution
    }

    private static let activeCount = FixedStatement("SELECT active FROM execution_active_counts WHERE user_id = ?")
    private static let activeShardSum = FixedStatement("SELECT coalesce(sum(active), 0)::bigint AS active FROM execution_active_shards WHERE user_id = ?")
    private static let rowInsert = FixedStatement.insert(
        into: Execution.schema,
        columns: ["id", "queued_at", "skill_id", "user_id", "status", "progress", "input", "attempt", "cancel_requested", "job_id",
                  "schedule_id", "scheduled_for", "origin", "client_name", "client_version", "mcp_session_id", "mcp_request_id", "mcp_call_audit"],
        deferrable: true)

    /// Writes a prepared execution with its job, history line, event and audit entry, inside the caller's transaction.
    /// Plain SQL rather than Fluent's `create`: this runs behind SQLite's write gate on every execution, and model
    /// reflection there costs more than the statements.
    func insert(_ execution: Execution, caller: AuthenticatedCaller, origin: RequestOrigin, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        let executionID = try execution.requireID()
        execution.jobID = try await JobQueue(app: app).enqueue(kind: Self.runKind, payload: ["executionId": .string(executionID.lowercasedString)], on: db)
        try await sql.run(Self.rowInsert, [
            executionID, execution.queuedAt, execution.skillID, execution.$user.id, execution.status.rawValue, execution.progress,
            execution.input, execution.attempt, execution.cancelRequested, execution.jobID, execution.scheduleID, execution.scheduledFor,
            execution.origin, execution.clientName, execution.clientVersion, execution.mcpSessionID, execution.mcpRequestID,
            execution.mcpCallAudit,
        ])
        execution.$id.exists = true
        try await AfterCommit.countRun(of: execution.skillID, on: sql)
        try await writeHistory(execution, level: "info", message: "queued", progress: nil, ordinal: 1, on: sql)
        try await recordActivity(execution, actor: caller.user.id, actorType: caller.actorType, origin: origin, on: db)
    }

    // MARK: - Read

    func find(_ id: UUID, caller: AuthenticatedCaller) async throws -> Execution {
        // On every MCP call's and every poller's path: one prepared read by key, without query building or reflection.
        guard let execution = try await app.quickFind(Execution.self, where: "id", equals: id, on: reads),
              caller.sees(ownedBy: execution.$user.id) else {
            throw HTTPProblem.notFound("No such execution.")
        }
        return execution
    }

    struct Filter: Sendable {
        var status: Execution.Status?
        var skillID: UUID?
        var origin: Execution.Origin?
        /// The MCP client's name, exactly.
        var clientName: String?
        /// Whose executions (callers who may read all executions; others see only their own anyway).
        var userID: UUID?
        /// Queued at or after.
        var from: Date?
        /// Queued before.
        var to: Date?
    }

    func list(filter: Filter, page: PageRequest, caller: AuthenticatedCaller) async throws -> ([ExecutionResponse], String?) {
        var query = Execution.query(on: reads)
        var filters = 0
        if !caller.can(.executionsReadAll) { query = try query.visible(to: caller, ownedThrough: \.$user); filters += 1 }
        if let userID = filter.userID {
            guard caller.can(.executionsReadAll) || userID == caller.user.id else { throw AccessError.missingPermission(.executionsReadAll) }
            if caller.can(.executionsReadAll) { query = query.filter(\.$user.$id == userID); filters += 1 }
        }
        if let status = filter.status { query = query.filter(\.$status == status); filters += 1 }
        if let skillID = filter.skillID { query = query.filter(\.$skillID == skillID); filters += 1 }
        if let origin = filter.origin { query = query.filter(\.$origin == origin.rawValue); filters += 1 }
        if let clientName = filter.clientName { query = query.filter(\.$clientName == clientName); filters += 2 }
        // A range of queued_at narrows the ordered read without another index; with one other filter it may scan.
        if let from = filter.from { query = query.filter(\.$queuedAt >= from); filters += 1 }
        if let to = filter.to { query = query.filter(\.$queuedAt < to); filters += 1 }
        // One index per filter (user, status, skill, origin): with two, the page may take a scan, read off the event loop.
        return try await query.newestFirst(as: ExecutionResponse.self, by: "queued_at", { ($0.queuedAt, $0.id) }, page: page,
                                           through: app.sqliteReaders, offLoopOn: filters <= 1 ? nil : app.threadPool)
    }

    func history(_ id: UUID, caller: AuthenticatedCaller) async throws -> [ExecutionHistoryEntry] {
        let execution = try await find(id, caller: caller)
        return try await ExecutionHistoryEntry.query(on: reads).filter(\.$execution.$id == execution.requireID())
            .sort(\.$ordinal).listed()
    }

    // MARK: - Cancel and rollback

    /// Cancels a queued execution at once; asks a running one to stop (its runner is interrupted).
    func cancel(_ id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Execution {
        let execution = try await find(id, caller: caller)
        guard !execution.status.isFinished else { throw HTTPProblem.conflict("The execution has already finished (\(execution.status.rawValue)).") }
        let executionID = try execution.requireID()
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            // Only a queued job can be withdrawn here; a running one is stopped by its worker.
            var withdrawn = false
            if let jobID = execution.jobID {
                withdrawn = try await sql.raw("""
                    UPDATE jobs SET status = 'cancelled', finished_at = \(bind: now), updated_at = \(bind: now) WHERE id = \(bind: jobID) AND status = 'queued' RETURNING id
                    """).first() != nil
            }
            try await sql.raw("UPDATE executions SET cancel_requested = \(bind: true) WHERE id = \(bind: executionID)").run()
            execution.cancelRequested = true
            if withdrawn {
                execution.finishedAt = now
                try await transition(execution, to: .cancelled, message: "cancelled before it started", actor: caller.user.id,
                                     actorType: caller.actorType, origin: origin, on: db)
            } else {
                try await record(execution, level: "info", message: "cancellation requested", on: db)
            }
        }
        app.runningExecutions.cancel(executionID)
        return try await find(id, caller: caller)
    }

    /// Runs the skill's undo for a finished execution; the execution ends `rolled_back`.
    func rollback(_ id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Execution {
        let execution = try await find(id, caller: caller)
        guard [.succeeded, .failed, .cancelled].contains(execution.status) else {
            throw HTTPProblem.conflict(execution.status == .rolledBack ? "The execution was already rolled back."
                                       : "Only a finished execution can be rolled back; this one is \(execution.status.rawValue).")
        }
        let executionID = try execution.requireID()
        try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let jobID = try await JobQueue(app: app).enqueue(kind: Self.rollbackKind, payload: ["executionId": .string(executionID.lowercasedString)], on: db)
            // Point the execution at its rollback job, unless a live job already drives it: a concurrent second
            // request finds the pointer and gets 409, and its transaction (and job) roll back.
            let claimed = try await sql.raw("""
                UPDATE executions SET job_id = \(bind: jobID) WHERE id = \(bind: executionID)
                AND status IN ('succeeded', 'failed', 'cancelled')
                AND (job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = executions.job_id AND jobs.status IN ('queued', 'running')))
                RETURNING id
                """).first()
            guard claimed != nil else { throw HTTPProblem.conflict("A rollback of this execution is already in progress.") }
            execution.jobID = jobID
            try await record(execution, level: "info", message: "rollback requested", on: db)
            try await app.activityRecorder.record(audit: AuditRecord(
                action: "execution.rollback_requested", actorID: caller.user.id, actorType: caller.actorType, resourceType: "execution",
                resourceID: executionID.lowercasedString, origin: origin), on: db)
        }
        return execution
    }

    // MARK: - Transitions (used by the workers too)

    private static let rowUpdate = FixedStatement("""
        UPDATE executions SET status = ?, progress = CASE WHEN progress > ? THEN progress ELSE ? END, output = ?, error = ?, attempt = ?,
            started_at = ?, finished_at = ?, duration_ms = ?, mcp_call_audit = CASE WHEN ? THEN NULL ELSE mcp_call_audit END
        WHERE id = ?
        """)

    /// Sets the status and writes the history line, the `execution.<status>` event and the audit entry.
    /// The row's changeable columns are written from `execution` in one statement; progress only ever rises (an
    /// HTTP runner may have moved it past what this copy holds). Without `writeRow` the row is left alone: for a
    /// caller whose next transition, in the same transaction, writes it.
    func transition(_ execution: Execution, to status: Execution.Status, message: String, level: String = "info",
                    actor: UUID? = nil, actorType: ActorType = .system, origin: RequestOrigin = .system, writeRow: Bool = true,
                    on db: any Database) async throws {
        execution.status = status
        if status.isFinished, let started = execution.startedAt ?? Optional(execution.queuedAt) {
            execution.finishedAt = execution.finishedAt ?? now
            execution.durationMs = Int64(((execution.finishedAt ?? now).timeIntervalSince(started) * 1000).rounded())
        }
        let sql = db as! any SQLDatabase
        if writeRow {
            try await sql.run(Self.rowUpdate, [
                status.rawValue, execution.progress, execution.progress, execution.output, execution.error, execution.attempt,
                execution.startedAt, execution.finishedAt, execution.durationMs, status.isFinished, try execution.requireID(),
            ])
        }
        try await record(execution, level: level, message: message, on: db)
        try await recordActivity(execution, actor: actor, actorType: actorType, origin: origin, on: db)
        // Whoever waits on it (a workflow run it is a step of) looks again, once this transaction commits.
        if status.isFinished { try await app.executionOutcomeObservers.executionFinished(execution, app: app, on: db) }
    }

    /// The `execution.<status>` event and audit entry for the execution's current status.
    private func recordActivity(_ execution: Execution, actor: UUID?, actorType: ActorType, origin: RequestOrigin, on db: any Database) async throws {
        let status = execution.status
        let id = try execution.requireID().lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: "execution.\(status.rawValue)", actorID: actor ?? execution.$user.id,
                               actorType: actor == nil ? .system : actorType, resourceType: "execution", resourceID: id,
                               outcome: status == .failed ? .failure : .success, origin: origin,
                               details: ["skillId": .string(execution.skillID.lowercasedString)]),
            event: EventRecord(type: "execution.\(status.rawValue)", actorID: actor ?? execution.$user.id, resourceType: "execution",
                               resourceID: id, data: ExecutionResponse(execution).json),
            on: db)
    }

    /// Appends a history line; its ordinal is the next after the execution's last, in the same statement.
    func record(_ execution: Execution, level: String, message: String, progress: Int? = nil, on db: any Database) async throws {
        try await writeHistory(execution, level: level, message: message, progress: progress, ordinal: nil, on: db as! any SQLDatabase)
    }

    /// A history line at the ordinal given, and one at the next after the execution's last.
    private static let historyInsert = FixedStatement.insert(
        into: ExecutionHistoryEntry.schema, columns: ["id", "execution_id", "ordinal", "at", "level", "message", "progress"], deferrable: true)
    private static let historyAppend = FixedStatement("""
        INSERT INTO execution_history (id, execution_id, ordinal, at, level, message, progress) VALUES (?, ?, \
        (SELECT coalesce(max(ordinal), 0) + 1 FROM execution_history WHERE execution_id = ?), ?, ?, ?, ?)
        """, deferrableInto: ExecutionHistoryEntry.schema, reading: ExecutionHistoryEntry.schema)

    private func writeHistory(_ execution: Execution, level: String, message: String, progress: Int?, ordinal: Int?,
                              on sql: any SQLDatabase) async throws {
        let executionID = try execution.requireID()
        let (id, at, message) = (UUID.timeOrdered(), now, String(message.prefix(2000)))
        if let ordinal {
            try await sql.run(Self.historyInsert, [id, executionID, ordinal, at, level, message, progress])
        } else {
            try await sql.run(Self.historyAppend, [id, executionID, executionID, at, level, message, progress])
        }
    }

    /// Progress from an HTTP runner: only while running, and never backwards. Returns the progress now stored.
    func reportProgress(_ id: UUID, progress: Int, message: String) async throws -> Int {
        guard let execution = try await Execution.find(id, on: reads) else { throw HTTPProblem.notFound("No such execution.") }
        guard execution.status == .running else { throw HTTPProblem.conflict("The execution is \(execution.status.rawValue), not running.") }
        return try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let moved = try await sql.raw("""
                UPDATE executions SET progress = \(bind: progress) WHERE id = \(bind: id) AND status = 'running' AND progress < \(bind: progress) RETURNING id
                """).first()
            guard moved != nil else { return execution.progress }
            execution.progress = progress
            try await record(execution, level: "info", message: message, progress: progress, on: db)
            try await app.activityRecorder.record(event: EventRecord(
                type: "execution.progress", actorID: execution.$user.id, resourceType: "execution", resourceID: id.lowercasedString,
                data: ["progress": .number(Double(progress)), "message": .string(message),
                       "userId": .string(execution.$user.id.lowercasedString)]), on: db)
            return progress
        }
    }

    // MARK: - Stats

    struct Stats: Content {
        var byStatus: [String: Int]
        var durations: [SkillDurations]

        struct SkillDurations: Content {
            var skillId: UUID
            var count: Int
            var p50Ms: Int64
            var p95Ms: Int64
            var p99Ms: Int64
        }
    }

    func stats(caller: AuthenticatedCaller) async throws -> Stats {
        let sql = reads as! any SQLDatabase
        let ownerFilter: SQLQueryString = caller.can(.executionsReadAll) ? "" : " WHERE user_id = \(bind: caller.user.id)"
        var byStatus: [String: Int] = Dictionary(uniqueKeysWithValues: Execution.Status.allCases.map { ($0.rawValue, 0) })
        for row in try await sql.raw("SELECT status, count(*) AS n FROM executions" + ownerFilter + " GROUP BY status").all() {
            byStatus[try row.decode(column: "status", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        let durationFilter: SQLQueryString = caller.can(.executionsReadAll)
            ? " WHERE duration_ms IS NOT NULL AND status = 'succeeded'"
            : " WHERE duration_ms IS NOT NULL AND status = 'succeeded' AND user_id = \(bind: caller.user.id)"
        var bySkill: [UUID: [Int64]] = [:]
        for row in try await sql.raw("SELECT skill_id, duration_ms FROM executions" + durationFilter + " ORDER BY queued_at DESC LIMIT 50000").all() {
            bySkill[try row.decode(column: "skill_id", as: UUID.self), default: []].append(try row.decode(column: "duration_ms", as: Int64.self))
        }
        let durations = bySkill.map { skillID, values -> Stats.SkillDurations in
            let sorted = values.sorted()
            func percentile(_ p: Double) -> Int64 { Self.percentile(sorted, p)! }
            return Stats.SkillDurations(skillId: skillID, count: sorted.count, p50Ms: percentile(0.5), p95Ms: percentile(0.95), p99Ms: percentile(0.99))
        }.sorted { $0.skillId.uuidString < $1.skillId.uuidString }
        return Stats(byStatus: byStatus, durations: durations)
    }

    /// The nearest-rank percentile (`p` in 0...1) of sorted durations; nil for none. Execution stats and per-user
    /// usage both report it.
    static func percentile<T>(_ sorted: [T], _ p: Double) -> T? {
        guard !sorted.isEmpty else { return nil }
        return sorted[min(sorted.count - 1, max(Int((Double(sorted.count) * p).rounded(.up)), 1) - 1)]
    }
}

/// Refusals specific to executions.
enum ExecutionError: ProblemError {
    case tooManyActive(Int)

    var status: HTTPResponseStatus { .tooManyRequests }
    var code: String { "rate_limited" }
    var reason: String {
        switch self {
        case .tooManyActive(let cap): "You already have \(cap) executions queued or running; wait for one to finish."
        }
    }
    var headers: HTTPHeaders { ["Retry-After": "1"] }
}

/// Running executions in this process, so a cancel request interrupts the runner at once.
final class RunningExecutions: @unchecked Sendable {
    private let lock = NSLock()
    private var tasks: [UUID: Task<RunOutcome, any Error>] = [:]

    func register(_ id: UUID, _ task: Task<RunOutcome, any Error>) { lock.withLock { tasks[id] = task } }
    func remove(_ id: UUID) { lock.withLock { _ = tasks.removeValue(forKey: id) } }
    func cancel(_ id: UUID) { lock.withLock { tasks[id] }?.cancel() }
}

extension ExecutionResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("skillId", skillId)
        object.field("userId", userId)
        object.field("status", status)
        object.field("progress", progress)
        object.field("input", input)
        object.field("output", output)
        object.field("error", error)
        object.field("attempt", attempt)
        object.field("queuedAt", queuedAt)
        object.field("startedAt", startedAt)
        object.field("finishedAt", finishedAt)
        object.field("durationMs", durationMs)
        object.field("scheduleId", scheduleId)
        object.field("scheduledFor", scheduledFor)
        object.field("origin", origin)
        object.field("clientName", clientName)
        object.field("clientVersion", clientVersion)
    }
}
