import Vapor
import StewardFormats

/// Reads a JSON object body field by field for a draft: unknown fields and wrong types become one problem each,
/// and `finish()` throws them all at once as a 422.
struct FieldReader {
    let fields: [String: JSONValue]
    private(set) var problems: [FieldProblem]

    /// Refuses fields outside `allowed`, naming what the object is ("is not a skill field").
    init(_ fields: [String: JSONValue], allowed: Set<String>, noun: String) {
        self.fields = fields
        problems = fields.keys.filter { !allowed.contains($0) }.sorted().map { FieldProblem(field: $0, message: "is not a \(noun) field") }
    }

    mutating func string(_ key: String) -> String? {
        guard let value = fields[key] else { return nil }
        if case .string(let text) = value { return text }
        problems.append(FieldProblem(field: key, message: "must be a string"))
        return nil
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let value = fields[key] else { return nil }
        if case .bool(let flag) = value { return flag }
        problems.append(FieldProblem(field: key, message: "must be a boolean"))
        return nil
    }

    mutating func problem(_ field: String, _ message: String) {
        problems.append(FieldProblem(field: field, message: message))
    }

    func finish() throws {
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
    }
}

/// Slugs of skills and workflows: 2 to 64 lower-case letters, digits and inner hyphens, never a UUID.
enum Slug {
    static let rule = "must be 2 to 64 lower-case letters, digits and inner hyphens"

    static func isValid(_ slug: String) -> Bool {
        (2...64).contains(slug.count) && slug.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" }
            && !slug.hasPrefix("-") && !slug.hasSuffix("-") && UUID(uuidString: slug) == nil
    }
}

extension Request {
    /// The body as a JSON object; anything else is a 422 on `body` (malformed JSON is a 400 before this).
    func jsonObject() throws -> [String: JSONValue] {
        guard case .object(let fields) = try content.decode(JSONValue.self) else {
            throw HTTPProblem.validation([FieldProblem(field: "body", message: "must be a JSON object")])
        }
        return fields
    }
}
