import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

/// The `paths:` section of the document as a set of "METHOD /path" lines, read from its fixed layout.
func documentedOperations(in yaml: String) -> Set<String> {
    var operations: Set<String> = []
    var currentPath: String?
    var inPaths = false
    let methods: Set<String> = ["get", "post", "put", "patch", "delete", "head", "options"]
    for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
        if line == "paths:" { inPaths = true; continue }
        guard inPaths else { continue }
        if let first = line.first, first != " " { break }
        if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
            currentPath = String(line.dropFirst(2).dropLast())
        } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"),
                  let path = currentPath {
            let method = line.trimmingCharacters(in: .whitespaces).dropLast()
            if methods.contains(String(method)) { operations.insert("\(method.uppercased()) \(path)") }
        }
    }
    return operations
}

@Suite("OpenAPIController")
struct OpenAPIControllerTests {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test("GET /openapi.yaml serves the OpenAPI 3.1 document")
    func served() async throws {
        try await withTestApp { app in
            try await app.testing().test(.GET, "/openapi.yaml") { res throws in
                #expect(res.status == .ok)
                #expect(res.headers.contentType?.subType == "yaml")
                #expect(res.body.string.hasPrefix("openapi: 3.1.0"))
            }
        }
    }

    @Test("The document compiled into the binary is exactly openapi.yaml at the repository's root, and so is the one served")
    func embeddedCopyIsCurrent() async throws {
        let file = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("openapi.yaml"), encoding: .utf8)
        #expect(EmbeddedResources.openAPIDocument == file, "Sources/App/Resources/openapi.yaml must link to the root's openapi.yaml")
        try await withTestApp { app in
            try await app.testing().test(.GET, "/openapi.yaml") { res throws in
                #expect(res.body.string == file)
            }
        }
    }

    @Test("Every registered route is documented, and every documented route exists")
    func routesMatchDocument() async throws {
        try await withTestApp { app in
            let registered = Set(app.routes.all.map { route in
                let path = route.path.map { component -> String in
                    switch component {
                    case .parameter(let name): "{\(name)}"
                    default: component.description
                    }
                }.joined(separator: "/")
                return "\(route.method.rawValue) /\(path)"
            })
            let documented = documentedOperations(in: EmbeddedResources.openAPIDocument)
            #expect(!documented.isEmpty)
            // The console's page and assets are not API: a browser's addresses, with a catch-all (ConsoleTests).
            let undocumented = registered.subtracting(documented).filter { !$0.hasPrefix("GET /console") }.sorted()
            let phantom = documented.subtracting(registered).sorted()
            #expect(undocumented.isEmpty, "routes missing from openapi.yaml: \(undocumented)")
            #expect(phantom.isEmpty, "openapi.yaml lists routes that do not exist: \(phantom)")
        }
    }
}
