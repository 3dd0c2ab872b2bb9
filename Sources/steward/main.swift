import App
import Foundation
import Vapor

/// Entry point: read configuration, bootstrap logging, configure, run the command, shut down.
let config: AppConfig
do {
    config = try AppConfig.load()
} catch {
    FileHandle.standardError.write(Data("steward: \(error)\n".utf8))
    exit(2)
}
// `steward mcp --stdio` speaks the protocol on standard output: its logs go to standard error.
LoggingSetup.bootstrap(config, standardError: CommandLine.arguments.dropFirst().first == "mcp")
ConcurrencySetup.runTasksOnEventLoops()

let environment = try Environment.detect()
let app = try await Application.make(environment)
do {
    try await configure(app, config: config)
    MetricsSetup.bootstrap(app)
    try await app.execute()
} catch {
    let reason = String(describing: error)
    FileHandle.standardError.write(Data("steward: \(reason.split(separator: "\n").first ?? "failed")\n".utf8))
    try? await app.asyncShutdown()
    exit(1)
}
try await app.asyncShutdown()
