import Fluent
import Foundation
import NIOSSL
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("SMTPMailer")
struct SMTPMailerTests {
    private func mail(body: String = "Hello.\n.leading dot line\nBye.") -> Mail {
        Mail(from: "Steward <no-reply@steward.local>", to: "ada@example.com", subject: "Grüße", body: body,
             redactedBody: body, messageID: UUID().uuidString.lowercased())
    }

    @Test("STARTTLS, then AUTH PLAIN, then the message, with dot-stuffing undone by the server")
    func startTLS() async throws {
        let server = try await FakeSMTPServer()
        defer { Task { await server.stop() } }
        try await SMTPMailer(settings: server.settings(), tls: server.clientTLS).send(mail())

        let received = try #require(server.received.first)
        #expect(received.overTLS)
        #expect(received.authenticatedAs == "mailer")
        #expect(received.from == "MAIL FROM:<no-reply@steward.local>")
        #expect(received.to == "RCPT TO:<ada@example.com>")
        #expect(received.data.contains("Subject: =?utf-8?B?"))
        #expect(received.data.contains("\r\n.leading dot line\r\n"))
        #expect(received.data.hasSuffix("Bye."))
    }

    @Test("smtps:// speaks TLS from the first byte")
    func implicitTLS() async throws {
        let server = try await FakeSMTPServer(implicitTLS: true)
        defer { Task { await server.stop() } }
        try await SMTPMailer(settings: server.settings(security: .implicitTLS), tls: server.clientTLS).send(mail())
        #expect(server.received.first?.authenticatedAs == "mailer")
    }

    @Test("A server that does not offer STARTTLS gets neither credentials nor mail")
    func refusesPlaintext() async throws {
        let server = try await FakeSMTPServer(offersSTARTTLS: false)
        defer { Task { await server.stop() } }
        let error = await #expect(throws: MailError.self) {
            try await SMTPMailer(settings: server.settings(), tls: server.clientTLS).send(mail())
        }
        #expect(error?.description.contains("STARTTLS") == true)
        #expect(server.authenticationAttempts == 0)
        #expect(server.received.isEmpty)
    }

    @Test("Bytes sent in clear behind the STARTTLS 220 end the conversation: no credentials, no mail (RFC 3207 §4.2)")
    func startTLSInjection() async throws {
        let server = try await FakeSMTPServer(injectsAfterSTARTTLS: true)
        defer { Task { await server.stop() } }
        let error = await #expect(throws: MailError.self) {
            try await SMTPMailer(settings: server.settings(), tls: server.clientTLS).send(mail())
        }
        #expect(error?.description.contains("STARTTLS injection") == true)
        #expect(server.authenticationAttempts == 0)
        #expect(server.received.isEmpty)
    }

    @Test("A certificate the client does not trust stops the conversation before AUTH")
    func untrustedCertificate() async throws {
        let server = try await FakeSMTPServer()
        defer { Task { await server.stop() } }
        await #expect(throws: (any Error).self) {
            try await SMTPMailer(settings: server.settings(), tls: .makeClientConfiguration()).send(mail())
        }
        #expect(server.authenticationAttempts == 0)
        #expect(server.received.isEmpty)
    }

    @Test("Wrong credentials are a clear failure that the outbox retries")
    func wrongPassword() async throws {
        let server = try await FakeSMTPServer(password: "right")
        defer { Task { await server.stop() } }
        var settings = server.settings()
        settings.password = "wrong"
        let error = await #expect(throws: MailError.self) {
            try await SMTPMailer(settings: settings, tls: server.clientTLS).send(mail())
        }
        #expect(error?.description.contains("535") == true)
        #expect(error?.description.contains("wrong") == false, "the password never appears in errors")
    }

    @Test("A password reset mailed through the outbox arrives over SMTP with a working token")
    func throughTheOutbox() async throws {
        let server = try await FakeSMTPServer()
        defer { Task { await server.stop() } }
        try await withTestApp { app in
            app.mailer = SMTPMailer(settings: server.settings(), tls: server.clientTLS)
            try await makeUser(app, email: "smtp@example.com")
            _ = try await app.testing().sendRequest(.POST, "/api/v1/auth/password-reset/request", beforeRequest: { req in
                try req.json(["email": "smtp@example.com"])
            })
            #expect(try await MailOutbox(app: app).deliverDue() == 2)
            let reset = try #require(server.received.first { $0.data.contains("Reset your Steward password") })
            let range = try #require(reset.data.range(of: #"token=[A-Za-z0-9_-]+"#, options: .regularExpression))
            let token = String(reset.data[range].dropFirst("token=".count))
            let confirm = try await app.testing().sendRequest(.POST, "/api/v1/auth/password-reset/confirm", beforeRequest: { req in
                try req.json(["token": token, "newPassword": "Brand-New-Secret-7"])
            })
            #expect(confirm.status == .noContent)
        }
    }

    @Test("STEWARD_MAIL parses smtp:// and smtps:// URLs, with percent-encoded credentials")
    func parsing() throws {
        let config = try AppConfig.parse(["STEWARD_MAIL": "smtp://user%40example.com:p%3Ass@mail.example.com"])
        guard case .smtp(let settings) = config.mail else {
            Issue.record("not smtp: \(config.mail)")
            return
        }
        #expect(settings.host == "mail.example.com")
        #expect(settings.port == 587)
        #expect(settings.username == "user@example.com")
        #expect(settings.password == "p:ss")
        #expect(settings.security == .startTLS(required: true))
        #expect(SMTPSettings(url: "smtps://mail.example.com")?.port == 465)
        #expect(SMTPSettings(url: "smtp://127.0.0.1:25?starttls=optional")?.security == .startTLS(required: false))
        #expect(throws: ConfigurationError.self) { try AppConfig.parse(["STEWARD_MAIL": "smtp://"]) }
    }
}
