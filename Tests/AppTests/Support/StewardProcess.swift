import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The steward executable built beside the tests (`swift build --build-tests`).
func stewardBinary() throws -> String {
    let candidates = [Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("steward").path,
                      URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../.build/debug/steward").standardized.path]
    return try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) }, "no steward binary next to the tests")
}

/// A loopback port nothing listens on now: the kernel picks it for a socket that is closed again at once. Another
/// socket of this busy process can take it before the server binds it, which `serveSteward` detects and retries.
func freeLoopbackPort() throws -> Int {
    let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
    defer { try? channel.close().wait() }
    return try #require(channel.localAddress?.port)
}

/// Whether process `pid` holds the listening TCP socket on `port`: the socket inodes listening on the port, from
/// `/proc/net/tcp` and `tcp6`, against the sockets among the process's descriptors. A health check alone cannot
/// tell: when the port was taken between `freeLoopbackPort` and the bind, another test's server may answer it.
func processListens(pid: Int32, port: Int) -> Bool {
    let portHex = String(format: "%04X", port)
    var inodes: Set<String> = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // local_address is "ADDR:PORT" in hex; state 0A is LISTEN; the inode is the tenth field.
            guard fields.count > 9, fields[1].hasSuffix(":" + portHex), fields[3] == "0A" else { continue }
            inodes.insert("socket:[\(fields[9])]")
        }
    }
    guard !inodes.isEmpty,
          let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return false }
    return descriptors.contains { descriptor in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)")).map(inodes.contains) ?? false
    }
}

/// `steward serve` on a free port in `directory`, once it answers `readyPath` and holds the port itself. `shell`,
/// when given, runs first (`sh -c "<shell> && exec steward serve"`, the same process). When the port was lost to
/// another socket before the server bound it, the server exits and a new port is tried. The caller terminates it.
func serveSteward(directory: TemporaryDirectory, shell: String? = nil, environment: [String: String] = [:],
                  readyPath: String = "/health/live", output: Any = FileHandle.nullDevice) async throws -> (Process, Int) {
    let binary = try stewardBinary()
    for _ in 0..<3 {
        let port = try freeLoopbackPort()
        let process = Process()
        if let shell {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "\(shell) && exec \"$0\" serve", binary]
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["serve"]
        }
        process.environment = [
            "STEWARD_DATA_DIR": directory.path, "STEWARD_PORT": String(port), "STEWARD_LOG_LEVEL": "warning",
            "STEWARD_ADMIN_PASSWORD": "Bootstrap-Admin-Pass-1", "PATH": "/usr/bin:/bin",
        ].merging(environment) { $1 }
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let pid = process.processIdentifier
        do {
            try await eventually(30, "the server to answer \(readyPath) on its own port") {
                guard process.isRunning else { return true }
                return (try? await HTTPClient.shared.get(url: "http://127.0.0.1:\(port)\(readyPath)").get().status) == .ok
                    && processListens(pid: pid, port: port)
            }
        } catch {
            process.terminate()
            throw error
        }
        if process.isRunning { return (process, port) }
        process.waitUntilExit()
    }
    Issue.record("three steward processes in a row could not bind their port")
    throw CancellationError()
}
