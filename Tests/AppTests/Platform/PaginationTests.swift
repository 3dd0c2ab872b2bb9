import Foundation
import Testing
@testable import App

@Suite("Pagination cursors")
struct PaginationTests {
    @Test("A cursor the API hands out reads back as the same position, to the microsecond; anything else is refused")
    func roundTrip() throws {
        let cursors: [PageRequest.Cursor] = [
            .init(at: 1_733_500_000.123456, id: UUID()),
            .init(at: Date().timeIntervalSince1970, id: UUID()),
            .init(at: 0, id: UUID(uuidString: "00000000-0000-0000-0000-000000000000")),
            .init(at: 253_402_300_799, id: UUID()),
            .init(seq: 42),
            .init(seq: Int64.max),
            .init(o: 20),
            .init(),
        ]
        for cursor in cursors {
            let text = PageRequest.encode(cursor)
            #expect(text.utf8.allSatisfy { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || ($0 < 128 && Character(UnicodeScalar($0)).isLetter)
                || ($0 < 128 && Character(UnicodeScalar($0)).isNumber) }, "URL-safe: \(text)")
            #expect(PageRequest.decode(text) == cursor, "\(text)")
        }
        for garbage in ["", "garbage", "e30", "bnVsbA", String(repeating: "A", count: 600), "eyJhdCI6InRleHQifQ"] {
            #expect(PageRequest.decode(garbage) == nil || PageRequest.decode(garbage) == PageRequest.Cursor(), "\(garbage)")
        }
        // A time no row can have (past 9999, before year 1): the client changed the cursor; its date would not bind.
        for at in [1e16, -1e15, 253_402_300_800] {
            #expect(PageRequest.decode(PageRequest.encode(.init(at: at, id: UUID()))) == nil, "at \(at)")
        }
    }
}
