import Vapor

extension Application {
    private struct AppConfigKey: StorageKey { typealias Value = AppConfig }

    /// The configuration `configure` was given.
    public var appConfig: AppConfig {
        get {
            guard let config = storage[AppConfigKey.self] else { fatalError("configure(_:config:) was not called") }
            return config
        }
        set { storage[AppConfigKey.self] = newValue }
    }

    /// The recorder of audit entries and events, on this app's clock.
    public var activityRecorder: ActivityRecorder {
        guard let hub = eventHubIfPresent else { return ActivityRecorder(clock: wallClock, chainKey: auditKeys.chain) }
        return ActivityRecorder(clock: wallClock, chainKey: auditKeys.chain, onEvent: { seq in hub.expect(seq: seq) })
    }
}
