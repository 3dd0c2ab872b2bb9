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
        guard let raw = query[String.self, at: name] else { return nil }
        guard let date = ISO8601DateFormatter().date(from: raw) else {
            problems.append(FieldProblem(field: name, message: "must be an RFC 3339 timestamp such as 2026-11-21T19:01:43Z"))
            return nil
        }
        return date
    }
}
