import Vapor

/// The table of contents of the API: public, then authenticated, then permission-gated routes.
func routes(_ app: Application) throws {
    // Public
    try app.register(collection: HealthController())
    try app.register(collection: OpenAPIController())

    // Authenticated (/api/v1): added with the identity and access issues.
}
