import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Where and how to reach an SMTP server, parsed from `STEWARD_MAIL`.
public struct SMTPSettings: Sendable, Equatable {
    /// How the connection is protected.
    public enum Security: Sendable, Equatable {
        /// `smtp://`: plain connection upgraded with STARTTLS; refused if the server does not offer it,
        /// unless `?starttls=optional` (for a relay on loopback that has no TLS).
        case startTLS(required: Bool)
        /// `smtps://`: TLS from the first byte (port 465).
        case implicitTLS
    }

    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var security: Security

    /// Parses `smtp://user:pass@host:port?starttls=optional` or `smtps://user:pass@host:port`.
    public init?(url: String) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else { return nil }
        switch scheme {
        case "smtp":
            let optional = components.queryItems?.first { $0.name == "starttls" }?.value?.lowercased() == "optional"
            security = .startTLS(required: !optional)
            port = components.port ?? 587
        case "smtps":
            security = .implicitTLS
            port = components.port ?? 465
        default:
            return nil
        }
        self.host = host
        username = components.percentEncodedUser.flatMap { $0.removingPercentEncoding }
        password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
    }
}

/// Sends mail over SMTP (RFC 5321) with STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4616).
struct SMTPMailer: Mailer {
    let settings: SMTPSettings
    let tls: TLSConfiguration
    let heloName: String
    let timeout: Duration

    init(settings: SMTPSettings, tls: TLSConfiguration = .makeClientConfiguration(), heloName: String = "steward.local",
         timeout: Duration = .seconds(30)) {
        self.settings = settings
        self.tls = tls
        self.heloName = heloName
        self.timeout = timeout
    }

    func send(_ mail: Mail) async throws {
        let settings = self.settings, tls = self.tls, heloName = self.heloName
        try await withTimeout(timeout) {
            try await SMTPConversation(settings: settings, tls: tls, heloName: heloName).deliver(mail)
        }
    }
}

/// One connection's dialogue with the server.
private struct SMTPConversation: Sendable {
    let settings: SMTPSettings
    let tls: TLSConfiguration
    let heloName: String

    func deliver(_ mail: Mail) async throws {
        let context = try NIOSSLContext(configuration: tls)
        // SNI carries names only; for an IP literal the certificate is still checked, by address.
        let host: String? = (try? SocketAddress(ipAddress: settings.host, port: 0)) == nil ? settings.host : nil
        let implicitTLS = settings.security == .implicitTLS
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .connect(host: settings.host, port: settings.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if implicitTLS {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: host))
                    }
                    try channel.pipeline.syncOperations.addHandler(SMTPChunkTagger(protected: implicitTLS))
                    return try NIOAsyncChannel<SMTPChunk, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound, outbound in
            var replies = SMTPReplyReader(iterator: inbound.makeAsyncIterator())
            func command(_ line: String, expect codes: Set<Int>, name: String? = nil) async throws -> SMTPReply {
                try await outbound.write(ByteBuffer(string: line + "\r\n"))
                let reply = try await replies.next()
                guard codes.contains(reply.code) else {
                    throw MailError.transport("SMTP \(name ?? line.split(separator: " ").first.map(String.init) ?? line) answered \(reply.code) \(reply.text)")
                }
                return reply
            }

            let greeting = try await replies.next()
            guard greeting.code == 220 else { throw MailError.transport("SMTP greeting was \(greeting.code) \(greeting.text)") }
            var capabilities = try await command("EHLO \(heloName)", expect: [250]).capabilities

            if case .startTLS(let required) = settings.security {
                if capabilities.contains("STARTTLS") {
                    _ = try await command("STARTTLS", expect: [220])
                    // RFC 3207 §4.2 and the STARTTLS injection CVEs: anything the server sent after its 220 arrived
                    // in clear and must not be read as a reply of the protected session. Such bytes are either
                    // left over from the 220's read or were read before the TLS handler went in (tagged so).
                    guard replies.isDrained else {
                        throw MailError.transport("the SMTP server sent data after its STARTTLS reply, before TLS began (possible STARTTLS injection); closing")
                    }
                    // The handler is not Sendable: build and install it on the channel's own event loop, and mark
                    // every byte read from then on as protected, in the same turn.
                    let raw = channel.channel
                    try await raw.eventLoop.submit {
                        try raw.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: host), position: .first)
                        try raw.pipeline.syncOperations.handler(type: SMTPChunkTagger.self).protected = true
                    }.get()
                    replies.requireProtected = true
                    capabilities = try await command("EHLO \(heloName)", expect: [250]).capabilities
                } else if required {
                    throw MailError.transport("the SMTP server does not offer STARTTLS; refusing to send credentials and mail in clear (add ?starttls=optional for a loopback relay)")
                }
            }

            if let username = settings.username {
                let credentials = Data(("\0" + username + "\0" + (settings.password ?? "")).utf8).base64EncodedString()
                _ = try await command("AUTH PLAIN \(credentials)", expect: [235], name: "AUTH")
            }
            _ = try await command("MAIL FROM:<\(Self.address(in: mail.from))>", expect: [250])
            _ = try await command("RCPT TO:<\(Self.address(in: mail.to))>", expect: [250, 251])
            _ = try await command("DATA", expect: [354])
            try await outbound.write(ByteBuffer(string: Self.dotStuffed(RFC5322.render(mail, date: Date()))))
            let accepted = try await replies.next()
            guard accepted.code == 250 else { throw MailError.transport("SMTP DATA answered \(accepted.code) \(accepted.text)") }
            _ = try? await command("QUIT", expect: [221])
        }
    }

    /// The bare address of `Name <address>` or `address`; no line breaks or angle brackets survive.
    static func address(in value: String) -> String {
        var address = value
        if let open = value.lastIndex(of: "<"), let close = value.lastIndex(of: ">"), open < close {
            address = String(value[value.index(after: open)..<close])
        }
        return address.filter { !$0.isNewline && $0 != "<" && $0 != ">" }.trimmingCharacters(in: .whitespaces)
    }

    /// The message with leading dots doubled and the end-of-data marker (RFC 5321 4.5.2).
    static func dotStuffed(_ message: String) -> String {
        let lines = message.components(separatedBy: "\r\n").map { $0.hasPrefix(".") ? "." + $0 : $0 }
        var text = lines.joined(separator: "\r\n")
        if !text.hasSuffix("\r\n") { text += "\r\n" }
        return text + ".\r\n"
    }
}

/// One (possibly multi-line) SMTP reply.
struct SMTPReply: Sendable {
    var code: Int
    var lines: [String]

    var text: String { lines.joined(separator: " ") }

    /// EHLO keywords, upper-cased: `STARTTLS`, `AUTH`, `SIZE`, ...
    var capabilities: Set<String> {
        Set(lines.dropFirst().compactMap { $0.split(separator: " ").first.map { $0.uppercased() } })
    }
}

/// Bytes read from the server, and whether they were read through TLS.
struct SMTPChunk: Sendable {
    var bytes: ByteBuffer
    var protected: Bool
}

/// Tags every read with whether TLS was in the pipeline when it was read; after STARTTLS the reader refuses
/// any chunk read in clear.
final class SMTPChunkTagger: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = SMTPChunk
    var protected: Bool

    init(protected: Bool) { self.protected = protected }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(SMTPChunk(bytes: unwrapInboundIn(data), protected: protected)))
    }
}

/// Splits the inbound byte stream into replies: `250-first`, `250-second`, `250 last`.
struct SMTPReplyReader {
    var iterator: NIOAsyncChannelInboundStream<SMTPChunk>.AsyncIterator
    private var pending = ""
    /// Set once TLS is up: a chunk read in clear from then on is an injection, and ends the conversation.
    var requireProtected = false

    init(iterator: NIOAsyncChannelInboundStream<SMTPChunk>.AsyncIterator) {
        self.iterator = iterator
    }

    /// Nothing read and not yet consumed.
    var isDrained: Bool { pending.isEmpty }

    mutating func next() async throws -> SMTPReply {
        var lines: [String] = []
        while true {
            let line = try await nextLine()
            guard line.count >= 3, let code = Int(line.prefix(3)) else {
                throw MailError.transport("SMTP server sent an unreadable reply")
            }
            let rest = line.dropFirst(3)
            lines.append(String(rest.dropFirst()))
            if rest.first != "-" { return SMTPReply(code: code, lines: lines) }
        }
    }

    private mutating func nextLine() async throws -> String {
        while true {
            if let range = pending.range(of: "\r\n") {
                let line = String(pending[..<range.lowerBound])
                pending.removeSubrange(..<range.upperBound)
                return line
            }
            guard pending.utf8.count < 64 * 1024 else { throw MailError.transport("SMTP reply line too long") }
            guard let chunk = try await iterator.next() else {
                throw MailError.transport("SMTP server closed the connection")
            }
            if requireProtected && !chunk.protected {
                throw MailError.transport("the SMTP server sent data after its STARTTLS reply, before TLS began (possible STARTTLS injection); closing")
            }
            pending += String(buffer: chunk.bytes)
        }
    }
}
