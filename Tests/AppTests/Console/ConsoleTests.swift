import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

@Suite("Console")
struct ConsoleTests {
    /// The asset addresses the page names.
    private static func assetPaths(in page: String) -> [String] {
        let pattern = try! NSRegularExpression(pattern: #"/console/assets/[0-9a-f]{12}/[a-z-]+\.(?:js|css|svg)"#)
        return pattern.matches(in: page, range: NSRange(page.startIndex..., in: page)).map { String(page[Range($0.range, in: page)!]) }
    }

    @Test("GET /console and any address below it: the same page, never cached, under a CSP with no inline code")
    func page() async throws {
        try await withTestApp { app in
            for path in ["/console", "/console/", "/console/executions/0190f1a2-0000-7000-8000-000000000000", "/console/no/such/page"] {
                let response = try await app.testing().sendRequest(.GET, path)
                #expect(response.status == .ok, "\(path)")
                #expect(response.headers.contentType == .html)
                #expect(response.headers.first(name: .cacheControl) == "no-store")
                let policy = try #require(response.headers.first(name: "Content-Security-Policy"))
                #expect(policy.contains("script-src 'self'") && policy.contains("style-src 'self'") && policy.contains("frame-ancestors 'none'"))
                #expect(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval") && !policy.contains("http"), "\(policy)")
                #expect(response.body.string.contains("<script type=\"module\" src=\"/console/assets/\(ConsoleAssets.shared.version)/app.js\">"))
                #expect(!response.body.string.contains("{{version}}"))
            }
            // The API keeps its own policy, which allows nothing.
            let api = try await app.testing().sendRequest(.GET, "/health/live")
            #expect(api.headers.first(name: "Content-Security-Policy") == "default-src 'none'; frame-ancestors 'none'")
        }
    }

    @Test("Every asset the page names, and every module a module imports, is served from the binary, cached for a year")
    func assets() async throws {
        try await withTestApp { app in
            let page = try await app.testing().sendRequest(.GET, "/console").body.string
            var pending = Self.assetPaths(in: page)
            #expect(pending.count >= 4, "icon, stylesheet, preloads and the app: \(pending)")
            var seen: Set<String> = []
            let importPattern = try NSRegularExpression(pattern: #"from '\./([a-z-]+\.js)'"#)
            while let path = pending.popLast() {
                guard seen.insert(path).inserted else { continue }
                let response = try await app.testing().sendRequest(.GET, path)
                #expect(response.status == .ok, "\(path): \(response.status)")
                #expect(response.headers.first(name: .cacheControl) == "public, max-age=31536000, immutable")
                #expect(response.headers.first(name: "X-Content-Type-Options") == "nosniff")
                let type = response.headers.contentType?.description ?? ""
                if path.hasSuffix(".js") {
                    #expect(type.hasPrefix("text/javascript"), "\(path): \(type)")
                    let text = response.body.string
                    for match in importPattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                        let name = String(text[Range(match.range(at: 1), in: text)!])
                        pending.append(path.replacingOccurrences(of: #"[^/]+$"#, with: name, options: .regularExpression))
                    }
                    // No inline handlers or HTML strings: the console builds elements, it never parses markup.
                    #expect(!text.contains("innerHTML") && !text.contains("insertAdjacentHTML") && !text.contains("eval("), "\(path)")
                } else if path.hasSuffix(".css") {
                    #expect(type.hasPrefix("text/css"))
                } else {
                    #expect(type == "image/svg+xml")
                }
            }
            #expect(seen.count == ConsoleAssets.shared.files.count, "every embedded file is reachable from the page, and only those: \(seen.sorted())")
        }
    }

    @Test("An asset of another version, or an unknown file, is a 404 problem")
    func unknownAssets() async throws {
        try await withTestApp { app in
            for path in ["/console/assets/000000000000/app.js", "/console/assets/\(ConsoleAssets.shared.version)/nope.js",
                         "/console/assets/\(ConsoleAssets.shared.version)/..%2Fopenapi.yaml"] {
                let response = try await app.testing().sendRequest(.GET, path)
                #expect(response.status == .notFound, "\(path)")
                #expect(response.headers.first(name: "Content-Type")?.hasPrefix("application/problem+json") == true)
            }
        }
    }

    @Test("Over a real socket, the page and assets are gzip-compressed for a browser that accepts it")
    func compressed() async throws {
        try await withTestApp { app in
            let path = "/console/assets/\(ConsoleAssets.shared.version)/app.js"
            let plain = try await app.live().sendRequest(.GET, path)
            #expect(plain.headers.first(name: .contentEncoding) == nil)
            let gzipped = try await app.live().sendRequest(.GET, path, headers: ["Accept-Encoding": "gzip"])
            #expect(gzipped.status == .ok)
            #expect(gzipped.headers.first(name: .contentEncoding) == "gzip")
            #expect(gzipped.body.readableBytes < plain.body.readableBytes)
        }
    }
}
