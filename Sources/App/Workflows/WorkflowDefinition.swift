import Foundation
import StewardFormats

/// One step of a workflow: a skill run with input that may reference the workflow's input and the outputs of the
/// steps it depends on.
struct WorkflowStep: Codable, Sendable, Equatable {
    struct Retry: Codable, Sendable, Equatable {
        var maxAttempts: Int
        var backoffSeconds: Int
    }

    var id: String
    /// The skill's id, resolved from the id or slug given at save time.
    var skillId: UUID
    var input: JSONValue
    var dependsOn: [String]
    var retry: Retry
    var timeoutSeconds: Int
    var continueOnFailure: Bool
}

extension WorkflowStep {
    /// For stored text that Steward's own reading below does not take (none that Steward writes).
    private static let decoder = JSONDecoder()

    /// The steps as stored in a `steps` column (what `JSONEncoder.sortedKeys` wrote); none when the text is not a
    /// step list. Read with `JSONText`, as `Codable` would read them, and through Foundation's decoder only when a
    /// step does not have the stored shape; a test holds the two readings to the same steps.
    static func stored(_ text: String) -> [WorkflowStep] {
        if case .array(let values)? = JSONText.parse(text) {
            let steps = values.compactMap(WorkflowStep.init(stored:))
            if steps.count == values.count { return steps }
        }
        return (try? decoder.decode([WorkflowStep].self, from: Data(text.utf8))) ?? []
    }

    /// One stored step, every field present and of its type; nil otherwise.
    init?(stored value: JSONValue) {
        guard let fields = value.object,
              let id = fields["id"]?.stringValue,
              let skillId = fields["skillId"]?.stringValue.flatMap(UUID.init(text:)),
              let input = fields["input"],
              case .array(let depends)? = fields["dependsOn"],
              let retry = fields["retry"]?.object,
              let maxAttempts = retry["maxAttempts"]?.intValue, let backoffSeconds = retry["backoffSeconds"]?.intValue,
              let timeoutSeconds = fields["timeoutSeconds"]?.intValue,
              case .bool(let continueOnFailure)? = fields["continueOnFailure"] else { return nil }
        let dependsOn = depends.compactMap(\.stringValue)
        guard dependsOn.count == depends.count else { return nil }
        self.init(id: id, skillId: skillId, input: input, dependsOn: dependsOn,
                  retry: Retry(maxAttempts: maxAttempts, backoffSeconds: backoffSeconds),
                  timeoutSeconds: timeoutSeconds, continueOnFailure: continueOnFailure)
    }
}

/// Reading, checking and ordering a workflow's steps, and resolving `${…}` references in step input.
///
/// References: a string that is exactly `${input.a.b}` or `${steps.<id>.output.a.0.b}` is replaced by that value
/// with its JSON type; a reference inside a longer string is replaced by its text (strings as they are, other
/// values as JSON). Path segments are object keys, or array indexes written as numbers. A step may only
/// reference steps it depends on, directly or not, so their output exists when it starts.
enum WorkflowDefinition {
    static let maxSteps = 50
    private static let referencePattern = #"\$\{([^}]*)\}"#

    /// Parses `steps` as given in a request; every problem is reported with its path (`steps[2].dependsOn`).
    static func parse(_ value: JSONValue, resolveSkill: (String) async -> UUID?) async -> ([WorkflowStep], [FieldProblem]) {
        guard case .array(let items) = value, !items.isEmpty, items.count <= maxSteps else {
            return ([], [FieldProblem(field: "steps", message: "must be an array of 1 to \(maxSteps) steps")])
        }
        var steps: [WorkflowStep] = []
        var problems: [FieldProblem] = []
        let allowed: Set<String> = ["id", "skillId", "input", "dependsOn", "retry", "timeoutSeconds", "continueOnFailure"]
        for (index, item) in items.enumerated() {
            let at = "steps[\(index)]"
            guard case .object(let fields) = item else {
                problems.append(FieldProblem(field: at, message: "must be an object"))
                continue
            }
            for key in fields.keys.sorted() where !allowed.contains(key) {
                problems.append(FieldProblem(field: "\(at).\(key)", message: "is not a step field"))
            }
            let id = fields["id"]?.stringValue ?? ""
            if !isStepID(id) { problems.append(FieldProblem(field: "\(at).id", message: "must be 1 to 64 letters, digits, - or _")) }
            var skill: UUID?
            if let reference = fields["skillId"]?.stringValue, !reference.isEmpty, reference.count <= 200 {
                skill = await resolveSkill(reference)
                if skill == nil { problems.append(FieldProblem(field: "\(at).skillId", message: "no such skill: \(reference)")) }
            } else {
                problems.append(FieldProblem(field: "\(at).skillId", message: "is required (a skill id or slug)"))
            }
            let input = fields["input"] ?? [:]
            if case .object = input {} else { problems.append(FieldProblem(field: "\(at).input", message: "must be a JSON object")) }
            var dependsOn: [String] = []
            if let value = fields["dependsOn"] {
                if case .array(let ids) = value, ids.allSatisfy({ $0.stringValue != nil }) { dependsOn = ids.compactMap(\.stringValue) }
                else { problems.append(FieldProblem(field: "\(at).dependsOn", message: "must be an array of step ids")) }
            }
            var retry = WorkflowStep.Retry(maxAttempts: 1, backoffSeconds: 0)
            if let value = fields["retry"] {
                if case .object(let policy) = value, policy.keys.allSatisfy(["maxAttempts", "backoffSeconds"].contains),
                   let attempts = policy["maxAttempts"].map({ $0.intValue }) ?? 1, (1...10).contains(attempts),
                   let backoff = policy["backoffSeconds"].map({ $0.intValue }) ?? 0, (0...3600).contains(backoff) {
                    retry = .init(maxAttempts: attempts, backoffSeconds: backoff)
                } else {
                    problems.append(FieldProblem(field: "\(at).retry", message: "must be {maxAttempts: 1-10, backoffSeconds: 0-3600}"))
                }
            }
            var timeout = 3600
            if let value = fields["timeoutSeconds"] {
                if let seconds = value.intValue, (1...86_400).contains(seconds) { timeout = seconds }
                else { problems.append(FieldProblem(field: "\(at).timeoutSeconds", message: "must be a whole number of seconds from 1 to 86400")) }
            }
            var continueOnFailure = false
            if let value = fields["continueOnFailure"] {
                if case .bool(let flag) = value { continueOnFailure = flag }
                else { problems.append(FieldProblem(field: "\(at).continueOnFailure", message: "must be a boolean")) }
            }
            steps.append(WorkflowStep(id: id, skillId: skill ?? UUID(), input: input, dependsOn: dependsOn, retry: retry,
                                      timeoutSeconds: timeout, continueOnFailure: continueOnFailure))
        }
        guard problems.isEmpty else { return ([], problems) }
        return (steps, check(steps))
    }

    /// Structure: unique ids, known dependencies, no cycle, references only to the workflow input and ancestors.
    static func check(_ steps: [WorkflowStep]) -> [FieldProblem] {
        var problems: [FieldProblem] = []
        var seen: [String: Int] = [:]
        for (index, step) in steps.enumerated() {
            if let first = seen[step.id] { problems.append(FieldProblem(field: "steps[\(index)].id", message: "repeats the id of steps[\(first)]")) }
            seen[step.id] = seen[step.id] ?? index
        }
        for (index, step) in steps.enumerated() {
            for dependency in step.dependsOn where seen[dependency] == nil || dependency == step.id {
                problems.append(FieldProblem(field: "steps[\(index)].dependsOn", message: dependency == step.id ? "a step cannot depend on itself" : "no step has the id '\(dependency)'"))
            }
        }
        guard problems.isEmpty else { return problems }
        if let cycle = cycle(in: steps) {
            return [FieldProblem(field: "steps", message: "the dependencies form a cycle: \(cycle.joined(separator: " → "))")]
        }
        let byID = Dictionary(uniqueKeysWithValues: steps.map { ($0.id, $0) })
        for (index, step) in steps.enumerated() {
            let reachable = ancestors(of: step.id, in: byID)
            for reference in references(in: step.input) {
                let parts = reference.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                if parts.first == "input", parts.count >= 1, !parts.contains("") { continue }
                if parts.count >= 3, parts[0] == "steps", parts[2] == "output", !parts.contains("") {
                    if reachable.contains(parts[1]) { continue }
                    problems.append(FieldProblem(field: "steps[\(index)].input", message: "${\(reference)} names a step this one does not depend on"))
                    continue
                }
                problems.append(FieldProblem(field: "steps[\(index)].input", message: "${\(reference)} is not ${input.…} or ${steps.<id>.output…}"))
            }
        }
        return problems
    }

    static func isStepID(_ id: String) -> Bool {
        (1...64).contains(id.count) && id.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "-" || $0 == "_" }
    }

    /// The steps in an order where each comes after its dependencies (Kahn), or the ids of a cycle.
    static func cycle(in steps: [WorkflowStep]) -> [String]? {
        var remaining = Dictionary(uniqueKeysWithValues: steps.map { ($0.id, Set($0.dependsOn)) })
        while let ready = remaining.first(where: { $0.value.isEmpty })?.key {
            remaining[ready] = nil
            for key in remaining.keys { remaining[key]?.remove(ready) }
        }
        guard !remaining.isEmpty else { return nil }
        // Walk dependencies from any remaining step until one repeats: that loop is the cycle.
        var path: [String] = []
        var current = remaining.keys.sorted().first!
        while !path.contains(current) {
            path.append(current)
            current = remaining[current]!.sorted().first!
        }
        return Array(path[path.firstIndex(of: current)!...]) + [current]
    }

    static func ancestors(of id: String, in steps: [String: WorkflowStep]) -> Set<String> {
        var found = Set<String>()
        var queue = steps[id]?.dependsOn ?? []
        while let next = queue.popLast() {
            if found.insert(next).inserted { queue += steps[next]?.dependsOn ?? [] }
        }
        return found
    }

    /// Every `${…}` reference in a value, without the braces.
    static func references(in value: JSONValue) -> [String] {
        switch value {
        case .string(let text):
            guard let regex = try? NSRegularExpression(pattern: referencePattern) else { return [] }
            return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
                Range($0.range(at: 1), in: text).map { String(text[$0]).trimmingCharacters(in: .whitespaces) }
            }
        case .array(let items): return items.flatMap(references)
        case .object(let fields): return fields.keys.sorted().flatMap { references(in: fields[$0]!) }
        default: return []
        }
    }

    /// Replaces references with values from `context` (`{"input": …, "steps": {"<id>": {"output": …}}}`);
    /// throws naming the first reference that leads nowhere.
    static func resolve(_ value: JSONValue, context: JSONValue) throws -> JSONValue {
        switch value {
        case .string(let text):
            let references = references(in: value)
            guard !references.isEmpty else { return value }
            if references.count == 1, text.trimmingCharacters(in: .whitespaces) == "${\(references[0])}" {
                return try lookup(references[0], in: context)
            }
            var result = text
            for reference in references {
                let found = try lookup(reference, in: context)
                let replacement: String = if case .string(let string) = found { string } else { try found.canonicalString() }
                result = result.replacingOccurrences(of: "${\(reference)}", with: replacement)
            }
            return .string(result)
        case .array(let items): return .array(try items.map { try resolve($0, context: context) })
        case .object(let fields): return .object(try fields.mapValues { try resolve($0, context: context) })
        default: return value
        }
    }

    struct UnresolvedReference: Error, CustomStringConvertible {
        let reference: String
        var description: String { "${\(reference)} does not lead to a value" }
    }

    private static func lookup(_ reference: String, in context: JSONValue) throws -> JSONValue {
        var current = context
        for part in reference.split(separator: ".", omittingEmptySubsequences: false).map(String.init) {
            switch current {
            case .object(let fields) where fields[part] != nil: current = fields[part]!
            case .array(let items) where Int(part).map({ items.indices.contains($0) }) ?? false: current = items[Int(part)!]
            default: throw UnresolvedReference(reference: reference)
            }
        }
        return current
    }
}

extension WorkflowStep: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes): a list of
    /// workflows spent a sixth of its CPU encoding steps through `Codable`'s containers.
    func write(to object: inout APIJSON.ObjectWriter) throws {
        object.field("id", id)
        object.field("skillId", skillId)
        object.field("input", input)
        object.field("dependsOn", dependsOn)
        try object.field("retry", object: retry)
        object.field("timeoutSeconds", timeoutSeconds)
        object.field("continueOnFailure", continueOnFailure)
    }
}

extension WorkflowStep.Retry: APIJSONWritable {
    func write(to object: inout APIJSON.ObjectWriter) throws {
        object.field("maxAttempts", maxAttempts)
        object.field("backoffSeconds", backoffSeconds)
    }
}
