/// Where Redis is: `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS, docs/behaviour.md) or
/// `unix:///path.sock[?db=N]` (never TLS).
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    public enum Location: Sendable, Equatable {
        case tcp(HostPort)
        case unix(path: String)
    }

    public var location: Location
    public var username: String?
    public var password: String?
    public var database: Int
    /// `rediss://`.
    public var tls: Bool

    public init(location: Location, username: String? = nil, password: String? = nil, database: Int = 0, tls: Bool = false) {
        self.location = location
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    public static func parse(_ text: String) throws(ConfigValueError) -> RedisURL {
        if text.hasPrefix("unix://") {
            var rest = Substring(text.dropFirst("unix://".count))
            var database = 0
            if let q = rest.firstIndex(of: "?") {
                let query = rest[rest.index(after: q)...]
                guard query.hasPrefix("db="), let db = Int(query.dropFirst(3)), (0...15_999).contains(db) else {
                    throw ConfigValueError("expected unix:///path.sock?db=N, got \"\(text)\"")
                }
                database = db
                rest = rest[..<q]
            }
            guard rest.hasPrefix("/"), rest.count > 1 else {
                throw ConfigValueError("unix socket URL needs an absolute path: unix:///path.sock, got \"\(text)\"")
            }
            return RedisURL(location: .unix(path: String(rest)), database: database)
        }
        let tls = text.hasPrefix("rediss://")
        guard tls || text.hasPrefix("redis://") else {
            throw ConfigValueError("expected redis://host:port[/db], rediss://host:port[/db] or unix:///path.sock, got \"\(text)\"")
        }
        var rest = Substring(text.dropFirst(tls ? "rediss://".count : "redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : try ConfigValues.percentDecode(user)
                password = try ConfigValues.percentDecode(credentials[credentials.index(after: colon)...])
            } else {
                password = try ConfigValues.percentDecode(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let db = Int(dbText), (0...15_999).contains(db) else {
                    throw ConfigValueError("database in \"\(text)\" must be a number")
                }
                database = db
            }
            rest = rest[..<slash]
        }
        let address = try ConfigValues.hostPort(String(rest))
        guard address.port > 0 else { throw ConfigValueError("port 0 is not a Redis port in \"\(text)\"") }
        return RedisURL(location: .tcp(address), username: username, password: password, database: database, tls: tls)
    }

    /// The URL with the password masked, for `--check` and logs.
    public var description: String {
        switch location {
        case .unix(let path):
            return database == 0 ? "unix://\(path)" : "unix://\(path)?db=\(database)"
        case .tcp(let address):
            var credentials = ""
            if password != nil { credentials = "\(username ?? ""):***@" }
            return "\(tls ? "rediss" : "redis")://\(credentials)\(address)/\(database)"
        }
    }
}
