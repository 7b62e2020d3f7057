import NIOCore
import NIOSSL

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
    /// TLS for TCP connections (`rediss://`); a unix socket is always plain.
    public var tls: RedisTLS?

    public init(
        address: Address,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        commandTimeout: TimeAmount = .seconds(1),
        tls: RedisTLS? = nil
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.commandTimeout = commandTimeout
        self.tls = tls
    }
}

/// TLS to Redis: hiredis still formats the commands and reads the replies; only the transport
/// changes, by a TLS handler in front of the channel's Redis handler. The context (made once,
/// off the event loops: it reads files) holds the trust roots and any client certificate; the
/// server is verified against the host it is reached at (a name, or an address in the
/// certificate), every cluster node included.
public struct RedisTLS: Sendable, Equatable {
    public let context: NIOSSLContext

    public init(context: NIOSSLContext) {
        self.context = context
    }

    public static func == (a: RedisTLS, b: RedisTLS) -> Bool { a.context === b.context }
}
