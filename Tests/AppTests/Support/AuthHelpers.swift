import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

/// Records every mail instead of sending it.
final class CapturingMailer: Mailer, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Mail] = []
    var sent: [Mail] { lock.withLock { stored } }
    func send(_ mail: Mail) async throws { lock.withLock { stored.append(mail) } }

    /// The token in the newest mail to `address`, read from its `?token=` link.
    func token(to address: String) -> String? {
        guard let mail = sent.last(where: { $0.to == address }),
              let range = mail.body.range(of: #"token=[A-Za-z0-9_-]+"#, options: .regularExpression) else { return nil }
        return String(mail.body[range].dropFirst("token=".count))
    }
}

/// A password every policy accepts.
let strongPassword = "Sturdy-Lantern-42"

extension Application {
    /// Swaps in a capturing mailer and a movable clock.
    @discardableResult
    func useTestDoubles(clock: TestClock = TestClock()) -> (CapturingMailer, TestClock) {
        let mailer = CapturingMailer()
        self.mailer = mailer
        self.wallClock = clock
        return (mailer, clock)
    }
}

/// Creates an active user through the service, as the API would.
@discardableResult
func makeUser(_ app: Application, email: String = "user-\(UUID().uuidString.prefix(8).lowercased())@example.com",
              username: String? = nil, password: String = strongPassword) async throws -> User {
    let name = username ?? "u" + String(UUID().uuidString.prefix(10)).lowercased().replacingOccurrences(of: "-", with: "")
    return try await AccountRegistration(app: app).register(
        RegisterRequest(email: email, username: name, password: password, fullName: "Test User"), origin: .system)
}

/// Logs in over HTTP and returns the token pair.
func login(_ app: Application, email: String, password: String = strongPassword) async throws -> TokenPairResponse {
    var pair: TokenPairResponse?
    try await app.testing().test(.POST, "/api/v1/auth/login", beforeRequest: { req in
        try req.content.encode(["email": email, "password": password])
    }, afterResponse: { res throws in
        #expect(res.status == .ok, "login failed: \(res.body.string)")
        pair = try res.content.decode(TokenPairResponse.self)
    })
    return try #require(pair)
}

func bearer(_ token: String) -> HTTPHeaders {
    ["Authorization": "Bearer \(token)"]
}

extension TestingHTTPRequest {
    mutating func json(_ value: [String: String]) throws {
        try content.encode(value)
    }
}

/// Scrapes `GET /metrics` and returns the value of one series, e.g. `steward_logins_total{step="password",outcome="success"}`.
/// A series the registry never saw reads nil.
func metricValue(_ app: Application, _ series: String, token: String? = nil) async throws -> Double? {
    var headers = HTTPHeaders()
    if let token { headers.bearerAuthorization = BearerAuthorization(token: token) }
    let response = try await app.testing().sendRequest(.GET, "/metrics", headers: headers)
    #expect(response.status == .ok)
    for line in response.body.string.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}
