import Fluent
import Vapor
import StewardSQLite

/// `GET /api/v1/events`: the event log, oldest first, filtered to what the caller may read.
struct EventController: RouteCollection {
    /// Rows read per request at most, so a caller who may see little cannot make one request scan the whole log.
    static let scanLimit = 2000

    func boot(routes: any RoutesBuilder) throws {
        routes.grouped("events").grouped(RequireCaller()).get(use: index)
    }

    @Sendable
    func index(req: Request) async throws -> ListResponse<EventResponse> {
        let caller = try req.caller
        let page = try PageRequest(from: req)
        var problems: [FieldProblem] = []
        var after: Int64 = page.cursor?.seq ?? 0
        if let raw = req.queryText("after") {
            if let value = Int64(raw), value >= 0 { after = max(after, value) } else {
                problems.append(FieldProblem(field: "after", message: "must be a sequence number (0 or more)"))
            }
        }
        let (filter, filterProblems) = StreamFilter.fromQuery(req)
        problems += filterProblems
        guard problems.isEmpty, let filter else { throw HTTPProblem.validation(problems) }
        let resourceID = filter.resourceID
        let filters = filter.types
        let userID = caller.user.id
        var items: [EventResponse] = []
        var scanned = 0
        var last = after
        // Whether rows the same query would read remain after `last`; nil while not known.
        var more: Bool?
        // The seq index, or (resource_id, seq) for one resource, reads a batch in order: on SQLite on a direct reader.
        let readers = req.application.sqliteReaders
        // A page's worth first (plus one, to know whether more follow), then larger batches while little is visible.
        var batchSize = page.limit + 1
        scan: while items.count < page.limit, scanned < Self.scanLimit {
            let asked = min(batchSize, Self.scanLimit - scanned)
            batchSize = min(batchSize * 4, 500)
            var query = Event.query(on: req.db).filter(\.$seq > last).sort(\.$seq).limit(asked)
            if let resourceID { query = query.filter(\.$resourceID == resourceID) }
            let read = { [query] in try await query.listed(as: EventResponse.self, through: readers) }
            // Everything committed before this request is numbered before its first batch is read (PostgreSQL), so
            // a client sees its own writes.
            let batch = scanned > 0 ? try await read()
                : try await LedgerSequencer.settledPage(query, as: EventResponse.self, descending: false, app: req.application, read: read)
            for (index, event) in batch.enumerated() {
                scanned += 1
                last = event.seq
                if Webhook.matches(filters: filters, type: event.type),
                   EventVisibility.may(userID, grants: caller.grants, resourceType: event.resourceType,
                                       owner: EventVisibility.owner(resourceType: event.resourceType, resourceID: event.resourceId, data: event.data.text)) {
                    items.append(event)
                    if items.count == page.limit {
                        if index < batch.count - 1 { more = true }
                        break scan
                    }
                }
            }
            if batch.count < asked { more = false; break }
        }
        // The cursor is the last seq read (seen or not), so the next page goes on from there; there is a next page
        // only while rows the same query would read remain after it. A page is never handed the cursor it came with
        // unless it read nothing, and then it has none.
        if more == nil {
            var rest = Event.query(on: req.db).filter(\.$seq > last).limit(1)
            if let resourceID { rest = rest.filter(\.$resourceID == resourceID) }
            more = try await !rest.listed(through: readers).isEmpty
        }
        return ListResponse(items: items, nextCursor: more == true ? PageRequest.encode(.init(seq: last)) : nil)
    }
}
