import Vapor

/// Several `AsyncMiddleware`s registered as one, each calling the next directly.
///
/// Vapor links middlewares through `EventLoopFuture`s and runs each `AsyncMiddleware` in a Task of its own, which
/// waits for the next one's future: `GET /api/v1/auth/me` went through ten middlewares and eleven Tasks, each
/// with its promise, its future and its wait. A chain runs all of its members in the one Task Vapor gives it, and
/// the route's handler too when the chain comes right before it. The members see the same request, in the same
/// order, and their errors travel the same way (a thrown error instead of a failed future).
struct MiddlewareChain: AsyncMiddleware {
    let members: [any AsyncMiddleware]

    init(_ members: any AsyncMiddleware...) {
        self.members = members
    }

    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        try await Link(members: members[...], last: next).respond(to: request)
    }

    /// Vapor's one Task for the chain. When the next responder is itself asynchronous (a route's handler with no
    /// middleware of its own), it runs in that Task too instead of one more.
    func respond(to request: Request, chainingTo next: any Responder) -> EventLoopFuture<Response> {
        let last: any AsyncResponder = next as? any AsyncResponder ?? AsyncBasicResponder { try await next.respond(to: $0).get() }
        return request.eventLoop.makeFutureWithTask { try await respond(to: request, chainingTo: last) }
    }

    /// The members from one on, then `last`.
    private struct Link: AsyncResponder {
        let members: ArraySlice<any AsyncMiddleware>
        let last: any AsyncResponder

        func respond(to request: Request) async throws -> Response {
            guard let member = members.first else { return try await last.respond(to: request) }
            return try await member.respond(to: request, chainingTo: Link(members: members.dropFirst(), last: last))
        }
    }
}

/// A middleware that only looks at the request before letting it through, with nothing to wait for: Vapor calls it
/// without a Task of its own, and it hands the request on as it came.
protocol RequestCheck: AsyncMiddleware {
    /// Throws the refusal; returns when the request may go on.
    func check(_ request: Request) throws
}

extension RequestCheck {
    func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        try check(request)
        return try await next.respond(to: request)
    }

    func respond(to request: Request, chainingTo next: any Responder) -> EventLoopFuture<Response> {
        do { try check(request) } catch { return request.eventLoop.makeFailedFuture(error) }
        return next.respond(to: request)
    }
}
