import Vapor

/// The table of contents of the API: public, then authenticated, then permission-gated routes.
func routes(_ app: Application) throws {
    // Public
    try app.register(collection: HealthController())
    try app.register(collection: OpenAPIController())
    try app.register(collection: JWKSController())
    try app.register(collection: MetricsController())
    // The web console: a page and its assets; everything it does goes through /api/v1 like any client.
    try app.register(collection: ConsoleController())

    // MCP (Streamable HTTP): its own authentication answers (401 with resource metadata) and JSON-RPC errors.
    try app.register(collection: MCPController())

    // /api/v1: the authenticator reads credentials when present; each collection states what its routes need.
    // One chain, so that they share one Task (`MiddlewareChain`).
    let api = app.grouped("api", "v1").grouped(MiddlewareChain(
        ReadOnlyMiddleware(), SessionAuthenticator(), UsageCountingMiddleware(), GeneralRateLimitMiddleware(), IdempotencyMiddleware(),
        WriteConflictRetryMiddleware()))
    try api.register(collection: AuthController())
    try api.register(collection: OAuthController())

    // Permission-gated
    try api.register(collection: APIKeyController())
    try api.register(collection: UserController())
    try api.register(collection: RoleController())
    try api.register(collection: AuditLogController())
    try api.register(collection: SkillController())
    try api.register(collection: ExecutionController())
    try api.register(collection: WebhookController())
    try api.register(collection: EventController())
    try api.register(collection: EventStreamController())
    try api.register(collection: WorkflowController())
    try api.register(collection: ScheduleController())
    try api.register(collection: AdminStatsController())
    try api.register(collection: SettingsController())
}
