import Fluent
import Foundation
import Testing
import Vapor
import VaporTesting
@testable import App

/// One documented operation with its declared access rule.
struct DocumentedOperation: CustomStringConvertible {
    var method: HTTPMethod
    var path: String
    var requirement: String?
    var apiKeysRefused: Bool

    var description: String { "\(method.rawValue) \(path)" }

    /// The path with every `{param}` filled with a fresh UUID.
    var concretePath: String {
        path.replacingOccurrences(of: #"\{[^}]+\}"#, with: UUID().uuidString, options: .regularExpression)
    }
}

/// Reads operations and their `x-required-permission` / `x-api-keys` from the document's fixed layout.
func documentedAccessRules(in yaml: String) -> [DocumentedOperation] {
    var operations: [DocumentedOperation] = []
    var path: String?
    var inPaths = false
    let methods: Set<String> = ["get", "post", "put", "patch", "delete"]
    for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
        if line == "paths:" { inPaths = true; continue }
        guard inPaths else { continue }
        if let first = line.first, first != " " { break }
        if line.hasPrefix("  /"), line.hasSuffix(":") {
            path = String(line.dropFirst(2).dropLast())
        } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"),
                  methods.contains(String(line.trimmingCharacters(in: .whitespaces).dropLast())), let path {
            operations.append(DocumentedOperation(method: HTTPMethod(rawValue: line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()),
                                                  path: path, requirement: nil, apiKeysRefused: false))
        } else if line.hasPrefix("      x-required-permission: "), !operations.isEmpty {
            operations[operations.count - 1].requirement = String(line.dropFirst("      x-required-permission: ".count))
        } else if line == "      x-api-keys: refused", !operations.isEmpty {
            operations[operations.count - 1].apiKeysRefused = true
        }
    }
    return operations
}

@Suite("Route authorization")
struct RouteAuthorizationTests {
    @Test("Every /api/v1 operation declares who may call it")
    func everyOperationDeclaresAccess() {
        let undeclared = documentedAccessRules(in: EmbeddedResources.openAPIDocument)
            .filter { $0.path.hasPrefix("/api/") && $0.requirement == nil }
        #expect(undeclared.isEmpty, "add x-required-permission to: \(undeclared)")
    }

    @Test("Walking every documented route: anonymous gets 401; a viewer's token and a viewer-scoped key never pass a guard they lack")
    func viewerWalk() async throws {
        try await withTestApp { app in
            app.useTestDoubles()
            try await makeUser(app, email: "viewer@example.com")
            let viewerPermissions = RoleCatalog.permissions(of: RoleCatalog.viewer)
            let key = try await APIKeyService(app: app).create(
                name: "viewer key", scopes: viewerPermissions.map(\.rawValue),
                expiresAt: nil, ownerID: try await UserAdminService(app: app).find(email: "viewer@example.com").requireID(),
                ownerGrants: Grants(roles: ["viewer"], permissions: viewerPermissions), actor: nil, origin: .system).key

            let operations = documentedAccessRules(in: EmbeddedResources.openAPIDocument).filter { $0.path.hasPrefix("/api/") }
            #expect(operations.count >= 25)
            for operation in operations {
                let requirement = try #require(operation.requirement, "\(operation) declares no access rule")
                if requirement == "callback-token" {
                    // Only the execution's own callback token opens it: users and keys are refused alike.
                    for headers in [HTTPHeaders(), bearer(try await login(app, email: "viewer@example.com").accessToken), ["X-API-Key": key]] {
                        let res = try await app.testing().sendRequest(operation.method, operation.concretePath,
                                                                      headers: headers.merging(["Content-Type": "application/json"]), body: .init(string: #"{"progress": 5}"#))
                        #expect(res.status == .unauthorized, "\(operation) gave \(res.status)")
                    }
                    continue
                }
                let needed = Permission(rawValue: requirement)
                let viewerLacks = needed.map { !viewerPermissions.contains($0) } ?? false
                // An event stream that passes its guard never ends; a bad `after` makes it answer 422 right after the guard.
                let path = operation.concretePath + (operation.concretePath == "/api/v1/events/stream" ? "?after=-1" : "")

                if requirement != "public" {
                    let anonymous = try await app.testing().sendRequest(operation.method, path, headers: ["Content-Type": "application/json"], body: .init(string: "{}"))
                    #expect(anonymous.status == .unauthorized, "anonymous \(operation) gave \(anonymous.status)")
                }

                // A fresh session each time: some routes (logout, session revocation) end the caller's session.
                let token = try await login(app, email: "viewer@example.com").accessToken
                let viewer = try await app.testing().sendRequest(operation.method, path, headers: bearer(token).merging(["Content-Type": "application/json"]), body: .init(string: "{}"))
                if viewerLacks {
                    #expect(viewer.status == .forbidden, "viewer \(operation) gave \(viewer.status)")
                } else {
                    #expect(![.unauthorized, .forbidden].contains(viewer.status) || requirement == "public", "viewer \(operation) gave \(viewer.status)")
                    #expect(viewer.status.code < 500, "viewer \(operation) gave \(viewer.status)")
                }

                let keyed = try await app.testing().sendRequest(operation.method, path, headers: ["X-API-Key": key, "Content-Type": "application/json"], body: .init(string: "{}"))
                if viewerLacks || operation.apiKeysRefused {
                    #expect(keyed.status == .forbidden, "viewer key \(operation) gave \(keyed.status)")
                } else {
                    #expect(![.unauthorized, .forbidden].contains(keyed.status), "viewer key \(operation) gave \(keyed.status)")
                    #expect(keyed.status.code < 500, "viewer key \(operation) gave \(keyed.status)")
                }
            }
            // Denials are audited.
            #expect(try await AuditLog.query(on: try await app.settledLedger()).filter(\.$action == "authz.denied").count() > 0)
        }
    }
}

extension HTTPHeaders {
    func merging(_ other: HTTPHeaders) -> HTTPHeaders {
        var merged = self
        for (name, value) in other { merged.add(name: name, value: value) }
        return merged
    }
}
