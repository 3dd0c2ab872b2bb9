import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Sends one delivery attempt: signs the stored body (Standard Webhooks), POSTs it through the outbound guard,
/// records the attempt, and schedules the next one, finishes the delivery, or disables the endpoint.
struct WebhookDeliverer: Sendable {
    /// Delays before attempts 1…8: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (each ±10%).
    static let schedule: [TimeInterval] = [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000]
    static let timeout: TimeInterval = 15
    /// What deliveries announce themselves as (the webhook design: `Steward-Webhooks/<version>`).
    static let userAgent = "Steward-Webhooks/\(StewardVersion.current)"
    static let disableAfter: TimeInterval = 5 * 86_400
    static let keptResponseBytes = 4096

    let app: Application

    private var now: Date { app.wallClock.now() }

    /// `slots`, when given, bounds the requests in flight to this endpoint; one is held around the request only.
    func deliver(_ job: ClaimedJob, slots: AsyncSemaphore? = nil) async throws {
        let queue = JobQueue(app: app)
        guard case .object(let fields) = job.payload, let raw = fields["deliveryId"]?.stringValue, let id = UUID(uuidString: raw),
              let delivery = try await WebhookDelivery.query(on: app.db).filter(\.$id == id).with(\.$webhook).first()
        else {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .failed, error: "delivery not found", on: db) }
            return
        }
        let hook = delivery.webhook
        guard delivery.status == .pending else {
            _ = try await app.writeTransaction { db in try await queue.finish(job, status: .succeeded, on: db) }
            return
        }
        guard hook.enabled else {
            try await settle(job) { db in
                delivery.status = .failed
                delivery.error = "the endpoint is disabled"
                delivery.nextAttemptAt = nil
                delivery.updatedAt = now
                try await delivery.save(on: db)
            }
            return
        }

        let attempt = delivery.attempt + 1
        let timestamp = Int64(now.timeIntervalSince1970)
        let messageID = delivery.eventID.lowercasedString
        var signatures: [String] = []
        if let signature = WebhookSignature.sign(secret: try app.secretBox.open(hook.sealedSecret), id: messageID, timestamp: timestamp, body: delivery.payload) {
            signatures.append(signature)
        }
        if let previous = hook.sealedPreviousSecret, let until = hook.previousSecretExpiresAt, until > now,
           let signature = WebhookSignature.sign(secret: try app.secretBox.open(previous), id: messageID, timestamp: timestamp, body: delivery.payload) {
            signatures.append(signature)
        }
        var headers = try hook.headers(opening: app.secretBox)
        headers["webhook-id"] = messageID
        headers["webhook-timestamp"] = String(timestamp)
        headers["webhook-signature"] = signatures.joined(separator: " ")
        headers["Content-Type"] = "application/json"

        if let slots {
            await slots.acquire()
            if Task.isCancelled { slots.release(); throw CancellationError() }
        }
        let started = ContinuousClock.now
        var answeredStatus: Int?
        var failure: String?
        var answeredBody: String?
        var retryAfterSeconds: TimeInterval?
        do {
            var client = app.outboundHTTP
            client.userAgent = Self.userAgent
            let response = try await client.send(hook.url, body: delivery.payload, headers: headers, timeout: Self.timeout)
            answeredStatus = response.status
            answeredBody = response.storableText(prefix: Self.keptResponseBytes)
            if [429, 503].contains(response.status), let value = response.headers.first(name: "Retry-After"), let seconds = TimeInterval(value) {
                retryAfterSeconds = min(seconds, 36_000)
            }
            if !(200..<300).contains(response.status) { failure = "answered \(response.status)" }
        } catch let outbound as OutboundError {
            failure = outbound.description
        } catch let other {
            failure = String(describing: other).prefix(300).description
        }
        slots?.release()
        let status = answeredStatus, error = failure, body = answeredBody, retryAfter = retryAfterSeconds
        let elapsed = ContinuousClock.now - started
        let durationMs = Int64(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        let succeeded = error == nil
        let gone = status == 410

        try await settle(job) { db in
            // Plain SQL for the attempt and the delivery: this runs behind SQLite's write gate for every attempt.
            let sql = db as! any SQLDatabase
            try await sql.insert(into: WebhookAttempt.schema)
                .columns("id", "delivery_id", "attempt", "at", "response_status", "duration_ms", "error", "response_body")
                .values(SQLBind(UUID.timeOrdered()), SQLBind(try delivery.requireID()), SQLBind(attempt), SQLBind(now), SQLBind(status),
                        SQLBind(durationMs), SQLBind(error), SQLBind(body))
                .run()

            delivery.attempt = attempt
            delivery.responseStatus = status
            delivery.durationMs = durationMs
            delivery.error = error
            delivery.responseBody = body
            delivery.updatedAt = now
            if succeeded {
                delivery.status = .succeeded
                delivery.nextAttemptAt = nil
                if hook.failingSince != nil {
                    hook.failingSince = nil
                    try await hook.save(on: db)
                }
            } else {
                hook.failingSince = hook.failingSince ?? now
                let failingTooLong = now.timeIntervalSince(hook.failingSince!) >= Self.disableAfter
                if gone || failingTooLong {
                    try await disable(hook, reason: gone ? "the endpoint answered 410 Gone" : "every delivery failed for 5 days", on: db)
                } else {
                    try await hook.save(on: db)
                }
                if attempt < Self.schedule.count, !gone, hook.enabled {
                    let delay = max(Self.schedule[attempt] * Double.random(in: 0.9...1.1), retryAfter ?? 0)
                    let next = now.addingTimeInterval(delay)
                    delivery.nextAttemptAt = next
                    try await JobQueue(app: app).enqueue(kind: WebhookService.deliverKind, payload: job.payload, maxAttempts: 3, runAt: next,
                                                         groupKey: hook.id?.uuidString, on: db)
                } else {
                    delivery.status = .failed
                    delivery.nextAttemptAt = nil
                }
            }
            try await sql.raw("""
                UPDATE webhook_deliveries SET status = \(bind: delivery.status.rawValue), attempt = \(bind: attempt),
                    next_attempt_at = \(bind: delivery.nextAttemptAt), response_status = \(bind: status), duration_ms = \(bind: durationMs),
                    error = \(bind: error), response_body = \(bind: body), updated_at = \(bind: now)
                WHERE id = \(bind: try delivery.requireID())
                """).run()
        }
        let outcome = switch delivery.status {
        case .succeeded: "succeeded"
        case .failed: "failed"
        default: "retrying"
        }
        app.metrics.recordWebhookDelivery(outcome: outcome)
    }

    /// Disables an endpoint: a `webhook.disabled` event, an audit entry and a mail to its owner.
    private func disable(_ hook: Webhook, reason: String, on db: any Database) async throws {
        hook.enabled = false
        hook.disabledReason = reason
        hook.updatedAt = now
        try await hook.save(on: db)
        let id = try hook.requireID().lowercasedString
        try await app.activityRecorder.record(
            audit: AuditRecord(action: "webhook.disabled", actorID: nil, actorType: .system, resourceType: "webhook", resourceID: id,
                               outcome: .failure, details: ["reason": .string(reason), "url": .string(hook.url)]),
            event: EventRecord(type: "webhook.disabled", actorID: nil, resourceType: "webhook", resourceID: id,
                               data: ["userId": .string(hook.$user.id.lowercasedString), "url": .string(hook.url), "reason": .string(reason)]),
            on: db)
        if let owner = try await User.find(hook.$user.id, on: db) {
            try await MailOutbox(app: app).enqueue(
                to: owner.email, subject: "A Steward webhook was disabled",
                body: "Your webhook to \(hook.url) was disabled: \(reason).\nFix the endpoint, then enable it again with PATCH /api/v1/webhooks/\(id) {\"enabled\": true}.",
                secret: nil, on: db)
        }
    }

    private func settle(_ job: ClaimedJob, _ change: @escaping @Sendable (any Database) async throws -> Void) async throws {
        try await app.writeTransaction { db in
            guard try await JobQueue(app: app).finish(job, status: .succeeded, on: db) else { throw LeaseLost() }
            try await change(db)
        }
    }
}

extension WebhookDeliverer {
    /// Registers the `webhook.deliver` handler. Deliveries are grouped by endpoint (the job's group key is the
    /// webhook's id), and run beside the worker loops, so one slow endpoint holds no worker: at most 4 talk to
    /// one endpoint at once, up to 12 more wait their turn in memory (their lease kept alive), 64 in all.
    /// (8 admitted per endpoint left the slots idle while deliveries read and settled: 236-296/s in the webhook
    /// benchmark; 16: 368-403/s.)
    static func register(in handlers: JobHandlers) {
        handlers.register(WebhookService.deliverKind, Handler(), pausedWith: .webhooks)
    }

    struct Handler: JobHandler {
        var admission: JobAdmission { .beside(perGroup: 4, admittedPerGroup: 16, total: 64) }

        func run(_ job: ClaimedJob, context: JobContext, app: Application) async throws {
            try await WebhookDeliverer(app: app).deliver(job, slots: context.slots)
        }
    }
}
