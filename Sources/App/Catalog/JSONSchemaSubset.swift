import Foundation
import StewardFormats

/// The part of JSON Schema that skills may use for `inputSchema`, checked at save time and used to validate
/// execution input with a problem per field.
///
/// Supported keywords: `type` (a name or an array of names), `properties`, `required`, `items`, `enum`, `const`,
/// `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`, `additionalProperties` (boolean or schema), nested
/// to any depth; and the annotations `$schema`, `title`, `description`, `default`, `examples`, which are ignored.
/// Any other keyword is refused when the skill is saved, so a schema never silently means less than it says.
enum JSONSchemaSubset {
    static let validationKeywords: Set<String> = [
        "type", "properties", "required", "items", "enum", "const", "minimum", "maximum", "minLength", "maxLength",
        "pattern", "additionalProperties",
    ]
    static let annotations: Set<String> = ["$schema", "title", "description", "default", "examples"]
    static let typeNames: Set<String> = ["object", "array", "string", "number", "integer", "boolean", "null"]
    static let maximumDepth = 32
    static let maximumPatternLength = 512

    // MARK: - Checking a schema

    /// Problems with the schema itself, each naming its path (`inputSchema.properties.name.pattern`).
    static func problems(inSchema schema: JSONValue, path: String = "inputSchema", depth: Int = 0) -> [FieldProblem] {
        guard depth <= maximumDepth else { return [FieldProblem(field: path, message: "is nested too deeply")] }
        guard case .object(let keywords) = schema else {
            if case .bool = schema { return [] }
            return [FieldProblem(field: path, message: "must be a JSON Schema object")]
        }
        var problems: [FieldProblem] = []
        for key in keywords.keys.sorted() where !validationKeywords.contains(key) && !annotations.contains(key) {
            problems.append(FieldProblem(field: "\(path).\(key)", message: "is not supported (supported: \(validationKeywords.sorted().joined(separator: ", ")))"))
        }
        if let type = keywords["type"] {
            switch type {
            case .string(let name) where typeNames.contains(name): break
            case .array(let names) where !names.isEmpty && names.allSatisfy({ if case .string(let n) = $0 { typeNames.contains(n) } else { false } }): break
            default: problems.append(FieldProblem(field: "\(path).type", message: "must be one of \(typeNames.sorted().joined(separator: ", ")) or an array of them"))
            }
        }
        if let properties = keywords["properties"] {
            if case .object(let members) = properties {
                for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                    problems += self.problems(inSchema: member, path: "\(path).properties.\(name)", depth: depth + 1)
                }
            } else {
                problems.append(FieldProblem(field: "\(path).properties", message: "must be an object of schemas"))
            }
        }
        if let required = keywords["required"] {
            if case .array(let names) = required, names.allSatisfy({ if case .string = $0 { true } else { false } }) {} else {
                problems.append(FieldProblem(field: "\(path).required", message: "must be an array of property names"))
            }
        }
        if let items = keywords["items"] { problems += self.problems(inSchema: items, path: "\(path).items", depth: depth + 1) }
        if let additional = keywords["additionalProperties"] {
            if case .bool = additional {} else { problems += self.problems(inSchema: additional, path: "\(path).additionalProperties", depth: depth + 1) }
        }
        if let values = keywords["enum"] {
            if case .array(let options) = values, !options.isEmpty {} else {
                problems.append(FieldProblem(field: "\(path).enum", message: "must be a non-empty array"))
            }
        }
        for key in ["minimum", "maximum"] {
            if let value = keywords[key], !value.isNumber { problems.append(FieldProblem(field: "\(path).\(key)", message: "must be a number")) }
        }
        for key in ["minLength", "maxLength"] {
            if let value = keywords[key], !value.isNonNegativeInteger {
                problems.append(FieldProblem(field: "\(path).\(key)", message: "must be a non-negative integer"))
            }
        }
        if let pattern = keywords["pattern"] {
            if case .string(let text) = pattern, text.count <= maximumPatternLength {
                if let problem = SchemaPatterns.problem(in: text) { problems.append(FieldProblem(field: "\(path).pattern", message: problem)) }
            } else {
                problems.append(FieldProblem(field: "\(path).pattern", message: "must be a valid regular expression of at most \(maximumPatternLength) characters"))
            }
        }
        return problems
    }

    // MARK: - Validating an instance

    /// Problems with `value` against `schema`, each naming the field (`input.address.city`). Patterns stop matching
    /// at `deadline` (see `SchemaPatterns`); use `validateOffLoop` on a request's path.
    static func validate(_ value: JSONValue, against schema: JSONValue, path: String = "input",
                         deadline: ContinuousClock.Instant? = nil) -> [FieldProblem] {
        let deadline = deadline ?? ContinuousClock.now + SchemaPatterns.matchingBudget
        guard case .object(let keywords) = schema else {
            if case .bool(false) = schema { return [FieldProblem(field: path, message: "is not allowed")] }
            return []
        }
        var problems: [FieldProblem] = []
        if let type = keywords["type"] {
            let allowed: [String]
            switch type {
            case .string(let name): allowed = [name]
            case .array(let names): allowed = names.compactMap { if case .string(let n) = $0 { n } else { nil } }
            default: allowed = []
            }
            if !allowed.isEmpty, !allowed.contains(where: { value.matches(type: $0) }) {
                return [FieldProblem(field: path, message: "must be \(allowed.map { article($0) }.joined(separator: " or "))")]
            }
        }
        if let options = keywords["enum"], case .array(let values) = options, !values.contains(value) {
            problems.append(FieldProblem(field: path, message: "must be one of \(values.map { (try? $0.canonicalString()) ?? "?" }.joined(separator: ", "))"))
        }
        if let constant = keywords["const"], constant != value {
            problems.append(FieldProblem(field: path, message: "must be \((try? constant.canonicalString()) ?? "?")"))
        }
        if case .number(let number) = value {
            if case .number(let minimum)? = keywords["minimum"], number < minimum {
                problems.append(FieldProblem(field: path, message: "must be at least \(format(minimum))"))
            }
            if case .number(let maximum)? = keywords["maximum"], number > maximum {
                problems.append(FieldProblem(field: path, message: "must be at most \(format(maximum))"))
            }
        }
        if case .string(let text) = value {
            let length = text.count
            if case .number(let minimum)? = keywords["minLength"], Double(length) < minimum {
                problems.append(FieldProblem(field: path, message: "must be at least \(format(minimum)) characters"))
            }
            if case .number(let maximum)? = keywords["maxLength"], Double(length) > maximum {
                problems.append(FieldProblem(field: path, message: "must be at most \(format(maximum)) characters"))
            }
            if case .string(let pattern)? = keywords["pattern"], let regex = SchemaPatterns.compiled(pattern) {
                if length > SchemaPatterns.maximumInputLength {
                    problems.append(FieldProblem(field: path, message: "must be at most \(SchemaPatterns.maximumInputLength) characters to be matched against its pattern"))
                } else {
                    switch SchemaPatterns.match(regex, in: text, deadline: deadline) {
                    case .match: break
                    case .noMatch: problems.append(FieldProblem(field: path, message: "must match \(pattern)"))
                    case .timedOut: problems.append(FieldProblem(field: path, message: "could not be matched against \(pattern) in time"))
                    }
                }
            }
        }
        if case .object(let members) = value {
            let properties: [String: JSONValue]
            if case .object(let declared)? = keywords["properties"] { properties = declared } else { properties = [:] }
            if case .array(let required)? = keywords["required"] {
                for case .string(let name) in required where members[name] == nil {
                    problems.append(FieldProblem(field: "\(path).\(name)", message: "is required"))
                }
            }
            for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                if let schema = properties[name] {
                    problems += validate(member, against: schema, path: "\(path).\(name)", deadline: deadline)
                } else if let additional = keywords["additionalProperties"] {
                    if case .bool(false) = additional {
                        problems.append(FieldProblem(field: "\(path).\(name)", message: "is not an allowed property"))
                    } else {
                        problems += validate(member, against: additional, path: "\(path).\(name)", deadline: deadline)
                    }
                }
            }
        }
        if case .array(let elements) = value, let items = keywords["items"] {
            for (index, element) in elements.enumerated() {
                problems += validate(element, against: items, path: "\(path)[\(index)]", deadline: deadline)
            }
        }
        return problems
    }

    private static func article(_ type: String) -> String {
        switch type {
        case "object", "array", "integer": "an \(type)"
        case "null": "null"
        default: "a \(type)"
        }
    }

    private static func format(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }
}

extension JSONValue {
    var isNumber: Bool {
        if case .number = self { return true }
        return false
    }

    var isNonNegativeInteger: Bool {
        if case .number(let value) = self { return value >= 0 && value.rounded() == value }
        return false
    }

    func matches(type: String) -> Bool {
        switch (type, self) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null), ("number", .number):
            true
        case ("integer", .number(let value)):
            value.rounded() == value
        default:
            false
        }
    }
}
