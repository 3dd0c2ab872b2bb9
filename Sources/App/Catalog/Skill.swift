import Fluent
import Foundation
import StewardFormats
import StewardSQLite

/// A runnable unit in the catalogue. `tags`, `inputSchema` and `runner` are stored as canonical JSON text.
public final class Skill: Model, @unchecked Sendable {
    public static let schema = "skills"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date
    @Field(key: "updated_at") public var updatedAt: Date
    @Field(key: "version") public var version: Int

    // references
    @OptionalField(key: "created_by") public var createdBy: UUID?

    // data
    @Field(key: "slug") public var slug: String
    @Field(key: "name") public var name: String
    @Field(key: "description") public var description: String
    @Field(key: "category") public var category: String
    @Field(key: "tags") public var tagsJSON: String
    @Field(key: "input_schema") public var inputSchemaJSON: String
    @Field(key: "runner") public var runnerJSON: String
    @Field(key: "enabled") public var enabled: Bool
    @Field(key: "execution_count") public var executionCount: Int64

    public init() {}

    var tags: [String] {
        get { JSONText.strings(in: tagsJSON) }
        set { tagsJSON = JSONText.canonical(strings: newValue) }
    }

    var inputSchema: JSONValue { JSONValue.parse(inputSchemaJSON) }

    /// The runner settings as stored: an http runner's header values are sealed (see `store(runner:sealing:)`).
    var runner: JSONValue { JSONValue.parse(runnerJSON) }

    func store(inputSchema: JSONValue) throws { inputSchemaJSON = try inputSchema.canonicalString() }

    /// Stores the runner settings with each header value sealed: they often carry the remote skill's API key.
    func store(runner: JSONValue, sealing box: SecretBox) throws {
        runnerJSON = try Self.mappingHeaderValues(of: runner) { try box.seal($0) }.canonicalString()
    }

    /// `runner` with `transform` applied to every string value of its `headers` object; anything else unchanged.
    static func mappingHeaderValues(of runner: JSONValue, _ transform: (String) throws -> String) rethrows -> JSONValue {
        guard case .object(var fields) = runner, case .object(let headers)? = fields["headers"] else { return runner }
        fields["headers"] = .object(try headers.mapValues { value in
            guard case .string(let text) = value else { return value }
            return .string(try transform(text))
        })
        return .object(fields)
    }
}

/// A user's favourite skill.
public final class SkillFavorite: Model, @unchecked Sendable {
    public static let schema = "skill_favorites"

    // managed
    @ID(key: .id) public var id: UUID?
    @Field(key: "created_at") public var createdAt: Date

    // references
    @Parent(key: "user_id") public var user: User
    @Parent(key: "skill_id") public var skill: Skill

    public init() {}
}

extension Skill: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $updatedAt, $version, $createdBy, $slug, $name, $description, $category, $tagsJSON,
         $inputSchemaJSON, $runnerJSON, $enabled, $executionCount]
    }
}

extension SkillFavorite: ListedProperties {
    package var listedProperties: [any AnyDatabaseProperty] {
        [$id, $createdAt, $user, $skill]
    }
}
