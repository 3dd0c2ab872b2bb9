import Foundation

/// One identity provider people may sign in with, as configured by `STEWARD_OIDC_PROVIDERS` and its
/// `STEWARD_OIDC_<ID>_…` variables.
public struct OAuthProviderConfig: Sendable, Equatable {
    /// How Steward talks to the provider.
    public enum Kind: Sendable, Equatable {
        /// OpenID Connect: endpoints and keys come from the issuer's discovery document; the identity is the ID token.
        case openIDConnect(issuer: String)
        /// GitHub's OAuth 2.0: fixed endpoints, no ID token; the identity comes from its user and email APIs.
        case github(authorizationURL: String, tokenURL: String, apiURL: String)
    }

    /// The id in URLs and in `oauth_identities.provider`: lower-case letters, digits, `-` and `_`.
    public var id: String
    /// Shown to people on the sign-in page.
    public var name: String
    public var kind: Kind
    public var clientID: String
    public var clientSecret: String
    public var scopes: [String]

    /// The id as it appears in variable names: upper-cased, `-` as `_`.
    static func variablePart(_ id: String) -> String {
        id.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    static let githubID = "github"
    static let defaultOIDCScopes = ["openid", "email", "profile"]
    static let defaultGitHubScopes = ["read:user", "user:email"]
}

extension EnvironmentReader {
    /// Reads `STEWARD_OIDC_PROVIDERS` and every provider's variables, adding a problem for each bad or missing one.
    mutating func oauthProviders() -> [OAuthProviderConfig] {
        var providers: [OAuthProviderConfig] = []
        var seen: Set<String> = []
        for id in list("STEWARD_OIDC_PROVIDERS") {
            let valid = (1...32).contains(id.count) && id.unicodeScalars.allSatisfy { scalar in
                (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") || scalar == "-" || scalar == "_"
            }
            guard valid else {
                problems.append("STEWARD_OIDC_PROVIDERS: '\(id)' is not a provider id (1 to 32 lower-case letters, digits, '-' or '_')")
                continue
            }
            guard seen.insert(id).inserted else {
                problems.append("STEWARD_OIDC_PROVIDERS: '\(id)' is listed twice")
                continue
            }
            let prefix = "STEWARD_OIDC_\(OAuthProviderConfig.variablePart(id))_"
            let clientID = required(prefix + "CLIENT_ID")
            let clientSecret = required(prefix + "CLIENT_SECRET")
            let name = optionalString(prefix + "NAME", lengths: 1...100) ?? id
            let kind: OAuthProviderConfig.Kind
            let defaultScopes: [String]
            if id == OAuthProviderConfig.githubID {
                kind = .github(
                    authorizationURL: providerURL(prefix + "AUTH_URL", default: "https://github.com/login/oauth/authorize"),
                    tokenURL: providerURL(prefix + "TOKEN_URL", default: "https://github.com/login/oauth/access_token"),
                    apiURL: providerURL(prefix + "API_URL", default: "https://api.github.com"))
                defaultScopes = OAuthProviderConfig.defaultGitHubScopes
            } else {
                let issuer = required(prefix + "ISSUER").map { providerURL(prefix + "ISSUER", default: $0) } ?? ""
                kind = .openIDConnect(issuer: issuer)
                defaultScopes = OAuthProviderConfig.defaultOIDCScopes
            }
            var scopes = defaultScopes
            if let text = env[prefix + "SCOPES"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty {
                scopes = text.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
                if id != OAuthProviderConfig.githubID, !scopes.contains("openid") {
                    problems.append("\(prefix)SCOPES: must include openid")
                }
            }
            providers.append(OAuthProviderConfig(id: id, name: name, kind: kind, clientID: clientID ?? "",
                                                 clientSecret: clientSecret ?? "", scopes: scopes))
        }
        return providers
    }

    /// `STEWARD_OAUTH_REDIRECT_URLS`, or the console's landing page when it is unset.
    mutating func oauthRedirectURLs(publicURL: String) -> [String] {
        let entries = list("STEWARD_OAUTH_REDIRECT_URLS")
        guard !entries.isEmpty else { return [publicURL + "/console/oauth"] }
        var urls: [String] = []
        for entry in entries {
            guard let components = URLComponents(string: entry), let scheme = components.scheme?.lowercased(),
                  ["http", "https"].contains(scheme), components.host?.isEmpty == false,
                  components.user == nil, components.password == nil, components.fragment == nil, components.query == nil
            else {
                problems.append("STEWARD_OAUTH_REDIRECT_URLS: '\(entry)' is not an absolute http(s) URL without query, fragment or credentials")
                continue
            }
            urls.append(entry)
        }
        return urls
    }

    private mutating func required(_ name: String) -> String? {
        guard let value = env[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else {
            problems.append("\(name): is required")
            return nil
        }
        return value
    }

    /// An https URL (http only on a loopback host, for a provider in development), without a trailing slash.
    private mutating func providerURL(_ name: String, default fallback: String) -> String {
        let value = env[name]?.trimmingCharacters(in: .whitespaces).nilIfEmpty ?? fallback
        guard let components = URLComponents(string: value), let scheme = components.scheme?.lowercased(),
              let host = components.host?.lowercased(), !host.isEmpty, components.user == nil, components.query == nil
        else {
            problems.append("\(name): '\(value)' is not an https URL")
            return value
        }
        let loopback = host == "localhost" || host == "127.0.0.1" || host == "[::1]" || host == "::1"
        guard scheme == "https" || (scheme == "http" && loopback) else {
            problems.append("\(name): '\(value)' must use https (http is allowed on localhost only)")
            return value
        }
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }
}

private extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
