import Fluent

/// Every migration in the order it is applied. Append only; never rename a type (Fluent tracks them by name).
/// `box` is the at-rest encryption: migrations that seal stored values use it.
enum AppMigrations {
    static func all(sealing box: SecretBox) -> [any Migration] { [
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
        SealHeaderValues(box: box),
    ] }
}
