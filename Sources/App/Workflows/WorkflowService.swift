import Fluent
import StewardSQLite
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// A workflow as the API shows it.
struct WorkflowResponse: Content, RowReadable {
    var id: UUID
    var slug: String
    var name: String
    var description: String
    var version: Int
    var enabled: Bool
    var steps: [WorkflowStep]
    var createdBy: UUID?
    var createdAt: Date
    var updatedAt: Date

    init(_ workflow: Workflow) {
        id = workflow.id!
        slug = workflow.slug
        name = workflow.name
        description = workflow.description
        version = workflow.version
        enabled = workflow.enabled
        steps = workflow.steps
        createdBy = workflow.createdBy
        createdAt = workflow.createdAt
        updatedAt = workflow.updatedAt
    }

    /// A workflow read straight from its row (the columns of `Workflow`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        slug = try row.decode(column: "slug", as: String.self)
        name = try row.decode(column: "name", as: String.self)
        description = try row.decode(column: "description", as: String.self)
        version = try row.decode(column: "version", as: Int.self)
        enabled = try row.decode(column: "enabled", as: Bool.self)
        steps = WorkflowStep.stored(try row.decode(column: "steps", as: String.self))
        createdBy = try row.optional("created_by", as: UUID.self)
        createdAt = try row.decode(column: "created_at", as: Date.self)
        updatedAt = try row.decode(column: "updated_at", as: Date.self)
    }
}

/// The workflow catalogue: create, read, update (each change bumps `version`) and delete.
struct WorkflowService: Sendable {
    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    struct Draft: Sendable {
        var slug: String?
        var name: String?
        var description: String?
        var enabled: Bool?
        var steps: JSONValue?
    }

    static func draft(from fields: [String: JSONValue]) throws -> Draft {
        var reader = FieldReader(fields, allowed: ["slug", "name", "description", "enabled", "steps"], noun: "workflow")
        var draft = Draft()
        draft.slug = reader.string("slug")
        draft.name = reader.string("name")
        draft.description = reader.string("description")
        draft.enabled = reader.bool("enabled")
        draft.steps = fields["steps"]
        try reader.finish()
        return draft
    }

    private func apply(_ draft: Draft, to workflow: Workflow, creating: Bool) async throws {
        var problems: [FieldProblem] = []
        if creating {
            for (key, present) in [("slug", draft.slug != nil), ("name", draft.name != nil), ("steps", draft.steps != nil)] where !present {
                problems.append(FieldProblem(field: key, message: "is required"))
            }
        }
        if let slug = draft.slug {
            if Slug.isValid(slug) { workflow.slug = slug } else { problems.append(FieldProblem(field: "slug", message: Slug.rule)) }
        }
        if let name = draft.name {
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.count > 200 || trimmed.contains(where: \.isNewline) { problems.append(FieldProblem(field: "name", message: "must be 1 to 200 characters on one line")) }
            else { workflow.name = trimmed }
        }
        if let description = draft.description {
            if description.count > 5000 { problems.append(FieldProblem(field: "description", message: "must be at most 5000 characters")) }
            else { workflow.description = description }
        } else if creating {
            workflow.description = ""
        }
        if let enabled = draft.enabled { workflow.enabled = enabled } else if creating { workflow.enabled = true }
        if let value = draft.steps {
            let skills = SkillService(app: app)
            let (steps, stepProblems) = await WorkflowDefinition.parse(value) { reference in
                try? await skills.find(reference).requireID()
            }
            problems += stepProblems
            if stepProblems.isEmpty { workflow.steps = steps }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
    }

    func create(_ draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Workflow {
        let workflow = Workflow()
        workflow.id = UUID()
        try await apply(draft, to: workflow, creating: true)
        workflow.version = 1
        workflow.createdBy = caller.user.id
        workflow.createdAt = now
        workflow.updatedAt = now
        do {
            try await app.writeTransaction { db in
                try await workflow.create(on: db)
                try await record("workflow.created", workflow, caller: caller, origin: origin, on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("A workflow with the slug '\(workflow.slug)' exists.")
        }
        return workflow
    }

    /// By id or slug.
    func find(_ reference: String) async throws -> Workflow {
        let found = if let id = UUID(uuidString: reference) {
            try await Workflow.find(id, on: reads)
        } else {
            try await Workflow.query(on: reads).filter(\.$slug == reference).first()
        }
        guard let found else { throw HTTPProblem.notFound("No such workflow.") }
        return found
    }

    func list(page: PageRequest) async throws -> ([WorkflowResponse], String?) {
        try await Workflow.query(on: reads).newestFirst(as: WorkflowResponse.self, by: "created_at", { ($0.createdAt, $0.id) }, page: page,
                                                        through: app.sqliteReaders)
    }

    func update(_ reference: String, draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Workflow {
        let workflow = try await find(reference)
        try ensureMayChange(workflow, caller: caller)
        try await apply(draft, to: workflow, creating: false)
        workflow.version += 1
        workflow.updatedAt = now
        do {
            try await app.writeTransaction { db in
                try await workflow.save(on: db)
                try await record("workflow.updated", workflow, caller: caller, origin: origin, on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("A workflow with the slug '\(workflow.slug)' exists.")
        }
        return workflow
    }

    func delete(_ reference: String, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let workflow = try await find(reference)
        try ensureMayChange(workflow, caller: caller)
        let id = try workflow.requireID()
        let active = try await WorkflowRun.query(on: reads).filter(\.$workflow.$id == id).filter(\.$status ~~ [.queued, .running]).count()
        guard active == 0 else { throw HTTPProblem.conflict("The workflow has \(active) run(s) in progress; cancel them first.") }
        try await app.writeTransaction { db in
            try await record("workflow.deleted", workflow, caller: caller, origin: origin, on: db)
            try await workflow.delete(on: db)
        }
    }

    /// Workflows are shared like skills: everyone with workflows:read sees them all, and only the creator or an admin
    /// may change or delete one (a workflow with no recorded creator, only an admin).
    private func ensureMayChange(_ workflow: Workflow, caller: AuthenticatedCaller) throws {
        guard caller.seesEveryOwner || (workflow.createdBy != nil && workflow.createdBy == caller.user.id) else {
            throw AccessError.notYours("Only the workflow's creator or an admin may change it.")
        }
    }

    private func record(_ action: String, _ workflow: Workflow, caller: AuthenticatedCaller, origin: RequestOrigin, on db: any Database) async throws {
        let id = workflow.id?.lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: action, actorID: caller.user.id, actorType: caller.actorType, resourceType: "workflow",
                               resourceID: id, origin: origin, details: ["slug": .string(workflow.slug), "version": .number(Double(workflow.version))]),
            event: EventRecord(type: action, actorID: caller.user.id, resourceType: "workflow", resourceID: id,
                               data: ["slug": .string(workflow.slug), "version": .number(Double(workflow.version))]),
            on: db)
    }
}

extension WorkflowResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) throws {
        object.field("id", id)
        object.field("slug", slug)
        object.field("name", name)
        object.field("description", description)
        object.field("version", version)
        object.field("enabled", enabled)
        try object.field("steps", objects: steps)
        object.field("createdBy", createdBy)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
    }
}
