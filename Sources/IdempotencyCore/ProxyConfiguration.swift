/// The effective configuration of one idemproxy process (docs/behaviour.md §2). Defaults are the documented ones.
public struct ProxyConfiguration: Sendable, Equatable {
    public enum OnRedisError: String, Sendable, CaseIterable { case closed, open }
    public enum OnPostgresError: String, Sendable, CaseIterable { case closed, redis }
    /// Which finished requests write an access log line (docs/behaviour.md, "The access log").
    public enum AccessLog: String, Sendable, CaseIterable { case off, protected, all }
    public enum LogLevel: String, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    public var listen = HostPort(host: "127.0.0.1", port: 8081)
    public var upstream = UpstreamURL(host: "127.0.0.1", port: 8080, basePath: "")
    /// nil: `off`, no admin listener.
    public var adminListen: HostPort? = HostPort(host: "127.0.0.1", port: 9091)
    /// One URL, or the seed nodes when `redisCluster` is true.
    public var redisURLs = [RedisURL(location: .tcp(HostPort(host: "127.0.0.1", port: 6379)))]
    public var redisCluster = false
    public var redisTimeoutMs: Int64 = 1_000
    public var redisWaitReplicas = 0
    public var keyHeader = "Idempotency-Key"
    public var methods = ["POST", "PATCH"]
    public var requireKey = false
    public var maxKeyLength = 255
    /// Empty: one global scope.
    public var scopeHeaders = ["Authorization"]
    public var fingerprint = true
    public var lockTTLMs: Int64 = 60_000
    public var responseTTLMs: Int64 = 86_400_000
    /// 0: a retry during the first request gets 409 at once.
    public var inflightWaitMs: Int64 = 0
    /// Upstream answers that release the claim; `store_5xx` sets it too.
    public var releaseStatuses = ReleaseStatuses.default
    public var maxRequestBody = 1_048_576
    public var maxStoredResponse = 1_048_576
    public var onRedisError = OnRedisError.closed
    public var upstreamTimeoutMs: Int64 = 30_000
    public var shutdownGraceMs: Int64 = 10_000
    public var keyPrefix = "idem:"
    public var replayHeader = "Idempotent-Replayed"
    public var logLevel = LogLevel.info
    /// Both set: `listen` serves HTTPS with this certificate (PEM) and key (docs/behaviour.md, TLS).
    public var tlsCertFile = ""
    public var tlsKeyFile = ""
    /// CA bundle for an `https://` upstream; empty: the system's trust store (docs/behaviour.md, TLS).
    public var upstreamTLSCAFile = ""
    /// Name verified and sent as SNI; empty: the URL's host.
    public var upstreamTLSServerName = ""
    /// Client certificate and key for an `https://` upstream: both or neither.
    public var upstreamTLSCertFile = ""
    public var upstreamTLSKeyFile = ""
    /// CA bundle for `rediss://`; empty: the system's trust store (docs/behaviour.md, TLS).
    public var redisTLSCAFile = ""
    /// Client certificate and key for `rediss://`: both or neither.
    public var redisTLSCertFile = ""
    public var redisTLSKeyFile = ""
    /// nil: no long-term store (docs/behaviour.md §3, long-term store).
    public var postgresURL: PostgresURL?
    public var postgresTable = "idempotency_records"
    public var postgresTimeoutMs: Int64 = 2_000
    /// false: completions commit without waiting for their WAL flush (docs/behaviour.md,
    /// "Asynchronous commit"); true: the server's own setting.
    public var postgresSynchronousCommit = true
    public var retentionMs: Int64 = 30 * 86_400_000
    public var onPostgresError = OnPostgresError.closed
    /// The master's name under Sentinel; empty: no Sentinel, `redisURLs` is the server itself.
    public var redisSentinel = ""
    /// AUTH to the Sentinels; empty: none.
    public var redisSentinelPassword = ""
    /// Client connections held at once; nil: derived from the descriptor limit at start.
    public var maxConnections: Int?
    /// A request head must arrive whole within this.
    public var clientHeaderTimeoutMs: Int64 = 60_000
    /// A client silent this long while the proxy waits on it is disconnected.
    public var clientIdleTimeoutMs: Int64 = 60_000
    public var accessLog = AccessLog.protected
    /// The records API's bearer token, from `admin_token` or the first line of
    /// `admin_token_file`; empty: no records API.
    public var adminToken = ""
    public var adminTokenFile = ""
    /// In the order they are tried (docs/behaviour.md, "Routes").
    public var routes: [Route] = []

    public init() {}

    public var redisURL: RedisURL { redisURLs[0] }

    /// The database the proxy `SELECT`s: the URL's; with Sentinels listed as
    /// `redis://…@s1:26379,s2:26379/db`, the one written after them (the loader allows no two).
    public var redisDatabase: Int { redisURLs.map(\.database).first { $0 != 0 } ?? 0 }

    /// One group of TLS files (docs/behaviour.md, TLS), with the names of their keys: `PREFIX_ca_file` (the
    /// trust roots of a client; empty: the system's), `PREFIX_cert_file` and `PREFIX_key_file`
    /// (a pair).
    public struct TLSFiles: Sendable {
        public let prefix: String
        public let ca: String
        public let certificate: String
        public let key: String
        public var caName: String { prefix + "_ca_file" }
        public var certificateName: String { prefix + "_cert_file" }
        public var keyName: String { prefix + "_key_file" }
    }

    /// `listen`'s certificate and key (no CA: no client certificates are asked for).
    public var listenerTLS: TLSFiles { TLSFiles(prefix: "tls", ca: "", certificate: tlsCertFile, key: tlsKeyFile) }
    public var redisTLS: TLSFiles {
        TLSFiles(prefix: "redis_tls", ca: redisTLSCAFile, certificate: redisTLSCertFile, key: redisTLSKeyFile)
    }
    public var upstreamTLS: TLSFiles {
        TLSFiles(prefix: "upstream_tls", ca: upstreamTLSCAFile, certificate: upstreamTLSCertFile, key: upstreamTLSKeyFile)
    }
}

/// The protected API: `http://host[:port][/base/path]` or `https://…` (docs/behaviour.md, TLS).
public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Prepended to every forwarded request target; "" for none.
    public var basePath: String
    /// `https://`.
    public var tls: Bool

    public init(host: String, port: Int, basePath: String, tls: Bool = false) {
        self.host = host
        self.port = port
        self.basePath = basePath
        self.tls = tls
    }

    static func parse(_ text: String) throws(ConfigValueError) -> UpstreamURL {
        let tls = text.hasPrefix("https://")
        guard tls || text.hasPrefix("http://") else {
            throw ConfigValueError("expected http://host:port or https://host:port, got \"\(text)\"")
        }
        var rest = Substring(text.dropFirst(tls ? "https://".count : "http://".count))
        var basePath = ""
        if let slash = rest.firstIndex(of: "/") {
            basePath = String(rest[slash...])
            rest = rest[..<slash]
            while basePath.hasSuffix("/") { basePath.removeLast() }
            guard !basePath.contains("?"), !basePath.contains("#") else {
                throw ConfigValueError("upstream URL may have a path but no query or fragment: \"\(text)\"")
            }
        }
        guard !rest.contains("@") else { throw ConfigValueError("upstream URL must not carry credentials") }
        let address: HostPort
        if rest.contains(":") && !(rest.hasPrefix("[") && rest.hasSuffix("]")) {
            address = try ConfigValues.hostPort(String(rest))
        } else {
            var host = String(rest)
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            address = HostPort(host: host, port: Self.defaultPort(tls: tls))
        }
        guard !address.host.isEmpty else { throw ConfigValueError("missing host in \"\(text)\"") }
        try ConfigValues.validateHost(address.host, in: text)
        guard address.port > 0 else { throw ConfigValueError("upstream port must not be 0") }
        return UpstreamURL(host: address.host, port: address.port, basePath: basePath, tls: tls)
    }

    public var description: String {
        "\(tls ? "https" : "http")://\(HostPort(host: host, port: port))\(basePath)"
    }

    /// The value of the `Host` header sent upstream.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == Self.defaultPort(tls: tls) ? h : "\(h):\(port)"
    }

    private static func defaultPort(tls: Bool) -> Int { tls ? 443 : 80 }
}
