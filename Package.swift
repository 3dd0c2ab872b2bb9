// swift-tools-version:6.0
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "steward",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "steward", targets: ["steward"]),
    ],
    dependencies: [
        .package(url: "https://github.com/vapor/vapor.git", from: "4.115.0"),
        .package(url: "https://github.com/vapor/fluent.git", from: "4.12.0"),
        .package(url: "https://github.com/vapor/fluent-sqlite-driver.git", from: "4.8.0"),
        .package(url: "https://github.com/vapor/fluent-postgres-driver.git", from: "2.10.0"),
        // The storage engine's own dependencies, declared rather than reached through the drivers. sqlite-nio is held
        // to one minor version: StewardSQLite calls the SQLite library it builds (its VaporCSQLite module, which it
        // does not publish as a product), and one process must link exactly one SQLite.
        .package(url: "https://github.com/vapor/fluent-kit.git", from: "1.51.0"),
        .package(url: "https://github.com/vapor/sql-kit.git", from: "3.32.0"),
        .package(url: "https://github.com/vapor/sqlite-kit.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", .upToNextMinor(from: "1.13.0")),
        .package(url: "https://github.com/vapor/jwt.git", from: "5.1.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.65.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.21.0"),
        .package(url: "https://github.com/vapor/postgres-kit.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        // Tests only: the official Swift MCP client checks the MCP server as a foreign client does.
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk.git", from: "0.12.1"),
    ],
    targets: [
        // The exact bytes Steward stores and serves: JSON text, RFC 3339 times, ids. No Vapor, no domain.
        .target(
            name: "StewardFormats",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: swiftSettings
        ),
        // One C function for the storage engine: a SQLite connection setting whose only call (sqlite3_db_config) is
        // variadic, which Swift cannot call.
        .target(
            name: "StewardSQLiteConfig",
            dependencies: [
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
            ]
        ),
        // The storage engine room: direct SQLite connections, the writer and its batches, readers, fixed statements.
        // No Vapor, no domain: the app registers what batches carry (the ledger) and who hears of commits (the hub).
        .target(
            name: "StewardSQLite",
            dependencies: [
                .target(name: "StewardFormats"),
                .target(name: "StewardSQLiteConfig"),
                .product(name: "FluentKit", package: "fluent-kit"),
                .product(name: "FluentSQL", package: "fluent-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // PostgreSQL's side of the same room: list rows read without PostgresKit's Codable translation of each cell.
        .target(
            name: "StewardPostgres",
            dependencies: [
                .target(name: "StewardFormats"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "App",
            dependencies: [
                .target(name: "StewardFormats"),
                .target(name: "StewardSQLite"),
                .target(name: "StewardPostgres"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "Fluent", package: "fluent"),
                .product(name: "FluentSQLiteDriver", package: "fluent-sqlite-driver"),
                .product(name: "FluentPostgresDriver", package: "fluent-postgres-driver"),
                .product(name: "JWT", package: "jwt"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPCompression", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // Compiled into the binary as byte arrays (`PackageResources`), so the server stays one file.
            // `Resources/openapi.yaml` is a link to the contract at the repository's root.
            resources: [
                .embedInCode("Resources/openapi.yaml"),
                .embedInCode("Resources/common-passwords.txt"),
                // The web console (`/console`): plain HTML, CSS and JavaScript modules, no build step.
                .embedInCode("Resources/console/index.html"),
                .embedInCode("Resources/console/console.css"),
                .embedInCode("Resources/console/icon.svg"),
                .embedInCode("Resources/console/app.js"),
                .embedInCode("Resources/console/api.js"),
                .embedInCode("Resources/console/ui.js"),
                .embedInCode("Resources/console/schema-form.js"),
                .embedInCode("Resources/console/charts.js"),
                .embedInCode("Resources/console/auth.js"),
                .embedInCode("Resources/console/dashboard.js"),
                .embedInCode("Resources/console/skills.js"),
                .embedInCode("Resources/console/executions.js"),
                .embedInCode("Resources/console/workflows.js"),
                .embedInCode("Resources/console/schedules.js"),
                .embedInCode("Resources/console/webhooks.js"),
                .embedInCode("Resources/console/admin.js"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "steward",
            dependencies: [.target(name: "App")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "StewardFormatsTests",
            dependencies: [.target(name: "StewardFormats")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "StewardSQLiteTests",
            dependencies: [
                .target(name: "StewardSQLite"),
                .target(name: "StewardFormats"),
                .product(name: "FluentSQLiteDriver", package: "fluent-sqlite-driver"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AppTests",
            dependencies: [
                .target(name: "App"),
                .product(name: "VaporTesting", package: "vapor"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "MCP", package: "swift-sdk"),
                // Tests only: the fake identity provider's RSA key.
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
