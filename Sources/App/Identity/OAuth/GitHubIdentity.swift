import Foundation
import StewardFormats

/// The GitHub preset: GitHub's OAuth 2.0 gives no ID token, so the identity is read from its REST API with the
/// access token (then dropped): `GET /user` for the account id (the subject, which unlike the login never changes),
/// login and name, and `GET /user/emails` for the primary verified address.
struct GitHubIdentity {
    let transport: any ProviderTransport
    let apiURL: String
    let accessToken: String

    func read() async throws -> ProviderIdentity {
        guard case .object(let user) = try await get("/user") else { throw OAuthError.providerRefused("GitHub's user API did not answer an object") }
        let subject: String
        switch user["id"] {
        case .number(let id)? where id.rounded() == id && id > 0: subject = String(Int64(id))
        default: throw OAuthError.providerRefused("GitHub's user API gave no account id")
        }
        let login = user["login"]?.stringValue
        let name = user["name"]?.stringValue

        // The addresses, with their verification; without the user:email scope this answers 404 and the public
        // address (unverified as far as Steward can tell) is all there is.
        var email: String?
        var verified = false
        if case .array(let entries) = try await get("/user/emails", allowing: [404, 403]) {
            let addresses = entries.compactMap { entry -> (email: String, primary: Bool, verified: Bool)? in
                guard case .object(let fields) = entry, let address = fields["email"]?.stringValue else { return nil }
                return (address, fields["primary"] == .bool(true), fields["verified"] == .bool(true))
            }
            if let best = addresses.first(where: { $0.primary && $0.verified }) ?? addresses.first(where: \.verified) ?? addresses.first(where: \.primary) {
                email = best.email
                verified = best.verified
            }
        }
        if email == nil { email = user["email"]?.stringValue }
        let normalised = email.map { User.normalise(email: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        return ProviderIdentity(subject: subject, email: normalised, emailVerified: verified, name: name, preferredUsername: login)
    }

    /// A GET of the API; the statuses in `allowing` read as `null`.
    private func get(_ path: String, allowing: Set<Int> = []) async throws -> JSONValue {
        let response: ProviderResponse
        do {
            response = try await transport.get(apiURL + path, headers: [
                ("Accept", "application/vnd.github+json"), ("Authorization", "Bearer \(accessToken)"), ("X-GitHub-Api-Version", "2022-11-28"),
            ])
        } catch {
            throw OAuthError.providerUnavailable("GitHub's API did not answer (\(error))")
        }
        if allowing.contains(response.status) { return .null }
        guard response.status == 200 else {
            if response.status >= 500 { throw OAuthError.providerUnavailable("GitHub's API answered \(response.status)") }
            throw OAuthError.providerRefused("GitHub's API answered \(response.status) to \(path)")
        }
        guard let value = JSONText.parse(response.body) else { throw OAuthError.providerRefused("GitHub's API did not answer JSON") }
        return value
    }
}
