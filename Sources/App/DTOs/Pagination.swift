import Foundation
import Vapor

/// `?limit=` (1-100, default 20) and `?cursor=` (opaque), validated: absurd values are 422, never 500.
struct PageRequest: Sendable {
    static let defaultLimit = 20
    static let maximumLimit = 100

    var limit: Int
    var cursor: Cursor?

    /// The position after the last item of a page: its sort time and id, or a sequence number.
    struct Cursor: Codable, Sendable, Equatable {
        var t: Int64?
        var id: UUID?
        var seq: Int64?
        /// Offset into a ranked result (search), where no stable key exists.
        var o: Int?

        init(t: Int64? = nil, id: UUID? = nil, seq: Int64? = nil, o: Int? = nil) {
            self.t = t
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
        if let raw = request.query[String.self, at: "limit"] {
            if let value = Int(raw), (1...Self.maximumLimit).contains(value) {
                limit = value
            } else {
                problems.append(FieldProblem(field: "limit", message: "must be a whole number from 1 to \(Self.maximumLimit)"))
            }
        }
        cursor = nil
        if let raw = request.query[String.self, at: "cursor"], !raw.isEmpty {
            if let data = AccessTokens.base64URLDecode(raw), raw.utf8.count <= 512,
               let decoded = try? JSONDecoder().decode(Cursor.self, from: data) {
                cursor = decoded
            } else {
                problems.append(FieldProblem(field: "cursor", message: "is not a cursor this API handed out"))
            }
        }
        guard problems.isEmpty else { throw HTTPProblem.validation(problems) }
    }

    static func encode(_ cursor: Cursor) -> String {
        SecureToken.base64URL((try? JSONEncoder.canonical.encode(cursor)) ?? Data())
    }
}

extension Date {
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }
}
