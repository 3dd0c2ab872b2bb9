import Testing
import Vapor
@testable import App

@Suite("Query parameters")
struct QueryTextTests {
    @Test("A query parameter reads as Vapor's form decoder reads it, for plain, repeated, encoded and bracketed keys")
    func sameAsVapor() async throws {
        let app = try await Application.make(.testing)
        let queries = [
            "", "q=report", "q=", "q", "q=a=b", "q=1&q=2", "limit=20&cursor=abc&q=x", "&&q=x&&", "=x&q=y", "q=a+b", "q=a%20b%2Bc",
            "q=%E2%82%AC+%F0%9F%98%80", "q=%zz", "q=%", "q=100%25", "q[]=a", "q[x]=a&q=b", "q=b&q[x]=a", "%71=a", "q%5B%5D=a",
            "a+b=c&q=d", "q]=a", "Q=a", "qq=a&q=b", "q=%00", "tag=%22a%22&category=ops&q=%27%3B--", "q=" + String(repeating: "x", count: 600),
            "q=caf%C3%A9", "q=%C3", "q=%c3%a9", "q=%2B", "q=a%2", "q=%e2%82%ac+x", "q=x&q=%zz", "q=%zz&q=x", "q=%FF%FE", "q=a+%2B+b",
            "q=é", "é=1&q=2", "q=&#x", "limit=1%", "q=%%", "q=%41%42%43",
        ]
        for query in queries {
            let request = Request(application: app, method: .GET, url: URI(string: "/x?" + query), on: app.eventLoopGroup.any())
            for name in ["q", "limit", "cursor", "tag", "category", "a b", "Q"] {
                #expect(request.queryText(name) == request.query[String.self, at: name], "\(name) in \(query)")
            }
        }
        let plain = Request(application: app, method: .GET, url: URI(string: "/x?q=invoice+report&q=%E2%82%AC"), on: app.eventLoopGroup.any())
        #expect(plain.queryText("q") == "€")
        #expect(Request(application: app, method: .GET, url: URI(string: "/x?q=invoice+report"), on: app.eventLoopGroup.any()).queryText("q") == "invoice report")
        try await app.asyncShutdown()
    }
}
