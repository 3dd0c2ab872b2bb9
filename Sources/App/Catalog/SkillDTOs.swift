import Foundation
import Vapor
import StewardFormats

/// A skill as the API shows it. HTTP runner header values are redacted: they often carry credentials.
/// `tags`, `inputSchema` and a runner without headers are the stored canonical text, served as it is.
struct SkillResponse: Content {
    var id: UUID
    var slug: String
    var name: String
    var description: String
    var category: String
    var tags: StoredJSON
    var inputSchema: StoredJSON
    var runner: StoredJSON
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
        tags = StoredJSON(canonical: skill.tagsJSON)
        inputSchema = StoredJSON(canonical: skill.inputSchemaJSON)
        runner = Self.redacted(runner: skill.runnerJSON)
        version = skill.version
        enabled = skill.enabled
        createdBy = skill.createdBy
        createdAt = skill.createdAt
        updatedAt = skill.updatedAt
        executionCount = skill.executionCount
    }

    /// The stored runner with every header value replaced by `[redacted]`. A runner without a `headers` key
    /// anywhere needs no parse.
    static func redacted(runner text: String) -> StoredJSON {
        guard JSONText.mayHaveKey("headers", in: text) else { return StoredJSON(canonical: text) }
        let runner = Skill.mappingHeaderValues(of: JSONValue.parse(text)) { _ in "[redacted]" }
        return (try? StoredJSON(runner)) ?? StoredJSON(canonical: text)
    }
}
