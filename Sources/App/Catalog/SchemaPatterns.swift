import Foundation
import NIOPosix
import Synchronization
import StewardFormats

/// The `pattern` keyword, made safe to run on any caller's input (ICU's matcher backtracks, so one author's
/// `(a+)+$` and a long input would otherwise pin a thread for minutes):
/// - a pattern with a quantified group that itself holds an unbounded quantifier is refused when the skill is saved;
/// - each pattern is compiled once per process, when first saved or used, and kept;
/// - a pattern is matched against at most `maximumInputLength` characters;
/// - matching stops at a deadline, and a string it could not decide in time is a field problem;
/// - validation that runs patterns runs on the blocking thread pool, never on an event loop.
enum SchemaPatterns {
    static let maximumInputLength = 16_384
    /// The time all patterns of one validation may take together.
    static let matchingBudget: Duration = .milliseconds(50)

    enum Outcome: Equatable { case match, noMatch, timedOut }

    /// Why `pattern` may not be saved, or nil.
    static func problem(in pattern: String) -> String? {
        if compiled(pattern) == nil { return "must be a valid regular expression" }
        if hasNestedUnboundedQuantifier(pattern) {
            return "must not repeat a group that itself repeats without bound (such as (a+)+ or (a*)*): matching it can take exponential time"
        }
        return nil
    }

    /// The compiled pattern, from the process-wide cache.
    static func compiled(_ pattern: String) -> NSRegularExpression? {
        if let cached = cache.withLock({ $0[pattern] }) { return cached.regex }
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return nil }
        cache.withLock { entries in
            if entries.count >= 4096 { entries.removeAll(keepingCapacity: true) }
            entries[pattern] = Compiled(regex: regex)
        }
        return regex
    }

    /// Whether `text` has a match of `regex`, giving up at `deadline`.
    static func match(_ regex: NSRegularExpression, in text: String, deadline: ContinuousClock.Instant) -> Outcome {
        var found = false, stopped = false
        regex.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(text.startIndex..., in: text)) { result, _, stop in
            if result != nil {
                found = true
                stop.pointee = true
            } else if ContinuousClock.now >= deadline {
                stopped = true
                stop.pointee = true
            }
        }
        return found ? .match : stopped ? .timedOut : .noMatch
    }

    /// Whether the schema, at any depth, uses `pattern`.
    static func uses(in schema: JSONValue) -> Bool {
        guard case .object(let keywords) = schema else { return false }
        if keywords["pattern"] != nil { return true }
        if case .object(let members)? = keywords["properties"], members.values.contains(where: uses(in:)) { return true }
        if let items = keywords["items"], uses(in: items) { return true }
        if let additional = keywords["additionalProperties"], uses(in: additional) { return true }
        return false
    }

    /// A quantified group whose body holds an unbounded quantifier: `(a+)+`, `(a*)*`, `(?:x+y)*`, `((a)+)+`.
    static func hasNestedUnboundedQuantifier(_ pattern: String) -> Bool {
        let characters = Array(pattern.unicodeScalars)
        var groups: [Bool] = [false]  // per open group: holds an unbounded quantifier
        var index = 0
        /// The quantifier at `index`, if any: whether it is unbounded, and where it ends.
        func quantifier(at index: Int) -> (unbounded: Bool, end: Int)? {
            guard index < characters.count else { return nil }
            var end = index + 1
            let unbounded: Bool
            switch characters[index] {
            case "*", "+": unbounded = true
            case "?": unbounded = false
            case "{":
                var body = ""
                while end < characters.count, characters[end] != "}" { body.unicodeScalars.append(characters[end]); end += 1 }
                guard end < characters.count, body.first?.isNumber == true else { return nil }
                end += 1
                unbounded = body.hasSuffix(",")
            default: return nil
            }
            if end < characters.count, characters[end] == "?" || characters[end] == "+" { end += 1 }  // lazy, possessive
            return (unbounded, end)
        }
        while index < characters.count {
            let character = characters[index]
            var atomEnd = index + 1
            var closedGroupHeldUnbounded = false
            switch character {
            case "\\":
                atomEnd = min(index + 2, characters.count)
            case "[":
                atomEnd = index + 1
                if atomEnd < characters.count, characters[atomEnd] == "^" { atomEnd += 1 }
                if atomEnd < characters.count, characters[atomEnd] == "]" { atomEnd += 1 }
                var depth = 1
                while atomEnd < characters.count, depth > 0 {
                    switch characters[atomEnd] {
                    case "\\": atomEnd += 1
                    case "[": depth += 1
                    case "]": depth -= 1
                    default: break
                    }
                    atomEnd += 1
                }
            case "(":
                groups.append(false)
                index += 1
                continue
            case ")":
                closedGroupHeldUnbounded = groups.count > 1 ? groups.removeLast() : false
            default:
                break
            }
            if let (unbounded, end) = quantifier(at: atomEnd) {
                if unbounded && closedGroupHeldUnbounded { return true }
                if unbounded || closedGroupHeldUnbounded { groups[groups.count - 1] = true }
                index = end
            } else {
                if closedGroupHeldUnbounded { groups[groups.count - 1] = true }
                index = atomEnd
            }
        }
        return false
    }

    private struct Compiled: @unchecked Sendable {  // NSRegularExpression is immutable once made
        let regex: NSRegularExpression
    }

    private static let cache = Mutex<[String: Compiled]>([:])
}

extension JSONSchemaSubset {
    /// `validate`, run on the blocking thread pool when the schema uses patterns, with the matching budget.
    static func validateOffLoop(_ value: JSONValue, against schema: JSONValue, path: String = "input") async throws -> [FieldProblem] {
        guard SchemaPatterns.uses(in: schema) else { return validate(value, against: schema, path: path) }
        return try await NIOThreadPool.singleton.runIfActive {
            validate(value, against: schema, path: path, deadline: ContinuousClock.now + SchemaPatterns.matchingBudget)
        }
    }
}
