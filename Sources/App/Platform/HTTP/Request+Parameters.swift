import StewardFormats
import Vapor

extension Request {
    /// A UUID path parameter; anything that is not a UUID is a 404, exactly like an id that does not exist.
    public func uuidParameter(_ name: String) throws -> UUID {
        guard let raw = parameters.get(name), let id = UUID(uuidString: raw) else {
            throw HTTPProblem.notFound()
        }
        return id
    }

    /// An RFC 3339 timestamp in the query (the `from` and `to` of a list), nil when absent; anything else adds a
    /// field problem naming the parameter.
    func timestampQuery(_ name: String, problems: inout [FieldProblem]) -> Date? {
        guard let raw = queryText(name) else { return nil }
        guard let date = RFC3339.date(from: raw) else {
            problems.append(FieldProblem(field: name, message: "must be an RFC 3339 timestamp such as 2026-11-21T19:01:43Z (years 0001 to 9999)"))
            return nil
        }
        return date
    }

    /// One query parameter as text: what `query[String.self, at: name]` answers (the last value when the name comes
    /// more than once, `+` read as a space, nil when its percent-encoding is broken), read off the query string
    /// itself. Vapor's form decoder builds a tree of the whole query and decodes through `Codable` for every
    /// parameter asked for; a list asks for up to seven, which cost 5% of a search's CPU. A query whose keys are
    /// anything but plain (`[`, `%` or `+` in a key) still goes through Vapor's decoder, which gives those meaning.
    func queryText(_ name: String) -> String? {
        guard let raw = url.query else { return nil }
        var found: Substring?
        for pair in raw.split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let key = pair[..<equals]
            if key.contains(where: { $0 == "[" || $0 == "%" || $0 == "+" }) { return query[String.self, at: name] }
            if key == name { found = pair[pair.index(after: equals)...] }
        }
        guard let found else { return nil }
        if !found.contains(where: { $0 == "%" || $0 == "+" }) { return String(found) }
        return found.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
