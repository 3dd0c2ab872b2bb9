import Fluent
import StewardSQLite
import Vapor

/// Boots the application: each line is one step.
public func configure(_ app: Application, config: AppConfig) async throws {
    app.appConfig = config
    app.runtimeSettings = RuntimeSettings(config: config)
    app.logger.logLevel = config.logLevel
    ThreadPools.configure(app)
    app.metrics = AppMetrics()
    try DatabaseSetup.configure(app, config)
    app.keyMaterial = try await KeyMaterial.load(app, config)
    app.migrations.add(AppMigrations.all(app.keyMaterial))
    try await DatabaseSetup.openSQLitePool(app, config)
    try await DatabaseSetup.openSQLiteWriter(app, config)
    app.verifiedTokens = VerifiedTokens()
    app.auditVerifications = AuditVerifications()
    app.oauthProviderDirectory = OAuthProviderDirectory(transport: app.providerTransport, clock: app.wallClock, logger: app.logger)
    ExecutionJobs.register(in: app.jobHandlers)
    WorkflowRunService.register(in: app.jobHandlers, observing: app.executionOutcomeObservers)
    MCPCallAudit.register(observing: app.executionOutcomeObservers)
    ScheduleService.register(in: app.jobHandlers)
    WebhookDeliverer.register(in: app.jobHandlers)
    MaintenanceTasks.register(in: app.jobHandlers)
    BackgroundWork.configure(app)
    HTTPSetup.configure(app, config)
    Commands.register(in: app)
    try routes(app)
}
