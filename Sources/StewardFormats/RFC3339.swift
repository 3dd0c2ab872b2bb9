import Foundation

/// RFC 3339 timestamps in UTC to the second (`2026-11-22T13:57:12Z`), the form the API writes: what
/// `Date.ISO8601FormatStyle()` and `ISO8601DateFormatter()` write, without their calendar machinery, which showed
/// in profiles of every execution transition (event data carries the execution's times) and every API response.
package enum RFC3339 {
    /// The times a client may send: RFC 3339's years, 0001 to 9999. `ISO8601DateFormatter` reads more (a year of six
    /// digits, a negative one), and such a time bound to a PostgreSQL statement does not fit its microsecond count:
    /// PostgresNIO traps on it and the process ends. Every time read from a request is held to this range.
    /// Read by the same parser as a client's times: before 1582 it counts in the Julian calendar.
    package static let earliestAccepted = ISO8601DateFormatter().date(from: "0001-01-01T00:00:00Z")!
    package static let latestAccepted = ISO8601DateFormatter().date(from: "9999-12-31T23:59:59Z")!

    package static func accepts(_ date: Date) -> Bool {
        date >= earliestAccepted && date <= latestAccepted
    }

    /// A timestamp a client sent, in the range above; nil for anything else.
    package static func date(from text: String) -> Date? {
        guard let date = ISO8601DateFormatter().date(from: text), accepts(date) else { return nil }
        return date
    }

    package static func string(from date: Date) -> String {
        guard let fields = fields(of: date) else { return date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: false)) }
        return String(unsafeUninitializedCapacity: 20) { out in
            fill(out, fields)
            return 20
        }
    }

    /// Appends `string(from:)`'s bytes to `bytes`, without making the string in the common case.
    package static func append(_ date: Date, to bytes: inout [UInt8]) {
        guard let fields = fields(of: date) else { return bytes.append(contentsOf: string(from: date).utf8) }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { out in
            fill(out, fields)
            bytes.append(contentsOf: out)
        }
    }

    private typealias Fields = (year: Int64, month: Int64, day: Int64, secondOfDay: Int64)

    /// The civil date and second of the day in UTC; nil for what is left to Foundation.
    private static func fields(of date: Date) -> Fields? {
        // Years 1583-9999 only (below); anything far outside, including what would not fit an Int64, goes to Foundation.
        guard abs(date.timeIntervalSince1970) < 1e12 else { return nil }
        let seconds = Int64((date.timeIntervalSince1970).rounded(.down))
        // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // Foundation switches to the Julian calendar before the Gregorian reform of 1582; leave those years to it.
        guard (1583...9999).contains(year) else { return nil }
        return (year, month, day, secondOfDay)
    }

    /// The 20 characters of `fields`, into `out`.
    private static func fill(_ out: UnsafeMutableBufferPointer<UInt8>, _ fields: Fields) {
        func put(_ value: Int64, _ width: Int, at offset: Int) {
            var value = value
            for position in stride(from: offset + width - 1, through: offset, by: -1) {
                out[position] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        put(fields.year, 4, at: 0)
        out[4] = UInt8(ascii: "-")
        put(fields.month, 2, at: 5)
        out[7] = UInt8(ascii: "-")
        put(fields.day, 2, at: 8)
        out[10] = UInt8(ascii: "T")
        put(fields.secondOfDay / 3600, 2, at: 11)
        out[13] = UInt8(ascii: ":")
        put(fields.secondOfDay / 60 % 60, 2, at: 14)
        out[16] = UInt8(ascii: ":")
        put(fields.secondOfDay % 60, 2, at: 17)
        out[19] = UInt8(ascii: "Z")
    }
}
