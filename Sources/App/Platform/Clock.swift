import Vapor

/// The wall clock, behind a protocol so tests can move time.
public protocol WallClock: Sendable {
    func now() -> Date
}

/// The real clock.
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}

extension Application {
    private struct WallClockKey: StorageKey { typealias Value = any WallClock }

    /// The clock every service reads; swapped in tests.
    public var wallClock: any WallClock {
        get { storage[WallClockKey.self] ?? SystemWallClock() }
        set { storage[WallClockKey.self] = newValue }
    }
}
