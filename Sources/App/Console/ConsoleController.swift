import Vapor

/// `/console`: the web console, a client of the public API in cookie mode. Every console address answers with the
/// same page (the console routes in the browser); assets live under a versioned path and are cached for a year.
struct ConsoleController: RouteCollection {
    func boot(routes: any RoutesBuilder) throws {
        let console = routes.grouped("console")
        console.get(use: page)
        console.get("**", use: page)
        console.get("assets", ":version", ":file", use: asset)
    }

    @Sendable
    func page(req: Request) async throws -> Response {
        var headers = Self.headers
        headers.contentType = .html
        // The page shows who is signed in; it is never cached, and always asks for the current assets.
        headers.replaceOrAdd(name: .cacheControl, value: "no-store")
        headers.responseCompression = .enable
        return Response(status: .ok, headers: headers, body: .init(string: ConsoleAssets.shared.page))
    }

    @Sendable
    func asset(req: Request) async throws -> Response {
        let assets = ConsoleAssets.shared
        guard req.parameters.get("version") == assets.version, let name = req.parameters.get("file"), let file = assets.files[name] else {
            throw HTTPProblem.notFound("No such console asset in this version of Steward.")
        }
        var headers = Self.headers
        headers.contentType = file.contentType
        headers.replaceOrAdd(name: .cacheControl, value: "public, max-age=31536000, immutable")
        headers.responseCompression = .enable
        return Response(status: .ok, headers: headers, body: .init(buffer: file.body))
    }

    private static let headers: HTTPHeaders = ["Content-Security-Policy": ConsoleAssets.contentSecurityPolicy]
}
