import Fluent
import StewardSQLite
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// A schedule as the API shows it.
struct ScheduleResponse: Content, RowReadable {
    struct Target: Content {
        var skillId: UUID?
        var workflowId: UUID?
    }

    var id: UUID
    var userId: UUID
    var name: String
    var target: Target
    var input: JSONValue
    var cron: String
    var timezone: String
    var enabled: Bool
    var overlapPolicy: String
    var catchUp: String
    var nextRunAt: Date?
    var lastRunAt: Date?
    var lastStatus: String?
    var lastError: String?
    /// The execution (skill target) or workflow run (workflow target) the schedule started last.
    var lastExecutionId: UUID?
    var lastRunId: UUID?
    var createdAt: Date
    var updatedAt: Date

    init(_ schedule: Schedule) {
        id = schedule.id!
        userId = schedule.$user.id
        name = schedule.name
        target = schedule.targetType == .skill ? Target(skillId: schedule.targetID) : Target(workflowId: schedule.targetID)
        input = JSONValue.parse(schedule.input)
        cron = schedule.cron
        timezone = schedule.timezone
        enabled = schedule.enabled
        overlapPolicy = schedule.overlapPolicy.rawValue
        catchUp = schedule.catchUp.rawValue
        nextRunAt = schedule.nextRunAt
        lastRunAt = schedule.lastRunAt
        lastStatus = schedule.lastStatus?.rawValue
        lastError = schedule.lastError
        lastExecutionId = schedule.targetType == .skill ? schedule.lastExecutionID : nil
        lastRunId = schedule.targetType == .workflow ? schedule.lastExecutionID : nil
        createdAt = schedule.createdAt
        updatedAt = schedule.updatedAt
    }

    /// A schedule read straight from its row (the columns of `Schedule`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        userId = try row.decode(column: "user_id", as: UUID.self)
        name = try row.decode(column: "name", as: String.self)
        let targetID = try row.decode(column: "target_id", as: UUID.self)
        let isSkill = try row.decode(column: "target_type", as: String.self) == Schedule.TargetType.skill.rawValue
        target = isSkill ? Target(skillId: targetID) : Target(workflowId: targetID)
        input = JSONValue.parse(try row.decode(column: "input", as: String.self))
        cron = try row.decode(column: "cron", as: String.self)
        timezone = try row.decode(column: "timezone", as: String.self)
        enabled = try row.decode(column: "enabled", as: Bool.self)
        overlapPolicy = try row.decode(column: "overlap_policy", as: String.self)
        catchUp = try row.decode(column: "catch_up", as: String.self)
        nextRunAt = try row.optional("next_run_at", as: Date.self)
        lastRunAt = try row.optional("last_run_at", as: Date.self)
        lastStatus = try row.optional("last_status", as: String.self)
        lastError = try row.optional("last_error", as: String.self)
        let last = try row.optional("last_execution_id", as: UUID.self)
        lastExecutionId = isSkill ? last : nil
        lastRunId = isSkill ? nil : last
        createdAt = try row.decode(column: "created_at", as: Date.self)
        updatedAt = try row.decode(column: "updated_at", as: Date.self)
    }
}

/// Cron schedules (owner-scoped; admins see all) and their firing.
///
/// Each instance's scheduler looks for due schedules every second. It claims an occurrence by moving
/// `next_run_at` forward with a compare-and-set on its old value, and enqueues a `schedule.fire` job in the same
/// transaction; so with several instances each occurrence fires exactly once, and a crash after the claim still
/// fires it (the job is durable). The job starts the execution as the schedule's owner, with the owner's
/// permissions at that moment.
struct ScheduleService: Sendable {
    static let fireKind = "schedule.fire"
    /// An occurrence this far in the past counts as missed (downtime), and follows `catchUp`.
    static let lateAfter: TimeInterval = 60
    /// At most this many missed occurrences fire under `catchUp: all`.
    static let catchUpLimit = 100

    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    /// A cron expression as schedules take it, or nil with the field problem that names where it is wrong.
    static func cron(_ text: String, problems: inout [FieldProblem]) -> CronExpression? {
        do { return try CronExpression(text) } catch let error as CronError {
            problems.append(FieldProblem(field: "cron", message: error.description))
        } catch {
            problems.append(FieldProblem(field: "cron", message: "is not a cron expression"))
        }
        return nil
    }

    /// An IANA time zone as schedules take it, or nil with the field problem.
    static func timeZone(_ name: String, problems: inout [FieldProblem]) -> TimeZone? {
        if name.count <= 64, let zone = TimeZone(identifier: name) { return zone }
        problems.append(FieldProblem(field: "timezone", message: "must be an IANA time zone such as Europe/Berlin or UTC"))
        return nil
    }

    /// An expression that matches no date soon enough to be a schedule (such as February 31st).
    static let neverFires = FieldProblem(field: "cron", message: "never fires (no such date in the next 8 years)")

    // MARK: - Validation

    struct Draft: Sendable {
        var name: String?
        var skillReference: String?
        var workflowID: String?
        var input: JSONValue?
        var cron: String?
        var timezone: String?
        var enabled: Bool?
        var overlapPolicy: Schedule.OverlapPolicy?
        var catchUp: Schedule.CatchUp?
    }

    static func draft(from fields: [String: JSONValue]) throws -> Draft {
        var reader = FieldReader(fields, allowed: ["name", "target", "input", "cron", "timezone", "enabled", "overlapPolicy", "catchUp"], noun: "schedule")
        var draft = Draft()
        draft.name = reader.string("name")
        draft.cron = reader.string("cron")
        draft.timezone = reader.string("timezone")
        if let value = fields["target"] {
            switch value {
            case .object(let target) where target.count == 1 && target["skillId"]?.stringValue != nil:
                draft.skillReference = target["skillId"]?.stringValue
            case .object(let target) where target.count == 1 && target["workflowId"]?.stringValue != nil:
                draft.workflowID = target["workflowId"]?.stringValue
            default:
                reader.problem("target", "must be {\"skillId\": \"...\"} or {\"workflowId\": \"...\"}")
            }
        }
        if let value = fields["input"] {
            if case .object = value { draft.input = value } else { reader.problem("input", "must be a JSON object") }
        }
        draft.enabled = reader.bool("enabled")
        if let text = reader.string("overlapPolicy") {
            if let policy = Schedule.OverlapPolicy(rawValue: text) { draft.overlapPolicy = policy } else { reader.problem("overlapPolicy", "must be skip, queue or allow") }
        }
        if let text = reader.string("catchUp") {
            if let catchUp = Schedule.CatchUp(rawValue: text) { draft.catchUp = catchUp } else { reader.problem("catchUp", "must be none, last or all") }
        }
        try reader.finish()
        return draft
    }

    /// Applies a draft to a schedule, checking every field against the rest; throws 422 listing each problem.
    private func apply(_ draft: Draft, to schedule: Schedule, creating: Bool) async throws {
        var problems: [FieldProblem] = []
        if creating {
            for (field, present) in [("name", draft.name != nil), ("target", draft.skillReference != nil || draft.workflowID != nil), ("cron", draft.cron != nil)] where !present {
                problems.append(FieldProblem(field: field, message: "is required"))
            }
        }
        if let name = draft.name {
            let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.count > 200 || trimmed.contains(where: \.isNewline) {
                problems.append(FieldProblem(field: "name", message: "must be 1 to 200 characters on one line"))
            } else {
                schedule.name = trimmed
            }
        }
        if let reference = draft.workflowID {
            if reference.isEmpty || reference.count > 200 {
                problems.append(FieldProblem(field: "target.workflowId", message: "must be a workflow id or slug"))
            } else if let found = try? await WorkflowService(app: app).find(reference) {
                schedule.targetType = .workflow
                schedule.targetID = try found.requireID()
            } else {
                problems.append(FieldProblem(field: "target.workflowId", message: "no such workflow"))
            }
        }
        var skill: Skill?
        if let reference = draft.skillReference {
            if reference.isEmpty || reference.count > 200 {
                problems.append(FieldProblem(field: "target.skillId", message: "must be a skill id or slug"))
            } else if let found = try? await SkillService(app: app).find(reference) {
                skill = found
                schedule.targetType = .skill
                schedule.targetID = try found.requireID()
            } else {
                problems.append(FieldProblem(field: "target.skillId", message: "no such skill"))
            }
        } else if !creating, draft.workflowID == nil, schedule.targetType == .skill {
            skill = try await Skill.find(schedule.targetID, on: reads)
        }
        if let input = draft.input {
            if let problem = JSONLimits.nestingProblem(input, field: "input") { throw HTTPProblem.validation([problem]) }
            schedule.input = try input.canonicalString()
        } else if creating {
            schedule.input = "{}"
        }
        if let skill {
            // The validator names fields from `input` down, as execution creation reports them.
            problems += try await JSONSchemaSubset.validateOffLoop(JSONValue.parse(schedule.input), against: skill.inputSchema)
        }
        if let text = draft.cron, Self.cron(text, problems: &problems) != nil {
            schedule.cron = text.trimmingCharacters(in: .whitespaces)
        }
        if let zone = draft.timezone {
            if Self.timeZone(zone, problems: &problems) != nil { schedule.timezone = zone }
        } else if creating {
            schedule.timezone = "UTC"
        }
        if let enabled = draft.enabled { schedule.enabled = enabled } else if creating { schedule.enabled = true }
        if let policy = draft.overlapPolicy { schedule.overlapPolicy = policy } else if creating { schedule.overlapPolicy = .skip }
        if let catchUp = draft.catchUp { schedule.catchUp = catchUp } else if creating { schedule.catchUp = .last }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }

        // The next occurrence from now; a changed expression or zone, or re-enabling, starts afresh.
        if creating || draft.cron != nil || draft.timezone != nil || draft.enabled == true {
            let next = try CronExpression(schedule.cron).next(after: now, in: TimeZone(identifier: schedule.timezone)!)
            guard next != nil else { throw HTTPProblem.validation([Self.neverFires]) }
            schedule.nextRunAt = schedule.enabled ? next : nil
        }
        if !schedule.enabled { schedule.nextRunAt = nil }
    }

    // MARK: - CRUD

    func create(_ draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Schedule {
        let schedule = Schedule()
        schedule.id = UUID()
        schedule.$user.id = caller.user.id
        try await apply(draft, to: schedule, creating: true)
        schedule.createdAt = now
        schedule.updatedAt = now
        try await app.writeTransaction { db in
            try await schedule.create(on: db)
            try await record("schedule.created", schedule, caller: caller, origin: origin, on: db)
        }
        return schedule
    }

    func find(_ id: UUID, caller: AuthenticatedCaller) async throws -> Schedule {
        guard let schedule = try await Schedule.query(on: reads).visible(to: caller, ownedThrough: \.$user).filter(\.$id == id).first() else {
            throw HTTPProblem.notFound("No such schedule.")
        }
        return schedule
    }

    func list(page: PageRequest, caller: AuthenticatedCaller) async throws -> ([ScheduleResponse], String?) {
        try await Schedule.query(on: reads).visible(to: caller, ownedThrough: \.$user)
            .newestFirst(as: ScheduleResponse.self, by: "created_at", { ($0.createdAt, $0.id) }, page: page, through: app.sqliteReaders)
    }

    func update(_ id: UUID, draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Schedule {
        let schedule = try await find(id, caller: caller)
        try await apply(draft, to: schedule, creating: false)
        schedule.updatedAt = now
        try await app.writeTransaction { db in
            try await schedule.save(on: db)
            try await record("schedule.updated", schedule, caller: caller, origin: origin, on: db)
        }
        return schedule
    }

    func delete(_ id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let schedule = try await find(id, caller: caller)
        try await app.writeTransaction { db in
            try await record("schedule.deleted", schedule, caller: caller, origin: origin, on: db)
            try await schedule.delete(on: db)
        }
    }

    /// What a firing started: an execution of a skill, or a run of a workflow.
    enum Started: Sendable {
        case execution(Execution)
        case run(WorkflowRun, [WorkflowRunStep])

        var id: UUID? {
            switch self {
            case .execution(let execution): execution.id
            case .run(let run, _): run.id
            }
        }
    }

    private func startTarget(_ schedule: Schedule, occurrence: Date?, as caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Started {
        let input = JSONValue.parse(schedule.input)
        let trigger = ScheduleTrigger(scheduleID: try schedule.requireID(), occurrence: occurrence)
        switch schedule.targetType {
        case .skill:
            return .execution(try await ExecutionService(app: app).create(skillReference: schedule.targetID.lowercasedString, input: input, caller: caller,
                                                                          origin: origin, trigger: trigger))
        case .workflow:
            let (run, steps) = try await WorkflowRunService(app: app).start(schedule.targetID.lowercasedString, input: input, caller: caller,
                                                                            origin: origin, trigger: trigger)
            return .run(run, steps)
        }
    }

    /// Starts the target now, as the caller (or, from the CLI, as the owner), without moving the next occurrence.
    func runNow(_ id: UUID, caller: AuthenticatedCaller?, origin: RequestOrigin) async throws -> Started {
        let schedule: Schedule
        if let caller {
            schedule = try await find(id, caller: caller)
        } else {
            guard let found = try await Schedule.find(id, on: reads) else { throw HTTPProblem.notFound("No such schedule.") }
            schedule = found
        }
        let actor: AuthenticatedCaller
        if let caller { actor = caller } else { actor = try await ownerCaller(of: schedule) }
        // From the CLI the schedule acts as its owner, so the owner must still be allowed to run things.
        guard actor.user.status == .active, actor.can(.skillsExecute) else {
            throw HTTPProblem.conflict("The schedule's owner is not active or no longer has skills:execute.")
        }
        let started = try await startTarget(schedule, occurrence: nil, as: actor, origin: origin)
        let scheduleID = try schedule.requireID()
        try await app.writeTransaction { db in try await noteFired(scheduleID, status: .started, error: nil, execution: started.id, on: db) }
        return started
    }

    private func record(_ action: String, _ schedule: Schedule, caller: AuthenticatedCaller, origin: RequestOrigin, on db: any Database) async throws {
        let id = schedule.id?.lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: action, actorID: caller.user.id, actorType: caller.actorType, resourceType: "schedule",
                               resourceID: id, origin: origin, details: ["name": .string(schedule.name), "cron": .string(schedule.cron)]),
            event: EventRecord(type: action, actorID: caller.user.id, resourceType: "schedule", resourceID: id,
                               data: ["userId": .string(schedule.$user.id.lowercasedString), "name": .string(schedule.name)]),
            on: db)
    }

    // MARK: - Firing

    /// Claims every due occurrence (up to `limit` schedules) and enqueues what fires; returns how many were claimed.
    @discardableResult
    func fireDue(limit: Int = 50) async throws -> Int {
        let now = self.now
        let due = try await Schedule.query(on: reads).filter(\.$enabled == true).filter(\.$nextRunAt <= now)
            .sort(\.$nextRunAt).limit(limit).all()
        var claimed = 0
        for schedule in due where try await claim(schedule, now: now) { claimed += 1 }
        return claimed
    }

    /// One schedule's due occurrences: on-time ones fire; missed ones follow `catchUp`; an overlap follows
    /// `overlapPolicy`. Returns false when another instance claimed it first.
    private func claim(_ schedule: Schedule, now: Date) async throws -> Bool {
        guard let dueAt = schedule.nextRunAt, let expression = try? CronExpression(schedule.cron),
              let zone = TimeZone(identifier: schedule.timezone)
        else { return false }
        var occurrences = [dueAt]
        while occurrences.count < 10_000, let next = expression.next(after: occurrences.last!, in: zone), next <= now {
            occurrences.append(next)
        }
        let onTime = occurrences.filter { now.timeIntervalSince($0) <= Self.lateAfter }
        let missed = occurrences.filter { now.timeIntervalSince($0) > Self.lateAfter }
        var firing: [Date] = switch schedule.catchUp {
        case .all: Array(missed.suffix(Self.catchUpLimit)) + onTime
        case .last: (onTime.isEmpty ? Array(missed.suffix(1)) : []) + onTime
        case .none: onTime
        }
        var status: Schedule.LastStatus? = firing.isEmpty ? .missed : nil
        if schedule.overlapPolicy != .allow, !firing.isEmpty {
            // One run at a time: never start several occurrences together, and wait for (queue) or drop (skip)
            // an occurrence while the previous run is still going.
            firing = Array(firing.suffix(1))
            if try await lastStartStillGoing(schedule) {
                if schedule.overlapPolicy == .queue { return false }
                firing = []
                status = .skipped
            }
        }
        let next = expression.next(after: now, in: zone)
        let scheduleID = try schedule.requireID()
        let fires = firing, outcome = status
        return try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let won = try await sql.raw("""
                UPDATE schedules SET next_run_at = \(bind: next), updated_at = \(bind: now),
                    last_run_at = \(bind: fires.isEmpty ? schedule.lastRunAt : now),
                    last_status = \(bind: outcome?.rawValue ?? schedule.lastStatus?.rawValue),
                    last_error = \(bind: outcome == nil ? schedule.lastError : nil)
                WHERE id = \(bind: scheduleID) AND next_run_at = \(bind: dueAt) RETURNING id
                """).first() != nil
            guard won else { return false }
            let formatter = ISO8601DateFormatter()
            for occurrence in fires {
                _ = try await JobQueue(app: app).enqueue(
                    kind: Self.fireKind,
                    payload: ["scheduleId": .string(scheduleID.lowercasedString), "occurrence": .string(formatter.string(from: occurrence))], on: db)
            }
            return true
        }
    }

    /// Whether the execution or run the schedule started last is still queued or running.
    private func lastStartStillGoing(_ schedule: Schedule) async throws -> Bool {
        guard let id = schedule.lastExecutionID else { return false }
        switch schedule.targetType {
        case .skill: return try await Execution.find(id, on: reads).map { !$0.status.isFinished } ?? false
        case .workflow: return try await WorkflowRun.find(id, on: reads).map { !$0.status.isFinished } ?? false
        }
    }

    /// The `schedule.fire` job: starts the execution as the owner, or records why it could not.
    func runFire(_ job: ClaimedJob) async throws {
        let queue = JobQueue(app: app)
        guard let id = job.payload.object?["scheduleId"]?.stringValue.flatMap(UUID.init(uuidString:)),
              let schedule = try await Schedule.find(id, on: reads),
              let owner = try await User.find(schedule.$user.id, on: reads)
        else {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .cancelled, error: "schedule deleted", on: db) }
            return
        }
        var started: Started?
        var failure: String?
        let caller = try await ownerCaller(of: schedule, owner: owner)
        if owner.status != .active {
            failure = "the schedule's owner is not active"
        } else if !caller.can(.skillsExecute) {
            failure = "the schedule's owner no longer has skills:execute"
        } else {
            do {
                let occurrence = job.payload.object?["occurrence"]?.stringValue.flatMap { ISO8601DateFormatter().date(from: $0) }
                started = try await startTarget(schedule, occurrence: occurrence, as: caller, origin: .system)
            } catch let refusal as any AbortError where refusal.status.code < 500 {
                // The skill or workflow was disabled or deleted, the input no longer fits, or the owner is at their cap: a
                // lasting reason, recorded on the schedule rather than retried.
                failure = String(refusal.reason.prefix(500))
            }
        }
        let startedID = started?.id
        let reason = failure
        try await app.writeTransaction { db in
            guard try await queue.finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            try await noteFired(id, status: reason == nil ? .started : .failed, error: reason, execution: startedID, on: db)
        }
    }

    /// The schedule's owner as a caller, with the grants they hold now.
    private func ownerCaller(of schedule: Schedule, owner known: User? = nil) async throws -> AuthenticatedCaller {
        var owner = known
        if owner == nil { owner = try await User.find(schedule.$user.id, on: reads) }
        guard let owner else { throw HTTPProblem.notFound("The schedule's owner is gone.") }
        let grants = try await UserRole.grants(of: try owner.requireID(), on: reads)
        return AuthenticatedCaller(user: CallerUser(owner), session: nil, apiKey: nil, method: .schedule, grants: grants)
    }

    private func noteFired(_ id: UUID, status: Schedule.LastStatus, error: String?, execution: UUID?, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            UPDATE schedules SET last_status = \(bind: status.rawValue), last_error = \(bind: error),
                last_execution_id = coalesce(\(bind: execution), last_execution_id), last_run_at = \(bind: now)
            WHERE id = \(bind: id)
            """).run()
    }
}

extension BackgroundLoop {
    /// Looks for due schedules and maintenance tasks every second while the server runs.
    static func scheduler() -> BackgroundLoop {
        BackgroundLoop("Scheduler pass", retryAfter: .seconds(1)) { app in
            // Switched off, no schedule fires; switched on again, the missed fires are handled as after downtime.
            if app.settings.isEnabled(.schedules) { try await ScheduleService(app: app).fireDue() }
            try await MaintenanceTasks(app: app).fireDue()
            return .seconds(1)
        }
    }
}

extension Application {
    private struct SchedulerKey: StorageKey { typealias Value = BackgroundLoop }

    /// Set once in `configure`; started by `serve`.
    var schedulerWorker: BackgroundLoop {
        get { storage[SchedulerKey.self]! }
        set { storage[SchedulerKey.self] = newValue }
    }
}

extension ScheduleService {
    /// Registers the `schedule.fire` handler.
    static func register(in handlers: JobHandlers) {
        handlers.register(fireKind, FireHandler(), pausedWith: .schedules)
    }

    struct FireHandler: JobHandler {
        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await ScheduleService(app: app).runFire(job)
        }
    }
}

/// What started an execution or a workflow run from a schedule: the schedule, and the occurrence it fired for
/// (nil when someone ran it now).
struct ScheduleTrigger: Sendable {
    var scheduleID: UUID
    var occurrence: Date?
}

extension ScheduleResponse.Target: APIJSONWritable {
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("skillId", skillId)
        object.field("workflowId", workflowId)
    }
}

extension ScheduleResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) throws {
        object.field("id", id)
        object.field("userId", userId)
        object.field("name", name)
        try object.field("target", object: target)
        object.field("input", input)
        object.field("cron", cron)
        object.field("timezone", timezone)
        object.field("enabled", enabled)
        object.field("overlapPolicy", overlapPolicy)
        object.field("catchUp", catchUp)
        object.field("nextRunAt", nextRunAt)
        object.field("lastRunAt", lastRunAt)
        object.field("lastStatus", lastStatus)
        object.field("lastError", lastError)
        object.field("lastExecutionId", lastExecutionId)
        object.field("lastRunId", lastRunId)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
    }
}
