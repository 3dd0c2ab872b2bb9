/// JSON text as Steward stored it, served as it is. A column such as a skill's `tags` or `inputSchema` holds
/// canonical text that `JSONText` wrote when the row was saved; a response that embeds the column unchanged writes
/// that text as it is (`APIJSON`), instead of parsing it into a `JSONValue` and writing the same bytes again.
///
/// Only text that Steward's own writer produced may be wrapped: it is not checked again on the way out.
/// Other encoders and decoders (a test's `JSONDecoder`, say) see an ordinary JSON value.
public struct StoredJSON: Codable, Equatable, Sendable {
    /// Canonical JSON text: keys sorted, no insignificant space.
    public let text: String

    /// `text` must be what `JSONText` wrote (a stored column of canonical JSON).
    public init(canonical text: String) {
        self.text = text
    }

    public init(_ value: JSONValue) throws(JSONTextError) {
        text = try value.canonicalString()
    }

    /// The value the text holds.
    public var value: JSONValue { JSONValue.parse(text) }

    public init(from decoder: any Decoder) throws {
        text = try JSONValue(from: decoder).canonicalString()
    }

    public func encode(to encoder: any Encoder) throws {
        try value.encode(to: encoder)
    }
}
