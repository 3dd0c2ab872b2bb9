import Vapor

extension Request {
    /// A UUID path parameter; anything that is not a UUID is a 404, exactly like an id that does not exist.
    public func uuidParameter(_ name: String) throws -> UUID {
        guard let raw = parameters.get(name), let id = UUID(uuidString: raw) else {
            throw HTTPProblem.notFound()
        }
        return id
    }
}
