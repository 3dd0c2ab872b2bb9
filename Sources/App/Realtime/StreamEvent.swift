import Foundation
import SQLKit
import StewardFormats
import StewardSQLite
import Vapor

/// An event as `GET /api/v1/events`, SSE and WebSocket show it.
struct EventResponse: Content, Sendable, RowReadable {
    var id: UUID
    var seq: Int64
    var type: String
    var at: Date
    var actorId: UUID?
    var resourceType: String
    var resourceId: String?
    /// As stored: canonical text, served as it is.
    var data: StoredJSON

    init(_ event: Event) {
        id = event.id!
        seq = event.seq
        type = event.type
        at = event.at
        actorId = event.actorID
        resourceType = event.resourceType
        resourceId = event.resourceID
        data = StoredJSON(canonical: event.data)
    }

    /// An event read straight from its row (the columns of `Event`'s keys).
    init(row: any SQLRow) throws {
        id = try row.decode(column: "id", as: UUID.self)
        seq = try row.decode(column: "seq", as: Int64.self)
        type = try row.decode(column: "type", as: String.self)
        at = try row.decode(column: "at", as: Date.self)
        actorId = try row.optional("actor_id", as: UUID.self)
        resourceType = try row.decode(column: "resource_type", as: String.self)
        resourceId = try row.optional("resource_id", as: String.self)
        data = StoredJSON(canonical: try row.decode(column: "data", as: String.self))
    }
}

/// An event on its way to live streams: read from the log once, encoded once, and shared by every subscriber.
struct StreamEvent: Sendable {
    let seq: Int64
    let type: String
    let resourceType: String
    let resourceID: String?
    /// The user the event is about, for the visibility check.
    let owner: UUID?
    /// The event as JSON, exactly as the event log API shows it.
    let json: String

    init(_ event: Event) throws {
        seq = event.seq
        type = event.type
        resourceType = event.resourceType
        resourceID = event.resourceID
        owner = EventVisibility.owner(of: event)
        json = try APIJSON.string(EventResponse(event))
    }

    func visible(to userID: UUID, grants: Grants) -> Bool {
        EventVisibility.may(userID, grants: grants, resourceType: resourceType, owner: owner)
    }
}

/// Which events a stream carries: type patterns (`execution.*`, `*`) and optionally one resource.
struct StreamFilter: Sendable, Equatable {
    var types: [String]
    var resourceID: String?

    static let everything = StreamFilter(types: ["*"], resourceID: nil)

    func matches(_ event: StreamEvent) -> Bool {
        if let resourceID, event.resourceID != resourceID { return false }
        return Webhook.matches(filters: types, type: event.type)
    }

    /// Checks type patterns and a resource id from a client; an empty list means every type.
    static func validated(types raw: [String], resourceID: String?) -> (StreamFilter?, [FieldProblem]) {
        let types = raw.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var problems: [FieldProblem] = []
        if types.count > 50 || !types.allSatisfy({ $0 == "*" || $0.range(of: #"^[a-z_]+(\.[a-z_]+)*(\.\*)?$"#, options: .regularExpression) != nil }) {
            problems.append(FieldProblem(field: "types", message: "must be a list of at most 50 event types such as execution.*"))
        }
        if let resourceID, resourceID.isEmpty || resourceID.utf8.count > 200 {
            problems.append(FieldProblem(field: "resourceId", message: "must be 1 to 200 characters"))
        }
        guard problems.isEmpty else { return (nil, problems) }
        return (StreamFilter(types: types.isEmpty ? ["*"] : types, resourceID: resourceID.map(ResourceID.normalized)), [])
    }

    /// `?types=a,b&resourceId=…` of a request.
    static func fromQuery(_ req: Request) -> (StreamFilter?, [FieldProblem]) {
        let types = (req.queryText("types") ?? "").split(separator: ",").map(String.init)
        return validated(types: types, resourceID: req.queryText("resourceId"))
    }
}

/// What a stream was opened with; revoking it closes the stream.
enum StreamCredential: Sendable, Hashable {
    case session(UUID)
    case apiKey(UUID)

    init?(_ caller: AuthenticatedCaller) {
        if let id = caller.apiKey?.id { self = .apiKey(id) } else if let id = caller.session?.id { self = .session(id) } else { return nil }
    }
}

extension EventResponse: APIJSONWritable {
    /// The fields in `Codable`'s order, written without it (a test holds the two to the same bytes).
    func write(to object: inout APIJSON.ObjectWriter) {
        object.field("id", id)
        object.field("seq", seq)
        object.field("type", type)
        object.field("at", at)
        object.field("actorId", actorId)
        object.field("resourceType", resourceType)
        object.field("resourceId", resourceId)
        object.field("data", data)
    }
}
