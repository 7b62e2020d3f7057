/// Where the long-term store is (docs/behaviour.md §3, long-term store): `postgres://[user[:password]@]host[:port]/dbname`
/// (`postgresql://` too), with an optional `?sslmode=disable|require|verify-full` and
/// `sslrootcert=FILE` (docs/behaviour.md, TLS).
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable
        /// Encrypted, the server not verified.
        case require
        /// Encrypted, the server verified against the trust store and the host.
        case verifyFull = "verify-full"
    }

    public var address: HostPort
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    /// CA bundle for `verify-full`; nil: the system's trust store.
    public var sslRootCert: String?

    public init(
        address: HostPort, username: String, password: String? = nil, database: String, sslMode: SSLMode = .disable,
        sslRootCert: String? = nil
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
    }

    public static func parse(_ text: String) throws(ConfigValueError) -> PostgresURL {
        guard let scheme = ["postgres://", "postgresql://"].first(where: { text.hasPrefix($0) }) else {
            throw ConfigValueError("expected postgres://[user[:password]@]host[:port]/dbname, got \"\(text)\"")
        }
        var rest = Substring(text.dropFirst(scheme.count))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var username = "postgres"
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let user: Substring
            if let colon = credentials.firstIndex(of: ":") {
                user = credentials[..<colon]
                password = try ConfigValues.percentDecode(credentials[credentials.index(after: colon)...])
            } else {
                user = credentials
            }
            guard !user.isEmpty else { throw ConfigValueError("missing user name before @ in \(masked(text))") }
            username = try ConfigValues.percentDecode(user)
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw ConfigValueError("missing /dbname in \(masked(text))")
        }
        let database = try ConfigValues.percentDecode(rest[rest.index(after: slash)...])
        guard !database.isEmpty else { throw ConfigValueError("missing database name in \(masked(text))") }
        let hostPart = String(rest[..<slash])
        let address: HostPort
        if hostPart.hasSuffix("]") || !hostPart.contains(":") {
            var host = hostPart
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw ConfigValueError("missing host in \(masked(text))") }
            try ConfigValues.validateHost(host, in: masked(text))
            address = HostPort(host: host, port: 5432)
        } else {
            address = try ConfigValues.hostPort(hostPart)
            guard address.port > 0 else { throw ConfigValueError("port 0 is not a PostgreSQL port in \(masked(text))") }
        }
        var url = PostgresURL(address: address, username: username, password: password, database: database)
        for parameter in query.split(separator: "&") {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            let name = pair[0]
            let value = pair.count > 1 ? try ConfigValues.percentDecode(pair[1]) : ""
            switch name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw ConfigValueError("sslmode must be disable, require or verify-full, got \"\(value)\"")
                }
                url.sslMode = mode
            case "sslrootcert":
                guard !value.isEmpty else { throw ConfigValueError("sslrootcert needs a file name") }
                url.sslRootCert = value
            default:
                throw ConfigValueError("unknown parameter \"\(name)\" in postgres_url (sslmode and sslrootcert are known)")
            }
        }
        if url.sslRootCert != nil && url.sslMode != .verifyFull {
            throw ConfigValueError("sslrootcert is used only with sslmode=verify-full")
        }
        return url
    }

    /// The URL with the password masked, for `--check` and logs.
    public var description: String {
        var out = "postgres://\(username)\(password == nil ? "" : ":***")@\(address)/\(database)"
        var parameters: [String] = []
        if sslMode != .disable { parameters.append("sslmode=\(sslMode.rawValue)") }
        if let sslRootCert { parameters.append("sslrootcert=\(sslRootCert)") }
        if !parameters.isEmpty { out += "?" + parameters.joined(separator: "&") }
        return out
    }

    /// A URL as the user wrote it, without its password, for error messages.
    private static func masked(_ text: String) -> String {
        let afterScheme = text.firstIndex(of: "/").map { text.index($0, offsetBy: 2, limitedBy: text.endIndex) ?? $0 } ?? text.startIndex
        guard let at = text.lastIndex(of: "@"), afterScheme < at, let colon = text[afterScheme..<at].firstIndex(of: ":") else {
            return "\"\(text)\""
        }
        return "\"\(text[..<colon]):***\(text[at...])\""
    }
}
