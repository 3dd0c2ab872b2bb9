import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SwiftASN1
import X509
@testable import App

/// A minimal SMTP server on loopback for tests: EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, QUIT.
/// It speaks real SMTP over TCP with a certificate made at start-up, and records what it receives.
final class FakeSMTPServer: @unchecked Sendable {
    /// One message as the server received it.
    struct Received: Sendable {
        var from: String
        var to: String
        var data: String
        var overTLS: Bool
        var authenticatedAs: String?
    }

    let port: Int
    /// Trusts this server's certificate (and nothing else).
    let clientTLS: TLSConfiguration
    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let serverContext: NIOSSLContext
    private let offersSTARTTLS: Bool
    /// Sends a forged reply in clear right behind its STARTTLS `220`, as a man in the middle would.
    private let injectsAfterSTARTTLS: Bool
    private let password: String
    private let lock = NSLock()
    private var stored: [Received] = []
    private var authAttempts = 0
    private var acceptTask: Task<Void, Never>?

    var received: [Received] { lock.withLock { stored } }
    var authenticationAttempts: Int { lock.withLock { authAttempts } }

    init(offersSTARTTLS: Bool = true, implicitTLS: Bool = false, injectsAfterSTARTTLS: Bool = false,
         password: String = "mail-secret") async throws {
        self.offersSTARTTLS = offersSTARTTLS && !implicitTLS
        self.injectsAfterSTARTTLS = injectsAfterSTARTTLS
        self.password = password
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("localhost") }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(3600),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                KeyUsage(digitalSignature: true, keyCertSign: true)
                SubjectAlternativeNames([.dnsName("localhost")])
            },
            issuerPrivateKey: .init(key))
        let certificatePEM = try certificate.serializeAsPEM().pemString
        let sslCertificate = try NIOSSLCertificate(bytes: Array(certificatePEM.utf8), format: .pem)
        let sslKey = try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem)
        let context = try NIOSSLContext(configuration: .makeServerConfiguration(
            certificateChain: [.certificate(sslCertificate)], privateKey: .privateKey(sslKey)))
        serverContext = context
        var client = TLSConfiguration.makeClientConfiguration()
        client.trustRoots = .certificates([sslCertificate])
        clientTLS = client

        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { child in
                child.eventLoop.makeCompletedFuture {
                    if implicitTLS { try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        port = channel.channel.localAddress?.port ?? 0
        acceptTask = Task { [self] in
            try? await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { try? await self.serve(connection) }
                    }
                }
            }
        }
    }

    /// Settings for the mailer: this server on `localhost`, with the test credentials.
    func settings(security: SMTPSettings.Security = .startTLS(required: true)) -> SMTPSettings {
        let scheme = security == .implicitTLS ? "smtps" : "smtp"
        var settings = SMTPSettings(url: "\(scheme)://mailer:\(password)@localhost:\(port)")!
        settings.security = security
        return settings
    }

    func stop() async {
        try? await channel.channel.close()
        acceptTask?.cancel()
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var pending = ""
            var overTLS = false
            var user: String?
            var from = "", to = ""
            func reply(_ text: String) async throws { try await outbound.write(ByteBuffer(string: text + "\r\n")) }
            func line() async throws -> String? {
                while true {
                    if let range = pending.range(of: "\r\n") {
                        let line = String(pending[..<range.lowerBound])
                        pending.removeSubrange(..<range.upperBound)
                        return line
                    }
                    guard let chunk = try await iterator.next() else { return nil }
                    pending += String(buffer: chunk)
                }
            }

            try await reply("220 fake ESMTP ready")
            while let command = try await line() {
                let verb = command.split(separator: " ").first.map { $0.uppercased() } ?? ""
                switch verb {
                case "EHLO":
                    let tlsLine = offersSTARTTLS && !overTLS ? "250-STARTTLS\r\n" : ""
                    try await outbound.write(ByteBuffer(string: "250-fake greets you\r\n\(tlsLine)250-AUTH PLAIN\r\n250 SIZE 1000000\r\n"))
                case "STARTTLS":
                    // The reply and the TLS handler in one turn of the channel's event loop. The client starts its
                    // handshake as soon as it reads the reply; a ClientHello that arrived before the handler was
                    // read as a plain SMTP line, and both sides waited until the mailer's 30 s timeout (seen once
                    // in CI, on "Wrong credentials").
                    let raw = connection.channel, context = serverContext
                    let answer = injectsAfterSTARTTLS ? "220 go ahead\r\n250-forged\r\n250 AUTH PLAIN\r\n" : "220 go ahead\r\n"
                    try await raw.eventLoop.submit {
                        raw.writeAndFlush(ByteBuffer(string: answer), promise: nil)
                        try raw.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), position: .first)
                    }.get()
                    overTLS = true
                case "AUTH":
                    lock.withLock { authAttempts += 1 }
                    let encoded = command.split(separator: " ").last.map(String.init) ?? ""
                    let parts = (Data(base64Encoded: encoded).map { String(decoding: $0, as: UTF8.self) } ?? "").split(separator: "\0", omittingEmptySubsequences: false)
                    if parts.count == 3, parts[2] == password {
                        user = String(parts[1])
                        try await reply("235 2.7.0 authenticated")
                    } else {
                        try await reply("535 5.7.8 bad credentials")
                    }
                case "MAIL":
                    from = command
                    try await reply("250 ok")
                case "RCPT":
                    to = command
                    try await reply("250 ok")
                case "DATA":
                    try await reply("354 end with .")
                    var lines: [String] = []
                    while let dataLine = try await line(), dataLine != "." {
                        lines.append(dataLine.hasPrefix("..") ? String(dataLine.dropFirst()) : dataLine)
                    }
                    let message = Received(from: from, to: to, data: lines.joined(separator: "\r\n"), overTLS: overTLS, authenticatedAs: user)
                    lock.withLock { stored.append(message) }
                    try await reply("250 queued")
                case "QUIT":
                    try await reply("221 bye")
                    return
                default:
                    try await reply("502 unknown command")
                }
            }
        }
    }
}
