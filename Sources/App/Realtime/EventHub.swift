import Fluent
import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLKit
import StewardSQLite
import Vapor

/// Timings and bounds of live streams. The defaults are the contract's; tests shorten the timings.
struct StreamSettings: Sendable {
    var maxPerUser: Int
    var maxTotal: Int
    /// Events queued per stream before its client counts as too slow.
    var bufferEvents: Int
    var heartbeat: Duration = .seconds(15)
    var pingInterval: Duration = .seconds(20)
    /// Pings in a row without a pong after which a WebSocket peer is dropped.
    var missedPongLimit = 2
    /// How often every open stream's credentials are checked again (expiry, changes the log did not announce).
    var revalidateEvery: Duration = .seconds(30)
    /// How long a closing stream may take to say why before its connection is cut.
    var closeGrace: Duration = .seconds(3)
    /// How often the hub reads the log without being told of a new event (lost notifications, other writers).
    var fallbackPoll: Duration = .seconds(1)
}

/// Refusals when opening a stream.
enum StreamError: ProblemError {
    case tooManyForUser(Int)
    case tooMany
    case shuttingDown

    var status: HTTPResponseStatus {
        switch self {
        case .tooManyForUser, .tooMany: .tooManyRequests
        case .shuttingDown: .serviceUnavailable
        }
    }

    var code: String {
        switch self {
        case .tooManyForUser, .tooMany: "too_many_streams"
        case .shuttingDown: "unavailable"
        }
    }

    var reason: String {
        switch self {
        case .tooManyForUser(let limit): "You already have \(limit) open event streams; close one first."
        case .tooMany: "The server holds as many event streams as it allows; try again later."
        case .shuttingDown: "The server is shutting down; reconnect to another instance."
        }
    }

    /// Every refusal is temporary.
    var headers: HTTPHeaders { ["Retry-After": "5"] }
}

/// The one place per process where live events come from. The event writer tells it a new `seq` exists (and on
/// PostgreSQL every instance hears of it through LISTEN/NOTIFY); the hub then reads the log from where it
/// stopped and offers each event, in `seq` order, to every open stream. Because it always reads the log rather
/// than trusting notifications, a lost notification only delays events until the next read (at most a second).
///
/// It also ends streams whose credentials stop working: a `session.revoked` or `apikey.revoked` event closes
/// the matching streams at once, a `user.updated` event makes the hub check that user's streams again (status
/// and roles), and every stream is checked again periodically.
actor EventHub {
    let app: Application
    private(set) var settings: StreamSettings
    private var subscribers: [UUID: StreamSubscriber] = [:]
    /// Subscribers inside the server that follow one resource for a while (an MCP tool call waiting for its
    /// execution): fed like streams, but not counted against the stream caps, which are for clients' connections.
    private var watchers: [UUID: StreamSubscriber] = [:]
    private var perUser: [UUID: Int] = [:]
    /// The last `seq` offered to streams: every event up to it has been read.
    private var lastSeq: Int64 = 0
    private var positioned = false
    private var closed = false
    private var loop: Task<Void, Never>?
    private var ticker: Task<Void, Never>?
    private let wake = JobSignal()
    private let expectedSeq = NIOLockedValueBox<Int64>(0)
    private var lastRevalidation = ContinuousClock.now

    init(app: Application, settings: StreamSettings) {
        self.app = app
        self.settings = settings
    }

    /// Changes timings (tests only; streams opened afterwards use them).
    func update(_ change: @Sendable (inout StreamSettings) -> Void) {
        change(&settings)
    }

    var openStreams: Int { subscribers.count }

    // MARK: Feeding

    /// Says a new event exists (called by the writer inside its transaction, so the row may not be visible yet).
    nonisolated func expect(seq: Int64) {
        expectedSeq.withLockedValue { $0 = max($0, seq) }
        wake.notify()
    }

    /// Asks the hub to look at the log now (after a commit, or when another instance announced an event).
    nonisolated func poke() {
        wake.notify()
    }

    func start() {
        guard loop == nil, !closed else { return }
        loop = Task { [weak self] in
            while !Task.isCancelled, let self {
                let seen = self.wake.current
                await self.catchUp()
                await self.wake.wait(after: seen, timeout: await self.settings.fallbackPoll)
            }
        }
        ticker = Task { [weak self] in
            while !Task.isCancelled, let self {
                let interval = await self.tickInterval()
                try? await Task.sleep(for: interval)
                await self.tickAll()
            }
        }
    }

    /// One timer drives heartbeats and pings; each stream decides on a tick whether one is due.
    private func tickInterval() -> Duration {
        min(settings.heartbeat, settings.pingInterval, .seconds(1))
    }

    private func tickAll() async {
        for subscriber in subscribers.values { subscriber.tick() }
        // Watchers tick on the same timer (an MCP call keeps its stream alive and looks at its execution on ticks):
        // one timer for all, rather than a sleeping task per call.
        for watcher in watchers.values { watcher.tick() }
        if ContinuousClock.now - lastRevalidation >= settings.revalidateEvery {
            lastRevalidation = .now
            let all = Array(subscribers.values)
            Task { await self.revalidate(all) }
        }
    }

    /// Reads whatever the log has beyond `lastSeq` and offers it, until the log has nothing newer.
    private func catchUp() async {
        var retries = 0
        while !Task.isCancelled, !closed {
            do {
                // Nobody listens: nothing to read. The first stream to register looks up where the log is.
                if subscribers.isEmpty, watchers.isEmpty {
                    positioned = false
                    return
                }
                let seen = wake.current
                // A page read through the seq index in its order, with one fixed statement: on SQLite a direct
                // reader with the statement kept prepared, without a hop to the pool.
                let events = try await app.quickRead("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT 500", [lastSeq], on: app.db)
                    .map { try Event.read(from: $0) }
                if let last = events.last?.seq, last > lastSeq {
                    let batch = try events.filter { $0.seq > lastSeq }.map { try StreamEvent($0) }
                    deliver(batch)
                    retries = 0
                    continue
                }
                // The writer announced an event its transaction has not committed yet. The commit pokes the hub
                // (or, on PostgreSQL, notifies it); wait for that, looking again every 20 ms for a second at most
                // in case the poke comes from a path that does not send one.
                if expectedSeq.withLockedValue({ $0 }) > lastSeq, retries < 50 {
                    await wake.wait(after: seen, timeout: .milliseconds(20))
                    retries += 1
                    continue
                }
                return
            } catch {
                app.logger.warning("Event stream hub could not read the log: \(String(describing: error))")
                return
            }
        }
    }

    static func maxSeq(on db: any Database) async throws -> Int64 {
        let sql = db as! any SQLDatabase
        let row = try await sql.raw("SELECT COALESCE(MAX(seq), 0) AS seq FROM events").first()
        return try row?.decode(column: "seq", as: Int64.self) ?? 0
    }

    /// Offers a batch to every stream; runs without suspending, so registration sees a consistent `lastSeq`.
    private func deliver(_ batch: [StreamEvent]) {
        guard let last = batch.last?.seq else { return }
        var recheckUsers: Set<UUID> = []
        for event in batch {
            switch event.type {
            case "session.revoked":
                if let id = event.resourceID.flatMap(UUID.init(uuidString:)) { close(where: { $0.credential == .session(id) }, .revoked) }
            case "apikey.revoked":
                if let id = event.resourceID.flatMap(UUID.init(uuidString:)) { close(where: { $0.credential == .apiKey(id) }, .revoked) }
            case "user.updated":
                if let id = event.resourceID.flatMap(UUID.init(uuidString:)) { recheckUsers.insert(id) }
            default: break
            }
        }
        lastSeq = last
        for watcher in watchers.values { watcher.offer(batch) }
        for subscriber in subscribers.values {
            subscriber.offer(batch)
            // Too slow: it no longer counts against the caps, even while its connection is still being cut.
            if subscriber.closeReason != nil { remove(subscriber) }
        }
        if !recheckUsers.isEmpty {
            let affected = subscribers.values.filter { recheckUsers.contains($0.userID) }
            if !affected.isEmpty { Task { await self.revalidate(affected) } }
        }
    }

    private func close(where predicate: (StreamSubscriber) -> Bool, _ reason: StreamSubscriber.CloseReason) {
        for subscriber in subscribers.values where predicate(subscriber) {
            subscriber.close(reason)
            remove(subscriber)
        }
    }

    /// Checks credentials again: closes streams whose session, key or user no longer works; refreshes grants.
    func revalidate(_ streams: [StreamSubscriber]) async {
        let now = app.wallClock.now()
        var verdicts: [StreamCredential: Grants?] = [:]
        for stream in streams where stream.closeReason == nil {
            do {
                let grants: Grants?
                if let known = verdicts[stream.credential] {
                    grants = known
                } else {
                    grants = try await Self.currentGrants(of: stream.credential, now: now, on: app.db, readers: app.sqliteReaders)
                    verdicts[stream.credential] = grants
                }
                if let grants {
                    stream.grants = grants
                } else {
                    stream.close(.revoked)
                    remove(stream)
                }
            } catch {
                app.logger.warning("Could not re-check an event stream's credentials: \(String(describing: error))")
            }
        }
    }

    /// What the credential may read now, or nil when it no longer works.
    static func currentGrants(of credential: StreamCredential, now: Date, on db: any Database, readers: SQLiteReaders?) async throws -> Grants? {
        switch credential {
        case .session(let id):
            guard let (session, user, grants) = try await CallerLookup.session(.sessionID(id), on: db, readers: readers),
                  session.isLive(at: now), user.status == .active else { return nil }
            return grants
        case .apiKey(let id):
            guard let (key, user, ownerGrants) = try await CallerLookup.apiKey(.apiKeyID(id), on: db, readers: readers),
                  key.isUsable(at: now), user.status == .active else { return nil }
            var grants = ownerGrants
            grants.permissions.formIntersection(key.scopes)
            return grants
        }
    }

    // MARK: Streams

    /// Admits a stream, or refuses it over the caps. Returns the `seq` up to which the stream must replay from the
    /// log itself: every later event reaches it through `offer`.
    func register(_ subscriber: StreamSubscriber) async throws -> Int64 {
        try check(subscriber)
        start()
        // A stream starts after everything committed before it opened (PostgreSQL numbers after the commit).
        try await LedgerSequencer.settle(app)
        if !positioned { try await catchUpPosition() }
        try check(subscriber)
        subscribers[subscriber.id] = subscriber
        perUser[subscriber.userID, default: 0] += 1
        return lastSeq
    }

    /// Whether `register` would admit the stream now (nothing is reserved).
    func check(_ subscriber: StreamSubscriber) throws {
        guard !closed else { throw StreamError.shuttingDown }
        if perUser[subscriber.userID, default: 0] >= settings.maxPerUser { throw StreamError.tooManyForUser(settings.maxPerUser) }
        if subscribers.count >= settings.maxTotal { throw StreamError.tooMany }
    }

    private func catchUpPosition() async throws {
        let seq = try await Self.maxSeq(on: app.db)
        // Another registration may have positioned the hub meanwhile; then events are flowing from there.
        if !positioned {
            lastSeq = max(lastSeq, seq)
            positioned = true
        }
    }

    /// The position new events are offered from (for a subscription that changes while the stream is open).
    var position: Int64 { lastSeq }

    func unregister(_ subscriber: StreamSubscriber) {
        remove(subscriber)
    }

    /// Admits a watcher (no caps: each one belongs to a request in flight). Returns the `seq` after which every
    /// event reaches it; the caller reads the state as of then itself.
    func watch(_ watcher: StreamSubscriber) async throws -> Int64 {
        guard !closed else { throw StreamError.shuttingDown }
        start()
        try await LedgerSequencer.settle(app)
        if !positioned { try await catchUpPosition() }
        guard !closed else { throw StreamError.shuttingDown }
        watchers[watcher.id] = watcher
        return lastSeq
    }

    func unwatch(_ watcher: StreamSubscriber) {
        watchers[watcher.id] = nil
    }

    private func remove(_ subscriber: StreamSubscriber) {
        guard subscribers.removeValue(forKey: subscriber.id) != nil else { return }
        let left = perUser[subscriber.userID, default: 1] - 1
        perUser[subscriber.userID] = left > 0 ? left : nil
    }

    /// Closes every stream (WebSocket close 1001, SSE end) and refuses new ones.
    func shutdown() async {
        closed = true
        loop?.cancel()
        ticker?.cancel()
        for subscriber in subscribers.values { subscriber.close(.shutdown) }
        for watcher in watchers.values { watcher.close(.shutdown) }
        subscribers.removeAll()
        watchers.removeAll()
        perUser.removeAll()
        wake.notify()
        await loop?.value
        await ticker?.value
    }
}

/// Starts the hub with the server and closes its streams first when the server stops, so open streams never
/// hold up a graceful shutdown.
final class EventHubLifecycle: LifecycleHandler {
    func shutdownAsync(_ application: Application) async {
        await application.eventHub.shutdown()
    }
}

extension Application {
    private struct EventHubKey: StorageKey { typealias Value = EventHub }

    /// Set once in `configure`.
    var eventHub: EventHub {
        get { storage[EventHubKey.self]! }
        set { storage[EventHubKey.self] = newValue }
    }

    /// The hub, when `configure` created one (commands that do not serve still write events).
    var eventHubIfPresent: EventHub? { storage[EventHubKey.self] }
}
