import Crypto
import Foundation
import NIOCore
import Vapor

/// The console's files, compiled into the binary (`Resources/console/`), each with its media type. `version` is a
/// digest of them all: assets are served under `/console/assets/<version>/`, so a new build gets new addresses and
/// browsers may keep an asset for a year. Modules import each other by relative path and stay in one version.
struct ConsoleAssets: Sendable {
    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: HTTPMediaType
    }

    static let javascript = HTTPMediaType(type: "text", subType: "javascript", parameters: ["charset": "utf-8"])

    static let shared = ConsoleAssets(files: [
        ("console.css", PackageResources.console_css, HTTPMediaType(type: "text", subType: "css", parameters: ["charset": "utf-8"])),
        ("icon.svg", PackageResources.icon_svg, HTTPMediaType(type: "image", subType: "svg+xml")),
        ("app.js", PackageResources.app_js, Self.javascript),
        ("api.js", PackageResources.api_js, Self.javascript),
        ("ui.js", PackageResources.ui_js, Self.javascript),
        ("schema-form.js", PackageResources.schema_form_js, Self.javascript),
        ("charts.js", PackageResources.charts_js, Self.javascript),
        ("auth.js", PackageResources.auth_js, Self.javascript),
        ("dashboard.js", PackageResources.dashboard_js, Self.javascript),
        ("skills.js", PackageResources.skills_js, Self.javascript),
        ("executions.js", PackageResources.executions_js, Self.javascript),
        ("workflows.js", PackageResources.workflows_js, Self.javascript),
        ("schedules.js", PackageResources.schedules_js, Self.javascript),
        ("webhooks.js", PackageResources.webhooks_js, Self.javascript),
        ("admin.js", PackageResources.admin_js, Self.javascript),
    ], page: PackageResources.index_html)

    let files: [String: Asset]
    let version: String
    /// `index.html` with the version in its asset addresses: the one page every console address answers with.
    let page: String

    init(files list: [(name: String, bytes: [UInt8], type: HTTPMediaType)], page template: [UInt8]) {
        var digest = SHA256()
        var files: [String: Asset] = [:]
        for file in list {
            digest.update(data: Array(file.name.utf8) + [0] + file.bytes)
            files[file.name] = Asset(body: ByteBuffer(bytes: file.bytes), contentType: file.type)
        }
        digest.update(data: template)
        let version = String(digest.finalize().map { String(format: "%02x", $0) }.joined().prefix(12))
        self.files = files
        self.version = version
        self.page = String(decoding: template, as: UTF8.self).replacingOccurrences(of: "{{version}}", with: version)
    }

    /// Where the page's scripts may come from and go to: this origin only, no inline code, nothing framed.
    static let contentSecurityPolicy = [
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
        "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
    ].joined(separator: "; ")
}
