import Logging
import Vapor

/// Installs the process-wide log handler the configuration asks for; called once by `main`.
public enum LoggingSetup {
    /// `standardError`: for `steward mcp --stdio`, whose standard output carries only protocol messages.
    public static func bootstrap(_ config: AppConfig, standardError: Bool = false) {
        let level = config.logLevel
        switch config.logFormat {
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = standardError ? JSONLogHandler(label: label, write: { line in
                    FileHandle.standardError.write(Data((line + "\n").utf8))
                }) : JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = standardError ? StreamLogHandler.standardError(label: label) : StreamLogHandler.standardOutput(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}
