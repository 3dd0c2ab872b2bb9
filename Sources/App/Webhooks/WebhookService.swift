import Fluent
import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// A subscription as the API shows it; the secret only once, at creation or rotation.
struct WebhookResponse: Content, RowReadable {
    var id: UUID
    var userId: UUID
    var url: String
    var events: [String]
    var description: String?
    var headers: [String: String]
    var enabled: Bool
    var disabledReason: String?
    var createdAt: Date
    var updatedAt: Date
    var secret: String?

    init(_ hook: Webhook, secret: String? = nil) {
        id = hook.id!
        userId = hook.$user.id
        url = hook.url
        events = hook.events
        description = hook.descriptionText
        headers = hook.sealedHeaders.mapValues { _ in "[redacted]" }
        enabled = hook.enabled
        disabledReason = hook.disabledReason
        createdAt = hook.createdAt
        updatedAt = hook.updatedAt
        self.secret = secret
    }

    /// A webhook read straight from its row (the columns of `Webhook`'s keys), header values redacted, no secret.
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        userId = try row.decode(column: "user_id", as: UUID.self)
        url = try row.decode(column: "url", as: String.self)
        events = JSONText.strings(in: try row.decode(column: "events", as: String.self))
        description = try row.optional("description", as: String.self)
        headers = Webhook.headerMap(try row.decode(column: "headers", as: String.self)).mapValues { _ in "[redacted]" }
        enabled = try row.decode(column: "enabled", as: Bool.self)
        disabledReason = try row.optional("disabled_reason", as: String.self)
        createdAt = try row.decode(column: "created_at", as: Date.self)
        updatedAt = try row.decode(column: "updated_at", as: Date.self)
        secret = nil
    }
}

/// One delivery with its attempts, for `GET /webhooks/{id}/deliveries`.
struct DeliveryResponse: Content {
    var id: UUID
    var eventId: UUID
    var eventType: String
    var attempt: Int
    var status: String
    var responseStatus: Int?
    var durationMs: Int64?
    var nextAttemptAt: Date?
    var error: String?
    var responseBody: String?
    var createdAt: Date
    var attempts: [Attempt]

    struct Attempt: Content {
        var attempt: Int
        var at: Date
        var responseStatus: Int?
        var durationMs: Int64
        var error: String?
    }

    init(_ delivery: WebhookDelivery, attempts: [WebhookAttempt]) {
        id = delivery.id!
        eventId = delivery.eventID
        eventType = delivery.eventType
        attempt = delivery.attempt
        status = delivery.status.rawValue
        responseStatus = delivery.responseStatus
        durationMs = delivery.durationMs
        nextAttemptAt = delivery.nextAttemptAt
        error = delivery.error
        responseBody = delivery.responseBody
        createdAt = delivery.createdAt
        self.attempts = attempts.map { Attempt(attempt: $0.attempt, at: $0.at, responseStatus: $0.responseStatus, durationMs: $0.durationMs, error: $0.error) }
    }
}

/// Webhook subscriptions (owner-scoped; admins see all), secrets, test pings and delivery history.
struct WebhookService: Sendable {
    static let deliverKind = "webhook.deliver"
    static let refusedHeaders: Set<String> = [
        "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "proxy-authorization", "proxy-connection", "te", "trailer", "user-agent",
    ]

    let app: Application

    /// The pool: for reads only (writes go through `app.writeTransaction`).
    private var reads: any Database { app.reads }
    private var now: Date { app.wallClock.now() }

    // MARK: - Validation

    struct Draft: Sendable {
        var url: String?
        var events: [String]?
        var description: String??
        var headers: [String: String]?
        var enabled: Bool?
    }

    static func draft(from fields: [String: JSONValue]) throws -> Draft {
        let allowed: Set<String> = ["url", "events", "description", "headers", "enabled"]
        var problems = fields.keys.filter { !allowed.contains($0) }.sorted().map { FieldProblem(field: $0, message: "is not a webhook field") }
        var draft = Draft()
        if let value = fields["url"] {
            if case .string(let url) = value { draft.url = url } else { problems.append(FieldProblem(field: "url", message: "must be a string")) }
        }
        if let value = fields["events"] {
            if case .array(let items) = value, items.allSatisfy({ $0.stringValue != nil }) { draft.events = items.compactMap(\.stringValue) }
            else { problems.append(FieldProblem(field: "events", message: "must be an array of event types")) }
        }
        if let value = fields["description"] {
            switch value {
            case .null: draft.description = .some(nil)
            case .string(let text): draft.description = .some(text)
            default: problems.append(FieldProblem(field: "description", message: "must be a string"))
            }
        }
        if let value = fields["headers"] {
            if case .object(let map) = value, map.values.allSatisfy({ $0.stringValue != nil }) { draft.headers = map.compactMapValues(\.stringValue) }
            else { problems.append(FieldProblem(field: "headers", message: "must be an object of strings")) }
        }
        if let value = fields["enabled"] {
            if case .bool(let flag) = value { draft.enabled = flag } else { problems.append(FieldProblem(field: "enabled", message: "must be a boolean")) }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        return draft
    }

    private func problems(in draft: Draft, creating: Bool) -> [FieldProblem] {
        var problems: [FieldProblem] = []
        if creating, draft.url == nil { problems.append(FieldProblem(field: "url", message: "is required")) }
        if creating, draft.events == nil { problems.append(FieldProblem(field: "events", message: "is required")) }
        if let url = draft.url, let refusal = app.outboundHTTP.guardrail.refusal(for: url) {
            problems.append(FieldProblem(field: "url", message: refusal))
        }
        if let events = draft.events {
            let valid = !events.isEmpty && events.count <= 50 && events.allSatisfy { filter in
                filter == "*" || filter.range(of: #"^[a-z_]+(\.[a-z_]+)*(\.\*)?$"#, options: .regularExpression) != nil
            }
            if !valid { problems.append(FieldProblem(field: "events", message: "must list 1 to 50 event types such as execution.succeeded or execution.*")) }
        }
        if case .some(.some(let text)) = draft.description, text.count > 500 {
            problems.append(FieldProblem(field: "description", message: "must be at most 500 characters"))
        }
        if let headers = draft.headers {
            if headers.count > 20 { problems.append(FieldProblem(field: "headers", message: "must hold at most 20 headers")) }
            for (name, value) in headers {
                let lower = name.lowercased()
                if Self.refusedHeaders.contains(lower) || lower.hasPrefix("webhook-") || name.isEmpty
                    || !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
                    problems.append(FieldProblem(field: "headers.\(name)", message: "cannot be set"))
                } else if value.contains(where: \.isNewline) || value.count > 4096 {
                    problems.append(FieldProblem(field: "headers.\(name)", message: "must be a single-line value"))
                }
            }
        }
        return problems
    }

    // MARK: - Subscriptions

    func create(_ draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> (Webhook, String) {
        let problems = problems(in: draft, creating: true)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        let secret = WebhookSignature.newSecret()
        let hook = Webhook()
        hook.id = UUID()
        hook.$user.id = caller.user.id
        hook.url = draft.url!
        hook.events = draft.events!
        hook.descriptionText = draft.description ?? nil
        try hook.setHeaders(draft.headers ?? [:], sealing: app.secretBox)
        hook.sealedSecret = try app.secretBox.seal(secret)
        hook.enabled = draft.enabled ?? true
        hook.createdAt = now
        hook.updatedAt = now
        try await app.writeTransaction { db in
            try await hook.create(on: db)
            try await audit("webhook.created", hook: hook, caller: caller, origin: origin, details: ["url": .string(hook.url)], on: db)
        }
        return (hook, secret)
    }

    func find(_ id: UUID, caller: AuthenticatedCaller) async throws -> Webhook {
        guard let hook = try await Webhook.query(on: reads).visible(to: caller, ownedThrough: \.$user).filter(\.$id == id).first() else {
            throw HTTPProblem.notFound("No such webhook.")
        }
        return hook
    }

    func list(caller: AuthenticatedCaller) async throws -> [WebhookResponse] {
        try await Webhook.query(on: reads).visible(to: caller, ownedThrough: \.$user).sort(\.$createdAt, .descending)
            .listed(as: WebhookResponse.self, through: app.sqliteReaders, offLoopOn: app.threadPool)
    }

    func update(_ id: UUID, draft: Draft, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> Webhook {
        let hook = try await find(id, caller: caller)
        let problems = problems(in: draft, creating: false)
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
        if let url = draft.url { hook.url = url }
        if let events = draft.events { hook.events = events }
        if let description = draft.description { hook.descriptionText = description }
        if let headers = draft.headers { try hook.setHeaders(headers, sealing: app.secretBox) }
        if let enabled = draft.enabled {
            hook.enabled = enabled
            if enabled { hook.disabledReason = nil; hook.failingSince = nil }
        }
        hook.updatedAt = now
        try await app.writeTransaction { db in
            try await hook.save(on: db)
            try await audit("webhook.updated", hook: hook, caller: caller, origin: origin, details: [:], on: db)
        }
        return hook
    }

    func delete(_ id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws {
        let hook = try await find(id, caller: caller)
        try await app.writeTransaction { db in
            try await audit("webhook.deleted", hook: hook, caller: caller, origin: origin, details: ["url": .string(hook.url)], on: db)
            try await hook.delete(on: db)
        }
    }

    /// A new secret; the previous one keeps signing (as a second signature) for 24 hours.
    func rotateSecret(_ id: UUID, caller: AuthenticatedCaller, origin: RequestOrigin) async throws -> (Webhook, String) {
        let hook = try await find(id, caller: caller)
        let secret = WebhookSignature.newSecret()
        hook.sealedPreviousSecret = hook.sealedSecret
        hook.previousSecretExpiresAt = now.addingTimeInterval(24 * 3600)
        hook.sealedSecret = try app.secretBox.seal(secret)
        hook.updatedAt = now
        try await app.writeTransaction { db in
            try await hook.save(on: db)
            try await audit("webhook.secret_rotated", hook: hook, caller: caller, origin: origin, details: [:], on: db)
        }
        return (hook, secret)
    }

    /// Sends a `webhook.test` event to this endpoint through the normal delivery path.
    func test(_ id: UUID, caller: AuthenticatedCaller) async throws -> WebhookDelivery {
        let hook = try await find(id, caller: caller)
        let eventID = UUID()
        let payload: JSONValue = [
            "type": "webhook.test",
            "timestamp": .string(RFC3339.string(from: now)),
            "data": ["eventId": .string(eventID.lowercasedString), "webhookId": .string(hook.id!.lowercasedString)],
        ]
        return try await app.writeTransaction { db in
            try await enqueueDelivery(hook: hook, eventID: eventID, eventType: "webhook.test", payload: payload.canonicalString(), on: db)
        }
    }

    func deliveries(_ id: UUID, caller: AuthenticatedCaller, page: PageRequest) async throws -> ([DeliveryResponse], String?) {
        let hook = try await find(id, caller: caller)
        let query = WebhookDelivery.query(on: reads).filter(\.$webhook.$id == (try hook.requireID()))
        let (items, next) = try await query.newestFirst(by: "created_at", { $0.createdAt }, page: page, through: app.sqliteReaders)
        let attempts = try await WebhookAttempt.query(on: reads).filter(\.$delivery.$id ~~ items.compactMap(\.id)).sort(\.$attempt)
            .listed(through: app.sqliteReaders)
        let byDelivery = Dictionary(grouping: attempts, by: { $0.$delivery.id })
        return (items.map { DeliveryResponse($0, attempts: byDelivery[$0.id!] ?? []) }, next)
    }

    /// Sends an event again by hand (a new delivery with the same `webhook-id`).
    func redeliver(_ id: UUID, deliveryID: UUID, caller: AuthenticatedCaller) async throws -> WebhookDelivery {
        let hook = try await find(id, caller: caller)
        guard let original = try await WebhookDelivery.query(on: reads).filter(\.$id == deliveryID).filter(\.$webhook.$id == (try hook.requireID())).first() else {
            throw HTTPProblem.notFound("No such delivery.")
        }
        return try await app.writeTransaction { db in
            try await enqueueDelivery(hook: hook, eventID: original.eventID, eventType: original.eventType, payload: original.payload, on: db)
        }
    }

    /// A pending delivery and its first job, inside the caller's transaction.
    private static let deliveryInsert = FixedStatement.insert(
        into: WebhookDelivery.schema,
        columns: ["id", "webhook_id", "event_id", "event_type", "payload", "status", "attempt", "next_attempt_at", "created_at", "updated_at"])

    func enqueueDelivery(hook: Webhook, eventID: UUID, eventType: String, payload: String, on db: any Database) async throws -> WebhookDelivery {
        let delivery = WebhookDelivery()
        delivery.id = UUID.timeOrdered()
        delivery.$webhook.id = try hook.requireID()
        delivery.eventID = eventID
        delivery.eventType = eventType
        delivery.payload = payload
        delivery.status = .pending
        delivery.attempt = 0
        delivery.nextAttemptAt = now
        delivery.createdAt = now
        delivery.updatedAt = now
        // Plain SQL: the dispatcher writes one of these per matching subscription, behind SQLite's write gate.
        try await (db as! any SQLDatabase).run(Self.deliveryInsert, [
            delivery.id!, try hook.requireID(), eventID, eventType, payload, delivery.status.rawValue, 0, delivery.nextAttemptAt,
            delivery.createdAt, delivery.updatedAt,
        ])
        delivery.$id.exists = true
        try await JobQueue(app: app).enqueue(kind: Self.deliverKind, payload: [
            "deliveryId": .string(delivery.id!.uuidString), "webhookId": .string(hook.id!.uuidString),
        ], maxAttempts: 3, groupKey: hook.id!.uuidString, on: db)
        return delivery
    }

    private func audit(_ action: String, hook: Webhook, caller: AuthenticatedCaller, origin: RequestOrigin, details: JSONValue, on db: any Database) async throws {
        try await app.activityRecorder.record(audit: AuditRecord(
            action: action, actorID: caller.user.id, actorType: caller.actorType, resourceType: "webhook",
            resourceID: hook.id?.lowercasedString, origin: origin, details: details), on: db)
    }
}

extension WebhookResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) throws {
        object.field("id", id)
        object.field("userId", userId)
        object.field("url", url)
        object.field("events", events)
        object.field("description", description)
        try object.field("headers", encoding: headers)
        object.field("enabled", enabled)
        object.field("disabledReason", disabledReason)
        object.field("createdAt", createdAt)
        object.field("updatedAt", updatedAt)
        object.field("secret", secret)
    }
}
