import Foundation
import Logging

/// The whole typed configuration, parsed once at boot from the environment and `.env`.
public struct AppConfig: Sendable {
    /// Where the data lives.
    public enum DatabaseKind: Sendable, Equatable {
        case sqlite(path: String)
        case postgres(url: String)

        public var isPostgres: Bool {
            if case .postgres = self { return true }
            return false
        }
    }

    public enum LogFormat: String, Sendable, CaseIterable { case text, json }
    public enum JWTAlgorithmName: String, Sendable, CaseIterable { case hs256 = "HS256", es256 = "ES256" }

    /// Where mail goes.
    public enum MailTransport: Sendable, Equatable {
        case log
        case file(directory: String)
        case smtp(SMTPSettings)
    }
    public enum SQLiteSynchronous: String, Sendable, CaseIterable { case full = "FULL", normal = "NORMAL" }
    public enum RateLimitStoreKind: String, Sendable, CaseIterable { case memory, database }
    /// What erasing a user does to their executions and workflow runs.
    public enum EraseExecutions: String, Sendable, CaseIterable { case anonymise, delete }

    /// The rate-limit policies: variable, policy name, default.
    static let rateLimitVariables: [(variable: String, policy: String, fallback: String, meaning: String)] = [
        ("STEWARD_RATE_LIMIT_LOGIN", "login", "10/min", "Logins per client IP and normalised email."),
        ("STEWARD_RATE_LIMIT_LOGIN_IP", "login_ip", "30/min", "Logins per client IP."),
        ("STEWARD_RATE_LIMIT_REGISTER", "register", "10/hour", "Registrations per client IP."),
        ("STEWARD_RATE_LIMIT_MAIL", "mail", "3/hour", "Password-reset and verification mails per email address."),
        ("STEWARD_RATE_LIMIT_MAIL_IP", "mail_ip", "10/hour", "Password-reset and verification mails per client IP."),
        ("STEWARD_RATE_LIMIT_MFA", "mfa", "5", "MFA code tries per MFA token (a plain count: the token lives 5 minutes)."),
        ("STEWARD_RATE_LIMIT_API", "api", "600/min", "API requests per authenticated user or API key."),
        ("STEWARD_RATE_LIMIT_ANONYMOUS", "anonymous", "120/min", "API requests without credentials, per client IP."),
        ("STEWARD_RATE_LIMIT_EXECUTIONS", "executions", "60/min", "Executions created per user."),
        ("STEWARD_RATE_LIMIT_GLOBAL", "global", "0", "All /api/v1 requests together (sign-in exempt; health and metrics are outside /api/v1). Shared by every instance with STEWARD_RATE_LIMIT_STORE=database, else per instance."),
    ]

    public var host: String
    public var port: Int
    public var publicURL: String
    public var database: DatabaseKind
    /// PostgreSQL: where the LISTEN connection goes, when queries go through a pooler that cannot carry LISTEN.
    public var databaseListenURL: String?
    /// PostgreSQL: the hot reads are prepared once per connection (off behind a pooler that cannot keep them).
    public var databasePreparedStatements: Bool
    public var dataDirectory: String
    public var autoMigrate: Bool
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    public var maxBodySize: Int
    public var corsOrigins: [String]
    public var dbPoolMax: Int
    public var dbConnectTimeoutSeconds: Int
    public var slowQueryMilliseconds: Int
    public var metricsToken: String?
    public var sqliteSynchronous: SQLiteSynchronous
    public var sqliteBusyTimeoutMilliseconds: Int
    /// SQLite: WAL bytes past which a TRUNCATE checkpoint runs, and the size a checkpoint cuts the WAL back to.
    public var sqliteWALLimitBytes: Int
    public var shutdownGraceSeconds: Int
    /// A connection with no byte read or written for this long is closed (idle keep-alive, a stalled head or body).
    public var httpIdleTimeoutSeconds: Int
    /// A request head must arrive whole within this many seconds of its first byte (408 otherwise).
    public var httpHeadTimeoutSeconds: Int
    /// A request body may pause at most this long between two reads (408 otherwise).
    public var httpBodyTimeoutSeconds: Int
    /// Open connections the server keeps at most, in all and per client address (503 beyond).
    public var httpMaxConnections: Int
    public var httpMaxConnectionsPerAddress: Int
    public var adminEmail: String
    public var adminPassword: String?
    public var bcryptCost: Int
    public var jwtAlgorithm: JWTAlgorithmName
    public var jwtSecret: String?
    public var jwtKeyFile: String?
    public var jwtPreviousKeyFiles: [String]
    public var jwtIssuer: String
    /// Issuers also accepted: the public URL, which was the default issuer before, while STEWARD_JWT_ISSUER is unset.
    public var jwtAcceptedLegacyIssuers: [String]
    public var jwtAudience: String
    public var accessTokenTTLSeconds: Int
    public var refreshTokenTTLSeconds: Int
    public var sessionIdleTimeoutSeconds: Int
    public var sessionAbsoluteTimeoutSeconds: Int
    public var lockoutThreshold: Int
    public var lockoutMinutes: Int
    public var mail: MailTransport
    public var mailFrom: String
    public var encryptionKey: String?
    /// Earlier encryption keys, still accepted for opening values while `steward keys rotate-encryption` re-seals them.
    public var previousEncryptionKeys: [String]
    /// Base64 of 32 bytes keying the audit chain's HMAC; nil: generated into the data directory.
    public var auditKey: String?
    /// Base64 of the 32-byte Ed25519 seed that signs audit checkpoints; nil: generated into the data directory.
    public var auditSigningKey: String?
    public var maxAPIKeysPerUser: Int
    public var auditRetentionDays: Int
    public var outboundAllowedHosts: [String]
    public var outboundHTTPSOnly: Bool
    public var workers: Int
    public var jobLeaseSeconds: Int
    public var jobHeartbeatSeconds: Int
    public var jobMaxAttempts: Int
    public var maxConcurrentExecutionsPerUser: Int
    public var webhookHistoryDays: Int
    /// nil: no nightly backup.
    public var backupCron: String?
    public var backupKeep: Int
    public var maxStreamsPerUser: Int
    public var maxStreams: Int
    public var streamBufferEvents: Int
    public var rateLimitStore: RateLimitStoreKind
    public var trustedProxies: [String]
    public var rateLimits: [String: RateLimitPolicy]
    /// How long an MCP `tools/call` waits for its execution before answering with the execution id.
    public var mcpCallTimeoutSeconds: Int
    /// Identity providers for sign-in (`STEWARD_OIDC_PROVIDERS`), in the order they were listed.
    public var oauthProviders: [OAuthProviderConfig]
    /// Where a finished identity-provider sign-in may return (exact URLs).
    public var oauthRedirectURLs: [String]
    /// Whether an unknown identity creates an account.
    public var oauthSignup: Bool
    /// The documented variables given a value (environment or `.env`): a runtime setting whose default comes from
    /// one of them shows `environment` as its source.
    public var explicitlySet: Set<String>
    public var eraseExecutions: EraseExecutions
}

/// Every bad or missing variable found while loading, reported together.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let problems: [String]
    public var description: String {
        "invalid configuration: " + problems.joined(separator: "; ")
    }
}

extension AppConfig {
    /// One documented variable: its name, default and meaning. `.env.example` and the README table follow this list.
    struct Variable: Sendable {
        let name: String
        let defaultValue: String
        let meaning: String
    }

    /// Every variable the server reads, in documentation order.
    static let variables: [Variable] = [
        .init(name: "STEWARD_HOST", defaultValue: "127.0.0.1", meaning: "Address the HTTP server binds to."),
        .init(name: "STEWARD_PORT", defaultValue: "8080", meaning: "TCP port of the HTTP server (1-65535)."),
        .init(name: "STEWARD_PUBLIC_URL", defaultValue: "http://<host>:<port>", meaning: "Base URL used in links the server hands out."),
        .init(name: "DATABASE_URL", defaultValue: "(unset: SQLite in the data directory)", meaning: "postgres://user:pass@host:port/db switches to PostgreSQL (postgres://user:pass@/db?host=/socket/directory through its Unix socket); sqlite:<path> names another SQLite file."),
        .init(name: "STEWARD_DATABASE_LISTEN_URL", defaultValue: "(unset: DATABASE_URL)", meaning: "PostgreSQL: a direct connection URL for LISTEN/NOTIFY, when DATABASE_URL goes through PgBouncer in transaction mode."),
        .init(name: "STEWARD_DATABASE_PREPARED_STATEMENTS", defaultValue: "true", meaning: "PostgreSQL: prepare the per-request caller lookup once per connection; false behind a pooler in transaction mode that cannot keep prepared statements (PgBouncer before 1.21)."),
        .init(name: "STEWARD_DATA_DIR", defaultValue: "./data", meaning: "Directory for the SQLite file, generated keys and backups."),
        .init(name: "STEWARD_AUTO_MIGRATE", defaultValue: "true", meaning: "Apply pending migrations when `serve` starts."),
        .init(name: "STEWARD_LOG_LEVEL", defaultValue: "info", meaning: "trace, debug, info, notice, warning, error or critical."),
        .init(name: "STEWARD_LOG_FORMAT", defaultValue: "text", meaning: "text (human) or json (one JSON object per line)."),
        .init(name: "STEWARD_MAX_BODY_SIZE", defaultValue: "1mb", meaning: "Largest request body accepted (bytes, or with kb/mb suffix); larger gets 413."),
        .init(name: "STEWARD_CORS_ORIGINS", defaultValue: "(empty: no cross-origin access)", meaning: "Comma-separated allowed origins, or * for any."),
        .init(name: "STEWARD_DB_POOL_MAX", defaultValue: "10", meaning: "PostgreSQL: most open connections per process."),
        .init(name: "STEWARD_DB_CONNECT_TIMEOUT", defaultValue: "10", meaning: "Seconds to wait for a database connection (PostgreSQL connect, and a free pooled connection on both)."),
        .init(name: "STEWARD_SLOW_QUERY_MS", defaultValue: "500", meaning: "Statements slower than this many milliseconds are logged as warnings with their redacted SQL (0 turns the log off)."),
        .init(name: "STEWARD_METRICS_TOKEN", defaultValue: "(unset: /metrics is open)", meaning: "When set (16-4096 characters), GET /metrics needs `Authorization: Bearer <token>`."),
        .init(name: "STEWARD_SQLITE_SYNCHRONOUS", defaultValue: "full", meaning: "SQLite durability: full (no acknowledged write is lost on power loss) or normal (faster; the last commits may be lost on power loss, never corrupted)."),
        .init(name: "STEWARD_SQLITE_BUSY_TIMEOUT_MS", defaultValue: "5000", meaning: "SQLite: how long a writer waits for the lock before failing."),
        .init(name: "STEWARD_SQLITE_WAL_LIMIT", defaultValue: "64MB", meaning: "SQLite: past this size the WAL is checkpointed and truncated (checked every 30 s); also its journal_size_limit."),
        .init(name: "STEWARD_SHUTDOWN_GRACE_SECONDS", defaultValue: "25", meaning: "On SIGTERM, how long in-flight requests may take to finish."),
        .init(name: "STEWARD_HTTP_IDLE_TIMEOUT_SECONDS", defaultValue: "60", meaning: "A connection that reads and writes nothing for this long is closed: an idle keep-alive connection, a stalled request head or body."),
        .init(name: "STEWARD_HTTP_HEAD_TIMEOUT_SECONDS", defaultValue: "10", meaning: "A request head (request line and headers) must arrive whole within this many seconds of its first byte; otherwise 408 and the connection is closed, however the bytes trickle in."),
        .init(name: "STEWARD_HTTP_BODY_TIMEOUT_SECONDS", defaultValue: "30", meaning: "A request body may pause at most this many seconds between two reads; otherwise 408 and the connection is closed."),
        .init(name: "STEWARD_HTTP_MAX_CONNECTIONS", defaultValue: "10000", meaning: "Open client connections in all; a connection beyond gets 503 `too_many_connections` and is closed. Lowered at start to what the open-file limit leaves after a reserve for the process's own descriptors."),
        .init(name: "STEWARD_HTTP_MAX_CONNECTIONS_PER_ADDRESS", defaultValue: "256", meaning: "Open connections from one client address (STEWARD_TRUSTED_PROXIES are exempt); beyond, 503 `too_many_connections`."),
        .init(name: "STEWARD_ADMIN_EMAIL", defaultValue: "admin@steward.local", meaning: "Email of the first admin, created when the database has no user."),
        .init(name: "STEWARD_ADMIN_PASSWORD", defaultValue: "(unset: generated and printed once)", meaning: "Password of the first admin (8-128 characters)."),
        .init(name: "STEWARD_BCRYPT_COST", defaultValue: "12", meaning: "bcrypt cost for password hashes (10-16; lower only in tests)."),
        .init(name: "STEWARD_JWT_ALG", defaultValue: "HS256", meaning: "Access-token signature: HS256 (shared secret) or ES256 (EC key, published in the JWKS)."),
        .init(name: "STEWARD_JWT_SECRET", defaultValue: "(unset: generated into the data directory)", meaning: "HS256 secret, at least 32 bytes."),
        .init(name: "STEWARD_JWT_KEY_FILE", defaultValue: "(unset: generated into the data directory)", meaning: "ES256 signing key (PEM, P-256 private key)."),
        .init(name: "STEWARD_JWT_PREVIOUS_KEY_FILES", defaultValue: "(empty)", meaning: "ES256: comma-separated PEM keys (public or private) that still verify tokens during a key rotation."),
        .init(name: "STEWARD_JWT_ISSUER", defaultValue: "steward", meaning: "The `iss` claim of access tokens; the same on every instance."),
        .init(name: "STEWARD_JWT_AUDIENCE", defaultValue: "steward", meaning: "The `aud` claim of access tokens."),
        .init(name: "STEWARD_ACCESS_TOKEN_TTL", defaultValue: "900", meaning: "Access-token lifetime in seconds (60-86400)."),
        .init(name: "STEWARD_REFRESH_TOKEN_TTL", defaultValue: "604800", meaning: "Refresh-token lifetime in seconds (7 days)."),
        .init(name: "STEWARD_SESSION_IDLE_TIMEOUT", defaultValue: "604800", meaning: "A session unused this many seconds ends."),
        .init(name: "STEWARD_SESSION_ABSOLUTE_TIMEOUT", defaultValue: "2592000", meaning: "A session ends this many seconds after login, used or not (30 days)."),
        .init(name: "STEWARD_LOCKOUT_THRESHOLD", defaultValue: "5", meaning: "Consecutive failed logins (per normalised email) that lock it."),
        .init(name: "STEWARD_LOCKOUT_MINUTES", defaultValue: "15", meaning: "How long a lock lasts."),
        .init(name: "STEWARD_MAIL", defaultValue: "log", meaning: "log (tokens redacted), file:<dir> (one .eml per mail), smtp://user:pass@host:port (STARTTLS required; ?starttls=optional for a loopback relay) or smtps://user:pass@host:port (implicit TLS)."),
        .init(name: "STEWARD_MAIL_FROM", defaultValue: "Steward <no-reply@steward.local>", meaning: "The From header of outgoing mail."),
        .init(name: "STEWARD_MAX_API_KEYS_PER_USER", defaultValue: "25", meaning: "Most live API keys one user may hold."),
        .init(name: "STEWARD_AUDIT_RETENTION_DAYS", defaultValue: "365", meaning: "Audit entries older than this are deleted by a daily job (0 keeps them forever)."),
        .init(name: "STEWARD_WEBHOOK_ALLOWED_HOSTS", defaultValue: "(empty)", meaning: "Hosts, IPs or CIDRs that webhooks and HTTP runners may reach even though they are private or special-purpose (e.g. 127.0.0.1 in development)."),
        .init(name: "STEWARD_WEBHOOK_HTTPS_ONLY", defaultValue: "false", meaning: "Refuse plain http targets for webhooks and HTTP runners."),
        .init(name: "STEWARD_WEBHOOK_HISTORY_DAYS", defaultValue: "30", meaning: "Webhook deliveries and their attempts older than this are deleted daily."),
        .init(name: "STEWARD_BACKUP_CRON", defaultValue: "0 2 * * *", meaning: "SQLite: when the scheduler writes a backup into <data dir>/backups (cron, UTC); off turns it off."),
        .init(name: "STEWARD_BACKUP_KEEP", defaultValue: "7", meaning: "SQLite: how many nightly backups to keep (1-365); older ones are deleted."),
        .init(name: "STEWARD_WORKERS", defaultValue: "4", meaning: "Job workers per process (executions and other background jobs)."),
        .init(name: "STEWARD_JOB_LEASE_SECONDS", defaultValue: "30", meaning: "How long a worker holds a job without a heartbeat before it is rescued."),
        .init(name: "STEWARD_JOB_HEARTBEAT_SECONDS", defaultValue: "10", meaning: "How often a worker extends its lease."),
        .init(name: "STEWARD_JOB_MAX_ATTEMPTS", defaultValue: "3", meaning: "Attempts of a job before it fails (infrastructure failures only)."),
        .init(name: "STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER", defaultValue: "20", meaning: "Queued plus running executions one user may have (429 beyond)."),
        .init(name: "STEWARD_MAX_STREAMS_PER_USER", defaultValue: "10", meaning: "Open event streams (SSE and WebSocket) one user may hold per instance; more get 429 (or WebSocket close 1013)."),
        .init(name: "STEWARD_MAX_STREAMS", defaultValue: "5000", meaning: "Open event streams one instance holds in all."),
        .init(name: "STEWARD_STREAM_BUFFER", defaultValue: "1000", meaning: "Events queued for one stream before its client counts as too slow and is disconnected (it resumes from its last seq)."),
        .init(name: "STEWARD_RATE_LIMIT_STORE", defaultValue: "memory", meaning: "memory (one instance) or database (shared by every instance on one database; one atomic statement per decision)."),
        .init(name: "STEWARD_OIDC_PROVIDERS", defaultValue: "(empty: passwords only)", meaning: "Comma-separated ids of identity providers for sign-in, such as google,corp; github is the GitHub preset. Each id needs the STEWARD_OIDC_<ID>_… variables below (<ID> upper-cased, - as _)."),
        .init(name: "STEWARD_OIDC_<ID>_ISSUER", defaultValue: "(required, except for github)", meaning: "The provider's issuer URL (https; http only on loopback); discovery is read from <issuer>/.well-known/openid-configuration."),
        .init(name: "STEWARD_OIDC_<ID>_CLIENT_ID", defaultValue: "(required)", meaning: "The client id Steward is registered under at the provider."),
        .init(name: "STEWARD_OIDC_<ID>_CLIENT_SECRET", defaultValue: "(required)", meaning: "The client secret. Register <public URL>/api/v1/auth/oauth/<id>/callback as the redirect URI."),
        .init(name: "STEWARD_OIDC_<ID>_SCOPES", defaultValue: "openid email profile", meaning: "Space-separated scopes to ask for (github: read:user user:email)."),
        .init(name: "STEWARD_OIDC_<ID>_NAME", defaultValue: "(the id)", meaning: "The provider's name shown on the sign-in page."),
        .init(name: "STEWARD_OIDC_GITHUB_AUTH_URL", defaultValue: "https://github.com/login/oauth/authorize", meaning: "GitHub preset: the authorization endpoint (GitHub Enterprise: https://<host>/login/oauth/authorize)."),
        .init(name: "STEWARD_OIDC_GITHUB_TOKEN_URL", defaultValue: "https://github.com/login/oauth/access_token", meaning: "GitHub preset: the token endpoint."),
        .init(name: "STEWARD_OIDC_GITHUB_API_URL", defaultValue: "https://api.github.com", meaning: "GitHub preset: the REST API (GitHub Enterprise: https://<host>/api/v3)."),
        .init(name: "STEWARD_OAUTH_REDIRECT_URLS", defaultValue: "<public URL>/console/oauth", meaning: "Comma-separated URLs a finished identity-provider sign-in may return to, matched exactly (query excluded); anything else is refused."),
        .init(name: "STEWARD_OAUTH_SIGNUP", defaultValue: "true", meaning: "Whether a sign-in with an unknown identity creates an account (with the default role)."),
        .init(name: "STEWARD_ERASE_EXECUTIONS", defaultValue: "anonymise", meaning: "What erasing a user does to their executions and workflow runs: anonymise (kept, their input, output, errors and history messages cleared) or delete."),
        .init(name: "STEWARD_TRUSTED_PROXIES", defaultValue: "(empty: forwarding headers are ignored)", meaning: "Comma-separated CIDRs of reverse proxies whose X-Forwarded-For / Forwarded headers name the client IP."),
    ] + rateLimitVariables.map { .init(name: $0.variable, defaultValue: $0.fallback, meaning: $0.meaning + " N/s, N/min, N/hour or N/day, or a multiple such as N/15min; 0 turns it off.") } + [
        .init(name: "STEWARD_ENCRYPTION_KEY", defaultValue: "(unset: generated into the data directory)", meaning: "Base64 of 32 bytes; encrypts TOTP secrets, webhook secrets, HTTP-runner and webhook header values and other secrets at rest (AES-GCM)."),
        .init(name: "STEWARD_AUDIT_KEY", defaultValue: "(unset: generated into the data directory as audit.key)", meaning: "Base64 of 32 bytes; keys the audit chain's HMAC. Keep it outside the database; every instance on one database needs the same key."),
        .init(name: "STEWARD_AUDIT_SIGNING_KEY", defaultValue: "(unset: generated into the data directory as audit-signing.key)", meaning: "Base64 of a 32-byte Ed25519 private key that signs audit checkpoints."),
        .init(name: "STEWARD_ENCRYPTION_PREVIOUS_KEYS", defaultValue: "(empty)", meaning: "Comma-separated earlier encryption keys (base64 of 32 bytes), accepted for reading only, while steward keys rotate-encryption re-seals every value under the current key."),
    ]

    /// Loads the configuration from the process environment layered over `.env` in the working directory.
    public static func load(
        processEnvironment: [String: String] = ProcessInfo.processInfo.environment,
        dotEnvPath: String = ".env"
    ) throws -> AppConfig {
        var merged = (try? DotEnv.parse(contentsOf: dotEnvPath)) ?? [:]
        for (key, value) in processEnvironment { merged[key] = value }
        return try parse(merged)
    }

    /// Parses a configuration from a plain dictionary; fails naming every bad variable at once.
    public static func parse(_ env: [String: String], allowLowBcryptCost: Bool = false) throws -> AppConfig {
        var reader = EnvironmentReader(env: env)

        let host = reader.string("STEWARD_HOST", default: "127.0.0.1")
        let port = reader.int("STEWARD_PORT", default: 8080, range: 1...65535)
        let dataDirectory = reader.string("STEWARD_DATA_DIR", default: "./data")
        let publicURL = reader.url("STEWARD_PUBLIC_URL", default: "http://\(host):\(port)")
        let database = reader.database("DATABASE_URL", dataDirectory: dataDirectory)
        let databaseListenURL = reader.postgresURL("STEWARD_DATABASE_LISTEN_URL")
        let databasePreparedStatements = reader.bool("STEWARD_DATABASE_PREPARED_STATEMENTS", default: true)
        let autoMigrate = reader.bool("STEWARD_AUTO_MIGRATE", default: true)
        let logLevel = reader.logLevel("STEWARD_LOG_LEVEL", default: .info)
        let logFormat = reader.enumeration("STEWARD_LOG_FORMAT", default: LogFormat.text)
        let maxBodySize = reader.byteCount("STEWARD_MAX_BODY_SIZE", default: 1 << 20)
        let corsOrigins = reader.list("STEWARD_CORS_ORIGINS")
        let dbPoolMax = reader.int("STEWARD_DB_POOL_MAX", default: 10, range: 1...1000)
        let dbConnectTimeout = reader.int("STEWARD_DB_CONNECT_TIMEOUT", default: 10, range: 1...600)
        let slowQuery = reader.int("STEWARD_SLOW_QUERY_MS", default: 500, range: 0...3_600_000)
        let metricsToken = reader.optionalString("STEWARD_METRICS_TOKEN", lengths: 16...4096)
        let synchronous = reader.enumeration("STEWARD_SQLITE_SYNCHRONOUS", default: SQLiteSynchronous.full)
        let busyTimeout = reader.int("STEWARD_SQLITE_BUSY_TIMEOUT_MS", default: 5000, range: 0...600_000)
        let walLimit = reader.byteCount("STEWARD_SQLITE_WAL_LIMIT", default: 64 << 20)
        let grace = reader.int("STEWARD_SHUTDOWN_GRACE_SECONDS", default: 25, range: 0...3600)
        let idleTimeout = reader.int("STEWARD_HTTP_IDLE_TIMEOUT_SECONDS", default: 60, range: 1...3600)
        let headTimeout = reader.int("STEWARD_HTTP_HEAD_TIMEOUT_SECONDS", default: 10, range: 1...600)
        let bodyTimeout = reader.int("STEWARD_HTTP_BODY_TIMEOUT_SECONDS", default: 30, range: 1...3600)
        let maxConnections = reader.int("STEWARD_HTTP_MAX_CONNECTIONS", default: 10_000, range: 1...1_000_000)
        let maxPerAddress = reader.int("STEWARD_HTTP_MAX_CONNECTIONS_PER_ADDRESS", default: 256, range: 1...1_000_000)
        let adminEmail = reader.email("STEWARD_ADMIN_EMAIL", default: "admin@steward.local")
        let adminPassword = reader.optionalString("STEWARD_ADMIN_PASSWORD", lengths: 8...128)
        let bcryptCost = reader.int("STEWARD_BCRYPT_COST", default: 12, range: (allowLowBcryptCost ? 4 : 10)...16)

        let jwtAlgorithm = reader.enumeration("STEWARD_JWT_ALG", default: JWTAlgorithmName.hs256)
        let jwtSecret = reader.optionalString("STEWARD_JWT_SECRET", lengths: 32...4096)
        let jwtKeyFile = reader.optionalString("STEWARD_JWT_KEY_FILE", lengths: 1...4096)
        let jwtPreviousKeyFiles = reader.list("STEWARD_JWT_PREVIOUS_KEY_FILES")
        // Not the public URL: instances behind one load balancer may each know a different one, and a token
        // signed by one must pass on every other.
        let jwtIssuer = reader.string("STEWARD_JWT_ISSUER", default: "steward")
        let jwtIssuerConfigured = env["STEWARD_JWT_ISSUER"].map { !$0.isEmpty } ?? false
        let jwtAudience = reader.string("STEWARD_JWT_AUDIENCE", default: "steward")
        let accessTTL = reader.int("STEWARD_ACCESS_TOKEN_TTL", default: 900, range: 60...86_400)
        let refreshTTL = reader.int("STEWARD_REFRESH_TOKEN_TTL", default: 604_800, range: 300...31_536_000)
        let idle = reader.int("STEWARD_SESSION_IDLE_TIMEOUT", default: 604_800, range: 300...31_536_000)
        let absolute = reader.int("STEWARD_SESSION_ABSOLUTE_TIMEOUT", default: 2_592_000, range: 300...31_536_000)
        let lockoutThreshold = reader.int("STEWARD_LOCKOUT_THRESHOLD", default: 5, range: 1...1000)
        let lockoutMinutes = reader.int("STEWARD_LOCKOUT_MINUTES", default: 15, range: 1...10_080)
        let mail = reader.mailTransport("STEWARD_MAIL")
        let mailFrom = reader.string("STEWARD_MAIL_FROM", default: "Steward <no-reply@steward.local>")
        let encryptionKey = reader.base64Key("STEWARD_ENCRYPTION_KEY", bytes: 32)
        let previousEncryptionKeys = reader.base64Keys("STEWARD_ENCRYPTION_PREVIOUS_KEYS", bytes: 32)
        let auditKey = reader.base64Key("STEWARD_AUDIT_KEY", bytes: 32)
        let auditSigningKey = reader.base64Key("STEWARD_AUDIT_SIGNING_KEY", bytes: 32)
        let maxAPIKeys = reader.int("STEWARD_MAX_API_KEYS_PER_USER", default: 25, range: 1...10_000)
        let auditRetention = reader.int("STEWARD_AUDIT_RETENTION_DAYS", default: 365, range: 0...36_500)
        let outboundAllowed = reader.list("STEWARD_WEBHOOK_ALLOWED_HOSTS")
        for entry in outboundAllowed where entry.contains("/") && CIDR(entry) == nil {
            reader.problems.append("STEWARD_WEBHOOK_ALLOWED_HOSTS: '\(entry)' is not a CIDR such as 10.0.0.0/8")
        }
        let outboundHTTPSOnly = reader.bool("STEWARD_WEBHOOK_HTTPS_ONLY", default: false)
        let workers = reader.int("STEWARD_WORKERS", default: 4, range: 0...256)
        let leaseSeconds = reader.int("STEWARD_JOB_LEASE_SECONDS", default: 30, range: 2...3600)
        let heartbeatSeconds = reader.int("STEWARD_JOB_HEARTBEAT_SECONDS", default: 10, range: 1...3600)
        if heartbeatSeconds >= leaseSeconds {
            reader.problems.append("STEWARD_JOB_HEARTBEAT_SECONDS: must be shorter than STEWARD_JOB_LEASE_SECONDS (\(leaseSeconds))")
        }
        let jobMaxAttempts = reader.int("STEWARD_JOB_MAX_ATTEMPTS", default: 3, range: 1...100)
        let maxConcurrent = reader.int("STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER", default: 20, range: 1...100_000)
        let webhookHistoryDays = reader.int("STEWARD_WEBHOOK_HISTORY_DAYS", default: 30, range: 1...3650)
        var backupCron: String? = reader.string("STEWARD_BACKUP_CRON", default: "0 2 * * *")
        if backupCron?.lowercased() == "off" {
            backupCron = nil
        } else if let text = backupCron {
            do { _ = try CronExpression(text) } catch { reader.problems.append("STEWARD_BACKUP_CRON: \(error) (or off)") }
        }
        let backupKeep = reader.int("STEWARD_BACKUP_KEEP", default: 7, range: 1...365)
        let maxStreamsPerUser = reader.int("STEWARD_MAX_STREAMS_PER_USER", default: 10, range: 1...10_000)
        let maxStreams = reader.int("STEWARD_MAX_STREAMS", default: 5000, range: 1...1_000_000)
        let streamBuffer = reader.int("STEWARD_STREAM_BUFFER", default: 1000, range: 8...1_000_000)
        let mcpCallTimeout = reader.int("STEWARD_MCP_CALL_TIMEOUT", default: 60, range: 1...3600)
        let rateLimitStore = reader.enumeration("STEWARD_RATE_LIMIT_STORE", default: RateLimitStoreKind.memory)
        let trustedProxies = reader.list("STEWARD_TRUSTED_PROXIES")
        for entry in trustedProxies where CIDR(entry) == nil {
            reader.problems.append("STEWARD_TRUSTED_PROXIES: '\(entry)' is not an address or CIDR such as 10.0.0.0/8")
        }
        var rateLimits: [String: RateLimitPolicy] = [:]
        for entry in rateLimitVariables {
            let text = reader.string(entry.variable, default: entry.fallback)
            if entry.policy == "mfa" {
                if let tries = Int(text), (0...1000).contains(tries) {
                    rateLimits[entry.policy] = RateLimitPolicy(name: "mfa", limit: tries, window: 300)
                } else {
                    reader.problems.append("\(entry.variable): '\(text)' is not a number of tries (0 turns it off)")
                }
            } else if let policy = RateLimitPolicy.parse(name: entry.policy, text) {
                rateLimits[entry.policy] = policy
            } else {
                reader.problems.append("\(entry.variable): '\(text)' is not a rate such as 10/min, 100/15min, 1000/hour or 0")
            }
        }

        for origin in corsOrigins where origin != "*" && URL(string: origin)?.scheme == nil {
            reader.problems.append("STEWARD_CORS_ORIGINS: '\(origin)' is not an origin such as https://app.example.com")
        }

        let oauthProviders = reader.oauthProviders()
        let oauthRedirectURLs = reader.oauthRedirectURLs(publicURL: publicURL)
        let oauthSignup = reader.bool("STEWARD_OAUTH_SIGNUP", default: true)
        let eraseExecutions = reader.enumeration("STEWARD_ERASE_EXECUTIONS", default: EraseExecutions.anonymise)

        guard reader.problems.isEmpty else {
            throw ConfigurationError(problems: reader.problems)
        }
        return AppConfig(
            host: host, port: port, publicURL: publicURL, database: database, databaseListenURL: databaseListenURL,
            databasePreparedStatements: databasePreparedStatements, dataDirectory: dataDirectory,
            autoMigrate: autoMigrate, logLevel: logLevel, logFormat: logFormat, maxBodySize: maxBodySize,
            corsOrigins: corsOrigins, dbPoolMax: dbPoolMax, dbConnectTimeoutSeconds: dbConnectTimeout,
            slowQueryMilliseconds: slowQuery, metricsToken: metricsToken, sqliteSynchronous: synchronous, sqliteBusyTimeoutMilliseconds: busyTimeout, sqliteWALLimitBytes: walLimit,
            shutdownGraceSeconds: grace, httpIdleTimeoutSeconds: idleTimeout, httpHeadTimeoutSeconds: headTimeout,
            httpBodyTimeoutSeconds: bodyTimeout, httpMaxConnections: maxConnections, httpMaxConnectionsPerAddress: maxPerAddress, adminEmail: adminEmail, adminPassword: adminPassword, bcryptCost: bcryptCost,
            jwtAlgorithm: jwtAlgorithm, jwtSecret: jwtSecret, jwtKeyFile: jwtKeyFile, jwtPreviousKeyFiles: jwtPreviousKeyFiles,
            jwtIssuer: jwtIssuer, jwtAcceptedLegacyIssuers: jwtIssuerConfigured ? [] : [publicURL], jwtAudience: jwtAudience, accessTokenTTLSeconds: accessTTL, refreshTokenTTLSeconds: refreshTTL,
            sessionIdleTimeoutSeconds: idle, sessionAbsoluteTimeoutSeconds: absolute, lockoutThreshold: lockoutThreshold,
            lockoutMinutes: lockoutMinutes, mail: mail, mailFrom: mailFrom, encryptionKey: encryptionKey, previousEncryptionKeys: previousEncryptionKeys, auditKey: auditKey, auditSigningKey: auditSigningKey,
            maxAPIKeysPerUser: maxAPIKeys, auditRetentionDays: auditRetention,
            outboundAllowedHosts: outboundAllowed, outboundHTTPSOnly: outboundHTTPSOnly,
            workers: workers, jobLeaseSeconds: leaseSeconds, jobHeartbeatSeconds: heartbeatSeconds,
            jobMaxAttempts: jobMaxAttempts, maxConcurrentExecutionsPerUser: maxConcurrent,
            webhookHistoryDays: webhookHistoryDays, backupCron: backupCron, backupKeep: backupKeep, maxStreamsPerUser: maxStreamsPerUser, maxStreams: maxStreams,
            streamBufferEvents: streamBuffer, rateLimitStore: rateLimitStore, trustedProxies: trustedProxies,
            rateLimits: rateLimits, mcpCallTimeoutSeconds: mcpCallTimeout,
            oauthProviders: oauthProviders, oauthRedirectURLs: oauthRedirectURLs, oauthSignup: oauthSignup,
            explicitlySet: Set(env.filter { $0.key.hasPrefix("STEWARD_") && !$0.value.trimmingCharacters(in: .whitespaces).isEmpty }.keys),
            eraseExecutions: eraseExecutions
        )
    }
}

/// Reads typed values out of a variable dictionary, collecting a problem for each bad one instead of stopping.
struct EnvironmentReader {
    let env: [String: String]
    var problems: [String] = []

    private func raw(_ name: String) -> String? {
        guard let value = env[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    mutating func string(_ name: String, default fallback: String) -> String {
        raw(name) ?? fallback
    }

    mutating func optionalString(_ name: String, lengths: ClosedRange<Int>) -> String? {
        guard let value = env[name], !value.isEmpty else { return nil }
        guard lengths.contains(value.count) else {
            problems.append("\(name): must be \(lengths.lowerBound) to \(lengths.upperBound) characters long")
            return nil
        }
        return value
    }

    mutating func int(_ name: String, default fallback: Int, range: ClosedRange<Int>) -> Int {
        guard let value = raw(name) else { return fallback }
        guard let number = Int(value), range.contains(number) else {
            problems.append("\(name): '\(value)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
            return fallback
        }
        return number
    }

    mutating func bool(_ name: String, default fallback: Bool) -> Bool {
        guard let value = raw(name) else { return fallback }
        switch value.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default:
            problems.append("\(name): '\(value)' is not true or false")
            return fallback
        }
    }

    mutating func enumeration<E: RawRepresentable & Sendable & CaseIterable>(
        _ name: String, default fallback: E
    ) -> E where E.RawValue == String {
        guard let value = raw(name) else { return fallback }
        let candidates = [value, value.lowercased(), value.uppercased()]
        for candidate in candidates {
            if let parsed = E(rawValue: candidate) { return parsed }
        }
        let allowed = E.allCases.map { $0.rawValue.lowercased() }.joined(separator: ", ")
        problems.append("\(name): '\(value)' is not one of \(allowed)")
        return fallback
    }

    mutating func logLevel(_ name: String, default fallback: Logger.Level) -> Logger.Level {
        guard let value = raw(name) else { return fallback }
        guard let level = Logger.Level(rawValue: value.lowercased()) else {
            problems.append("\(name): '\(value)' is not one of trace, debug, info, notice, warning, error, critical")
            return fallback
        }
        return level
    }

    mutating func byteCount(_ name: String, default fallback: Int) -> Int {
        guard let value = raw(name)?.lowercased() else { return fallback }
        let units: [(String, Int)] = [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)]
        for (suffix, multiplier) in units where value.hasSuffix(suffix) {
            let number = value.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            if let count = Int(number), count > 0, count <= (1 << 40) / multiplier { return count * multiplier }
            problems.append("\(name): '\(value)' is not a size such as 1048576, 512kb or 1mb")
            return fallback
        }
        if let count = Int(value), count > 0 { return count }
        problems.append("\(name): '\(value)' is not a size such as 1048576, 512kb or 1mb")
        return fallback
    }

    mutating func list(_ name: String) -> [String] {
        guard let value = raw(name) else { return [] }
        return value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    mutating func url(_ name: String, default fallback: String) -> String {
        guard let value = raw(name) else { return fallback }
        guard let url = URL(string: value), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme), url.host != nil else {
            problems.append("\(name): '\(value)' is not an http(s) URL")
            return fallback
        }
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }

    mutating func email(_ name: String, default fallback: String) -> String {
        guard let value = raw(name) else { return fallback }
        let parts = value.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), value.count <= 254 else {
            problems.append("\(name): '\(value)' is not an email address")
            return fallback
        }
        return value.lowercased()
    }

    mutating func mailTransport(_ name: String) -> AppConfig.MailTransport {
        guard let value = raw(name) else { return .log }
        if value == "log" { return .log }
        if value.hasPrefix("file:") {
            let directory = String(value.dropFirst(5))
            guard !directory.isEmpty else {
                problems.append("\(name): file: needs a directory, e.g. file:./data/mail")
                return .log
            }
            return .file(directory: directory)
        }
        if value.lowercased().hasPrefix("smtp://") || value.lowercased().hasPrefix("smtps://") {
            guard let settings = SMTPSettings(url: value) else {
                problems.append("\(name): not a valid smtp://user:pass@host:port or smtps://user:pass@host:port URL")
                return .log
            }
            return .smtp(settings)
        }
        problems.append("\(name): must be log, file:<dir>, smtp://user:pass@host:port or smtps://user:pass@host:port")
        return .log
    }

    mutating func base64Key(_ name: String, bytes: Int) -> String? {
        guard let value = raw(name) else { return nil }
        guard let data = Data(base64Encoded: value), data.count == bytes else {
            problems.append("\(name): must be the base64 of exactly \(bytes) random bytes (e.g. openssl rand -base64 \(bytes))")
            return nil
        }
        return value
    }

    mutating func base64Keys(_ name: String, bytes: Int) -> [String] {
        list(name).filter { value in
            guard let data = Data(base64Encoded: value), data.count == bytes else {
                problems.append("\(name): every entry must be the base64 of exactly \(bytes) bytes")
                return false
            }
            return true
        }
    }

    mutating func postgresURL(_ name: String) -> String? {
        guard let value = raw(name) else { return nil }
        guard PostgresAddress(value) != nil else {
            problems.append("\(name): \(Self.notPostgres)")
            return nil
        }
        return value
    }

    private static let notPostgres = "not a valid postgres://user:pass@host:port/db URL, or postgres://user:pass@/db?host=/socket/directory for a Unix socket"

    mutating func database(_ name: String, dataDirectory: String) -> AppConfig.DatabaseKind {
        let defaultPath = (dataDirectory as NSString).appendingPathComponent("steward.sqlite")
        guard let value = raw(name) else { return .sqlite(path: defaultPath) }
        let lowered = value.lowercased()
        if lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://") {
            guard PostgresAddress(value) != nil else {
                problems.append("\(name): \(Self.notPostgres)")
                return .sqlite(path: defaultPath)
            }
            return .postgres(url: value)
        }
        if lowered.hasPrefix("sqlite:") {
            var path = String(value.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            guard !path.isEmpty else {
                problems.append("\(name): sqlite: needs a file path, e.g. sqlite:./data/steward.sqlite")
                return .sqlite(path: defaultPath)
            }
            return .sqlite(path: path)
        }
        problems.append("\(name): must start with postgres://, postgresql:// or sqlite:")
        return .sqlite(path: defaultPath)
    }
}
