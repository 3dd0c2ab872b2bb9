import Fluent

/// Every migration in the order it is applied. Append only; never rename a type (Fluent tracks them by name).
/// Migrations that seal stored values or link the audit chain take their keys from `keys`.
enum AppMigrations {
    static func all(_ keys: KeyMaterial) -> [any Migration] { [
        CreateLedgerHeads(),
        CreateAuditLogs(),
        CreateEvents(),
        CreateUsers(),
        CreateSessions(),
        CreateAccountSecurity(),
        CreateMailOutbox(),
        CreateRoles(),
        CreateAPIKeys(),
        ProtectAuditLogs(),
        CreateSkills(),
        CreateJobsAndExecutions(),
        CreateIdempotencyKeys(),
        CreateWebhooks(),
        AddJobGroupKey(),
        CreateStreamTickets(),
        CreateRateLimits(),
        CreateSchedules(),
        CreateSystemTasks(),
        CreateWorkflows(),
        AddExecutionActiveIndex(),
        NarrowSkillSearchTrigger(),
        CountActiveExecutions(),
        SealHeaderValues(box: keys.secretBox),
        KeyAuditChain(key: keys.audit.chain),
        AddScheduleTrigger(),
        CreatePendingLedger(key: keys.audit.chain),
        AddListOrderIndexes(),
        AddAuditFilterIndexes(),
        AddEventResourceIndex(),
        CreateMCPSessions(),
        AddSkillToolFields(),
        CreateAPIKeyTools(),
        AddDeliveryStatusIndex(),
        CreateOAuthIdentities(),
        CreateSettings(),
    ] }
}
