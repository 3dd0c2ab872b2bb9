import Foundation
import Vapor
import StewardFormats

/// A skill as the API shows it. HTTP runner header values are redacted: they often carry credentials.
struct SkillResponse: Content {
    var id: UUID
    var slug: String
    var name: String
    var description: String
    var category: String
    var tags: [String]
    var inputSchema: JSONValue
    var runner: JSONValue
    var version: Int
    var enabled: Bool
    var createdBy: UUID?
    var createdAt: Date
    var updatedAt: Date
    var executionCount: Int64

    init(_ skill: Skill) {
        id = skill.id!
        slug = skill.slug
        name = skill.name
        description = skill.description
        category = skill.category
        tags = skill.tags
        inputSchema = skill.inputSchema
        var runner = skill.runner
        if case .object(var fields) = runner, case .object(let headers)? = fields["headers"] {
            fields["headers"] = .object(headers.mapValues { _ in "[redacted]" })
            runner = .object(fields)
        }
        self.runner = runner
        version = skill.version
        enabled = skill.enabled
        createdBy = skill.createdBy
        createdAt = skill.createdAt
        updatedAt = skill.updatedAt
        executionCount = skill.executionCount
    }
}
