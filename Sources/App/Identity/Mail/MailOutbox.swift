import Fluent
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// Queues mail in the database (inside the caller's transaction) and delivers it with retries.
public struct MailOutbox: Sendable {
    /// Placeholder for the secret inside a queued body.
    static let secretPlaceholder = "{{secret}}"
    static let maxAttempts = 8

    let app: Application

    public init(app: Application) {
        self.app = app
    }

    /// Adds a mail to the outbox. `secret` (a token) is stored encrypted and erased once the mail is sent.
    func enqueue(to: String, subject: String, body: String, secret: String?, on db: any Database) async throws {
        let mail = OutboxMail()
        let now = app.wallClock.now()
        mail.id = UUID.timeOrdered()
        mail.createdAt = now
        mail.toAddress = to
        mail.subject = subject
        mail.body = body
        mail.secret = try secret.map { try app.secretBox.seal($0) }
        mail.status = .pending
        mail.attempts = 0
        mail.nextAttemptAt = now
        try await mail.create(on: db)
        app.mailOutboxSignal.notify()
    }

    /// Sends every due mail once; returns how many were sent. Failures are rescheduled with back-off.
    @discardableResult
    public func deliverDue(limit: Int = 50) async throws -> Int {
        let now = app.wallClock.now()
        let due = try await OutboxMail.query(on: app.db)
            .filter(\.$status == .pending)
            .filter(\.$nextAttemptAt <= now)
            .sort(\.$nextAttemptAt)
            .limit(limit)
            .all()
        var sent = 0
        for mail in due {
            // Claim it, so two instances never send the same mail.
            let claimUntil = now.addingTimeInterval(120)
            let id = mail.id!, attempts = mail.attempts
            let claimed = try await app.writeStatements { sql in try await sql.raw("""
                UPDATE mail_outbox SET next_attempt_at = \(bind: claimUntil), attempts = attempts + 1
                WHERE id = \(bind: id) AND status = 'pending' AND attempts = \(bind: attempts)
                RETURNING id
                """).first() }
            guard claimed != nil else { continue }
            let attempt = mail.attempts + 1
            do {
                let secret = try mail.secret.map { try app.secretBox.open($0) }
                let rendered = Mail(
                    from: app.appConfig.mailFrom, to: mail.toAddress, subject: mail.subject,
                    body: mail.body.replacingOccurrences(of: Self.secretPlaceholder, with: secret ?? ""),
                    redactedBody: mail.body.replacingOccurrences(of: Self.secretPlaceholder, with: "[redacted]"),
                    messageID: mail.id!.lowercasedString)
                try await app.mailer.send(rendered)
                mail.status = .sent
                mail.sentAt = app.wallClock.now()
                mail.secret = nil
                mail.attempts = attempt
                mail.lastError = nil
                try await app.writeTransaction { db in try await mail.save(on: db) }
                sent += 1
            } catch {
                mail.attempts = attempt
                mail.lastError = String(describing: error).prefix(500).description
                if attempt >= Self.maxAttempts {
                    mail.status = .failed
                    mail.secret = nil
                } else {
                    // 30 s, 1 min, 2 min ... capped at one hour.
                    let delay = min(3600, 30 * pow(2, Double(attempt - 1)))
                    mail.nextAttemptAt = app.wallClock.now().addingTimeInterval(delay)
                }
                try await app.writeTransaction { db in try await mail.save(on: db) }
                app.logger.warning("Mail to \(mail.toAddress) failed (attempt \(attempt)): \(mail.lastError ?? "")")
            }
        }
        return sent
    }
}

/// Wakes the delivery loop when mail is queued in this process (other instances find it by polling).
final class MailOutboxSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false

    func notify() {
        lock.withLock { raised = true }
    }

    /// Returns soon after the next notification, or after `timeout`.
    func wait(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if lock.withLock({ () -> Bool in defer { raised = false }; return raised }) { return }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}

/// Runs the outbox delivery loop while the server runs; stops on shutdown.
final class MailOutboxWorker: LifecycleHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Never>?

    func start(_ app: Application) {
        lock.withLock {
            guard task == nil else { return }
            task = Task {
                let outbox = MailOutbox(app: app)
                while !Task.isCancelled {
                    do {
                        try await outbox.deliverDue()
                    } catch {
                        app.logger.warning("Mail outbox pass failed: \(String(describing: error))")
                    }
                    await app.mailOutboxSignal.wait(timeout: .seconds(5))
                }
            }
        }
    }

    func shutdownAsync(_ application: Application) async {
        let running = lock.withLock { () -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        application.mailOutboxSignal.notify()
        await running?.value
    }
}

extension Application {
    private struct SignalKey: StorageKey { typealias Value = MailOutboxSignal }
    private struct WorkerKey: StorageKey { typealias Value = MailOutboxWorker }

    /// Set once in `configure`, before any request can race on the storage.
    var mailOutboxSignal: MailOutboxSignal {
        get { storage[SignalKey.self]! }
        set { storage[SignalKey.self] = newValue }
    }

    /// Set once in `configure`; started by `serve`.
    var mailOutboxWorker: MailOutboxWorker {
        get { storage[WorkerKey.self]! }
        set { storage[WorkerKey.self] = newValue }
    }
}
