import Vapor
import StewardFormats

/// `/api/v1/auth`: sign-in with identity providers, and the caller's linked identities.
struct OAuthController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let auth = routes.grouped("auth")
        auth.get("providers", use: providers)

        let flows = auth.grouped(RequireInteractiveSession())
        flows.get("oauth", ":provider", "start", use: start)
        flows.get("oauth", ":provider", "callback", use: callback)
        flows.post("oauth", "exchange", use: exchange)

        let signedIn = flows.grouped(RequireCaller())
        signedIn.post("oauth", ":provider", "link", use: link)
        signedIn.get("identities", use: identities)
        signedIn.delete("identities", ":id", use: unlink)
    }

    @Sendable
    func providers(req: Request) async throws -> ListResponse<IdentityProviderResponse> {
        let items = req.application.appConfig.oauthProviders.map { provider in
            IdentityProviderResponse(id: provider.id, name: provider.name, type: provider.id == OAuthProviderConfig.githubID ? "github" : "oidc")
        }
        return ListResponse(items: items, nextCursor: nil)
    }

    @Sendable
    func start(req: Request) async throws -> Response {
        let started = try await OAuthSignIn(app: req.application).start(providerID: try req.parameters.require("provider"), redirect: try req.query.get(String?.self, at: "redirect"),
                                           mode: .login, user: nil, origin: req.origin)
        let response = Self.found(started.authorizationURL)
        Self.setBinding(started.binding, on: response)
        return response
    }

    @Sendable
    func link(req: Request) async throws -> Response {
        let caller = try req.caller
        let body = try req.content.decode(OAuthLinkRequest.self)
        let started = try await OAuthSignIn(app: req.application).start(
            providerID: try req.parameters.require("provider"), redirect: body.redirect, mode: .link,
            user: caller.user.id, origin: req.origin)
        let response = try await OAuthLinkResponse(authorizationUrl: started.authorizationURL).encodeResponse(for: req)
        Self.setBinding(started.binding, on: response)
        return response
    }

    @Sendable
    func callback(req: Request) async throws -> Response {
        let providerID = try req.parameters.require("provider")
        let flow = OAuthSignIn(app: req.application)
        // An unknown provider is a 404 before it counts against the limit.
        _ = try flow.provider(providerID)
        let policies = req.application.rateLimitPolicies
        try await RateLimiter(app: req.application).check(req, [(policies.loginIP, "ip:\(req.clientIP)")], onStoreFailure: .failClosed)
        let query = req.url.query.map { Dictionary(FormEncoding.decode($0), uniquingKeysWith: { first, _ in first }) } ?? [:]
        let location = try await flow.callback(providerID: providerID, query: query,
                                                binding: req.cookies[OAuthSignIn.bindingCookie]?.string, origin: req.origin)
        let response = Self.found(location)
        response.cookies[OAuthSignIn.bindingCookie] = HTTPCookies.Value(
            string: "", expires: Date(timeIntervalSince1970: 0), maxAge: 0, path: "/", isSecure: true, isHTTPOnly: true, sameSite: .lax)
        return response
    }

    @Sendable
    func exchange(req: Request) async throws -> Response {
        let body = try req.content.decode(OAuthExchangeRequest.self)
        guard !body.code.isEmpty else { throw HTTPProblem.validation([FieldProblem(field: "code", message: "is required")]) }
        return try await AuthController.counted(step: "oauth", req) {
            switch try await OAuthSignIn(app: req.application).exchange(code: body.code, cookie: body.cookie ?? false, origin: req.origin) {
            case .mfaRequired(let token):
                return (try await MFARequiredResponse(mfaRequired: true, mfaToken: token).encodeResponse(for: req), "mfa_required")
            case .signedIn(let issued):
                return (try await AuthController.respond(with: issued, req: req), "success")
            }
        }
    }

    @Sendable
    func identities(req: Request) async throws -> ListResponse<IdentityResponse> {
        let items = try await OAuthSignIn(app: req.application).identities(of: try req.caller.user.id)
        return ListResponse(items: items.map(IdentityResponse.init), nextCursor: nil)
    }

    @Sendable
    func unlink(req: Request) async throws -> HTTPStatus {
        try await OAuthSignIn(app: req.application).unlink(id: try req.uuidParameter("id"), userID: try req.caller.user.id, origin: req.origin)
        return .noContent
    }

    /// 302 Found, as OAuth redirects are sent, never cached.
    private static func found(_ location: String) -> Response {
        Response(status: .found, headers: ["Location": location, "Cache-Control": "no-store"])
    }

    /// The browser's half of a pending flow: only this browser can finish it. Lax, so the provider's top-level
    /// redirect back carries it.
    private static func setBinding(_ binding: String, on response: Response) {
        response.headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        response.cookies[OAuthSignIn.bindingCookie] = HTTPCookies.Value(
            string: binding, maxAge: Int(OAuthSignIn.stateLifetime), path: "/", isSecure: true, isHTTPOnly: true, sameSite: .lax)
    }
}

/// `GET /auth/providers`: one configured identity provider.
struct IdentityProviderResponse: Content {
    var id: String
    var name: String
    /// `oidc` or `github`.
    var type: String
}

/// `POST /auth/oauth/{provider}/link`.
struct OAuthLinkRequest: Content {
    var redirect: String
}

struct OAuthLinkResponse: Content {
    var authorizationUrl: String
}

/// `POST /auth/oauth/exchange`.
struct OAuthExchangeRequest: Content {
    var code: String
    var cookie: Bool?
}

/// One of the caller's linked identities.
struct IdentityResponse: Content {
    var id: UUID
    var provider: String
    var subject: String
    var email: String?
    var emailVerified: Bool
    var linkedAt: Date
    var lastLoginAt: Date?

    init(_ identity: OAuthIdentity) {
        id = identity.id!
        provider = identity.provider
        subject = identity.subject
        email = identity.email
        emailVerified = identity.emailVerified
        linkedAt = identity.linkedAt
        lastLoginAt = identity.lastLoginAt
    }
}
