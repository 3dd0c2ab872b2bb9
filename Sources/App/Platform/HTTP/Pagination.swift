import Fluent
import Foundation
import Vapor
import StewardFormats
import StewardSQLite

/// `?limit=` (1-100, default 20) and `?cursor=` (opaque), validated: absurd values are 422, never 500.
struct PageRequest: Sendable {
    static let defaultLimit = 20
    static let maximumLimit = 100

    var limit: Int
    var cursor: Cursor?

    /// The position after the last item of a page: its sort time and id, or a sequence number.
    struct Cursor: Codable, Sendable, Equatable {
        /// The exact sort time (seconds since 1970), so rows created in the same millisecond are neither
        /// skipped nor repeated.
        var at: Double?
        var id: UUID?
        var seq: Int64?
        /// Offset into a ranked result (search), where no stable key exists.
        var o: Int?

        init(at: Double? = nil, id: UUID? = nil, seq: Int64? = nil, o: Int? = nil) {
            self.at = at
            self.id = id
            self.seq = seq
            self.o = o.map { min(max(0, $0), 10_000) }
        }
    }

    init(limit: Int = PageRequest.defaultLimit, cursor: Cursor? = nil) {
        self.limit = limit
        self.cursor = cursor
    }

    init(from request: Request) throws {
        var problems: [FieldProblem] = []
        limit = Self.defaultLimit
        if let raw = request.queryText("limit") {
            if let value = Int(raw), (1...Self.maximumLimit).contains(value) {
                limit = value
            } else {
                problems.append(FieldProblem(field: "limit", message: "must be a whole number from 1 to \(Self.maximumLimit)"))
            }
        }
        cursor = nil
        if let raw = request.queryText("cursor"), !raw.isEmpty {
            if let decoded = Self.decode(raw) {
                cursor = decoded
            } else {
                problems.append(FieldProblem(field: "cursor", message: "is not a cursor this API handed out"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
    }

    /// A cursor `encode` handed out, or nil for anything else.
    static func decode(_ raw: String) -> Cursor? {
        guard raw.utf8.count <= 512, let data = AccessTokens.base64URLDecode(raw),
              let cursor = try? JSONDecoder().decode(Cursor.self, from: data) else { return nil }
        // A cursor comes back from the client, who may have changed it: its time becomes a bound date, which must be
        // one Steward could have written (see `RFC3339.accepts`).
        if let at = cursor.at, !(at.isFinite && RFC3339.accepts(Date(timeIntervalSince1970: at))) { return nil }
        return cursor
    }

    /// The cursor as base64url of its JSON, written by hand (every page that has a next one pays for it): the
    /// same members `Cursor`'s `Codable` conformance reads back.
    static func encode(_ cursor: Cursor) -> String {
        var members: [String] = []
        if let at = cursor.at, at.isFinite { members.append("\"at\":\(at)") }
        if let id = cursor.id { members.append("\"id\":\"\(id.lowercasedString)\"") }
        if let o = cursor.o { members.append("\"o\":\(o)") }
        if let seq = cursor.seq { members.append("\"seq\":\(seq)") }
        return Base64URL.encode(Array(("{" + members.joined(separator: ",") + "}").utf8))
    }
}

extension QueryBuilder where Model.IDValue == UUID {
    /// The query of one page (and one row more, to tell whether another follows). The cursor's condition is one
    /// range on `date` and a filter, never an `OR` of two ranges, so an index on (filters…, date, id) reads the
    /// page in order and stops after it; a test asserts that plan for the main lists.
    func newestFirstPage(by date: FieldKey, page: PageRequest) -> Self {
        if let cursor = page.cursor, let seconds = cursor.at, let id = cursor.id {
            // SQLite hands dates back rounded to the microsecond, so the stored value may differ from the cursor by
            // up to half of one: times within a microsecond of the cursor count as ties, broken by id.
            let below = Date(timeIntervalSince1970: seconds - 0.000_001)
            let above = Date(timeIntervalSince1970: seconds + 0.000_001)
            filter(date, .lessThanOrEqual, above).group(.or) { group in
                group.filter(date, .lessThan, below).filter(.id, .lessThan, id)
            }
        }
        return sort(date, .descending).sort(.id, .descending).limit(page.limit + 1)
    }
}

extension QueryBuilder where Model.IDValue == UUID, Model: ListedProperties {
    /// One page, newest first by `date` with ties broken by id, after `page.cursor`, read through the fast read
    /// (`listed(through:)`); and the next page's cursor. Pass `readers` alone only when an index on (filters…, date,
    /// id) answers the query, and with `offLoopOn` otherwise (see `listed(through:offLoopOn:)`).
    func newestFirst(by date: FieldKey, _ value: (Model) -> Date?, page: PageRequest,
                     through readers: SQLiteReaders? = nil, offLoopOn pool: NIOThreadPool? = nil) async throws -> ([Model], String?) {
        PageRequest.cut(try await newestFirstPage(by: date, page: page).listed(through: readers, offLoopOn: pool), page: page) {
            (value($0), $0.id)
        }
    }

    /// `newestFirst` with each row read straight into its response item; `position` gives an item's sort time and id.
    func newestFirst<Row: RowReadable>(as: Row.Type, by date: FieldKey, _ position: (Row) -> (Date?, UUID?), page: PageRequest,
                                       through readers: SQLiteReaders? = nil, offLoopOn pool: NIOThreadPool? = nil) async throws -> ([Row], String?) {
        PageRequest.cut(try await newestFirstPage(by: date, page: page).listed(as: Row.self, through: readers, offLoopOn: pool),
                        page: page, position)
    }
}

extension PageRequest {
    /// The page of `rows` (one more than a page when another follows) and the cursor after its last item, made of
    /// the item's sort time and id.
    static func cut<Item>(_ rows: [Item], page: PageRequest, _ position: (Item) -> (Date?, UUID?)) -> ([Item], String?) {
        let items = Array(rows.prefix(page.limit))
        let next = rows.count > page.limit ? items.last.map { item in
            let (date, id) = position(item)
            return PageRequest.encode(.init(at: (date ?? Date(timeIntervalSince1970: 0)).timeIntervalSince1970, id: id))
        } : nil
        return (items, next)
    }
}
