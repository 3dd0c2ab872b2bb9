import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Reads the event log in `seq` order and turns each event into one delivery per matching subscription the
/// event's owner allows. Its position is stored in `ledger_heads` and advanced in the same transaction as the
/// deliveries, with a compare-and-set, so a restart neither skips nor repeats and two instances never both
/// dispatch the same events.
struct WebhookDispatcher: Sendable {
    static let batchSize = 200

    let app: Application

    /// Dispatches one batch; returns how many events it covered (0 when there was nothing new).
    @discardableResult
    func dispatchBatch() async throws -> Int {
        let sql = app.db as! any SQLDatabase
        guard let head = try await sql.raw("SELECT seq FROM ledger_heads WHERE name = \(bind: LedgerHead.webhookDispatch)").first() else { return 0 }
        let cursor = try head.decode(column: "seq", as: Int64.self)
        // Where the log ends, read before the subscriptions: every event up to here committed before that read.
        let top = try await EventHub.maxSeq(on: app.db)
        guard top > cursor else { return 0 }
        let hooks = try await Webhook.query(on: app.db).filter(\.$enabled == true).all()
        if hooks.isEmpty {
            // Nobody subscribes: move past those events without reading them. A subscription created since the
            // read above is newer than all of them, so none of them is owed to it.
            return try await app.writeStatements { sql in
                let advanced = try await sql.raw("""
                    UPDATE ledger_heads SET seq = \(bind: top) WHERE name = \(bind: LedgerHead.webhookDispatch) AND seq = \(bind: cursor) RETURNING seq
                    """).first()
                return advanced == nil ? 0 : Int(top - cursor)
            }
        }
        let events = try await Event.query(on: app.db).filter(\.$seq > cursor).filter(\.$seq <= top).sort(\.$seq).limit(Self.batchSize).all()
        guard let last = events.last?.seq else { return 0 }
        var ownerGrants: [UUID: Grants] = [:]
        for ownerID in Set(hooks.map(\.$user.id)) {
            ownerGrants[ownerID] = try await UserRole.grants(of: ownerID, on: app.db)
        }
        let grants = ownerGrants
        return try await app.writeTransaction { db in
            let sql = db as! any SQLDatabase
            let advanced = try await sql.raw("""
                UPDATE ledger_heads SET seq = \(bind: last) WHERE name = \(bind: LedgerHead.webhookDispatch) AND seq = \(bind: cursor) RETURNING seq
                """).first()
            guard advanced != nil else { return 0 }
            for event in events {
                // Event data is at most 64 levels deep (`JSONLimits`), so its envelope can always be written; were
                // one not, it is skipped and logged rather than stall delivery for every later event.
                let payload: String
                do { payload = try Self.payload(of: event) } catch {
                    app.logger.error("Event \(event.seq) has no webhook payload: \(error)")
                    continue
                }
                for hook in hooks where hook.wants(event.type) {
                    guard EventVisibility.may(hook.$user.id, grants: grants[hook.$user.id] ?? .none, see: event) else { continue }
                    _ = try await WebhookService(app: app).enqueueDelivery(
                        hook: hook, eventID: try event.requireID(), eventType: event.type, payload: payload, on: db)
                }
            }
            return events.count
        }
    }

    /// `{type, timestamp, data}`, where data holds the envelope fields plus the event's own data.
    static func payload(of event: Event) throws -> String {
        var data: [String: JSONValue] = [:]
        if case .object(let own) = JSONValue.parse(event.data) { data = own }
        data["eventId"] = .string(event.id!.lowercasedString)
        data["seq"] = .number(Double(event.seq))
        data["resourceType"] = .string(event.resourceType)
        data["resourceId"] = event.resourceID.map { .string($0) } ?? .null
        data["actorId"] = event.actorID.map { .string($0.lowercasedString) } ?? .null
        let envelope: JSONValue = ["type": .string(event.type), "timestamp": .string(RFC3339.string(from: event.at)), "data": .object(data)]
        return try envelope.canonicalString()
    }
}

extension BackgroundLoop {
    /// Runs the dispatcher while the server runs: at once again after a full batch, else every 200 ms.
    static func webhookDispatch() -> BackgroundLoop {
        BackgroundLoop("Webhook dispatch", retryAfter: .milliseconds(200)) { app in
            try await WebhookDispatcher(app: app).dispatchBatch() > 0 ? .zero : .milliseconds(200)
        }
    }
}

extension Application {
    private struct DispatchKey: StorageKey { typealias Value = BackgroundLoop }

    /// Set once in `configure`; started by `serve`.
    var webhookDispatchWorker: BackgroundLoop {
        get { storage[DispatchKey.self]! }
        set { storage[DispatchKey.self] = newValue }
    }
}
