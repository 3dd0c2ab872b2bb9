import Fluent
import SQLKit
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// A developer (skills:write) and a viewer, logged in.
private func actors(_ app: Application) async throws -> (developer: String, viewer: String) {
    try await makeUser(app, email: "builder@example.com")
    _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "builder@example.com").requireID(),
                                                      roles: ["developer"], actor: .cli)
    try await makeUser(app, email: "watcher@example.com")
    return (try await login(app, email: "builder@example.com").accessToken, try await login(app, email: "watcher@example.com").accessToken)
}

private let echoSkill = #"{"slug": "echo-text", "name": "Echo text", "description": "Returns the text it is given", "category": "utilities", "tags": ["Demo", "text", "demo"], "inputSchema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "maxLength": 100}}}, "runner": {"type": "builtin", "name": "echo"}}"#

@Suite("Skills catalogue")
struct SkillControllerTests {
    @Test("Create, read by id and slug, update (version goes up), delete; audit entries and events")
    func lifecycle() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let (developer, viewer) = try await actors(app)
            let created = try await send(app, .POST, "/api/v1/skills", token: developer, json: echoSkill)
            #expect(created.status == .created)
            let skill = try created.content.decode(SkillResponse.self)
            #expect(skill.version == 1)
            #expect(skill.tags.value == ["demo", "text"])
            #expect(skill.enabled)

            #expect(try await send(app, .GET, "/api/v1/skills/echo-text", token: viewer).status == .ok)
            #expect(try await send(app, .GET, "/api/v1/skills/\(skill.id)", token: viewer).status == .ok)
            #expect(try await send(app, .GET, "/api/v1/skills/nope", token: viewer).status == .notFound)
            #expect(try await send(app, .POST, "/api/v1/skills", token: viewer, json: echoSkill).status == .forbidden)
            #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: echoSkill).status == .conflict)

            let updated = try await send(app, .PATCH, "/api/v1/skills/echo-text", token: developer, json: #"{"description": "Now better", "enabled": false}"#)
            #expect(updated.status == .ok)
            let body = try updated.content.decode(SkillResponse.self)
            #expect(body.version == 2)
            #expect(!body.enabled)

            #expect(try await send(app, .DELETE, "/api/v1/skills/\(skill.id)", token: developer).status == .noContent)
            #expect(try await send(app, .GET, "/api/v1/skills/\(skill.id)", token: viewer).status == .notFound)
            for type in ["skill.created", "skill.updated", "skill.deleted"] {
                #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == type).count() == 1, "\(type)")
                #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == type).count() == 1, "\(type)")
            }
        }
    }

    @Test("Creates committed together: a duplicate slug fails alone and leaves no trace; the others are all there")
    func batchedCreates() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let (developer, _) = try await actors(app)
            // Hold the writer so the creates queue behind it and (on SQLite) commit as one batch.
            let opened = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            let holder = Task {
                try await app.writeTransaction { _ in
                    opened.continuation.yield()
                    for await _ in release.stream { break }
                }
            }
            for await _ in opened.stream { break }
            let statuses = try await withThrowingTaskGroup(of: HTTPStatus.self) { group in
                for index in 0..<12 {
                    group.addTask {
                        let json = #"{"slug": "batch-\#(index % 8)", "name": "Batch \#(index)", "runner": {"type": "builtin", "name": "echo"}}"#
                        return try await send(app, .POST, "/api/v1/skills", token: developer, json: json).status
                    }
                }
                // And a write that records an event and an audit entry, then fails: both must go with it.
                group.addTask {
                    struct Refused: Error {}
                    do {
                        try await app.writeTransaction { db in
                            try await app.activityRecorder.record(
                                audit: AuditRecord(action: "batch.refused", actorID: nil, actorType: .system),
                                event: EventRecord(type: "batch.refused", actorID: nil, resourceType: "batch", resourceID: nil), on: db)
                            throw Refused()
                        }
                        return .ok
                    } catch is Refused {
                        return .unprocessableEntity
                    }
                }
                if let writer = app.sqliteWriter {
                    try await eventually(10, "the writes queued") { writer.waiting >= 13 }
                }
                release.continuation.yield()
                return try await group.reduce(into: [HTTPStatus]()) { $0.append($1) }
            }
            try await holder.value
            #expect(statuses.filter { $0 == .created }.count == 8)
            #expect(statuses.filter { $0 == .conflict }.count == 4)
            #expect(statuses.filter { $0 == .unprocessableEntity }.count == 1)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "batch.refused").count() == 0)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "batch.refused").count() == 0)
            #expect(try await Skill.query(on: app.db).filter(\.$slug =~ "batch-").count() == 8)
            #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "skill.created").count() == 8)
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "skill.created").count() == 8)
            // The refused ones took no number: events and audit entries stay gapless, and the chain holds.
            let seqs = try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all().map(\.seq)
            #expect(seqs == Array(1...Int64(seqs.count)))
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
            // The batch stored the heads where it left them: the next write carries on from there.
            let next = #"{"slug": "batch-next", "name": "Batch next", "runner": {"type": "builtin", "name": "echo"}}"#
            #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: next).status == .created)
            #expect(try await Event.query(on: try await app.settledLedger()).sort(\.$seq).all().map(\.seq) == Array(1...Int64(seqs.count + 1)))
            #expect(try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain).isIntact)
        }
    }

    @Test("Only the creator or an admin may change a skill")
    func ownership() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let (developer, _) = try await actors(app)
            #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: echoSkill).status == .created)
            try await makeUser(app, email: "other-dev@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "other-dev@example.com").requireID(),
                                                              roles: ["developer"], actor: .cli)
            let other = try await login(app, email: "other-dev@example.com").accessToken
            #expect(try await send(app, .PATCH, "/api/v1/skills/echo-text", token: other, json: #"{"name": "Mine now"}"#).status == .forbidden)
            #expect(try await send(app, .DELETE, "/api/v1/skills/echo-text", token: other).status == .forbidden)
            let admin = try await adminToken(app)
            #expect(try await send(app, .PATCH, "/api/v1/skills/echo-text", token: admin, json: #"{"name": "Admin edit"}"#).status == .ok)
        }
    }

    @Test("Schemas outside the supported subset, bad runners and bad fields are 422 naming the field")
    func validation() async throws {
        try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
            app.useTestDoubles()
            let (developer, _) = try await actors(app)
            let runner = #""runner": {"type": "builtin", "name": "echo"}"#
            let cases: [(String, String)] = [
                (#"{"slug": "a1", "name": "x", "inputSchema": {"type": "object", "oneOf": []}, \#(runner)}"#, "inputSchema.oneOf"),
                (#"{"slug": "a1", "name": "x", "inputSchema": {"properties": {"n": {"type": "decimal"}}}, \#(runner)}"#, "inputSchema.properties.n.type"),
                (#"{"slug": "a1", "name": "x", "inputSchema": {"properties": {"n": {"pattern": "(["}}}, \#(runner)}"#, "inputSchema.properties.n.pattern"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "builtin", "name": "rm-rf"}}"#, "runner.name"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "shell", "command": "ls"}}"#, "runner.type"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "http://169.254.169.254/latest"}}"#, "runner.url"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "http://2130706433/"}}"#, "runner.url"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "http://0x7f.1/"}}"#, "runner.url"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "http://user:pw@example.com/"}}"#, "runner.url"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "https://example.com", "headers": {"Host": "evil"}}}"#, "runner.headers.Host"),
                (#"{"slug": "a1", "name": "x", "runner": {"type": "http", "url": "https://example.com", "timeoutSeconds": 9999}}"#, "runner.timeoutSeconds"),
                (#"{"slug": "Bad Slug!", "name": "x", \#(runner)}"#, "slug"),
                (#"{"slug": "a1", "name": "", \#(runner)}"#, "name"),
                (#"{"slug": "a1", "name": "x", "tags": [1, 2], \#(runner)}"#, "tags"),
                (#"{"slug": "a1", "name": "x", "id": "abc", \#(runner)}"#, "id"),
                (#"{"slug": "a1", "name": "x"}"#, "runner"),
            ]
            for (body, field) in cases {
                let res = try await send(app, .POST, "/api/v1/skills", token: developer, json: body)
                #expect(res.status == .unprocessableEntity, "\(body) gave \(res.status)")
                #expect(try res.problem().errors?.contains { $0.field == field } == true, "\(body): \(res.body.string)")
            }
            // The allow-list opens a loopback runner; a non-canonical spelling stays refused.
            let allowed = try await send(app, .POST, "/api/v1/skills", token: developer,
                                         json: #"{"slug": "local", "name": "Local", "runner": {"type": "http", "url": "http://127.0.0.1:9/run", "headers": {"Authorization": "Bearer secret-value"}}}"#)
            #expect(allowed.status == .created)
            #expect(!allowed.body.string.contains("secret-value"), "runner header values are never returned")
            #expect(try await Skill.query(on: app.db).count() == 1)
        }
    }

    @Test("Search pages through many matches in rank order, whole items, with category and tag filters")
    func searchPages() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let (developer, viewer) = try await actors(app)
            // Even skills have "report" in their name, odd ones only in their description: names rank first.
            for n in 0..<30 {
                let name = n.isMultiple(of: 2) ? "Report \(n)" : "Tool \(n)"
                let description = n.isMultiple(of: 2) ? "Number \(n)" : "Writes a report, number \(n)"
                let body = #"{"slug": "s-\#(n)", "name": "\#(name)", "description": "\#(description)", "category": "\#(n % 3 == 0 ? "ops" : "data")", "tags": ["\#(n % 4 == 0 ? "four" : "other")"], "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": \#(n)}}}, "runner": {"type": "builtin", "name": "echo"}}"#
                #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: body).status == .created)
            }
            func page(_ query: String) async throws -> ListResponse<SkillResponse> {
                let res = try await send(app, .GET, "/api/v1/skills?\(query)", token: viewer)
                #expect(res.status == .ok, "\(query) gave \(res.status): \(res.body.string)")
                return try res.content.decode(ListResponse<SkillResponse>.self)
            }
            func all(_ query: String, limit: Int) async throws -> [SkillResponse] {
                var items: [SkillResponse] = [], cursor: String? = nil
                for _ in 0..<40 {
                    let next = try await page("\(query)&limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? ""))
                    items += next.items
                    cursor = next.nextCursor
                    if cursor == nil { break }
                }
                #expect(cursor == nil, "the cursor ends")
                return items
            }
            if !TestDatabase.isPostgres {
                // Thirty writes leave few index segments for a search to read (15 with FTS5's default merging).
                let segments = try await (app.db as! any SQLDatabase).raw("SELECT count(DISTINCT segid) AS n FROM skills_fts_idx")
                    .first()?.decode(column: "n", as: Int.self)
                #expect((segments ?? 99) <= 5, "\(segments ?? -1) segments")
            }
            let whole = try await page("q=report&limit=100").items
            #expect(whole.count == 30)
            #expect(Set(whole.prefix(15).map(\.slug)) == Set((0..<15).map { "s-\($0 * 2)" }), "name matches first")
            // Every item is the whole skill, as a read by slug gives it.
            let read = JSONValue.parse(try await send(app, .GET, "/api/v1/skills/s-4", token: viewer).body.string)
            guard case .object(let list) = JSONValue.parse(try await send(app, .GET, "/api/v1/skills?q=report&limit=100", token: viewer).body.string),
                  case .array(let items)? = list["items"] else { Issue.record("no items"); return }
            #expect(items.first { if case .object(let item) = $0 { item["slug"] == .string("s-4") } else { false } } == read)
            // Pages of 7 give the same items in the same order, each once.
            #expect(try await all("q=report", limit: 7).map(\.slug) == whole.map(\.slug))
            // A cursor changed by the client to a negative offset reads the first page.
            let edited = PageRequest.encode(.init(o: -7))
            #expect(try await page("q=report&limit=3&cursor=\(edited)").items.map(\.slug) == whole.prefix(3).map(\.slug))
            // Filters keep the rank order and page the same way.
            let ops = whole.filter { $0.category == "ops" }.map(\.slug)
            #expect(ops.count == 10)
            #expect(try await all("q=report&category=ops", limit: 3).map(\.slug) == ops)
            let four = whole.filter { $0.tags.value == ["four"] }.map(\.slug)
            #expect(four.count == 8)
            #expect(try await all("q=report&tag=four", limit: 5).map(\.slug) == four)
            #expect(try await page("q=report%20number%203").items.map(\.slug) == ["s-3"])
        }
    }

    @Test("Full-text search ranks by relevance, and hostile q never fails")
    func search() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let (developer, viewer) = try await actors(app)
            let skills = [
                #"{"slug": "pdf-summary", "name": "Summarise PDF", "description": "Reads a document and writes a summary", "tags": ["pdf", "ai"], "runner": {"type": "builtin", "name": "echo"}}"#,
                #"{"slug": "translate", "name": "Translate text", "description": "Translates text; can summarise on the way", "tags": ["language"], "runner": {"type": "builtin", "name": "echo"}}"#,
                #"{"slug": "resize-image", "name": "Resize image", "description": "Makes images smaller", "category": "media", "tags": ["image"], "runner": {"type": "builtin", "name": "echo"}}"#,
            ]
            for body in skills { #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: body).status == .created) }

            func slugs(_ query: String) async throws -> [String] {
                let res = try await send(app, .GET, "/api/v1/skills?\(query)", token: viewer)
                #expect(res.status == .ok, "\(query) gave \(res.status): \(res.body.string)")
                return try res.content.decode(ListResponse<SkillResponse>.self).items.map(\.slug)
            }
            // The name match outranks the description match.
            #expect(try await slugs("q=summar") == ["pdf-summary", "translate"])
            #expect(try await slugs("q=pdf") == ["pdf-summary"])
            #expect(try await slugs("q=IMAGE") == ["resize-image"])
            #expect(try await slugs("q=summarise%20pdf") == ["pdf-summary"])
            #expect(try await slugs("category=media") == ["resize-image"])
            #expect(try await slugs("tag=ai") == ["pdf-summary"])
            for hostile in ["%22", "*", "-", "%22pdf%22%20OR", "'%3B%20DROP%20TABLE%20skills%3B--", "NEAR(a%20b)", "pdf*%22%22", "%25", "_", "%5C"] {
                _ = try await slugs("q=\(hostile)")
            }
            #expect(try await Skill.query(on: app.db).count() == 3)

            // Paging through ranked results.
            let first = try (try await send(app, .GET, "/api/v1/skills?q=summar&limit=1", token: viewer)).content.decode(ListResponse<SkillResponse>.self)
            let cursor = try #require(first.nextCursor)
            let second = try (try await send(app, .GET, "/api/v1/skills?q=summar&limit=1&cursor=\(cursor)", token: viewer)).content.decode(ListResponse<SkillResponse>.self)
            #expect(first.items.map(\.slug) + second.items.map(\.slug) == ["pdf-summary", "translate"])

            // Search follows updates and deletes.
            #expect(try await send(app, .PATCH, "/api/v1/skills/translate", token: developer, json: #"{"name": "Convert language"}"#).status == .ok)
            #expect(try await slugs("q=convert") == ["translate"])
            // Running a skill counts on its row without touching the index; the index stays whole either way.
            #expect(try await send(app, .POST, "/api/v1/executions", token: developer, json: #"{"skillId": "translate", "input": {}}"#).status == .accepted)
            #expect(try await send(app, .PATCH, "/api/v1/skills/translate", token: developer, json: #"{"tags": ["words"]}"#).status == .ok)
            #expect(try await slugs("q=words") == ["translate"])
            if !TestDatabase.isPostgres {
                try await app.writeStatements { sql in
                    try await sql.raw("INSERT INTO skills_fts(skills_fts, rank) VALUES ('integrity-check', 1)").run()
                }
            } else {
                // Written straight into the index, not left in a pending list that every search would read whole.
                let options = try await (app.db as! any SQLDatabase)
                    .raw("SELECT coalesce(array_to_string(reloptions, ','), '') AS options FROM pg_class WHERE relname = 'skills_search_idx'")
                    .first()?.decode(column: "options", as: String.self)
                #expect(options == "fastupdate=off")
            }
            #expect(try await send(app, .DELETE, "/api/v1/skills/pdf-summary", token: developer).status == .noContent)
            #expect(try await slugs("q=pdf") == [])
        }
    }

    @Test("Paging newest first neither skips nor repeats rows created within the same millisecond")
    func pagingWithinOneMillisecond() async throws {
        try await withTestApp { app in
            let clock = TestClock(Date(timeIntervalSince1970: 1_795_000_000.1234))
            app.useTestDoubles(clock: clock)
            let (developer, viewer) = try await actors(app)
            for index in 0..<3 {
                #expect(try await send(app, .POST, "/api/v1/skills", token: developer,
                                       json: #"{"slug": "s\#(index)", "name": "S\#(index)", "runner": {"type": "builtin", "name": "echo"}}"#).status == .created)
                clock.advance(by: 0.0002)
            }
            var seen: [String] = []
            var cursor: String?
            repeat {
                let page = try (try await send(app, .GET, "/api/v1/skills?limit=1" + (cursor.map { "&cursor=\($0)" } ?? ""), token: viewer))
                    .content.decode(ListResponse<SkillResponse>.self)
                seen += page.items.map(\.slug)
                cursor = page.nextCursor
            } while cursor != nil && seen.count < 10
            #expect(seen == ["s2", "s1", "s0"])
        }
    }

    @Test("Favourites, stats and the sample seed")
    func favoritesStatsSeed() async throws {
        try await withTestApp { app in
            let (_, clock) = app.useTestDoubles()
            let (_, viewer) = try await actors(app)
            let output = try await app.runCommand(["seed", "--samples"])
            #expect(output.contains("added echo, wait, always-fails, uppercase, add-numbers"))
            #expect(try await app.runCommand(["seed", "--samples"]).contains("already there"))

            #expect(try await send(app, .POST, "/api/v1/skills/wait/favorite", token: viewer).status == .noContent)
            #expect(try await send(app, .POST, "/api/v1/skills/wait/favorite", token: viewer).status == .noContent)
            clock.advance(by: 1)
            #expect(try await send(app, .POST, "/api/v1/skills/echo/favorite", token: viewer).status == .noContent)
            let favorites = try (try await send(app, .GET, "/api/v1/skills/favorites", token: viewer)).content.decode(ListResponse<SkillResponse>.self)
            #expect(favorites.items.map(\.slug) == ["echo", "wait"])
            #expect(try await send(app, .DELETE, "/api/v1/skills/wait/favorite", token: viewer).status == .noContent)
            #expect(try await send(app, .POST, "/api/v1/skills/nothing/favorite", token: viewer).status == .notFound)

            let stats = try (try await send(app, .GET, "/api/v1/skills/stats", token: viewer)).content.decode(SkillService.Stats.self)
            #expect(stats.total == 5)
            #expect(stats.enabled == 5)
            #expect(stats.byCategory["utilities"] == 2)
            #expect(stats.topTags.first?.tag == "demo")
        }
    }
}

@Suite("Schema patterns")
struct SchemaPatternTests {
    @Test("Patterns that repeat a group holding an unbounded quantifier are refused at save; others pass", arguments: [
        ("(a+)+$", true), ("(a*)*", true), ("^(?:ab+)*c$", true), ("((a)+)+", true), ("(a+){2,}", true), ("(x|y+)+?", true),
        ("^[a-z]+$", false), ("(ab)+", false), ("(a|b)*", false), ("\\(a+\\)+", false), ("[(a+)]+", false), ("(a+){1,3}", false),
        ("^\\d{3}-\\d{4}$", false),
    ])
    func nestedQuantifiers(pattern: String, refused: Bool) {
        #expect(SchemaPatterns.hasNestedUnboundedQuantifier(pattern) == refused, "\(pattern)")
    }

    // The 100 ms figure holds on a quiet server and is checked there, by the black-box walk
    // (scripts/conformance_walk.py); under this suite's parallel load a request's wall time is not the matcher's.
    // Unbounded, either pattern backtracks on this input for longer than the test would ever wait.
    @Test("A backtracking pattern and a 10 KB input: the execution is refused as a 422 at once, saved before the check or not")
    func hostilePatternIsBounded() async throws {
        try await withTestApp { app in
            let (developer, _) = try await actors(app)
            // (a|aa)* passes the save check (no nested quantifier) but backtracks exponentially.
            let saved = try await send(app, .POST, "/api/v1/skills", token: developer, json: #"{"slug": "fib", "name": "Fib", "inputSchema": {"properties": {"text": {"type": "string", "pattern": "^(a|aa)*$"}}}, "runner": {"type": "builtin", "name": "echo"}}"#)
            #expect(saved.status == .created)
            let refused = try await send(app, .POST, "/api/v1/skills", token: developer, json: #"{"slug": "nested", "name": "Nested", "inputSchema": {"properties": {"text": {"pattern": "(a+)+$"}}}, "runner": {"type": "builtin", "name": "echo"}}"#)
            #expect(refused.status == .unprocessableEntity)
            #expect(try refused.problem().errors?.first?.field == "inputSchema.properties.text.pattern")
            // A skill saved before the check existed, with the textbook hostile pattern.
            #expect(try await send(app, .POST, "/api/v1/skills", token: developer, json: #"{"slug": "legacy", "name": "Legacy", "runner": {"type": "builtin", "name": "echo"}}"#).status == .created)
            try await app.writeStatements { sql in
                try await sql.raw(#"UPDATE skills SET input_schema = '{"properties":{"text":{"pattern":"(a+)+$"}}}' WHERE slug = 'legacy'"#).run()
            }
            let hostile = String(repeating: "a", count: 10_000) + "!"
            for (slug, pattern) in [("fib", "^(a|aa)*$"), ("legacy", "(a+)+$")] {
                let started = ContinuousClock.now
                let res = try await send(app, .POST, "/api/v1/executions", token: developer, json: #"{"skillId": "\#(slug)", "input": {"text": "\#(hostile)"}}"#)
                let elapsed = ContinuousClock.now - started
                #expect(res.status == .unprocessableEntity, "\(slug): \(res.status)")
                #expect(try res.problem().errors?.first == FieldProblem(field: "input.text", message: "could not be matched against \(pattern) in time"))
                #expect(elapsed < .seconds(2), "\(slug) took \(elapsed)")
            }
            // A string past the matching cap is refused without running the pattern; a short one still matches.
            let long = String(repeating: "a", count: SchemaPatterns.maximumInputLength + 1)
            let tooLong = try await send(app, .POST, "/api/v1/executions", token: developer, json: #"{"skillId": "fib", "input": {"text": "\#(long)"}}"#)
            #expect(try tooLong.problem().errors?.first?.message.contains("at most 16384 characters") == true)
            #expect(try await send(app, .POST, "/api/v1/executions", token: developer, json: #"{"skillId": "fib", "input": {"text": "aaaa"}}"#).status == .accepted)
        }
    }
}

@Suite("JSON Schema subset")
struct JSONSchemaSubsetTests {
    private let schema: JSONValue = [
        "type": "object", "required": ["name", "tags"], "additionalProperties": false,
        "properties": [
            "name": ["type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"],
            "age": ["type": "integer", "minimum": 0, "maximum": 150],
            "role": ["enum": ["admin", "user"]],
            "tags": ["type": "array", "items": ["type": "string"]],
            "address": ["type": "object", "properties": ["city": ["type": "string"]], "required": ["city"]],
        ],
    ]

    @Test("A valid instance has no problems")
    func valid() {
        #expect(JSONSchemaSubset.validate(["name": "ada", "age": 36, "role": "admin", "tags": ["x"], "address": ["city": "London"]], against: schema).isEmpty)
    }

    @Test("Each broken rule is one problem at its path")
    func problems() {
        let found = JSONSchemaSubset.validate([
            "name": "A1", "age": .number(36.5), "role": "king", "tags": ["x", 3], "address": [:], "extra": true,
        ], against: schema)
        let fields = Set(found.map { $0.field })
        #expect(fields == ["input.name", "input.age", "input.role", "input.tags[1]", "input.address.city", "input.extra"])
        #expect(JSONSchemaSubset.validate(["tags": []], against: schema).map(\.field) == ["input.name"])
        #expect(JSONSchemaSubset.validate("text", against: schema).first?.message == "must be an object")
    }
}

@Suite("Outbound guard")
struct OutboundGuardTests {
    @Test("Private, loopback, link-local, CGNAT, IPv6 special and encoded forms are refused", arguments: [
        "http://127.0.0.1/", "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/", "http://169.254.169.254/",
        "http://100.64.0.1/", "http://0.0.0.0/", "http://224.0.0.1/", "http://255.255.255.255/", "http://192.0.2.10/",
        "http://[::1]/", "http://[fd00::1]/", "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://[::]/",
        "http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0177.0.0.1/", "http://localhost/",
        "http://app.localhost/", "ftp://example.com/", "http://user:pw@example.com/", "file:///etc/passwd",
        // IPv6 forms that carry a private or special IPv4 address: IPv4-compatible, IPv4-mapped, NAT64, 6to4, and
        // Teredo (client address inverted in the last 32 bits: ~f5ff:fffe is 10.0.0.1; server 127.0.0.1).
        "http://[::127.0.0.1]/", "http://[::10.0.0.1]/", "http://[::a9fe:a9fe]/", "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::10.0.0.1]/", "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::1]/", "http://[2002:c0a8:101::1]/",
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "http://[2001:0:7f00:1:8000:63bf:a247:27dd]/",
    ])
    func refused(url: String) {
        #expect(OutboundGuard(allowed: [], httpsOnly: false).refusal(for: url) != nil, "\(url) was allowed")
    }

    @Test("Public addresses and names pass; the allow-list opens hosts and CIDRs but never encoded forms")
    func allowed() {
        let open = OutboundGuard(allowed: [], httpsOnly: false)
        #expect(open.refusal(for: "https://example.com/hook") == nil)
        #expect(open.refusal(for: "http://93.184.216.34:8080/x") == nil)
        #expect(open.refusal(for: "https://[2606:4700::1]/") == nil)
        // The same forms carrying a public address (93.184.216.34) are judged by it, and pass.
        for url in ["http://[::ffff:93.184.216.34]/", "http://[64:ff9b::5db8:d822]/", "http://[2002:5db8:d822::1]/",
                    "http://[2001:0:4136:e378:8000:63bf:a247:27dd]/"] {
            #expect(open.refusal(for: url) == nil, "\(url) was refused")
        }
        // Other special IPv6 blocks stay refused whatever they look like inside.
        #expect(open.refusal(for: "http://[64:ff9b:1::5db8:d822]/") != nil)
        #expect(open.refusal(for: "http://[2001:db8::5db8:d822]/") != nil)
        let local = OutboundGuard(allowed: ["127.0.0.1", "10.0.0.0/8", "localhost"], httpsOnly: false)
        #expect(local.refusal(for: "http://127.0.0.1:9000/") == nil)
        #expect(local.refusal(for: "http://10.20.30.40/") == nil)
        #expect(local.refusal(for: "http://localhost:3000/") == nil)
        #expect(local.refusal(for: "http://127.1/") != nil)
        #expect(local.refusal(for: "http://2130706433/") != nil)
        #expect(local.refusal(for: "http://192.168.0.1/") != nil)
        #expect(local.refusal(for: "http://[::ffff:127.0.0.1]/") == nil, "the allow-list opens an address in any form")
        #expect(local.refusal(for: "http://[::ffff:192.168.0.1]/") != nil)
        #expect(OutboundGuard(allowed: [], httpsOnly: true).refusal(for: "http://example.com/") != nil)
    }
}
