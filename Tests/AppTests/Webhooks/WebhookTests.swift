import Crypto
import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App
import StewardFormats

/// A webhook receiver on loopback that records each request and answers from a script of statuses.
final class WebhookReceiver: @unchecked Sendable {
    struct Received: Sendable {
        var headers: HTTPHeaders
        var body: String
    }

    let app: Application
    private(set) var port = 0
    private let lock = NSLock()
    private var stored: [Received] = []
    private var script: [(HTTPResponseStatus, HTTPHeaders)] = []
    private var slowNow = 0
    private var slowPeak = 0
    private var slowDone = 0

    var received: [Received] { lock.withLock { stored } }
    /// The most requests the slow endpoint ever had at once, and how many it finished.
    var slowStats: (peak: Int, done: Int) { lock.withLock { (slowPeak, slowDone) } }

    /// The next answers, in order; after the script runs out, 200.
    func answer(_ statuses: [(HTTPResponseStatus, HTTPHeaders)]) { lock.withLock { script = statuses } }

    init() async throws {
        app = try await Application.make(.testing)
        app.post("hook") { [self] req async throws -> Response in
            let body = req.body.string ?? ""
            let (status, headers) = self.lock.withLock { () -> (HTTPResponseStatus, HTTPHeaders) in
                self.stored.append(Received(headers: req.headers, body: body))
                return self.script.isEmpty ? (.ok, [:]) : self.script.removeFirst()
            }
            return Response(status: status, headers: headers, body: "ack")
        }
        app.post("nul") { _ async throws -> Response in Response(status: .badRequest, body: "no\u{0}thanks") }
        app.post("slow") { [self] _ async throws -> String in
            self.lock.withLock { self.slowNow += 1; self.slowPeak = max(self.slowPeak, self.slowNow) }
            try await Task.sleep(for: .milliseconds(1500))
            self.lock.withLock { self.slowNow -= 1; self.slowDone += 1 }
            return "slow ack"
        }
        try await app.server.start(address: .hostname("127.0.0.1", port: 0))
        port = app.http.server.shared.localAddress?.port ?? 0
    }

    func stop() async {
        await app.server.shutdown()
        try? await app.asyncShutdown()
    }
}

private func send(_ app: Application, _ method: HTTPMethod, _ path: String, token: String, json: String? = nil) async throws -> TestingHTTPResponse {
    var headers: HTTPHeaders = ["Authorization": "Bearer \(token)"]
    if json != nil { headers.add(name: .contentType, value: "application/json") }
    return try await app.testing().sendRequest(method, path, headers: headers, body: json.map { .init(string: $0) })
}

/// A developer (webhooks:manage, skills:execute) with the sample skills, and a webhook on `events` to the receiver.
private func subscriber(_ app: Application, receiver: WebhookReceiver, events: String = #"["execution.*"]"#,
                        email: String = "hooks@example.com", path: String = "hook") async throws -> (token: String, hookID: UUID, secret: String) {
    _ = try await SkillService(app: app).seedSamples()
    try await makeUser(app, email: email)
    _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: email).requireID(), roles: ["developer"], actor: .cli)
    let token = try await login(app, email: email).accessToken
    let res = try await send(app, .POST, "/api/v1/webhooks", token: token,
                             json: #"{"url": "http://127.0.0.1:\#(receiver.port)/\#(path)", "events": \#(events), "description": "ci", "headers": {"X-Team": "blue"}}"#)
    #expect(res.status == .created, "\(res.body.string)")
    let body = try res.content.decode(WebhookResponse.self)
    return (token, body.id, try #require(body.secret))
}

/// Dispatches new events and runs every due job, repeatedly, as the workers would.
private func deliverAll(_ app: Application) async throws {
    for _ in 0..<5 {
        _ = try await app.settledLedger()
        try await WebhookDispatcher(app: app).dispatchBatch()
        try await drainJobs(app)
    }
}

/// Checks a received request's signature the way a Standard Webhooks receiver does.
private func verifies(_ received: WebhookReceiver.Received, secret: String) -> Bool {
    guard let id = received.headers.first(name: "webhook-id"), let timestamp = received.headers.first(name: "webhook-timestamp").flatMap(Int64.init),
          let expected = WebhookSignature.sign(secret: secret, id: id, timestamp: timestamp, body: received.body),
          let header = received.headers.first(name: "webhook-signature")
    else { return false }
    return header.split(separator: " ").contains { String($0) == expected }
}

@Suite("Webhooks")
struct WebhookTests {
    @Test("Signatures match the Standard Webhooks test vector")
    func standardVector() {
        let signature = WebhookSignature.sign(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
                                              timestamp: 1_614_265_330, body: #"{"test": 2432232314}"#)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test("Create shows the secret once and stores it encrypted; bad URLs, events and headers are 422; other owners get 404")
    func subscriptions() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let (token, hookID, secret) = try await subscriber(app, receiver: receiver)
                #expect(secret.hasPrefix("whsec_"))
                #expect(Data(base64Encoded: String(secret.dropFirst(6)))?.count == 32)
                let shown = try await send(app, .GET, "/api/v1/webhooks/\(hookID)", token: token)
                #expect(shown.status == .ok)
                #expect(!shown.body.string.contains(secret))
                #expect(!shown.body.string.contains("blue"), "header values are not returned")
                let stored = try #require(try await Webhook.find(hookID, on: app.db))
                #expect(!stored.sealedSecret.contains(String(secret.dropFirst(6))))

                for body in [#"{"url": "http://169.254.169.254/", "events": ["execution.*"]}"#, #"{"url": "http://2130706433/", "events": ["execution.*"]}"#,
                             #"{"url": "https://example.com/h", "events": []}"#, #"{"url": "https://example.com/h", "events": ["DROP TABLE"]}"#,
                             #"{"url": "https://example.com/h", "events": ["execution.*"], "headers": {"webhook-signature": "x"}}"#,
                             #"{"url": "https://example.com/h", "events": ["execution.*"], "headers": {"Host": "evil"}}"#,
                             #"{"url": "ftp://example.com/h", "events": ["execution.*"]}"#] {
                    #expect(try await send(app, .POST, "/api/v1/webhooks", token: token, json: body).status == .unprocessableEntity, "\(body)")
                }
                try await makeUser(app, email: "stranger@example.com")
                _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "stranger@example.com").requireID(), roles: ["developer"], actor: .cli)
                let stranger = try await login(app, email: "stranger@example.com").accessToken
                #expect(try await send(app, .GET, "/api/v1/webhooks/\(hookID)", token: stranger).status == .notFound)
                #expect(try await send(app, .DELETE, "/api/v1/webhooks/\(hookID)", token: stranger).status == .notFound)
                #expect(try (try await send(app, .GET, "/api/v1/webhooks", token: stranger)).content.decode(ListResponse<WebhookResponse>.self).items.isEmpty)
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("Execution events are delivered signed, in order, with a stable webhook-id; another user's webhook gets none of them")
    func delivery() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let (token, _, secret) = try await subscriber(app, receiver: receiver)
                _ = try await subscriber(app, receiver: receiver, email: "nosy@example.com")
                let created = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {"x": 1}}"#)
                let execution = try created.content.decode(ExecutionResponse.self)
                try await deliverAll(app)

                let received = receiver.received
                #expect(received.count == 4, "queued, running, progress, succeeded — only to the owner's webhook")
                #expect(received.allSatisfy { verifies($0, secret: secret) })
                #expect(received.allSatisfy { $0.headers.first(name: "X-Team") == "blue" })
                #expect(received.allSatisfy { $0.headers.first(name: "User-Agent") == "Steward-Webhooks/\(StewardVersion.current)" })
                let bodies = received.map { JSONValue.parse($0.body).object ?? [:] }
                #expect(bodies.map { $0["type"]?.stringValue ?? "" } == ["execution.queued", "execution.running", "execution.progress", "execution.succeeded"])
                let last = try #require(bodies.last?["data"]?.object)
                #expect(last["resourceId"] == .string(execution.id.uuidString.lowercased()))
                #expect(last["id"] == .string(execution.id.uuidString.lowercased()), "the execution's id as the API writes it")
                #expect(ContractConformanceTests.upperCaseIDs(in: received.map(\.body).joined()).isEmpty, "no upper-case id in any payload")
                #expect(last["eventId"]?.stringValue == received.last?.headers.first(name: "webhook-id"))
                #expect(last["seq"] != nil)

                // Dispatching again repeats nothing.
                try await deliverAll(app)
                #expect(receiver.received.count == 4)
                #expect(try await metricValue(app, #"steward_webhook_deliveries_total{outcome="succeeded"}"#) == 4)
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("With no subscription the dispatcher moves past the log in one step; a later subscription gets only what follows it")
    func noSubscriptions() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                _ = try await SkillService(app: app).seedSamples()
                let logged = try await EventHub.maxSeq(on: try await app.settledLedger())
                #expect(logged > 0)
                #expect(try await WebhookDispatcher(app: app).dispatchBatch() == Int(logged))
                #expect(try await WebhookDispatcher(app: app).dispatchBatch() == 0)
                #expect(try await WebhookDelivery.query(on: app.db).count() == 0)

                let (token, _, _) = try await subscriber(app, receiver: receiver)
                let created = try await send(app, .POST, "/api/v1/executions", token: token, json: #"{"skillId": "echo", "input": {"x": 1}}"#)
                #expect(created.status == .accepted)
                try await deliverAll(app)
                let types = receiver.received.map { JSONValue.parse($0.body).object?["type"]?.stringValue ?? "" }
                #expect(types == ["execution.queued", "execution.running", "execution.progress", "execution.succeeded"])
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("Failures are retried on the schedule; Retry-After is honoured; 410 disables the endpoint with an event and a mail")
    func retries() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                let (mailer, clock) = app.useTestDoubles()
                let (token, hookID, _) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#)
                receiver.answer([(.internalServerError, [:]), (.tooManyRequests, ["Retry-After": "120"])])
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token).status == .accepted)
                try await drainJobs(app)
                #expect(receiver.received.count == 1)
                var delivery = try #require(try await WebhookDelivery.query(on: app.db).first())
                #expect(delivery.status == .pending)
                let firstRetry = try #require(delivery.nextAttemptAt).timeIntervalSince(clock.now())
                #expect((4.4...5.6).contains(firstRetry), "second attempt after 5 s ±10%: \(firstRetry)")

                clock.advance(by: 6)
                try await drainJobs(app)
                #expect(receiver.received.count == 2)
                delivery = try #require(try await WebhookDelivery.query(on: app.db).first())
                #expect(try #require(delivery.nextAttemptAt).timeIntervalSince(clock.now()) >= 270, "the 5-minute step, not less than Retry-After")

                clock.advance(by: 400)
                try await drainJobs(app)
                #expect(receiver.received.count == 3)
                delivery = try #require(try await WebhookDelivery.query(on: app.db).first())
                #expect(delivery.status == .succeeded)
                #expect(delivery.attempt == 3)
                let history = try (try await send(app, .GET, "/api/v1/webhooks/\(hookID)/deliveries", token: token)).content.decode(ListResponse<DeliveryResponse>.self)
                #expect(history.items.first?.attempts.map(\.responseStatus) == [500, 429, 200])
                #expect(try await metricValue(app, #"steward_webhook_deliveries_total{outcome="retrying"}"#) == 2)

                receiver.answer([(.gone, [:])])
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token).status == .accepted)
                try await drainJobs(app)
                let hook = try #require(try await Webhook.find(hookID, on: app.db))
                #expect(!hook.enabled)
                #expect(hook.disabledReason?.contains("410") == true)
                #expect(try await metricValue(app, #"steward_webhook_deliveries_total{outcome="failed"}"#) == 1)
                #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "webhook.disabled").count() == 1)
                try await MailOutbox(app: app).deliverDue()
                #expect(mailer.sent.contains { $0.subject.contains("disabled") })
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("A receiver's answer holding the NUL character is kept with U+FFFD in its place, and the attempt is recorded")
    func nulInAnswer() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let (token, hookID, _) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#, path: "nul")
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token).status == .accepted)
                try await drainJobs(app)
                let history = try (try await send(app, .GET, "/api/v1/webhooks/\(hookID)/deliveries", token: token)).content.decode(ListResponse<DeliveryResponse>.self)
                let delivery = try #require(history.items.first)
                #expect(delivery.responseStatus == 400)
                #expect(delivery.responseBody == "no\u{FFFD}thanks")
                #expect(delivery.attempts.map(\.responseStatus) == [400])
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("After a rotation both signatures are sent for 24 hours, then only the new one")
    func rotation() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                let (_, clock) = app.useTestDoubles()
                let (token, hookID, oldSecret) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#)
                let rotated = try await send(app, .POST, "/api/v1/webhooks/\(hookID)/rotate-secret", token: token)
                let newSecret = try #require(try rotated.content.decode(WebhookResponse.self).secret)
                #expect(newSecret != oldSecret)
                _ = try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token)
                try await drainJobs(app)
                let first = try #require(receiver.received.last)
                #expect(first.headers.first(name: "webhook-signature")?.split(separator: " ").count == 2)
                #expect(verifies(first, secret: newSecret) && verifies(first, secret: oldSecret))

                clock.advance(by: 24 * 3600 + 1)
                let fresh = try await login(app, email: "hooks@example.com").accessToken
                _ = try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: fresh)
                try await drainJobs(app)
                let second = try #require(receiver.received.last)
                #expect(second.headers.first(name: "webhook-signature")?.split(separator: " ").count == 1)
                #expect(verifies(second, secret: newSecret) && !verifies(second, secret: oldSecret))
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("Redeliver sends the same event again with the same webhook-id")
    func redeliver() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                app.useTestDoubles()
                let (token, hookID, _) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#)
                let ping = try (try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token)).content.decode(DeliveryResponse.self)
                try await drainJobs(app)
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/deliveries/\(ping.id)/redeliver", token: token).status == .accepted)
                try await drainJobs(app)
                #expect(receiver.received.count == 2)
                #expect(receiver.received[0].headers.first(name: "webhook-id") == receiver.received[1].headers.first(name: "webhook-id"))
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/deliveries/\(UUID())/redeliver", token: token).status == .notFound)
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("At most 4 deliveries run at once per endpoint, and a slow endpoint does not delay another")
    func endpointConcurrency() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                // Real time: deliveries handed back by the limit are due again a second later.
                app.mailer = CapturingMailer()
                let (token, fastID, _) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#)
                let slow = try await send(app, .POST, "/api/v1/webhooks", token: token,
                                          json: #"{"url": "http://127.0.0.1:\#(receiver.port)/slow", "events": ["webhook.test"]}"#)
                let slowID = try slow.content.decode(WebhookResponse.self).id
                for _ in 0..<8 { _ = try await send(app, .POST, "/api/v1/webhooks/\(slowID)/test", token: token) }
                app.jobWorkers.start(app, count: 2)
                try await Task.sleep(for: .milliseconds(300))
                let fastStart = ContinuousClock.now
                _ = try await send(app, .POST, "/api/v1/webhooks/\(fastID)/test", token: token)
                for _ in 0..<40 where receiver.received.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
                #expect(!receiver.received.isEmpty, "the fast endpoint was served")
                #expect(ContinuousClock.now - fastStart < .milliseconds(1400), "the fast endpoint did not wait for the slow one")
                for _ in 0..<120 where receiver.slowStats.done < 8 { try await Task.sleep(for: .milliseconds(100)) }
                #expect(receiver.slowStats.done == 8)
                #expect(receiver.slowStats.peak <= 4, "peak \(receiver.slowStats.peak)")
                #expect(receiver.slowStats.peak >= 2, "deliveries to one endpoint still run concurrently")
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("At delivery a name that resolves to a private address is a blocked_address failure")
    func blockedAtDelivery() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            _ = try await SkillService(app: app).seedSamples()
            try await makeUser(app, email: "dns@example.com")
            _ = try await UserAdminService(app: app).setRoles(try await UserAdminService(app: app).find(email: "dns@example.com").requireID(), roles: ["developer"], actor: .cli)
            let token = try await login(app, email: "dns@example.com").accessToken
            let created = try await send(app, .POST, "/api/v1/webhooks", token: token, json: #"{"url": "https://hooks.example.com/in", "events": ["webhook.test"]}"#)
            let hookID = try created.content.decode(WebhookResponse.self).id
            app.addressResolver = TableResolver(table: ["hooks.example.com": ["10.0.0.7"]])
            _ = try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token)
            try await drainJobs(app)
            let delivery = try #require(try await WebhookDelivery.query(on: app.db).first())
            #expect(delivery.error?.hasPrefix("blocked_address") == true, "\(delivery.error ?? "")")
            #expect(delivery.status == .pending, "counted as a failed attempt and retried")
        }
    }

    @Test("A delivery waiting out its back-off survives a restart and is sent once the back-off ends")
    func retrySurvivesRestart() async throws {
        let receiver = try await WebhookReceiver()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let env = ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "STEWARD_JWT_SECRET": String(repeating: "restart-", count: 5)]
        let clock = TestClock()
        do {
            let first = try await makeTestApp(directory: directory, environment: env)
            do {
                first.useTestDoubles(clock: clock)
                let (token, hookID, _) = try await subscriber(first, receiver: receiver, events: #"["webhook.test"]"#)
                receiver.answer([(.internalServerError, [:])])
                #expect(try await send(first, .POST, "/api/v1/webhooks/\(hookID)/test", token: token).status == .accepted)
                try await drainJobs(first)
                #expect(receiver.received.count == 1)
                #expect(try await WebhookDelivery.query(on: first.db).first()?.status == .pending)
            } catch {
                try? await first.asyncShutdown()
                throw error
            }
            try await first.asyncShutdown()

            let second = try await makeTestApp(directory: directory, environment: env, freshDatabase: false)
            do {
                second.useTestDoubles(clock: clock)
                try await drainJobs(second)
                #expect(receiver.received.count == 1, "not before the back-off")
                clock.advance(by: 6)
                try await drainJobs(second)
                #expect(receiver.received.count == 2, "the second attempt went out after the restart")
                let delivery = try #require(try await WebhookDelivery.query(on: second.db).first())
                #expect(delivery.status == .succeeded && delivery.attempt == 2)
                #expect(receiver.received[0].headers.first(name: "webhook-id") == receiver.received[1].headers.first(name: "webhook-id"))
            } catch {
                try? await second.asyncShutdown()
                throw error
            }
            try await second.asyncShutdown()
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }

    @Test("An endpoint whose every delivery failed for five days is disabled, with an event and a mail")
    func fiveDaysOfFailures() async throws {
        let receiver = try await WebhookReceiver()
        do {
            try await withTestApp(environment: ["STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"]) { app in
                let (mailer, clock) = app.useTestDoubles()
                let (token, hookID, _) = try await subscriber(app, receiver: receiver, events: #"["webhook.test"]"#)
                receiver.answer(Array(repeating: (.internalServerError, [:]), count: 50))
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: token).status == .accepted)
                try await drainJobs(app)
                clock.advance(by: 4 * 86_400)
                try await drainJobs(app)  // the first ping's remaining retries, all failing
                var hook = try #require(try await Webhook.find(hookID, on: app.db))
                #expect(hook.enabled, "four days of failures are not enough")

                clock.advance(by: 86_400 + 1)
                let fresh = try await login(app, email: "hooks@example.com").accessToken
                #expect(try await send(app, .POST, "/api/v1/webhooks/\(hookID)/test", token: fresh).status == .accepted)
                try await drainJobs(app)
                hook = try #require(try await Webhook.find(hookID, on: app.db))
                #expect(!hook.enabled)
                #expect(hook.disabledReason == "every delivery failed for 5 days")
                #expect(try await Event.query(on: try await app.settledLedger()).filter(\.$type == "webhook.disabled").count() == 1)
                try await MailOutbox(app: app).deliverDue()
                #expect(mailer.sent.contains { $0.subject.contains("disabled") && $0.body.contains("5 days") })
            }
        } catch {
            await receiver.stop()
            throw error
        }
        await receiver.stop()
    }
}

