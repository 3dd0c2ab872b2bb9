import FluentPostgresDriver
import Foundation

/// Where a PostgreSQL URL (`DATABASE_URL`, `STEWARD_DATABASE_LISTEN_URL`) says the server is.
///
/// - A host over TCP: `postgres://user:pass@host:port/db`, with `?sslmode=` for TLS.
/// - A Unix socket on this machine, written as libpq (`psql`) writes it: the socket's directory as the `host` query
///   parameter, `postgres://user:pass@/db?host=/var/run/postgresql`, or as the host, percent-encoded,
///   `postgres://user:pass@%2Fvar%2Frun%2Fpostgresql/db`. The socket is `<directory>/.s.PGSQL.<port>`, with port
///   5432 unless the URL gives another (`:5433` or `port=5433`). As with libpq, TLS does not apply to a socket.
enum PostgresAddress: Equatable {
    case tcp(url: String)
    case socket(path: String, username: String, password: String?, database: String?)

    /// The address `text` names, or nil when it is neither form.
    init?(_ text: String) {
        let lowered = text.lowercased()
        guard lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://"),
              let components = URLComponents(string: text) else { return nil }
        let query = components.queryItems ?? []
        let queryHost = query.last { $0.name == "host" }?.value
        let host = components.host ?? ""
        let directory: String
        if let queryHost {
            // libpq also takes a host name here; Steward takes only a socket's directory, which the URL has no other way to write.
            guard queryHost.hasPrefix("/"), host.isEmpty else { return nil }
            directory = queryHost
        } else if host.hasPrefix("/") {
            directory = host
        } else {
            guard !host.isEmpty else { return nil }
            self = .tcp(url: text)
            return
        }
        var port = components.port ?? 5432
        if let portText = query.last(where: { $0.name == "port" })?.value {
            guard let value = Int(portText) else { return nil }
            port = value
        }
        guard let user = components.user, !user.isEmpty, (1...65535).contains(port) else { return nil }
        let name = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let trimmed = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self = .socket(path: "\(trimmed)/.s.PGSQL.\(port)", username: user, password: components.password,
                       database: name.isEmpty ? nil : name)
    }

    /// The connection settings, for Fluent's pool and for the LISTEN connection.
    func configuration() throws -> SQLPostgresConfiguration {
        switch self {
        case .tcp(let url):
            try SQLPostgresConfiguration(url: url)
        case .socket(let path, let username, let password, let database):
            SQLPostgresConfiguration(unixDomainSocketPath: path, username: username, password: password, database: database)
        }
    }
}
