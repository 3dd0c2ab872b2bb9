import Foundation
import Vapor

/// A rendered mail ready for a transport.
public struct Mail: Sendable, Equatable {
    public var from: String
    public var to: String
    public var subject: String
    public var body: String
    /// The body with its secret replaced, safe for logs.
    public var redactedBody: String
    public var messageID: String
}

/// Sends mail; everything that leaves the process goes through one of these.
public protocol Mailer: Sendable {
    func send(_ mail: Mail) async throws
}

/// Writes mail to the log with secrets redacted (the default, for development).
struct LogMailer: Mailer {
    let logger: Logger

    func send(_ mail: Mail) async throws {
        logger.notice("Mail to \(mail.to): \(mail.subject)\n\(mail.redactedBody)")
    }
}

/// Writes one RFC 5322 `.eml` file per mail into a directory.
struct FileMailer: Mailer {
    let directory: String

    func send(_ mail: Mail) async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let name = "\(Int(Date().timeIntervalSince1970 * 1000))-\(mail.messageID.prefix(12)).eml"
        let path = (directory as NSString).appendingPathComponent(name)
        let data = Data(RFC5322.render(mail, date: Date()).utf8)
        guard FileManager.default.createFile(atPath: path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw MailError.transport("cannot write \(path)")
        }
    }
}

/// Why a mail was not sent.
enum MailError: Error, CustomStringConvertible {
    case transport(String)
    var description: String {
        switch self {
        case .transport(let reason): reason
        }
    }
}

/// The text form of a mail.
enum RFC5322 {
    static func render(_ mail: Mail, date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        let domain = mail.from.split(separator: "@").last.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "> ")) } ?? "steward.local"
        let headers = [
            "From: \(headerSafe(mail.from))",
            "To: \(headerSafe(mail.to))",
            "Subject: \(encodedWord(headerSafe(mail.subject)))",
            "Date: \(formatter.string(from: date))",
            "Message-ID: <\(mail.messageID)@\(domain)>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
        ]
        let body = mail.body.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
        return headers.joined(separator: "\r\n") + "\r\n\r\n" + body + "\r\n"
    }

    /// No header injection: line breaks are removed from header values.
    static func headerSafe(_ value: String) -> String {
        value.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    }

    static func encodedWord(_ value: String) -> String {
        guard value.unicodeScalars.contains(where: { !$0.isASCII }) else { return value }
        return "=?utf-8?B?\(Data(value.utf8).base64EncodedString())?="
    }
}

extension Application {
    private struct MailerKey: StorageKey { typealias Value = any Mailer }

    /// The mail transport from `STEWARD_MAIL`; tests swap it.
    public var mailer: any Mailer {
        get {
            if let mailer = storage[MailerKey.self] { return mailer }
            switch appConfig.mail {
            case .log: return LogMailer(logger: logger)
            case .file(let directory): return FileMailer(directory: directory)
            case .smtp(let settings): return SMTPMailer(settings: settings)
            }
        }
        set { storage[MailerKey.self] = newValue }
    }
}
