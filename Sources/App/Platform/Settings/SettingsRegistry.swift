import Foundation
import StewardFormats

/// A part of Steward an operator can switch off at runtime (`features.<name>`).
enum Feature: String, CaseIterable, Sendable {
    case webhooks, workflows, schedules, analytics, mcp, registration

    var settingKey: String { "features." + rawValue }
}

/// A value checked against its setting's type: the value to store, or what is wrong with it.
enum SettingValidation: Sendable {
    case valid(JSONValue)
    case invalid(String)
}

/// The type of a setting's value, with its validation.
enum SettingType: Sendable {
    case boolean
    case integer(ClosedRange<Int>)
    /// A rate such as `600/min` or `100/15min`, or `0` (off).
    case rate
    /// Text up to a length; `null` when empty is allowed.
    case text(maxLength: Int, nullable: Bool)
    /// The name of a role that exists (checked against the roles table when set).
    case role

    var name: String {
        switch self {
        case .boolean: "boolean"
        case .integer: "integer"
        case .rate: "rate"
        case .text: "string"
        case .role: "role"
        }
    }

    /// The value as stored, or what is wrong with it.
    func validate(_ value: JSONValue) -> SettingValidation {
        switch self {
        case .boolean:
            if case .bool = value { return .valid(value) }
            return .invalid("must be true or false")
        case .integer(let range):
            guard let number = value.intValue, case .number = value else {
                return .invalid("must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            guard range.contains(number) else { return .invalid("must be from \(range.lowerBound) to \(range.upperBound)") }
            return .valid(.number(Double(number)))
        case .rate:
            guard let text = value.stringValue else { return .invalid("must be a rate such as 10/min, 100/15min or 0 (off), as a string") }
            guard RateLimitPolicy.parse(name: "", text) != nil else {
                return .invalid("'\(text.prefix(40))' is not a rate such as 10/min, 100/15min, 1000/hour or 0 (off)")
            }
            return .valid(.string(text.trimmingCharacters(in: .whitespaces).lowercased()))
        case .text(let maxLength, let nullable):
            if case .null = value, nullable { return .valid(.null) }
            guard let text = value.stringValue else { return .invalid(nullable ? "must be a string or null" : "must be a string") }
            guard text.count <= maxLength else { return .invalid("must be at most \(maxLength) characters") }
            guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && $0 != "\n" }) else {
                return .invalid("must not contain control characters")
            }
            if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return nullable ? .valid(.null) : .invalid("must not be empty") }
            return .valid(.string(text))
        case .role:
            guard let text = value.stringValue, !text.isEmpty, text.count <= 64 else { return .invalid("must be the name of a role") }
            return .valid(.string(text))
        }
    }
}

/// One runtime setting: its key, type, description, and the default it has without a row in `settings` (from its
/// environment variable when one is set, else built in).
struct SettingDefinition: Sendable {
    let key: String
    let type: SettingType
    let description: String
    /// The variable that sets the default, if any.
    let environment: String?
    /// The default under a configuration.
    let fallback: @Sendable (AppConfig) -> JSONValue
}

/// Every runtime setting, in documentation order. Secrets are never settings: they stay in the environment.
enum SettingsRegistry {
    static let definitions: [SettingDefinition] = features + accounts + limits + maintenance

    static func definition(_ key: String) -> SettingDefinition? { byKey[key] }

    private static let byKey: [String: SettingDefinition] = Dictionary(uniqueKeysWithValues: definitions.map { ($0.key, $0) })

    private static let features: [SettingDefinition] = [
        feature(.webhooks, "Webhooks: the /webhooks routes answer, and deliveries are sent. Off: deliveries wait in the queue."),
        feature(.workflows, "Workflows: the /workflows and /workflow-runs routes answer, and runs advance. Off: runs wait where they are."),
        feature(.schedules, "Schedules: the /schedules routes answer, and schedules fire. Off: no schedule fires."),
        feature(.analytics, "Analytics: GET /admin/stats and the usage figures answer."),
        feature(.mcp, "The MCP server at /mcp and over stdio."),
        feature(.registration, "Open sign-up: POST /auth/register creates accounts."),
    ]

    private static func feature(_ feature: Feature, _ description: String) -> SettingDefinition {
        SettingDefinition(key: feature.settingKey, type: .boolean, description: description, environment: nil) { _ in .bool(true) }
    }

    private static let accounts: [SettingDefinition] = [
        SettingDefinition(key: "accounts.defaultRole", type: .role,
                          description: "The role a new account gets (sign-up, identity-provider sign-up, admin-created accounts without roles).",
                          environment: nil) { _ in .string(RoleCatalog.defaultRole) },
        SettingDefinition(key: "accounts.passwordMinLength", type: .integer(8...128),
                          description: "The shortest password accepted when one is set (never below 8).",
                          environment: nil) { _ in .number(Double(PasswordPolicy.minimumLength)) },
        SettingDefinition(key: "accounts.accessTokenTTLSeconds", type: .integer(60...86_400),
                          description: "Access-token lifetime in seconds, for tokens issued from now on.",
                          environment: "STEWARD_ACCESS_TOKEN_TTL") { .number(Double($0.accessTokenTTLSeconds)) },
        SettingDefinition(key: "accounts.sessionIdleTimeoutSeconds", type: .integer(300...31_536_000),
                          description: "A session unused this many seconds ends (applies at the session's next use).",
                          environment: "STEWARD_SESSION_IDLE_TIMEOUT") { .number(Double($0.sessionIdleTimeoutSeconds)) },
        SettingDefinition(key: "accounts.sessionAbsoluteTimeoutSeconds", type: .integer(300...31_536_000),
                          description: "A session ends this many seconds after login, used or not (for sessions started from now on).",
                          environment: "STEWARD_SESSION_ABSOLUTE_TIMEOUT") { .number(Double($0.sessionAbsoluteTimeoutSeconds)) },
    ]

    private static let limits: [SettingDefinition] = [
        SettingDefinition(key: "limits.maxConcurrentExecutionsPerUser", type: .integer(1...100_000),
                          description: "Queued plus running executions one user may have (429 beyond).",
                          environment: "STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER") { .number(Double($0.maxConcurrentExecutionsPerUser)) },
    ] + AppConfig.rateLimitVariables.map { entry in
        let policy = entry.policy
        if policy == "mfa" {
            return SettingDefinition(key: "rateLimits.mfa", type: .integer(0...1000), description: entry.meaning,
                                     environment: entry.variable) { .number(Double($0.rateLimits["mfa"]?.limit ?? 5)) }
        }
        return SettingDefinition(key: "rateLimits." + Self.camelCase(policy), type: .rate, description: entry.meaning,
                                 environment: entry.variable) { config in .string(config.rateLimits[policy].map(Self.rateText) ?? "0") }
    }

    private static let maintenance: [SettingDefinition] = [
        SettingDefinition(key: "maintenance.message", type: .text(maxLength: 500, nullable: true),
                          description: "A message the console shows every user (null: none). GET /api/v1/status serves it.",
                          environment: nil) { _ in .null },
        SettingDefinition(key: "maintenance.readOnly", type: .boolean,
                          description: "Read-only mode: every unsafe /api/v1 request but sign-in, sign-out and settings gets 503 read_only.",
                          environment: nil) { _ in .bool(false) },
    ]

    /// `login_ip` → `loginIp`.
    static func camelCase(_ policy: String) -> String {
        let parts = policy.split(separator: "_")
        return parts.enumerated().map { $0.offset == 0 ? String($0.element) : $0.element.prefix(1).uppercased() + $0.element.dropFirst() }.joined()
    }

    /// A policy as a rate: `0`, or the limit over the largest unit that divides its window (`600/min`, `100/15min`).
    static func rateText(_ policy: RateLimitPolicy) -> String {
        if policy.isOff { return "0" }
        // (seconds, the unit alone, the unit after a count); a second divides every window.
        let units = [(86_400, "day", "d"), (3600, "hour", "h"), (60, "min", "min"), (1, "s", "s")]
        let (seconds, alone, counted) = units.first { policy.window % $0.0 == 0 }!
        let count = policy.window / seconds
        return "\(policy.limit)/" + (count == 1 ? alone : "\(count)\(counted)")
    }
}
