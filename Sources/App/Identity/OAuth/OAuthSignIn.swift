import Crypto
import Fluent
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// Sign-in with an identity provider (OpenID Connect, or GitHub's OAuth 2.0), and linking identities to accounts.
///
/// 1. `start` stores a single-use state (10 minutes) with a nonce, a PKCE verifier, where to return and the hash
///    of a secret the browser keeps in a short-lived `__Host-` cookie, and sends the browser to the provider.
/// 2. `callback` accepts the provider's answer only with that state and that browser's cookie, exchanges the code
///    (with the verifier), verifies the identity, and decides who it is (`resolve`). A login returns to the
///    allowed URL with a one-time code, carrying the account or the problem; a link returns with `linked` or
///    `error`.
/// 3. `exchange` turns the code into the usual login answer: tokens, or an MFA challenge. Tokens never travel in
///    a URL.
///
/// An unknown identity whose email belongs to an account is never linked by that email: that is the takeover
/// route. The person signs in with their password and links the identity from their account.
struct OAuthSignIn: IdentityService {
    static let stateLifetime: TimeInterval = 10 * 60
    static let codeLifetime: TimeInterval = 60
    static let bindingCookie = "__Host-steward_oauth"

    let app: Application

    // MARK: Providers and redirects

    func provider(_ id: String) throws -> OAuthProviderConfig {
        guard let provider = config.oauthProviders.first(where: { $0.id == id }) else { throw OAuthError.unknownProvider }
        return provider
    }

    /// Exact match with an entry of `STEWARD_OAUTH_REDIRECT_URLS`.
    func isAllowed(redirect: String) -> Bool {
        config.oauthRedirectURLs.contains(redirect)
    }

    /// Where the provider sends the browser back: registered at the provider as the redirect URI.
    func callbackURL(_ provider: OAuthProviderConfig) -> String {
        config.publicURL + "/api/v1/auth/oauth/\(provider.id)/callback"
    }

    // MARK: Start

    struct Started {
        var authorizationURL: String
        /// The secret for the binding cookie.
        var binding: String
    }

    func start(providerID: String, redirect: String?, mode: OAuthState.Mode, user: UUID?, origin: RequestOrigin) async throws -> Started {
        let provider = try self.provider(providerID)
        guard let redirect, isAllowed(redirect: redirect) else { throw OAuthError.redirectNotAllowed }
        let endpoint: String
        switch provider.kind {
        case .openIDConnect(let issuer):
            endpoint = try await app.oauthProviderDirectory.metadata(for: provider, issuer: issuer).authorizationEndpoint
        case .github(let authorizationURL, _, _):
            endpoint = authorizationURL
        }

        let nonce = SecureToken.generate()
        let verifier = SecureToken.generate(bytes: 48)
        let binding = SecureToken.generate()
        let state = OAuthState()
        state.provider = provider.id
        state.mode = mode
        state.userID = user
        state.nonce = nonce
        state.codeVerifier = try app.secretBox.seal(verifier)
        state.redirectURL = redirect
        state.bindingHash = SecureToken.hash(binding)
        let now = self.now
        let rawState = try await app.writeTransaction { db in
            try await HashedTokens.issue(state, now: now, expiresAt: now.addingTimeInterval(Self.stateLifetime), on: db)
        }

        var query: [(String, String)] = [
            ("response_type", "code"), ("client_id", provider.clientID), ("redirect_uri", callbackURL(provider)),
            ("scope", provider.scopes.joined(separator: " ")), ("state", rawState),
            ("code_challenge", SecureToken.base64URL(Data(SHA256.hash(data: Data(verifier.utf8))))), ("code_challenge_method", "S256"),
        ]
        if case .openIDConnect = provider.kind { query.append(("nonce", nonce)) }
        let separator = endpoint.contains("?") ? "&" : "?"
        return Started(authorizationURL: endpoint + separator + FormEncoding.encode(query), binding: binding)
    }

    // MARK: Callback

    /// Handles the provider's answer and returns where to send the browser. Throws `OAuthError.invalidState`
    /// (before anything else is trusted) when the state or the browser does not match.
    func callback(providerID: String, query: [String: String], binding: String?, origin: RequestOrigin) async throws -> String {
        let provider = try self.provider(providerID)
        let state = try await claimState(query["state"], provider: provider, binding: binding, origin: origin)
        let now = self.now

        do {
            let identity = try await verifiedIdentity(provider: provider, query: query, state: state)
            switch state.mode {
            case .link:
                let linked = try await link(identity, provider: provider, userID: state.userID, origin: origin)
                return Self.append([("linked", provider.id), ("identity", linked.lowercasedString)], to: state.redirectURL)
            case .login:
                let code = try await login(identity, provider: provider, origin: origin)
                return Self.append([("code", code)], to: state.redirectURL)
            }
        } catch let error as OAuthError {
            try await auditFailure(provider: provider, reason: error.code, detail: error.reason, user: state.userID, origin: origin)
            return try await failureRedirect(error, state: state, provider: provider, now: now)
        }
    }

    /// Reads the state, checks it is this provider's, live and this browser's, then uses it up.
    private func claimState(_ raw: String?, provider: OAuthProviderConfig, binding: String?, origin: RequestOrigin) async throws -> OAuthState {
        guard let raw, !raw.isEmpty, raw.utf8.count <= 512,
              let state = try await HashedTokens.find(OAuthState.self, raw: raw, on: reads).first()
        else {
            try await auditFailure(provider: provider, reason: "invalid_oauth_state", detail: "unknown state", user: nil, origin: origin)
            throw OAuthError.invalidState
        }
        let reason: String? =
            if state.usedAt != nil { "state already used" }
            else if state.expiresAt <= now { "state expired" }
            else if state.provider != provider.id { "state of another provider" }
            else if binding == nil || binding!.isEmpty { "no binding cookie" }
            else if !SecureToken.constantTimeEquals(SecureToken.hash(binding!), state.bindingHash) { "binding cookie of another browser" }
            else { nil }
        if let reason {
            try await auditFailure(provider: provider, reason: "invalid_oauth_state", detail: reason, user: state.userID, origin: origin)
            throw OAuthError.invalidState
        }
        let now = self.now
        let claimed = try await app.writeTransaction { db in try await HashedTokens.claim(OAuthState.self, raw: raw, now: now, on: db) }
        guard claimed else { throw OAuthError.invalidState }
        return state
    }

    /// A login's failure travels as a one-time code, so the client's exchange answers with the problem's own
    /// status; a link's travels as `error` in the redirect.
    private func failureRedirect(_ error: OAuthError, state: OAuthState, provider: OAuthProviderConfig, now: Date) async throws -> String {
        switch state.mode {
        case .link:
            return Self.append([("error", error.code), ("error_description", error.reason)], to: state.redirectURL)
        case .login:
            let record = OAuthLoginCode()
            record.provider = provider.id
            record.problem = try StoredOAuthProblem(error).json.canonicalString()
            let code = try await app.writeTransaction { db in
                try await HashedTokens.issue(record, now: now, expiresAt: now.addingTimeInterval(Self.codeLifetime), on: db)
            }
            return Self.append([("code", code)], to: state.redirectURL)
        }
    }

    // MARK: The provider's answer

    private func verifiedIdentity(provider: OAuthProviderConfig, query: [String: String], state: OAuthState) async throws -> ProviderIdentity {
        if let error = query["error"] {
            let description = query["error_description"].map { ": \($0.prefix(200))" } ?? ""
            throw OAuthError.providerRefused("\(error.prefix(100))\(description)")
        }
        guard let code = query["code"], !code.isEmpty, code.utf8.count <= 2048 else { throw OAuthError.providerRefused("the answer has no code") }
        let verifier = try app.secretBox.open(state.codeVerifier)
        let transport = app.providerTransport
        switch provider.kind {
        case .openIDConnect(let issuer):
            let metadata = try await app.oauthProviderDirectory.metadata(for: provider, issuer: issuer)
            var form: [(String, String)] = [
                ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", callbackURL(provider)), ("code_verifier", verifier),
            ]
            var headers: [(String, String)] = [("Accept", "application/json")]
            // client_secret_basic unless the provider takes only client_secret_post (RFC 6749 §2.3.1).
            if metadata.tokenAuthMethods.contains("client_secret_basic") || !metadata.tokenAuthMethods.contains("client_secret_post") {
                let credentials = FormEncoding.escape(provider.clientID) + ":" + FormEncoding.escape(provider.clientSecret)
                headers.append(("Authorization", "Basic " + Data(credentials.utf8).base64EncodedString()))
            } else {
                form += [("client_id", provider.clientID), ("client_secret", provider.clientSecret)]
            }
            let answer = try await tokenRequest(transport, metadata.tokenEndpoint, form: form, headers: headers)
            guard let idToken = answer["id_token"]?.stringValue else { throw OAuthError.invalidIDToken("the token endpoint gave no ID token") }
            let verifier = IDTokenVerifier(provider: provider, metadata: metadata, directory: app.oauthProviderDirectory, issuer: issuer)
            return try await verifier.verify(idToken, nonce: state.nonce, now: now)
        case .github(_, let tokenURL, let apiURL):
            let form: [(String, String)] = [
                ("client_id", provider.clientID), ("client_secret", provider.clientSecret), ("code", code),
                ("redirect_uri", callbackURL(provider)), ("code_verifier", verifier),
            ]
            let answer = try await tokenRequest(transport, tokenURL, form: form, headers: [("Accept", "application/json")])
            guard let accessToken = answer["access_token"]?.stringValue else { throw OAuthError.providerRefused("the token endpoint gave no access token") }
            return try await GitHubIdentity(transport: transport, apiURL: apiURL, accessToken: accessToken).read()
        }
    }

    /// POSTs a token request and reads its JSON answer; a refusal (an OAuth `error`, GitHub's included, which it
    /// sends with 200) is `providerRefused`.
    private func tokenRequest(_ transport: any ProviderTransport, _ url: String, form: [(String, String)], headers: [(String, String)]) async throws -> [String: JSONValue] {
        let response: ProviderResponse
        do {
            response = try await transport.postForm(url, form: form, headers: headers)
        } catch {
            throw OAuthError.providerUnavailable("the token endpoint did not answer (\(error))")
        }
        guard case .object(let answer)? = JSONText.parse(response.body) else {
            if response.status >= 500 { throw OAuthError.providerUnavailable("the token endpoint answered \(response.status)") }
            throw OAuthError.providerRefused("the token endpoint answered \(response.status) without JSON")
        }
        if let error = answer["error"]?.stringValue {
            throw OAuthError.providerRefused("the token endpoint answered \(error)")
        }
        guard response.status == 200 else {
            if response.status >= 500 { throw OAuthError.providerUnavailable("the token endpoint answered \(response.status)") }
            throw OAuthError.providerRefused("the token endpoint answered \(response.status)")
        }
        return answer
    }

    // MARK: Who it is

    /// A login: the linked account, else a new one (sign-up on, email not taken). Returns the one-time code.
    private func login(_ identity: ProviderIdentity, provider: OAuthProviderConfig, origin: RequestOrigin) async throws -> String {
        let now = self.now
        let existing = try await OAuthIdentity.query(on: reads)
            .filter(\.$provider == provider.id).filter(\.$subject == identity.subject).first()
        let code = OAuthLoginCode()
        code.provider = provider.id
        if let existing {
            guard let user = try await User.find(existing.$user.id, on: reads) else { throw OAuthError.accountInactive }
            guard user.status == .active else { throw OAuthError.accountInactive }
            code.userID = try user.requireID()
            return try await app.writeTransaction { db in
                try await (db as! any SQLDatabase).raw("""
                    UPDATE oauth_identities SET last_login_at = \(bind: now), email = \(bind: identity.email), email_verified = \(bind: identity.emailVerified)
                    WHERE id = \(bind: existing.requireID())
                    """).run()
                return try await HashedTokens.issue(code, now: now, expiresAt: now.addingTimeInterval(Self.codeLifetime), on: db)
            }
        }

        guard let email = identity.email, AccountValidation.email(email).isEmpty else {
            throw config.oauthSignup ? OAuthError.emailRequired : OAuthError.signupDisabled
        }
        if try await User.query(on: reads).filter(\.$email == email).count() > 0 { throw OAuthError.accountExists }
        guard config.oauthSignup else { throw OAuthError.signupDisabled }

        let username = try await freeUsername(for: identity, email: email)
        let fullName = identity.name.flatMap { name -> String? in
            let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.isEmpty || !AccountValidation.fullName(trimmed).isEmpty ? nil : trimmed
        }
        let user = User(email: email, username: username, fullName: fullName, passwordHash: User.noPassword)
        user.emailVerifiedAt = identity.emailVerified ? now : nil
        let defaultRole = app.settings.defaultRole
        do {
            return try await app.writeTransaction { db in
                try await user.create(on: db)
                let userID = try user.requireID()
                try await UserRole.assign(defaultRole, to: userID, by: nil, at: now, on: db)
                try await newIdentity(identity, provider: provider, user: userID, now: now, lastLogin: now).create(on: db)
                let id = userID.lowercasedString
                let shown: JSONValue = ["method": "identity_provider", "provider": .string(provider.id)]
                try await recorder.record(
                    audit: AuditRecord(action: "auth.register", actorID: userID, actorType: .user, resourceType: "user",
                                       resourceID: id, origin: origin, details: shown),
                    event: EventRecord(type: "user.created", actorID: userID, resourceType: "user", resourceID: id, data: shown),
                    on: db)
                if !identity.emailVerified { try await AccountRecovery(app: app).issueEmailVerification(for: user, on: db) }
                code.userID = userID
                return try await HashedTokens.issue(code, now: now, expiresAt: now.addingTimeInterval(Self.codeLifetime), on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            // Another sign-in took the email, the username or the identity meanwhile.
            throw OAuthError.accountExists
        }
    }

    /// A link: the identity joins the account that started the flow, unless another account holds it.
    private func link(_ identity: ProviderIdentity, provider: OAuthProviderConfig, userID: UUID?, origin: RequestOrigin) async throws -> UUID {
        guard let userID, let user = try await User.find(userID, on: reads), user.status == .active else { throw OAuthError.accountInactive }
        let now = self.now
        if let existing = try await OAuthIdentity.query(on: reads)
            .filter(\.$provider == provider.id).filter(\.$subject == identity.subject).first() {
            guard existing.$user.id == userID else { throw OAuthError.identityInUse }
            return try existing.requireID()
        }
        let record = newIdentity(identity, provider: provider, user: userID, now: now, lastLogin: nil)
        do {
            try await app.writeTransaction { db in
                try await record.create(on: db)
                try await recorder.record(audit: AuditRecord(
                    action: "auth.identity.linked", actorID: userID, actorType: .user, resourceType: "oauth_identity",
                    resourceID: record.id?.lowercasedString, origin: origin,
                    details: ["provider": .string(provider.id), "subject": .string(identity.subject)]), on: db)
            }
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw OAuthError.identityInUse
        }
        return try record.requireID()
    }

    private func newIdentity(_ identity: ProviderIdentity, provider: OAuthProviderConfig, user: UUID, now: Date, lastLogin: Date?) -> OAuthIdentity {
        let record = OAuthIdentity()
        record.id = UUID()
        record.$user.id = user
        record.provider = provider.id
        record.subject = identity.subject
        record.email = identity.email
        record.emailVerified = identity.emailVerified
        record.linkedAt = now
        record.lastLoginAt = lastLogin
        return record
    }

    /// A username for a new account from the provider's hint or the email's local part, made unique with a suffix.
    private func freeUsername(for identity: ProviderIdentity, email: String) async throws -> String {
        let hint = identity.preferredUsername ?? String(email.prefix(while: { $0 != "@" }))
        var base = String(hint.unicodeScalars.filter { scalar in
            (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                || scalar == "_" || scalar == "-" || scalar == "."
        }.map(Character.init).prefix(24))
        if base.count < 3 { base = "user" }
        var candidate = base
        for _ in 0..<8 {
            if try await User.query(on: reads).filter(\.$username == candidate).count() == 0 { return candidate }
            candidate = base + "-" + SecureToken.generate(bytes: 3)
        }
        return "user-" + UUID().lowercasedString.prefix(8)
    }

    private func auditFailure(provider: OAuthProviderConfig, reason: String, detail: String, user: UUID?, origin: RequestOrigin) async throws {
        try await auditAlone(AuditRecord(
            action: "auth.login", actorID: user, actorType: .user, resourceType: "user", resourceID: user?.lowercasedString,
            outcome: .failure, origin: origin,
            details: ["method": .string("oauth"), "provider": .string(provider.id), "reason": .string(reason), "detail": .string(String(detail.prefix(300)))]))
    }

    static func append(_ pairs: [(String, String)], to url: String) -> String {
        url + (url.contains("?") ? "&" : "?") + FormEncoding.encode(pairs)
    }

    // MARK: Exchange

    /// The one-time code of a finished login callback: the login answer, or the problem the callback met.
    func exchange(code raw: String, cookie: Bool, origin: RequestOrigin) async throws -> LoginOutcome {
        guard !raw.isEmpty, raw.utf8.count <= 512,
              let record = try await HashedTokens.find(OAuthLoginCode.self, raw: raw, on: reads).first(),
              record.usedAt == nil, record.expiresAt > now
        else { throw OAuthError.invalidCode }
        let now = self.now
        guard try await app.writeTransaction({ db in try await HashedTokens.claim(OAuthLoginCode.self, raw: raw, now: now, on: db) }) else {
            throw OAuthError.invalidCode
        }
        if let text = record.problem {
            throw StoredOAuthProblem(json: text) ?? StoredOAuthProblem(OAuthError.invalidCode)
        }
        guard let userID = record.userID, let user = try await User.find(userID, on: reads) else { throw OAuthError.invalidCode }
        guard user.status == .active else { throw OAuthError.accountInactive }
        let login = PasswordLogin(app: app)
        try await login.refuseIfLocked(key: user.email, origin: origin)
        return try await login.complete(user: user, key: user.email, cookie: cookie, method: "oauth:\(record.provider)", origin: origin)
    }

    // MARK: Identities

    func identities(of userID: UUID) async throws -> [OAuthIdentity] {
        try await OAuthIdentity.query(on: reads).filter(\.$user.$id == userID).sort(\.$linkedAt).sort(\.$id).all()
    }

    /// Unlinks one of the caller's identities, unless it is the account's last way to sign in.
    func unlink(id: UUID, userID: UUID, origin: RequestOrigin) async throws {
        guard let identity = try await OAuthIdentity.query(on: reads).filter(\.$id == id).filter(\.$user.$id == userID).first() else {
            throw HTTPProblem.notFound("No linked identity of yours has this id.")
        }
        let removed = try await app.writeTransaction { db -> Bool in
            let sql = db as! any SQLDatabase
            // Counted in the write, so two unlinks at once cannot remove the last two.
            let others = try await sql.raw("SELECT COUNT(*) AS n FROM oauth_identities WHERE user_id = \(bind: userID) AND id <> \(bind: id)")
                .first()?.decode(column: "n", as: Int.self) ?? 0
            let hasPassword = try await User.find(userID, on: db)?.hasPassword ?? false
            guard others > 0 || hasPassword else { return false }
            let deleted = try await sql.raw("DELETE FROM oauth_identities WHERE id = \(bind: id) RETURNING id").first()
            guard deleted != nil else { return true }
            try await recorder.record(audit: AuditRecord(
                action: "auth.identity.unlinked", actorID: userID, actorType: .user, resourceType: "oauth_identity",
                resourceID: id.lowercasedString, origin: origin,
                details: ["provider": .string(identity.provider), "subject": .string(identity.subject)]), on: db)
            return true
        }
        guard removed else { throw OAuthError.lastSignInMethod }
    }
}
