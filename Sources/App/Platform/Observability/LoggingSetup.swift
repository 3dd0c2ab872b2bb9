import Logging
import Vapor

/// Installs the process-wide log handler the configuration asks for; called once by `main`.
public enum LoggingSetup {
    public static func bootstrap(_ config: AppConfig) {
        let level = config.logLevel
        switch config.logFormat {
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardOutput(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}
