import Foundation
import Testing
@testable import App

/// Expected fire times were computed by an independent reference (a walk over absolute time, minute by minute,
/// applying the same documented rules), not by this implementation.
@Suite("Cron expressions")
struct CronExpressionTests {
    static let table: [(cron: String, zone: String, after: String, next: [String])] = [
        ("*/15 * * * *", "UTC", "2026-01-15T10:17:30Z", ["2026-01-15T10:30:00Z", "2026-01-15T10:45:00Z", "2026-01-15T11:00:00Z", "2026-01-15T11:15:00Z", "2026-01-15T11:30:00Z"]),
        ("0 9 * * MON-FRI", "UTC", "2026-01-15T10:17:30Z", ["2026-01-16T09:00:00Z", "2026-01-19T09:00:00Z", "2026-01-20T09:00:00Z", "2026-01-21T09:00:00Z", "2026-01-22T09:00:00Z"]),
        ("30 2 1,15 * *", "UTC", "2026-01-15T10:17:30Z", ["2026-02-01T02:30:00Z", "2026-02-15T02:30:00Z", "2026-03-01T02:30:00Z", "2026-03-15T02:30:00Z", "2026-04-01T02:30:00Z"]),
        ("0 0 29 2 *", "UTC", "2026-01-15T10:17:30Z", ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
        ("0 12 1 * 1", "UTC", "2026-01-15T10:17:30Z", ["2026-01-19T12:00:00Z", "2026-01-26T12:00:00Z", "2026-02-01T12:00:00Z", "2026-02-02T12:00:00Z", "2026-02-09T12:00:00Z"]),
        ("@hourly", "UTC", "2026-01-15T10:17:30Z", ["2026-01-15T11:00:00Z", "2026-01-15T12:00:00Z", "2026-01-15T13:00:00Z", "2026-01-15T14:00:00Z", "2026-01-15T15:00:00Z"]),
        ("@weekly", "UTC", "2026-01-15T10:17:30Z", ["2026-01-18T00:00:00Z", "2026-01-25T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z", "2026-02-15T00:00:00Z"]),
        ("*/20 * * * * *", "UTC", "2026-01-15T10:17:30Z", ["2026-01-15T10:17:40Z", "2026-01-15T10:18:00Z", "2026-01-15T10:18:20Z", "2026-01-15T10:18:40Z", "2026-01-15T10:19:00Z"]),
        ("5-20/5 8-10 * JAN,jul sun", "UTC", "2026-01-15T10:17:30Z", ["2026-01-18T08:05:00Z", "2026-01-18T08:10:00Z", "2026-01-18T08:15:00Z", "2026-01-18T08:20:00Z", "2026-01-18T09:05:00Z"]),
        ("0 0 * * 7", "UTC", "2026-01-15T10:17:30Z", ["2026-01-18T00:00:00Z", "2026-01-25T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z", "2026-02-15T00:00:00Z"]),
        ("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z", "2026-04-01T00:30:00Z"]),
        ("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:15:00Z", ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z", "2026-03-29T02:30:00Z"]),
        ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "2026-10-28T01:30:00Z", "2026-10-29T01:30:00Z"]),
        ("*/20 2 * * *", "Europe/Berlin", "2026-10-24T23:50:00Z", ["2026-10-25T00:00:00Z", "2026-10-25T00:20:00Z", "2026-10-25T00:40:00Z", "2026-10-26T01:00:00Z", "2026-10-26T01:20:00Z"]),
        ("0 0 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", ["2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z", "2026-03-31T22:00:00Z"]),
        ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z", "2026-03-11T06:30:00Z", "2026-03-12T06:30:00Z"]),
        ("15 * * * *", "America/New_York", "2026-03-08T05:30:00Z", ["2026-03-08T06:15:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z", "2026-03-08T08:15:00Z", "2026-03-08T09:15:00Z"]),
        ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z", "2026-11-04T06:30:00Z", "2026-11-05T06:30:00Z"]),
        ("*/30 1 * * *", "America/New_York", "2026-11-01T04:45:00Z", ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:00:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:00:00Z"]),
        ("0 9 * * 1-5", "America/New_York", "2026-10-30T12:00:00Z", ["2026-10-30T13:00:00Z", "2026-11-02T14:00:00Z", "2026-11-03T14:00:00Z", "2026-11-04T14:00:00Z", "2026-11-05T14:00:00Z"]),
        ("0 0 30 2 *", "UTC", "2026-01-15T10:17:30Z", []),
    ]

    private static func date(_ text: String) -> Date {
        ISO8601DateFormatter().date(from: text)!
    }

    @Test("Known expressions give their next fire times, across DST in Europe/Berlin and America/New_York", arguments: table)
    func nextFireTimes(_ row: (cron: String, zone: String, after: String, next: [String])) throws {
        let expression = try CronExpression(row.cron)
        let zone = try #require(TimeZone(identifier: row.zone))
        let found = expression.occurrences(after: Self.date(row.after), in: zone, count: row.next.isEmpty ? 1 : row.next.count)
        let formatter = ISO8601DateFormatter()
        #expect(found.map { formatter.string(from: $0) } == row.next, "\(row.cron) in \(row.zone)")
    }

    @Test("Invalid expressions are refused with the position of the error", arguments: [
        ("61 * * * *", 1, "61 is outside the minute range 0-59"),
        ("0 24 * * *", 3, "24 is outside the hour range 0-23"),
        ("* * * *", 8, "expected 5 fields"),
        ("* * * * * * *", 13, "expected 5 fields"),
        ("*/0 * * * *", 3, "step must be a number"),
        ("* * * FOO *", 7, "'FOO' is not a number or a name (JAN-DEC) for the month"),
        ("5-1 * * * *", 1, "runs backwards"),
        ("1,,2 * * * *", 3, "empty item"),
        ("@every 5m", 1, "unknown macro"),
        ("", 1, "empty"),
        ("0 0 32 * *", 5, "outside the day of month range"),
        ("0 0 * * 8", 9, "outside the day of week range"),
    ])
    func refusals(_ text: String, _ position: Int, _ message: String) {
        do {
            _ = try CronExpression(text)
            Issue.record("'\(text)' was accepted")
        } catch let error as CronError {
            #expect(error.position == position, "\(text): \(error)")
            #expect(error.message.contains(message), "\(text): \(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("Day of month and day of week together fire on either, as in Vixie cron")
    func domOrDow() throws {
        let expression = try CronExpression("0 0 13 * FRI")
        let utc = TimeZone(identifier: "UTC")!
        let formatter = ISO8601DateFormatter()
        let found = expression.occurrences(after: Self.date("2026-02-01T00:00:00Z"), in: utc, count: 4).map { formatter.string(from: $0) }
        // Fridays 6 and 13 February (also the 13th), 20 and 27 February.
        #expect(found == ["2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z", "2026-02-27T00:00:00Z"])
    }
}
