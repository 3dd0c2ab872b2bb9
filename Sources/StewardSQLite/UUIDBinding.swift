import Foundation
import SQLiteKit
import StewardFormats

/// UUIDs bind and read as SQLite values directly, as the same upper-case text `Codable` gave them (so nothing
/// stored changes). Without this, SQLiteKit encoded every UUID through a one-off `Encoder` and `uuidString`, and
/// decoded it through a `Decoder` and `UUID(uuidString:)`, on every bind and every read of an id.
extension UUID: @retroactive SQLiteDataConvertible {
    public init?(sqliteData: SQLiteData) {
        guard case .text(let text) = sqliteData else { return nil }
        self.init(text: text)
    }

    public var sqliteData: SQLiteData? { .text(uppercasedString) }
}
