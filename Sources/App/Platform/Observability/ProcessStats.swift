import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The process's own resource use, read from `/proc/self` (Linux); nil where that is not available.
struct ProcessStats: Sendable {
    var residentBytes: Double
    var virtualBytes: Double
    var cpuSeconds: Double
    var openFileDescriptors: Double?
    var startTime: Double?

    static func read() -> ProcessStats? {
        #if os(Linux)
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name, which may itself hold spaces and parentheses; field 3 (state) comes first.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 22,
              let userTicks = Double(fields[11]), let systemTicks = Double(fields[12]),
              let startTicks = Double(fields[19]), let virtualBytes = Double(fields[20]), let residentPages = Double(fields[21])
        else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { Double($0.count) }
        var bootTime: Double?
        if let procStat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
           let line = procStat.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }) {
            bootTime = Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return ProcessStats(
            residentBytes: residentPages * pageSize, virtualBytes: virtualBytes,
            cpuSeconds: (userTicks + systemTicks) / ticks, openFileDescriptors: descriptors,
            startTime: bootTime.map { $0 + startTicks / ticks })
        #else
        return nil
        #endif
    }
}
