import Foundation
import Logging
import StewardFormats

/// Writes each log line as one JSON object: `{"ts","level","message","label","requestId",...metadata}`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil,
                write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardOutput) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let level = event.level
        let message = event.message
        let explicit = event.metadata
        var merged = self.metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit { merged.merge(explicit) { _, new in new } }
        // Vapor names it `request-id`; JSON logs use the API's spelling.
        if let requestID = merged.removeValue(forKey: "request-id"), merged["requestId"] == nil {
            merged["requestId"] = requestID
        }

        var object: [String: JSONValue] = [
            "ts": .string(Self.timestamp()),
            "level": .string(level.rawValue),
            "message": .string(message.description),
            "label": .string(label),
        ]
        if let error = event.error { object["error"] = .string(String(describing: error)) }
        for (key, value) in merged where object[key] == nil {
            object[key] = Self.convert(value)
        }
        // Metadata is the program's own, but a value JSON cannot hold must not lose the line.
        write((try? JSONValue.object(object).canonicalString())
            ?? JSONText.canonical(stringMap: ["ts": Self.timestamp(), "level": level.rawValue, "message": message.description,
                                               "label": label, "error": "metadata could not be written as JSON"]))
    }

    private static func convert(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let items): .array(items.map(convert))
        case .dictionary(let dictionary): .object(dictionary.mapValues(convert))
        }
    }

    private static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }

    public static let standardOutput: @Sendable (String) -> Void = { line in
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
