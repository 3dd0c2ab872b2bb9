import Vapor
import StewardFormats

/// `/api/v1/auth`: accounts, logins, tokens, sessions, password reset, email verification and TOTP.
struct AuthController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        // API keys may call GET /auth/me and GET /auth/me/usage, and nothing else under /auth.
        routes.grouped("auth").grouped(RequireCaller()).get("me", use: me)
        routes.grouped("auth").grouped(FeatureGate(.analytics), RequireCaller()).get("me", "usage", use: myUsage)

        let auth = routes.grouped("auth").grouped(RequireInteractiveSession())
        auth.grouped(FeatureGate(.registration)).post("register", use: register)
        auth.post("login", use: login)
        auth.post("mfa", "verify", use: verifyMFA)
        auth.post("refresh", use: refresh)
        auth.post("password-reset", "request", use: requestPasswordReset)
        auth.post("password-reset", "confirm", use: confirmPasswordReset)
        auth.post("verify-email", "confirm", use: confirmEmail)

        let signedIn = auth.grouped(RequireCaller())
        signedIn.post("logout", use: logout)
        signedIn.patch("me", use: updateMe)
        signedIn.post("change-password", use: changePassword)
        signedIn.get("sessions", use: sessions)
        signedIn.delete("sessions", use: revokeOtherSessions)
        signedIn.delete("sessions", ":id", use: revokeSession)
        signedIn.post("verify-email", "request", use: requestEmailVerification)
        signedIn.post("mfa", "totp", "enroll", use: enrollTOTP)
        signedIn.post("mfa", "totp", "activate", use: activateTOTP)
        signedIn.delete("mfa", "totp", use: disableTOTP)
    }

    @Sendable
    func register(req: Request) async throws -> Response {
        let body = try req.content.decode(RegisterRequest.self)
        let policies = req.application.rateLimitPolicies
        try await RateLimiter(app: req.application).check(req, [(policies.register, "ip:\(req.clientIP)")], onStoreFailure: .failClosed)
        let user = try await AccountRegistration(app: req.application).register(body, origin: req.origin)
        return try await UserResponse(user).encodeResponse(status: .created, for: req)
    }

    @Sendable
    func login(req: Request) async throws -> Response {
        let body = try req.content.decode(LoginRequest.self)
        // An empty email or password is a malformed request, not a failed attempt: it must not count toward the
        // account's lockout or the rate limits.
        var problems: [FieldProblem] = []
        if body.email.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { problems.append(FieldProblem(field: "email", message: "is required")) }
        if body.password.isEmpty { problems.append(FieldProblem(field: "password", message: "is required")) }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let policies = req.application.rateLimitPolicies
        let ip = req.clientIP
        return try await Self.counted(step: "password", req) {
            try await RateLimiter(app: req.application).check(req, [
                (policies.login, "ip:\(ip)|email:\(User.normalise(email: body.email))"), (policies.loginIP, "ip:\(ip)"),
            ], onStoreFailure: .failClosed)
            switch try await PasswordLogin(app: req.application).login(body, origin: req.origin) {
            case .mfaRequired(let token):
                return (try await MFARequiredResponse(mfaRequired: true, mfaToken: token).encodeResponse(for: req), "mfa_required")
            case .signedIn(let issued):
                return (try await Self.respond(with: issued, req: req), "success")
            }
        }
    }

    /// Runs one login step and counts its outcome for `/metrics` (`steward_logins_total{step,outcome}`).
    static func counted(step: String, _ req: Request, _ body: () async throws -> (Response, String)) async throws -> Response {
        let metrics = req.application.metrics
        do {
            let (response, outcome) = try await body()
            metrics.recordLogin(step: step, outcome: outcome)
            return response
        } catch {
            let outcome = switch error {
            case AuthError.invalidCredentials: "invalid_credentials"
            case AuthError.accountLocked: "locked"
            case AuthError.invalidMFAChallenge: "invalid_mfa_token"
            case is RateLimitedError: "rate_limited"
            case let abort as any AbortError where abort.status.code < 500: "rejected"
            default: "error"
            }
            metrics.recordLogin(step: step, outcome: outcome)
            throw error
        }
    }

    @Sendable
    func verifyMFA(req: Request) async throws -> Response {
        let body = try req.content.decode(MFAVerifyRequest.self)
        return try await Self.counted(step: "mfa", req) {
            try await RateLimiter(app: req.application).check(req, [(req.application.rateLimitPolicies.mfa, "token:\(body.mfaToken)")], onStoreFailure: .failClosed)
            let issued = try await PasswordLogin(app: req.application).verifyMFA(body, origin: req.origin)
            return (try await Self.respond(with: issued, req: req), "success")
        }
    }

    @Sendable
    func refresh(req: Request) async throws -> TokenPairResponse {
        let body = try req.content.decode(RefreshRequest.self)
        return try await SessionService(app: req.application).refresh(body.refreshToken, origin: req.origin)
    }

    @Sendable
    func logout(req: Request) async throws -> Response {
        let caller = try req.caller
        try await SessionService(app: req.application).logout(caller: caller, origin: req.origin)
        let response = Response(status: .noContent)
        if caller.method == .cookie { Self.expireCookie(on: response) }
        return response
    }

    @Sendable
    func me(req: Request) async throws -> MeResponse {
        let caller = try req.caller
        return MeResponse(user: UserResponse(caller.user), roles: caller.grants.roles,
                          permissions: caller.grants.permissions.map(\.rawValue).sorted())
    }

    /// The caller's own usage (`GET /users/{id}/usage` for oneself, without users:read).
    @Sendable
    func myUsage(req: Request) async throws -> UsageResponse {
        let service = UsageService(app: req.application)
        return try await service.usage(of: try req.caller.user.id, in: try service.window(req))
    }

    @Sendable
    func updateMe(req: Request) async throws -> UserResponse {
        let caller = try req.caller
        guard case .object(let fields) = try req.content.decode(JSONValue.self) else {
            throw HTTPProblem.validation([FieldProblem(field: "body", message: "must be a JSON object")])
        }
        return UserResponse(try await AccountRegistration(app: req.application).updateProfile(user: try await caller.account(on: req.application.db), fields: fields, origin: req.origin))
    }

    @Sendable
    func changePassword(req: Request) async throws -> HTTPStatus {
        let body = try req.content.decode(ChangePasswordRequest.self)
        try await AccountRecovery(app: req.application).changePassword(body, caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func sessions(req: Request) async throws -> ListResponse<SessionResponse> {
        ListResponse(items: try await SessionService(app: req.application).sessions(of: try req.caller), nextCursor: nil)
    }

    @Sendable
    func revokeSession(req: Request) async throws -> HTTPStatus {
        let id = try req.uuidParameter("id")
        try await SessionService(app: req.application).revokeOwnSession(id: id, caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func revokeOtherSessions(req: Request) async throws -> HTTPStatus {
        try await SessionService(app: req.application).revokeOtherSessions(caller: try req.caller, origin: req.origin)
        return .noContent
    }

    @Sendable
    func requestPasswordReset(req: Request) async throws -> HTTPStatus {
        let body = try req.content.decode(PasswordResetRequest.self)
        try await Self.limitMail(req, email: body.email)
        try await AccountRecovery(app: req.application).requestPasswordReset(email: body.email, origin: req.origin)
        return .accepted
    }

    @Sendable
    func confirmPasswordReset(req: Request) async throws -> HTTPStatus {
        let body = try req.content.decode(PasswordResetConfirmRequest.self)
        try await AccountRecovery(app: req.application).confirmPasswordReset(body, origin: req.origin)
        return .noContent
    }

    @Sendable
    func requestEmailVerification(req: Request) async throws -> HTTPStatus {
        try await Self.limitMail(req, email: try req.caller.user.email)
        try await AccountRecovery(app: req.application).requestEmailVerification(caller: try req.caller, origin: req.origin)
        return .accepted
    }

    /// Mails that anyone can trigger are limited per address and per client IP, and fail closed.
    static func limitMail(_ req: Request, email: String) async throws {
        let policies = req.application.rateLimitPolicies
        try await RateLimiter(app: req.application).check(req, [
            (policies.mailEmail, "email:\(User.normalise(email: email))"), (policies.mailIP, "ip:\(req.clientIP)"),
        ], onStoreFailure: .failClosed)
    }

    @Sendable
    func confirmEmail(req: Request) async throws -> HTTPStatus {
        let body = try req.content.decode(VerifyEmailConfirmRequest.self)
        try await AccountRecovery(app: req.application).confirmEmailVerification(token: body.token, origin: req.origin)
        return .noContent
    }

    @Sendable
    func enrollTOTP(req: Request) async throws -> TOTPEnrollResponse {
        try await TOTPEnrollment(app: req.application).enrollTOTP(caller: try req.caller, origin: req.origin)
    }

    @Sendable
    func activateTOTP(req: Request) async throws -> RecoveryCodesResponse {
        let body = try req.content.decode(TOTPActivateRequest.self)
        let codes = try await TOTPEnrollment(app: req.application).activateTOTP(code: body.code, caller: try req.caller, origin: req.origin)
        return RecoveryCodesResponse(recoveryCodes: codes)
    }

    @Sendable
    func disableTOTP(req: Request) async throws -> HTTPStatus {
        let body = try req.content.decode(TOTPDisableRequest.self)
        try await TOTPEnrollment(app: req.application).disableTOTP(password: body.password, caller: try req.caller, origin: req.origin)
        return .noContent
    }

    /// The token pair, plus the session cookie when the login asked for cookie mode.
    static func respond(with issued: IssuedSession, req: Request) async throws -> Response {
        let response = try await issued.pair.encodeResponse(for: req)
        if let cookie = issued.cookieToken {
            response.cookies[SessionAuthenticator.cookieName] = HTTPCookies.Value(
                string: cookie,
                maxAge: req.application.appConfig.sessionAbsoluteTimeoutSeconds,
                path: "/", isSecure: true, isHTTPOnly: true, sameSite: .lax)
        }
        return response
    }

    static func expireCookie(on response: Response) {
        response.cookies[SessionAuthenticator.cookieName] = HTTPCookies.Value(
            string: "", expires: Date(timeIntervalSince1970: 0), maxAge: 0, path: "/", isSecure: true, isHTTPOnly: true, sameSite: .lax)
    }
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
struct JWKSController: RouteCollection {
    struct JWKSResponse: Content {
        var keys: [PublishedKey]
    }

    func boot(routes: any RoutesBuilder) throws {
        routes.get(".well-known", "jwks.json", use: show)
    }

    @Sendable
    func show(req: Request) async throws -> Response {
        let response = try await JWKSResponse(keys: req.application.keyMaterial.publishedKeys).encodeResponse(for: req)
        response.headers.replaceOrAdd(name: .cacheControl, value: "public, max-age=300")
        return response
    }
}
