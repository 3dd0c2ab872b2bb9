import Foundation
import SQLiteKit
import StewardFormats
import Testing

@Suite("UUID binding on SQLite")
struct UUIDBindingTests {
    @Test("A UUID binds as the upper-case text Codable stored, and reads back from it; other values are not ids")
    func binding() {
        for id in (0..<200).map({ _ in UUID() }) + [UUID.pooledRandom(), .timeOrdered()] {
            #expect(id.sqliteData == .text(id.uuidString))
            #expect(UUID(sqliteData: .text(id.uuidString)) == id)
            #expect(UUID(sqliteData: .text(id.lowercasedString)) == id)
        }
        #expect(UUID(sqliteData: .integer(1)) == nil)
        #expect(UUID(sqliteData: .text("not-a-uuid")) == nil)
    }
}
