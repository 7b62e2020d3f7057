import NIOCore

/// Where and how to reach one Redis server.
public struct RedisConfiguration: Sendable, Equatable {
    public enum Address: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unix(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): return "unix://\(path)"
            }
        }
    }

    public var address: Address
    /// ACL user for `AUTH user password`; nil means `AUTH password` (or no AUTH without a password).
    public var username: String?
    public var password: String?
    /// `SELECT`ed on every (re)connect when not 0.
    public var database: Int
    /// Limit for one command, and for connecting.
    public var commandTimeout: TimeAmount

    public init(
        address: Address,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        commandTimeout: TimeAmount = .seconds(1)
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.commandTimeout = commandTimeout
    }
}
