import Foundation

/// Everything a role can allow. The set is fixed; roles map to it in `RoleCatalog`.
public enum Permission: String, CaseIterable, Codable, Sendable, Comparable {
    case skillsRead = "skills:read"
    case skillsWrite = "skills:write"
    case skillsExecute = "skills:execute"
    case executionsRead = "executions:read"
    case executionsWrite = "executions:write"
    case executionsReadAll = "executions:read-all"
    case workflowsRead = "workflows:read"
    case workflowsWrite = "workflows:write"
    case webhooksManage = "webhooks:manage"
    case apiKeysManage = "api-keys:manage"
    case usersRead = "users:read"
    case usersManage = "users:manage"
    case rolesManage = "roles:manage"
    case auditRead = "audit:read"
    case analyticsRead = "analytics:read"
    case settingsManage = "settings:manage"
    case adminFull = "admin:full"

    public static func < (lhs: Permission, rhs: Permission) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The fixed roles and their permissions, exactly as the API contract lists them. The migration seeds the
/// tables from this; authorization reads the tables.
public enum RoleCatalog {
    public static let admin = "admin"
    public static let developer = "developer"
    public static let executor = "executor"
    public static let viewer = "viewer"
    public static let service = "service"

    /// The role every new account gets.
    public static let defaultRole = viewer

    public static let roles: [(name: String, description: String, permissions: [Permission])] = [
        (admin, "Everything.", Permission.allCases),
        (developer, "Builds skills and workflows and runs them.", [
            .skillsRead, .skillsWrite, .skillsExecute, .executionsRead, .executionsWrite,
            .workflowsRead, .workflowsWrite, .webhooksManage, .apiKeysManage,
        ]),
        (executor, "Runs skills and workflows.", [.skillsRead, .skillsExecute, .executionsRead, .executionsWrite, .workflowsRead]),
        (viewer, "Reads the catalogue and its own executions.", [.skillsRead, .executionsRead, .workflowsRead, .analyticsRead]),
        (service, "Machine accounts that run skills and receive webhooks.", [.skillsRead, .skillsExecute, .executionsRead, .webhooksManage]),
    ]

    public static var names: [String] { roles.map(\.name) }

    public static func permissions(of role: String) -> Set<Permission> {
        Set(roles.first { $0.name == role }?.permissions ?? [])
    }
}
