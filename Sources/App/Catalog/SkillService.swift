import Fluent
import FluentSQL
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// The skills catalogue: create, read, search, update, delete, favourites and stats.
/// Everyone with skills:read sees every skill; only its creator or an admin may change or delete it.
struct SkillService: Sendable {
    static let builtinRunners: Set<String> = ["echo", "sleep", "fail", "transform"]
    static let refusedRunnerHeaders: Set<String> = [
        "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "proxy-authorization", "proxy-connection", "te", "trailer",
    ]

    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    // MARK: - Validation

    /// The fields a skill may be created with or changed to.
    struct Draft: Sendable {
        var slug: String?
        var name: String?
        var description: String?
        var category: String?
        var tags: [String]?
        var inputSchema: JSONValue?
        var runner: JSONValue?
        var enabled: Bool?
        /// `.null` removes it.
        var outputSchema: JSONValue?
        var annotations: JSONValue?
    }

    static let annotationKeys = ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"]

    /// The draft's output schema and annotations over `current`; nil when the draft sets neither.
    static func toolFields(from draft: Draft, over current: SkillToolFields) throws -> SkillToolFields? {
        guard draft.outputSchema != nil || draft.annotations != nil else { return nil }
        var fields = current
        if let schema = draft.outputSchema { fields.outputSchema = schema == .null ? nil : try schema.canonicalString() }
        if let annotations = draft.annotations { fields.annotations = try annotations.canonicalString() }
        return fields
    }

    /// Items with their output schemas and annotations filled in.
    func withToolFields(_ items: [SkillResponse]) async throws -> [SkillResponse] {
        guard !items.isEmpty else { return items }
        let fields = try await app.skillToolFields.fields(for: items.map { ($0.id, $0.version) }, app: app)
        return items.map { item in
            var item = item
            if let found = fields[item.id] { item.fill(found) }
            return item
        }
    }

    func response(_ skill: Skill) async throws -> SkillResponse {
        try await withToolFields([SkillResponse(skill)])[0]
    }

    /// Reads a JSON object into a draft, refusing unknown fields and wrong types with one problem each.
    static func draft(from fields: [String: JSONValue]) throws -> Draft {
        var reader = FieldReader(fields, allowed: ["slug", "name", "description", "category", "tags", "inputSchema", "runner", "enabled", "outputSchema", "annotations"], noun: "skill")
        var draft = Draft()
        draft.slug = reader.string("slug")
        draft.name = reader.string("name")
        draft.description = reader.string("description")
        draft.category = reader.string("category")
        if let tags = fields["tags"] {
            if case .array(let values) = tags, values.allSatisfy({ $0.stringValue != nil }) {
                draft.tags = values.compactMap(\.stringValue)
            } else {
                reader.problem("tags", "must be an array of strings")
            }
        }
        draft.inputSchema = fields["inputSchema"]
        draft.runner = fields["runner"]
        draft.enabled = reader.bool("enabled")
        draft.outputSchema = fields["outputSchema"]
        draft.annotations = fields["annotations"]
        try reader.finish()
        return draft
    }

    private func problems(in draft: Draft, creating: Bool) -> [FieldProblem] {
        var problems: [FieldProblem] = []
        if creating {
            for (key, value) in [("slug", draft.slug), ("name", draft.name), ("runner", draft.runner.map { _ in "" })] where value == nil {
                problems.append(FieldProblem(field: key, message: "is required"))
            }
        }
        if let slug = draft.slug, !Slug.isValid(slug) { problems.append(FieldProblem(field: "slug", message: Slug.rule)) }
        if let name = draft.name, name.trimmingCharacters(in: .whitespaces).isEmpty || name.count > 200 || Self.hasControl(name) {
            problems.append(FieldProblem(field: "name", message: "must be 1 to 200 printable characters"))
        }
        if let description = draft.description, description.count > 10_000 || Self.hasControl(description, allowingNewlines: true) {
            problems.append(FieldProblem(field: "description", message: "must be at most 10000 characters, without control characters"))
        }
        if let category = draft.category, category.trimmingCharacters(in: .whitespaces).isEmpty || category.count > 64 || Self.hasControl(category) {
            problems.append(FieldProblem(field: "category", message: "must be 1 to 64 printable characters"))
        }
        if let tags = draft.tags {
            if tags.count > 20 || tags.contains(where: { $0.isEmpty || $0.count > 40 || Self.hasControl($0) }) {
                problems.append(FieldProblem(field: "tags", message: "must be at most 20 tags of 1 to 40 printable characters"))
            }
        }
        if let schema = draft.inputSchema {
            // `true` and `false` are schemas, but not a skill's: the document promises an object, and `false`
            // would make a skill that can never run.
            if case .object = schema {
                problems += JSONSchemaSubset.problems(inSchema: schema)
            } else {
                problems.append(FieldProblem(field: "inputSchema", message: "must be a JSON Schema object"))
            }
        }
        if let runner = draft.runner {
            problems += runnerProblems(runner)
        }
        if let schema = draft.outputSchema, schema != .null {
            if case .object = schema {
                problems += JSONSchemaSubset.problems(inSchema: schema, path: "outputSchema")
            } else {
                problems.append(FieldProblem(field: "outputSchema", message: "must be a JSON Schema object, or null for none"))
            }
        }
        if let annotations = draft.annotations {
            if case .object(let hints) = annotations {
                for (key, value) in hints {
                    if !Self.annotationKeys.contains(key) {
                        problems.append(FieldProblem(field: "annotations.\(key)", message: "is not one of \(Self.annotationKeys.joined(separator: ", "))"))
                    } else if case .bool = value {} else {
                        problems.append(FieldProblem(field: "annotations.\(key)", message: "must be true or false"))
                    }
                }
            } else {
                problems.append(FieldProblem(field: "annotations", message: "must be an object of true/false hints"))
            }
        }
        return problems
    }

    /// `{type: "builtin", name}` or `{type: "http", url, timeoutSeconds?, headers?, undoUrl?}`.
    private func runnerProblems(_ runner: JSONValue) -> [FieldProblem] {
        guard case .object(let fields) = runner, case .string(let type)? = fields["type"] else {
            return [FieldProblem(field: "runner.type", message: "must be builtin or http")]
        }
        var problems: [FieldProblem] = []
        switch type {
        case "builtin":
            for key in fields.keys where !["type", "name"].contains(key) {
                problems.append(FieldProblem(field: "runner.\(key)", message: "is not a builtin runner field"))
            }
            guard case .string(let name)? = fields["name"], Self.builtinRunners.contains(name) else {
                return problems + [FieldProblem(field: "runner.name", message: "must be one of \(Self.builtinRunners.sorted().joined(separator: ", "))")]
            }
        case "http":
            let guardrail = OutboundGuard(allowed: app.appConfig.outboundAllowedHosts, httpsOnly: app.appConfig.outboundHTTPSOnly)
            for key in fields.keys where !["type", "url", "timeoutSeconds", "headers", "undoUrl"].contains(key) {
                problems.append(FieldProblem(field: "runner.\(key)", message: "is not an http runner field"))
            }
            if case .string(let url)? = fields["url"] {
                if let refusal = guardrail.refusal(for: url) { problems.append(FieldProblem(field: "runner.url", message: refusal)) }
            } else {
                problems.append(FieldProblem(field: "runner.url", message: "is required"))
            }
            if let undo = fields["undoUrl"] {
                if case .string(let url) = undo, guardrail.refusal(for: url) == nil {} else {
                    problems.append(FieldProblem(field: "runner.undoUrl", message: undo.stringValue.flatMap { guardrail.refusal(for: $0) } ?? "must be a URL"))
                }
            }
            if let timeout = fields["timeoutSeconds"] {
                if case .number(let seconds) = timeout, seconds.rounded() == seconds, (1...300).contains(seconds) {} else {
                    problems.append(FieldProblem(field: "runner.timeoutSeconds", message: "must be a whole number from 1 to 300"))
                }
            }
            if let headers = fields["headers"] {
                if case .object(let map) = headers, map.count <= 20 {
                    for (name, value) in map {
                        let lower = name.lowercased()
                        if Self.refusedRunnerHeaders.contains(lower) || lower.hasPrefix("webhook-") || name.isEmpty
                            || !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
                            problems.append(FieldProblem(field: "runner.headers.\(name)", message: "cannot be set"))
                        }
                        if case .string(let text) = value, !text.contains(where: \.isNewline), text.count <= 4096 {} else {
                            problems.append(FieldProblem(field: "runner.headers.\(name)", message: "must be a single-line string"))
                        }
                    }
                } else {
                    problems.append(FieldProblem(field: "runner.headers", message: "must be an object of at most 20 headers"))
                }
            }
        default:
            problems.append(FieldProblem(field: "runner.type", message: "must be builtin or http"))
        }
        return problems
    }

    private static func hasControl(_ text: String, allowingNewlines: Bool = false) -> Bool {
        text.unicodeScalars.contains { scalar in
            scalar.properties.generalCategory == .control && !(allowingNewlines && (scalar == "\n" || scalar == "\t" || scalar == "\r"))
        }
    }

    // MARK: - Changes

    func create(_ draft: Draft, caller: AuthenticatedCaller?, origin: RequestOrigin) async throws -> Skill {
        let problems = problems(in: draft, creating: true)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let skill = Skill()
        skill.id = UUID()
        skill.slug = draft.slug!
        skill.name = draft.name!.trimmingCharacters(in: .whitespaces)
        skill.description = draft.description ?? ""
        skill.category = draft.category?.trimmingCharacters(in: .whitespaces) ?? "general"
        skill.tags = Self.normalised(tags: draft.tags ?? [])
        try skill.store(inputSchema: draft.inputSchema ?? ["type": "object"])
        try skill.store(runner: draft.runner!, sealing: app.secretBox)
        skill.enabled = draft.enabled ?? true
        let toolFields = try Self.toolFields(from: draft, over: .none)
        if toolFields != nil, try await !app.skillToolFields.isReady(app) { throw SkillToolFieldStore.notMigrated }
        skill.version = 1
        skill.executionCount = 0
        skill.createdBy = caller?.user.id
        skill.createdAt = now
        skill.updatedAt = now
        do {
            try await app.writeTransaction { db in
                try await skill.create(on: db)
                if let toolFields { try await SkillToolFieldStore.write(toolFields, of: skill.requireID(), on: db) }
                try await record("skill.created", skill: skill, caller: caller, origin: origin, details: ["slug": .string(skill.slug)], on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("A skill with the slug '\(skill.slug)' already exists.")
        }
        return skill
    }

    func update(_ reference: String, draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Skill {
        let skill = try await find(reference)
        try ensureMayChange(skill, caller: caller)
        let problems = problems(in: draft, creating: false)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        var changed: [String] = []
        if let slug = draft.slug, slug != skill.slug { skill.slug = slug; changed.append("slug") }
        if let name = draft.name { skill.name = name.trimmingCharacters(in: .whitespaces); changed.append("name") }
        if let description = draft.description { skill.description = description; changed.append("description") }
        if let category = draft.category { skill.category = category.trimmingCharacters(in: .whitespaces); changed.append("category") }
        if let tags = draft.tags { skill.tags = Self.normalised(tags: tags); changed.append("tags") }
        if let schema = draft.inputSchema { try skill.store(inputSchema: schema); changed.append("inputSchema") }
        if let runner = draft.runner { try skill.store(runner: runner, sealing: app.secretBox); changed.append("runner") }
        if let enabled = draft.enabled { skill.enabled = enabled; changed.append("enabled") }
        var newToolFields: SkillToolFields?
        if draft.outputSchema != nil || draft.annotations != nil {
            guard try await app.skillToolFields.isReady(app) else { throw SkillToolFieldStore.notMigrated }
            let current = try await app.skillToolFields.fields(for: [(try skill.requireID(), skill.version)], app: app)[try skill.requireID()] ?? .none
            newToolFields = try Self.toolFields(from: draft, over: current)
            if draft.outputSchema != nil { changed.append("outputSchema") }
            if draft.annotations != nil { changed.append("annotations") }
        }
        guard !changed.isEmpty else { return skill }
        let toolFields = newToolFields
        skill.version += 1
        skill.updatedAt = now
        let fields = changed
        do {
            try await app.writeTransaction { db in
                try await skill.save(on: db)
                if let toolFields { try await SkillToolFieldStore.write(toolFields, of: skill.requireID(), on: db) }
                try await record("skill.updated", skill: skill, caller: caller, origin: origin,
                                 details: ["fields": .array(fields.map { .string($0) }), "version": .number(Double(skill.version))], on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPProblem.conflict("A skill with the slug '\(skill.slug)' already exists.")
        }
        return skill
    }

    func delete(_ reference: String, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let skill = try await find(reference)
        try ensureMayChange(skill, caller: caller)
        try await app.writeTransaction { db in
            try await record("skill.deleted", skill: skill, caller: caller, origin: origin, details: ["slug": .string(skill.slug)], on: db)
            try await skill.delete(on: db)
        }
    }

    private func ensureMayChange(_ skill: Skill, caller: AuthenticatedCaller) throws {
        guard caller.seesEveryOwner || skill.createdBy == caller.user.id else {
            throw AccessError.notYours("Only the skill's creator or an admin may change it.")
        }
    }

    private func record(_ type: String, skill: Skill, caller: AuthenticatedCaller?, origin: RequestOrigin, details: JSONValue,
                        on db: any Database) async throws {
        let id = try skill.requireID().lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: type, actorID: caller?.user.id, actorType: caller?.actorType ?? .system,
                               resourceType: "skill", resourceID: id, origin: origin, details: details),
            event: EventRecord(type: type, actorID: caller?.user.id, resourceType: "skill", resourceID: id,
                               data: ["slug": .string(skill.slug), "version": .number(Double(skill.version))]),
            on: db)
    }

    static func normalised(tags: [String]) -> [String] {
        var seen: Set<String> = []
        return tags.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    // MARK: - Reading

    /// A skill by id or slug; 404 otherwise.
    /// By id or slug; `database` when inside a transaction (SQLite pools one connection per event loop).
    func find(_ reference: String, on database: (any Database)? = nil) async throws -> Skill {
        let db = database ?? reads
        let skill: Skill?
        // On every execution's path: read without Fluent's query building and reflection.
        if let id = UUID(uuidString: reference) {
            skill = try await app.quickFind(Skill.self, where: "id", equals: id, on: db)
        } else if reference.utf8.count <= 64 {
            skill = try await app.quickFind(Skill.self, where: "slug", equals: reference, on: db)
        } else {
            skill = nil
        }
        guard let skill else { throw HTTPProblem.notFound("No such skill.") }
        return skill
    }

    struct Filter: Sendable {
        var q: String?
        var category: String?
        var tag: String?
    }

    /// Lists skills: ranked by relevance when `q` is given, newest first otherwise.
    func list(filter: Filter, page: PageRequest) async throws -> ([SkillResponse], String?) {
        if let q = filter.q, !q.trimmingCharacters(in: .whitespaces).isEmpty {
            return try await search(q, filter: filter, page: page)
        }
        var query = Skill.query(on: reads)
        if let category = filter.category { query = query.filter(\.$category == category) }
        if let tag = filter.tag { query = query.filter(.sql(TextContains(text: SQLColumn("tags"), needle: Self.tagNeedle(tag)))) }
        // A tag is matched inside the stored array, which no index answers: that page is read off the event loop.
        let (items, next) = try await query.newestFirst(as: SkillResponse.self, by: "created_at", { ($0.createdAt, $0.id) }, page: page,
                                                        through: app.sqliteReaders, offLoopOn: filter.tag == nil ? nil : app.threadPool)
        return (try await withToolFields(items), next)
    }

    /// Full-text search. The query is reduced to letter-and-digit tokens (each a prefix match, all required),
    /// so quotes, `*`, `-` or SQL in `q` can never break the statement.
    private func search(_ q: String, filter: Filter, page: PageRequest) async throws -> ([SkillResponse], String?) {
        let tokens = Self.searchTokens(q)
        guard !tokens.isEmpty else { return ([], nil) }
        // A cursor is the client's to send back, so its offset may have been changed; PostgreSQL refuses a negative one.
        let offset = max(0, page.cursor?.o ?? 0)
        let sql = reads as! any SQLDatabase
        var conditions: SQLQueryString = ""
        if let category = filter.category { conditions = conditions + " AND s.category = \(bind: category)" }
        if let tag = filter.tag { conditions = conditions + " AND \(TextContains(text: SQLColumn("tags", table: "s"), needle: Self.tagNeedle(tag)))" }
        let statement: SQLQueryString
        if sql.dialect.name == "postgresql" {
            let query = tokens.map { "\($0):*" }.joined(separator: " & ")
            statement = """
                SELECT s.* FROM skills s, to_tsquery('simple', \(bind: query)) query
                WHERE s.search @@ query \(conditions)
                ORDER BY ts_rank(s.search, query) DESC, s.created_at DESC, s.id DESC
                LIMIT \(bind: page.limit + 1) OFFSET \(bind: offset)
                """
        } else {
            // The page is chosen from each match's rowid, rank and creation time alone, and only its rows are read
            // whole, instead of sorting every match's whole row (schemas and runners included): measured over 100
            // matches, 519 µs a search against 605 µs.
            let match = tokens.map { "\"\($0)\"*" }.joined(separator: " AND ")
            statement = """
                SELECT hit.* FROM (
                    SELECT s.rowid AS found, bm25(skills_fts, 10.0, 1.0, 5.0) AS score, s.created_at AS created
                    FROM skills_fts JOIN skills s ON s.rowid = skills_fts.rowid
                    WHERE skills_fts MATCH \(bind: match) \(conditions)
                    ORDER BY score, created DESC, found DESC
                    LIMIT \(bind: page.limit + 1) OFFSET \(bind: offset)
                ) page JOIN skills hit ON hit.rowid = page.found
                ORDER BY page.score, page.created DESC, page.found DESC
                """
        }
        // Ranking reads every match, so it never runs on the event loop.
        let rows = try await SQLiteReaders.offLoopRead(statement, readers: app.sqliteReaders, pool: app.threadPool, on: reads)
        let skills = try rows.map { try SkillResponse(row: $0) }
        let pageSkills = Array(skills.prefix(page.limit))
        let next = skills.count > page.limit ? PageRequest.encode(.init(o: offset + page.limit)) : nil
        return (try await withToolFields(pageSkills), next)
    }

    static func searchTokens(_ q: String) -> [String] {
        let tokens = q.lowercased().split { !($0.isLetter || $0.isNumber) }.map { String($0.prefix(64)) }
        return Array(tokens.prefix(10))
    }

    /// One tag as it appears inside the stored canonical JSON array (tags are stored lower-case), quotes included,
    /// so `data` does not match the tag `big-data`.
    static func tagNeedle(_ tag: String) -> String {
        JSONText.canonical(string: tag.lowercased())
    }

    /// Skills by executions in the last 30 days, most first (ties: most executions ever).
    func popular(limit: Int) async throws -> [(Skill, Int)] {
        let sql = reads as! any SQLDatabase
        let since = now.addingTimeInterval(-30 * 86_400)
        let rows = try await sql.raw("""
            SELECT skill_id, count(*) AS n FROM executions WHERE queued_at >= \(bind: since)
            GROUP BY skill_id ORDER BY n DESC LIMIT \(bind: limit)
            """).all()
        let counts = try rows.map { (try $0.decode(column: "skill_id", as: UUID.self), try $0.decode(column: "n", as: Int.self)) }
        let skills = try await Skill.query(on: reads).filter(\.$id ~~ counts.map(\.0)).listed()
        let byID = Dictionary(uniqueKeysWithValues: skills.compactMap { skill in skill.id.map { ($0, skill) } })
        return counts.compactMap { id, count in byID[id].map { ($0, count) } }
            .sorted { $0.1 == $1.1 ? $0.0.executionCount > $1.0.executionCount : $0.1 > $1.1 }
    }

    // MARK: - Favourites and stats

    func setFavorite(_ reference: String, caller: AuthenticatedCaller, on favorite: Bool) async throws {
        let skill = try await find(reference)
        let userID = caller.user.id, skillID = try skill.requireID()
        let existing = try await SkillFavorite.query(on: reads).filter(\.$user.$id == userID).filter(\.$skill.$id == skillID).first()
        if favorite, existing == nil {
            let record = SkillFavorite()
            record.id = UUID()
            record.$user.id = userID
            record.$skill.id = skillID
            record.createdAt = now
            do {
                try await app.writeTransaction { db in try await record.create(on: db) }
            } catch let error as any DatabaseError where error.isConstraintFailure {}
        } else if !favorite, let existing {
            try await app.writeTransaction { db in try await existing.delete(on: db) }
        }
    }

    func favorites(of caller: AuthenticatedCaller) async throws -> [Skill] {
        let ids = try await SkillFavorite.query(on: reads).filter(\.$user.$id == caller.user.id)
            .sort(\.$createdAt, .descending).listed().map(\.$skill.id)
        let skills = try await Skill.query(on: reads).filter(\.$id ~~ ids).listed()
        let byID = Dictionary(uniqueKeysWithValues: skills.compactMap { skill in skill.id.map { ($0, skill) } })
        return ids.compactMap { byID[$0] }
    }

    struct Stats: Content {
        var total: Int
        var enabled: Int
        var disabled: Int
        var byCategory: [String: Int]
        var topTags: [TagCount]

        struct TagCount: Content {
            var tag: String
            var count: Int
        }
    }

    func stats() async throws -> Stats {
        let skills = try await Skill.query(on: reads).all()
        var categories: [String: Int] = [:]
        var tags: [String: Int] = [:]
        for skill in skills {
            categories[skill.category, default: 0] += 1
            for tag in skill.tags { tags[tag, default: 0] += 1 }
        }
        let top = tags.sorted { $0.value == $1.value ? $0.key < $1.key : $0.value > $1.value }.prefix(20)
        let enabled = skills.filter(\.enabled).count
        return Stats(total: skills.count, enabled: enabled, disabled: skills.count - enabled, byCategory: categories,
                     topTags: top.map { Stats.TagCount(tag: $0.key, count: $0.value) })
    }

    // MARK: - Samples

    /// Five sample skills on the built-in runners; existing slugs are left alone. Returns the slugs added.
    func seedSamples() async throws -> [String] {
        let samples: [[String: JSONValue]] = [
            ["slug": "echo", "name": "Echo", "description": "Returns its input unchanged. Useful to test pipelines and permissions.",
             "category": "utilities", "tags": ["demo", "testing"], "runner": ["type": "builtin", "name": "echo"],
             "inputSchema": ["type": "object"]],
            ["slug": "wait", "name": "Wait", "description": "Sleeps for a number of seconds, reporting progress every 10%.",
             "category": "utilities", "tags": ["demo", "timing"], "runner": ["type": "builtin", "name": "sleep"],
             "inputSchema": ["type": "object", "required": ["seconds"], "properties": ["seconds": ["type": "number", "minimum": 0, "maximum": 3600]]]],
            ["slug": "always-fails", "name": "Always fails", "description": "Fails with the given message, to exercise error handling.",
             "category": "testing", "tags": ["demo", "failure"], "runner": ["type": "builtin", "name": "fail"],
             "inputSchema": ["type": "object", "properties": ["message": ["type": "string", "maxLength": 500]]]],
            ["slug": "uppercase", "name": "Upper-case text", "description": "Transforms text to upper case.",
             "category": "text", "tags": ["text", "transform"], "runner": ["type": "builtin", "name": "transform"],
             "inputSchema": ["type": "object", "required": ["text"], "properties": [
                "text": ["type": "string", "maxLength": 100_000], "operation": ["const": "uppercase"]]]],
            ["slug": "add-numbers", "name": "Add numbers", "description": "Adds a list of numbers.",
             "category": "math", "tags": ["math", "transform"], "runner": ["type": "builtin", "name": "transform"],
             "inputSchema": ["type": "object", "required": ["numbers"], "properties": [
                "numbers": ["type": "array", "items": ["type": "number"]], "operation": ["const": "sum"]]]],
        ]
        var added: [String] = []
        for sample in samples {
            guard case .string(let slug)? = sample["slug"] else { continue }
            if try await Skill.query(on: reads).filter(\.$slug == slug).count() > 0 { continue }
            _ = try await create(try Self.draft(from: sample), caller: nil, origin: .system)
            added.append(slug)
        }
        return added
    }
}
