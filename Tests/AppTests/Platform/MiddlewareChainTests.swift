import NIOConcurrencyHelpers
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Middleware chain")
struct MiddlewareChainTests {
    /// Notes its name on the way in and out, and turns an error from further in into a 418 when asked to.
    struct Recorder: AsyncMiddleware {
        let name: String
        let log: NIOLockedValueBox<[String]>
        var tasks = NIOLockedValueBox<[Int]>([])
        var catches = false

        func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
            log.withLockedValue { $0.append("in \(name)") }
            if name == "a" { tasks.withLockedValue { $0.append(MiddlewareChainTests.currentTask()) } }
            do {
                let response = try await next.respond(to: request)
                log.withLockedValue { $0.append("out \(name)") }
                response.headers.add(name: "X-Seen", value: name)
                return response
            } catch where catches {
                log.withLockedValue { $0.append("caught \(name): \(error)") }
                return Response(status: .imATeapot)
            }
        }
    }

    static func currentTask() -> Int { withUnsafeCurrentTask { $0?.hashValue ?? 0 } }

    /// Lets a request through only with `X-Pass`.
    struct Check: RequestCheck {
        func check(_ request: Request) throws {
            guard request.headers.first(name: "X-Pass") != nil else { throw Abort(.forbidden) }
        }
    }

    @Test("Members run in their order around the handler, a check refuses before it, and an error reaches the members outside it")
    func order() async throws {
        let app = try await Application.make(.testing)
        let log = NIOLockedValueBox<[String]>([])
        let tasks = NIOLockedValueBox<[Int]>([])
        app.middleware = Middlewares()
        app.middleware.use(MiddlewareChain(Recorder(name: "a", log: log, tasks: tasks, catches: true), Recorder(name: "b", log: log)))
        let inner = app.grouped(MiddlewareChain(Recorder(name: "c", log: log), Check()))
        inner.get("ok") { _ in log.withLockedValue { $0.append("handler") }; return "fine" }
        inner.get("fails") { _ -> String in throw Abort(.conflict) }
        app.get("bare") { _ async in
            log.withLockedValue { $0.append("bare handler") }
            tasks.withLockedValue { $0.append(Self.currentTask()) }
            return "bare"
        }

        try await app.testing().test(.GET, "ok", headers: ["X-Pass": "1"]) { res in
            #expect(res.status == .ok)
            #expect(res.body.string == "fine")
            #expect(res.headers[canonicalForm: "X-Seen"] == ["c", "b", "a"])
        }
        #expect(log.withLockedValue { $0 } == ["in a", "in b", "in c", "handler", "out c", "out b", "out a"])

        log.withLockedValue { $0 = [] }
        try await app.testing().test(.GET, "ok") { res in #expect(res.status == .imATeapot) }
        #expect(log.withLockedValue { $0 } == ["in a", "in b", "in c", "caught a: Abort.403: Forbidden"])

        log.withLockedValue { $0 = [] }
        try await app.testing().test(.GET, "fails", headers: ["X-Pass": "1"]) { res in #expect(res.status == .imATeapot) }
        #expect(log.withLockedValue { $0 } == ["in a", "in b", "in c", "caught a: Abort.409: Conflict"])

        // An async handler right after a chain (here a route without middleware of its own) runs in the chain's Task.
        log.withLockedValue { $0 = [] }
        tasks.withLockedValue { $0 = [] }
        try await app.testing().test(.GET, "bare") { res in #expect(res.body.string == "bare") }
        #expect(log.withLockedValue { $0 } == ["in a", "in b", "bare handler", "out b", "out a"])
        let seen = tasks.withLockedValue { $0 }
        #expect(seen.count == 2 && seen[0] != 0 && seen[0] == seen[1])
        try await app.asyncShutdown()
    }
}
