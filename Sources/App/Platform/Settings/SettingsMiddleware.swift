import Vapor

/// A feature switched off (`features.<name>` false): its routes answer this 404. The OpenAPI document still lists them.
struct FeatureDisabled: ProblemError {
    let feature: Feature

    var status: HTTPResponseStatus { .notFound }
    var code: String { "feature_disabled" }
    var reason: String { "The \(feature.rawValue) feature is switched off on this server (setting \(feature.settingKey))." }
}

/// Guards a feature's routes: 404 `feature_disabled` while its switch is off, read on each request.
struct FeatureGate: RequestCheck {
    let feature: Feature

    init(_ feature: Feature) { self.feature = feature }

    func check(_ request: Request) throws {
        guard request.application.settings.isEnabled(feature) else { throw FeatureDisabled(feature: feature) }
    }
}

/// Read-only mode (`maintenance.readOnly`): refused with 503 and a Retry-After.
struct ReadOnlyRefusal: ProblemError {
    static let retryAfterSeconds = 300

    var status: HTTPResponseStatus { .serviceUnavailable }
    var code: String { "read_only" }
    var reason: String { "The server is in read-only mode for maintenance; reads work, changes are refused. Retry later." }
    var headers: HTTPHeaders { ["Retry-After": String(Self.retryAfterSeconds)] }
}

/// In read-only mode, every unsafe `/api/v1` request but signing in and out and the settings themselves (so an
/// operator can switch the mode off) is refused before its handler runs.
struct ReadOnlyMiddleware: RequestCheck {
    func check(_ request: Request) throws {
        if request.application.settings.readOnly, Self.isRefused(method: request.method, path: request.url.path) {
            throw ReadOnlyRefusal()
        }
    }

    static func isRefused(method: HTTPMethod, path: String) -> Bool {
        guard ![.GET, .HEAD, .OPTIONS].contains(method) else { return false }
        if GeneralRateLimitMiddleware.isSignIn(path) || path == "/api/v1/auth/logout" { return false }
        return !(path == "/api/v1/settings" || path.hasPrefix("/api/v1/settings/"))
    }
}
