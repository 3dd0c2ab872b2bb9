import Foundation

/// Why a cron expression was refused: the 1-based character position of the problem, and what is wrong there.
struct CronError: Error, Equatable, CustomStringConvertible, Sendable {
    let position: Int
    let message: String

    var description: String { "at position \(position): \(message)" }
}

/// A cron expression: five fields (minute hour day-of-month month day-of-week), or six with seconds first, or a
/// macro (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`).
///
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`, and comma lists. Months may be named
/// (`JAN`-`DEC`) and weekdays too (`SUN`-`SAT`; 0 and 7 are both Sunday). As in Vixie cron, when both the day of
/// the month and the day of the week are restricted, a day matching either one fires.
///
/// Occurrences are computed on the wall clock of an IANA time zone. When clocks go forward, a time inside the
/// skipped hour fires once, at the instant the clocks jump (so `30 2 * * *` still runs that day, and `*/15` does
/// not run twice at 03:00). When clocks go back, a time inside the repeated hour fires once, the first time.
struct CronExpression: Sendable, Equatable {
    let seconds: Set<Int>
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    /// 0 = Sunday … 6 = Saturday.
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    /// The text as given, trimmed.
    let source: String

    static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    private static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    private static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    init(_ text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw CronError(position: 1, message: "the expression is empty") }
        guard trimmed.utf8.count <= 200 else { throw CronError(position: 201, message: "the expression is longer than 200 characters") }
        if trimmed.hasPrefix("@") {
            guard let expanded = Self.macros[trimmed.lowercased()] else {
                throw CronError(position: 1, message: "unknown macro '\(trimmed)'; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly")
            }
            self = try CronExpression(fields: Self.split(expanded), source: trimmed)
            return
        }
        self = try CronExpression(fields: Self.split(trimmed), source: trimmed)
    }

    /// Each field with the 1-based position where it starts.
    private static func split(_ text: String) -> [(text: Substring, position: Int)] {
        var fields: [(Substring, Int)] = []
        var start: String.Index?
        var position = 0
        var startPosition = 0
        for index in text.indices {
            position += 1
            if text[index] == " " || text[index] == "\t" {
                if let begun = start { fields.append((text[begun..<index], startPosition)); start = nil }
            } else if start == nil {
                start = index
                startPosition = position
            }
        }
        if let begun = start { fields.append((text[begun...], startPosition)) }
        return fields
    }

    private init(fields given: [(text: Substring, position: Int)], source: String) throws {
        guard given.count == 5 || given.count == 6 else {
            let position = given.count > 6 ? given[6].position : source.count + 1
            throw CronError(position: position, message: "expected 5 fields (minute hour day month weekday) or 6 with seconds first, found \(given.count)")
        }
        var fields = given
        let secondsField = fields.count == 6 ? fields.removeFirst() : nil
        seconds = try secondsField.map { try Self.parse($0.text, at: $0.position, range: 0...59, name: "second") } ?? [0]
        minutes = try Self.parse(fields[0].text, at: fields[0].position, range: 0...59, name: "minute")
        hours = try Self.parse(fields[1].text, at: fields[1].position, range: 0...23, name: "hour")
        daysOfMonth = try Self.parse(fields[2].text, at: fields[2].position, range: 1...31, name: "day of month")
        months = try Self.parse(fields[3].text, at: fields[3].position, range: 1...12, name: "month", names: Self.monthNames, firstName: 1)
        let weekdays = try Self.parse(fields[4].text, at: fields[4].position, range: 0...7, name: "day of week", names: Self.dayNames, firstName: 0)
        daysOfWeek = Set(weekdays.map { $0 % 7 })
        dayOfMonthRestricted = !fields[2].text.hasPrefix("*")
        dayOfWeekRestricted = !fields[4].text.hasPrefix("*")
        self.source = source
    }

    /// One field: a comma list of `*`, `n`, `a-b`, each optionally `/step`.
    private static func parse(_ field: Substring, at position: Int, range: ClosedRange<Int>, name: String,
                              names: [String] = [], firstName: Int = 0) throws -> Set<Int> {
        var values = Set<Int>()
        var offset = position
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            defer { offset += part.count + 1 }
            guard !part.isEmpty else { throw CronError(position: offset, message: "empty item in the \(name) list") }
            let pieces = part.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let base = pieces[0]
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0, parsed <= range.upperBound else {
                    throw CronError(position: offset + base.count + 1, message: "the \(name) step must be a number from 1 to \(range.upperBound)")
                }
                step = parsed
            }
            let lower: Int, upper: Int
            if base == "*" {
                (lower, upper) = (range.lowerBound, range.upperBound)
            } else {
                let bounds = base.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                lower = try value(bounds[0], at: offset, range: range, name: name, names: names, firstName: firstName)
                if bounds.count == 2 {
                    upper = try value(bounds[1], at: offset + bounds[0].count + 1, range: range, name: name, names: names, firstName: firstName)
                    guard lower <= upper else {
                        throw CronError(position: offset, message: "the \(name) range \(base) runs backwards")
                    }
                } else {
                    // `5/15` means from 5 to the end in steps of 15.
                    upper = pieces.count == 2 ? range.upperBound : lower
                }
            }
            values.formUnion(stride(from: lower, through: upper, by: step))
        }
        return values
    }

    private static func value(_ text: Substring, at position: Int, range: ClosedRange<Int>, name: String,
                              names: [String], firstName: Int) throws -> Int {
        if let number = Int(text), text.allSatisfy(\.isNumber) {
            guard range.contains(number) else {
                throw CronError(position: position, message: "\(number) is outside the \(name) range \(range.lowerBound)-\(range.upperBound)")
            }
            return number
        }
        if let index = names.firstIndex(of: text.uppercased()) { return index + firstName }
        let expected = names.isEmpty ? "a number" : "a number or a name (\(names.first!)-\(names.last!))"
        throw CronError(position: position, message: "'\(text)' is not \(expected) for the \(name)")
    }

    // MARK: Occurrences

    /// The first occurrence strictly after `date`, on the wall clock of `timeZone`; nil if none within 8 years
    /// (an expression such as `0 0 30 2 *` never fires).
    func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        // Search wall-clock times from the day of `date`; each candidate's instant must come after `date`.
        let local = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        guard var year = local.year, var month = local.month, var day = local.day else { return nil }
        var firstDay = true
        let startOfSearch = (local.hour ?? 0) * 3600 + (local.minute ?? 0) * 60 + (local.second ?? 0)
        let sortedHours = hours.sorted(), sortedMinutes = minutes.sorted(), sortedSeconds = seconds.sorted()
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!

        for _ in 0..<(366 * 8) {
            if months.contains(month), let weekday = Self.weekday(year: year, month: month, day: day, utc: utc),
               day <= Self.daysIn(month: month, year: year), matchesDay(day: day, weekday: weekday) {
                for hour in sortedHours {
                    // On the first day, wall times well before the start cannot come after it; two hours of slack
                    // cover any clock change, whose repeated wall times are searched from their first pass.
                    if firstDay, (hour + 1) * 3600 < startOfSearch - 7200 { continue }
                    for minute in sortedMinutes {
                        if firstDay, hour * 3600 + (minute + 1) * 60 < startOfSearch - 7200 { continue }
                        for second in sortedSeconds {
                            guard let instant = Self.instant(year: year, month: month, day: day, hour: hour, minute: minute,
                                                             second: second, timeZone: timeZone, utc: utc)
                            else { continue }
                            if instant > date { return instant }
                        }
                    }
                }
            }
            firstDay = false
            day += 1
            if day > Self.daysIn(month: month, year: year) {
                day = 1
                month += 1
                if month > 12 { month = 1; year += 1 }
            }
        }
        return nil
    }

    /// The next `count` occurrences after `date`.
    func occurrences(after date: Date, in timeZone: TimeZone, count: Int) -> [Date] {
        var found: [Date] = []
        var cursor = date
        while found.count < count, let next = next(after: cursor, in: timeZone) {
            found.append(next)
            cursor = next
        }
        return found
    }

    private func matchesDay(day: Int, weekday: Int) -> Bool {
        switch (dayOfMonthRestricted, dayOfWeekRestricted) {
        case (true, true): daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        case (true, false): daysOfMonth.contains(day)
        case (false, true): daysOfWeek.contains(weekday)
        case (false, false): true
        }
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private static func weekday(year: Int, month: Int, day: Int, utc: Calendar) -> Int? {
        guard let date = utc.date(from: DateComponents(year: year, month: month, day: day, hour: 12)) else { return nil }
        return utc.component(.weekday, from: date) - 1
    }

    /// The instant a wall-clock time names in `timeZone`. A time the clocks skip maps to the instant they jump;
    /// a time they repeat maps to its first pass.
    static func instant(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, timeZone: TimeZone, utc: Calendar) -> Date? {
        guard let naive = utc.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second))
        else { return nil }
        // The offsets in force around that wall time; each gives a candidate instant, valid if the zone agrees.
        let offsets = Set([-86_400.0, 0, 86_400].map { timeZone.secondsFromGMT(for: naive.addingTimeInterval($0)) })
        let valid = offsets.map { naive.addingTimeInterval(-TimeInterval($0)) }
            .filter { timeZone.secondsFromGMT(for: $0) == Int(naive.timeIntervalSince($0)) }
        if let first = valid.min() { return first }
        // In the gap: read with the larger offset, the wall time falls just before the jump; fire at the jump.
        let larger = offsets.max() ?? 0
        return timeZone.nextDaylightSavingTimeTransition(after: naive.addingTimeInterval(-TimeInterval(larger)))
    }
}
