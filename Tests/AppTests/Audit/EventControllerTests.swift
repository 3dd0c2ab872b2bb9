import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

@Suite("GET /api/v1/events")
struct EventControllerTests {
    private func events(_ app: Application, token: String, _ query: String = "") async throws -> ListResponse<EventResponse> {
        let res = try await app.testing().sendRequest(.GET, "/api/v1/events?\(query)", headers: ["Authorization": "Bearer \(token)"])
        #expect(res.status == .ok, "\(res.body.string)")
        return try res.content.decode(ListResponse<EventResponse>.self)
    }

    @Test("Oldest first, filtered to the caller's own resources; types, resourceId and after narrow it; admins see all")
    func visibility() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            for email in ["alice@example.com", "bob@example.com"] {
                try await makeUser(app, email: email)
                _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: email).requireID(), roles: ["executor"], actor: .cli)
            }
            let alice = try await login(app, email: "alice@example.com").accessToken
            let bob = try await login(app, email: "bob@example.com").accessToken
            let created = try await app.testing().sendRequest(.POST, "/api/v1/executions",
                headers: ["Authorization": "Bearer \(alice)", "Content-Type": "application/json"], body: .init(string: #"{"skillId": "echo", "input": {}}"#))
            let execution = try created.content.decode(ExecutionResponse.self)
            try await drainJobs(app)

            let mine = try await events(app, token: alice, "types=execution.*")
            #expect(mine.items.map(\.type) == ["execution.queued", "execution.running", "execution.progress", "execution.succeeded"])
            #expect(mine.items.map(\.seq) == mine.items.map(\.seq).sorted())
            #expect(try await events(app, token: bob, "types=execution.*").items.isEmpty, "Bob never sees Alice's execution")

            let after = try #require(mine.items.first?.seq)
            #expect(try await events(app, token: alice, "types=execution.*&after=\(after)").items.count == 3)
            #expect(try await events(app, token: alice, "resourceId=\(execution.id.uuidString.lowercased())").items.count == 4)
            // Skill events are public to skills:read holders.
            #expect(try await events(app, token: bob, "types=skill.created").items.count == 5)

            let admin = try await adminToken(app)
            #expect(try await events(app, token: admin, "types=execution.succeeded").items.count == 1)

            let page = try await events(app, token: alice, "types=execution.*&limit=2")
            #expect(page.items.count == 2)
            let next = try #require(page.nextCursor)
            let rest = try await events(app, token: alice, "types=execution.*&limit=2&cursor=\(next)")
            #expect(rest.items.map(\.type) == ["execution.progress", "execution.succeeded"])

            for bad in ["after=-1", "after=abc", "types=DROP%20TABLE", "limit=0"] {
                let res = try await app.testing().sendRequest(.GET, "/api/v1/events?\(bad)", headers: ["Authorization": "Bearer \(alice)"])
                #expect(res.status == .unprocessableEntity, "\(bad)")
            }
            #expect(try await app.testing().sendRequest(.GET, "/api/v1/events").status == .unauthorized)
        }
    }

    @Test("Each write is in the audit log and the event log on the very next request, numbered in order, empty pages included")
    func readYourWrites() async throws {
        try await withTestApp { app in
            try await makeUser(app, email: "admin@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "admin@example.com").requireID(),
                                                              roles: ["admin"], actor: .cli)
            let token = try await login(app, email: "admin@example.com").accessToken
            let auth: HTTPHeaders = ["Authorization": "Bearer \(token)", "Content-Type": "application/json"]
            var lastAudit: Int64 = 0, lastEvent: Int64 = 0
            for index in 0..<12 {
                let created = try await app.testing().sendRequest(.POST, "/api/v1/skills", headers: auth, body: .init(string: """
                    {"slug": "ryw-\(index)", "name": "Read \(index)", "description": "d", "category": "ops", "runner": {"type": "builtin", "name": "echo"}}
                    """))
                #expect(created.status == .created, "\(created.body.string)")
                let id = try created.content.decode(SkillResponse.self).id.lowercasedString
                // On PostgreSQL the entry is numbered after commit; the next read must still include it.
                let audit = try await app.testing().sendRequest(.GET, "/api/v1/audit-logs?limit=1", headers: auth)
                let newest = try #require(try audit.content.decode(ListResponse<AuditLogController.Entry>.self).items.first)
                #expect(newest.action == "skill.created" && newest.resourceId == id, "write \(index): \(audit.body.string)")
                #expect(newest.seq > lastAudit)
                lastAudit = newest.seq
                let page = try await events(app, token: token, "after=\(lastEvent)&types=skill.*")
                let event = try #require(page.items.last, "write \(index): no event after \(lastEvent)")
                #expect(event.type == "skill.created" && event.resourceId == id && page.items.count == 1)
                #expect(page.nextCursor == nil)
                lastEvent = event.seq
                // Nothing after the newest: an empty page, with no cursor.
                let none = try await events(app, token: token, "after=\(lastEvent)&types=skill.*")
                #expect(none.items.isEmpty && none.nextCursor == nil)
            }
        }
    }

    @Test("Stored event data nested as deep as the parser reads (511 levels) is served, not a 500")
    func deepEventData() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            let admin = try await adminToken(app)
            var deep: JSONValue = "bottom"
            for _ in 0..<510 { deep = .array([deep]) }
            try await app.writeEvent("execution.progress", owner: nil, data: ["deep": deep])
            let res = try await app.testing().sendRequest(.GET, "/api/v1/events?types=execution.progress", headers: ["Authorization": "Bearer \(admin)"])
            #expect(res.status == .ok, "\(res.body.string.prefix(300))")
            #expect(res.body.string.contains("bottom"))
        }
    }
}
