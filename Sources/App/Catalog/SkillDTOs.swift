import Foundation
import Vapor
import StewardFormats
import SQLKit
import StewardSQLite

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
    var outputSchema: StoredJSON?
    var annotations: StoredJSON

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
        outputSchema = nil
        annotations = StoredJSON(canonical: "{}")
    }

    /// The stored runner with every header value replaced by `[redacted]`. A runner without a `headers` key
    /// anywhere needs no parse.
    static func redacted(runner text: String) -> StoredJSON {
        guard JSONText.mayHaveKey("headers", in: text) else { return StoredJSON(canonical: text) }
        let runner = Skill.mappingHeaderValues(of: JSONValue.parse(text)) { _ in "[redacted]" }
        return (try? StoredJSON(runner)) ?? StoredJSON(canonical: text)
    }
}

extension SkillResponse: RowReadable {
    /// A skill as the API shows it, read straight from its row (the columns of `Skill`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        slug = try row.decode(column: "slug", as: String.self)
        name = try row.decode(column: "name", as: String.self)
        description = try row.decode(column: "description", as: String.self)
        category = try row.decode(column: "category", as: String.self)
        tags = StoredJSON(canonical: try row.decode(column: "tags", as: String.self))
        inputSchema = StoredJSON(canonical: try row.decode(column: "input_schema", as: String.self))
        runner = Self.redacted(runner: try row.decode(column: "runner", as: String.self))
        version = try row.decode(column: "version", as: Int.self)
        enabled = try row.decode(column: "enabled", as: Bool.self)
        createdBy = try row.optional("created_by", as: UUID.self)
        createdAt = try row.decode(column: "created_at", as: Date.self)
        updatedAt = try row.decode(column: "updated_at", as: Date.self)
        executionCount = try row.decode(column: "execution_count", as: Int64.self)
        outputSchema = nil
        annotations = StoredJSON(canonical: "{}")
    }

    /// The output schema and annotations, which live apart from the skill's row (`SkillToolFieldStore`).
    mutating func fill(_ fields: SkillToolFields) {
        outputSchema = fields.outputSchema.map { StoredJSON(canonical: $0) }
        annotations = StoredJSON(canonical: fields.annotations)
    }
}

extension SkillResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("slug", slug)
        object.field("name", name)
        object.field("description", description)
        object.field("category", category)
        object.field("tags", tags)
        object.field("inputSchema", inputSchema)
        object.field("runner", runner)
        object.field("version", version)
        object.field("enabled", enabled)
        object.field("createdBy", createdBy)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
        object.field("executionCount", executionCount)
        object.field("outputSchema", outputSchema)
        object.field("annotations", annotations)
    }
}
