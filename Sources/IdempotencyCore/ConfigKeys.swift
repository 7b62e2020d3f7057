/// Every configuration key of docs/behaviour.md §2: its name, how to parse it into the configuration, and
/// how to print it back for `--check`. The table is the single list of keys.
struct ConfigKey: Sendable {
    let name: String
    let apply: @Sendable (inout ProxyConfiguration, String) throws(ConfigValueError) -> Void
    /// nil: not printed by `--check` (another key prints its effect).
    let render: (@Sendable (ProxyConfiguration) -> String)?
}

extension ConfigKey {
    static let all: [ConfigKey] = [
        value("listen", \.listen, parse: ConfigValues.hostPort),
        value("upstream", \.upstream, parse: UpstreamURL.parse),
        value(
            "admin_listen", \.adminListen,
            parse: { v throws(ConfigValueError) in v == "off" ? nil : try ConfigValues.hostPort(v) },
            print: { $0.map { "\($0)" } ?? "off" }),
        value(
            "redis_url", \.redisURLs,
            parse: { v throws(ConfigValueError) in
                // Cluster seeds share one scheme: redis://h1:p1,h2:p2 or rediss://… (the
                // cross-key check rejects several seeds without redis_cluster = true).
                let parts = ConfigValues.list(v)
                guard let first = parts.first else { throw ConfigValueError("redis_url must not be empty") }
                var urls = [try RedisURL.parse(first)]
                let scheme = urls[0].tls ? "rediss://" : "redis://"
                for seed in parts.dropFirst() {
                    let url = try RedisURL.parse(seed.contains("://") ? seed : scheme + seed)
                    guard url.tls == urls[0].tls else {
                        throw ConfigValueError("every Redis Cluster seed is redis:// or every one is rediss://, got \"\(seed)\"")
                    }
                    urls.append(url)
                }
                return urls
            },
            print: { $0.map(\.description).joined(separator: ",") }),
        bool("redis_cluster", \.redisCluster),
        duration("redis_timeout", \.redisTimeoutMs, allowZero: false),
        value("redis_wait_replicas", \.redisWaitReplicas, parse: { v throws(ConfigValueError) in try ConfigValues.integer(v, min: 0, max: 100) }),
        token("key_header", \.keyHeader, what: "header name"),
        value(
            "methods", \.methods,
            parse: { v throws(ConfigValueError) in
                var methods: [String] = []
                for m in ConfigValues.list(v) { methods.append(try ConfigValues.token(m, what: "HTTP method").uppercased()) }
                guard !methods.isEmpty else { throw ConfigValueError("methods must name at least one method") }
                return methods
            },
            print: { $0.joined(separator: ",") }),
        bool("require_key", \.requireKey),
        value("max_key_length", \.maxKeyLength, parse: { v throws(ConfigValueError) in try ConfigValues.integer(v, min: 1, max: 8_192) }),
        value(
            "scope_headers", \.scopeHeaders,
            parse: { v throws(ConfigValueError) in
                var names: [String] = []
                for h in ConfigValues.list(v) { names.append(try ConfigValues.token(h, what: "header name")) }
                return names
            },
            print: { $0.joined(separator: ",") }),
        bool("fingerprint", \.fingerprint),
        duration("lock_ttl", \.lockTTLMs, allowZero: false),
        duration("response_ttl", \.responseTTLMs, allowZero: false),
        duration("inflight_wait", \.inflightWaitMs, allowZero: true),
        // The older spelling of release_statuses: it sets that list, and only that is printed
        // (both set is an error, so the printed configuration must not name both).
        ConfigKey(
            name: "store_5xx",
            apply: { c, v throws(ConfigValueError) in c.releaseStatuses = try ConfigValues.bool(v) ? .storing5xx : .default },
            render: nil),
        value("release_statuses", \.releaseStatuses, parse: ReleaseStatuses.parse),
        size("max_request_body", \.maxRequestBody),
        size("max_stored_response", \.maxStoredResponse),
        choice("on_redis_error", \.onRedisError),
        duration("upstream_timeout", \.upstreamTimeoutMs, allowZero: false),
        duration("shutdown_grace", \.shutdownGraceMs, allowZero: true),
        value(
            "key_prefix", \.keyPrefix,
            parse: { v throws(ConfigValueError) in
                try ConfigValues.printableWithoutSpaces(v, or: "key_prefix must be printable ASCII without spaces")
            }),
        token("replay_header", \.replayHeader, what: "header name"),
        choice("log_level", \.logLevel),
        path("tls_cert_file", \.tlsCertFile),
        path("tls_key_file", \.tlsKeyFile),
        path("upstream_tls_ca_file", \.upstreamTLSCAFile),
        value(
            "upstream_tls_server_name", \.upstreamTLSServerName,
            parse: { v throws(ConfigValueError) in
                guard !v.isEmpty else { return v }
                try ConfigValues.validateHost(v, in: v)
                // An address cannot be sent as SNI, and the TLS library verifies the address it
                // connected to; an address here would be silently not checked.
                guard !v.contains(":"), !v.split(separator: ".").allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
                    throw ConfigValueError("upstream_tls_server_name must be a host name, not an address (an https:// upstream given by address is verified against the addresses in its certificate)")
                }
                return v
            }),
        path("upstream_tls_cert_file", \.upstreamTLSCertFile),
        path("upstream_tls_key_file", \.upstreamTLSKeyFile),
        path("redis_tls_ca_file", \.redisTLSCAFile),
        path("redis_tls_cert_file", \.redisTLSCertFile),
        path("redis_tls_key_file", \.redisTLSKeyFile),
        value(
            "postgres_url", \.postgresURL,
            parse: { v throws(ConfigValueError) in v.isEmpty ? nil : try PostgresURL.parse(v) },
            print: { $0.map(\.description) ?? "" }),
        value("postgres_table", \.postgresTable, parse: ConfigValues.sqlIdentifier),
        duration("postgres_timeout", \.postgresTimeoutMs, allowZero: false),
        bool("postgres_synchronous_commit", \.postgresSynchronousCommit),
        duration("retention", \.retentionMs, allowZero: false),
        choice("on_postgres_error", \.onPostgresError),
        value(
            "redis_sentinel", \.redisSentinel,
            parse: { v throws(ConfigValueError) in
                try ConfigValues.printableWithoutSpaces(
                    v, or: "the master's name as the Sentinels know it, printable ASCII without spaces, got \"\(v)\"")
            }),
        value("redis_sentinel_password", \.redisSentinelPassword, parse: { $0 }, print: { $0.isEmpty ? "" : "***" }),
        value(
            "max_connections", \.maxConnections,
            parse: { v throws(ConfigValueError) in
                guard v != "auto" else { return nil }
                guard let n = Int(v), !v.hasPrefix("+"), (1...10_000_000).contains(n) else {
                    throw ConfigValueError("expected auto (from the descriptor limit) or a number from 1 to 10000000, got \"\(v)\"")
                }
                return n
            },
            print: { $0.map(String.init) ?? "auto" }),
        duration("client_header_timeout", \.clientHeaderTimeoutMs, allowZero: false),
        duration("client_idle_timeout", \.clientIdleTimeoutMs, allowZero: false),
        choice("access_log", \.accessLog),
        // Printed as set or not, never the value; the file is read across keys, and printed
        // through admin_token.
        value("admin_token", \.adminToken, parse: { $0 }, print: { $0.isEmpty ? "" : "(set)" }),
        ConfigKey(name: "admin_token_file", apply: { c, v throws(ConfigValueError) in c.adminTokenFile = v }, render: nil),
    ]

    static let byName: [String: ConfigKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    // MARK: - one constructor per kind of value

    typealias Path<V> = WritableKeyPath<ProxyConfiguration, V> & Sendable

    static func value<V>(
        _ name: String,
        _ path: Path<V>,
        parse: @escaping @Sendable (String) throws(ConfigValueError) -> V,
        print: @escaping @Sendable (V) -> String = { "\($0)" }
    ) -> ConfigKey {
        ConfigKey(
            name: name,
            apply: { c, v throws(ConfigValueError) in c[keyPath: path] = try parse(v) },
            render: { print($0[keyPath: path]) })
    }

    /// A file name; empty for none. Whether it can be read is checked across keys.
    static func path(_ name: String, _ path: Path<String>) -> ConfigKey {
        value(name, path, parse: { $0 })
    }

    static func bool(_ name: String, _ path: Path<Bool>) -> ConfigKey {
        value(name, path, parse: ConfigValues.bool)
    }

    static func token(_ name: String, _ path: Path<String>, what: String) -> ConfigKey {
        value(name, path, parse: { v throws(ConfigValueError) in try ConfigValues.token(v, what: what) })
    }

    static func size(_ name: String, _ path: Path<Int>) -> ConfigKey {
        value(name, path, parse: ConfigValues.size, print: ConfigValues.renderSize)
    }

    /// Milliseconds; `allowZero` false for limits and TTLs, where 0 would mean "never works".
    static func duration(_ name: String, _ path: Path<Int64>, allowZero: Bool) -> ConfigKey {
        value(
            name, path,
            parse: { v throws(ConfigValueError) in
                let ms = try ConfigValues.duration(v)
                guard allowZero || ms > 0 else { throw ConfigValueError("must be more than 0, got \"\(v)\"") }
                return ms
            },
            print: ConfigValues.renderDuration)
    }

    /// One of an enum's raw values.
    static func choice<E: RawRepresentable & CaseIterable & Sendable>(_ name: String, _ path: Path<E>) -> ConfigKey
    where E.RawValue == String {
        value(
            name, path,
            parse: { v throws(ConfigValueError) in
                guard let choice = E(rawValue: v) else {
                    let names = E.allCases.map(\.rawValue)
                    let expected = names.count == 2 ? "\(names[0]) or \(names[1])" : "one of " + names.joined(separator: ", ")
                    throw ConfigValueError("expected \(expected), got \"\(v)\"")
                }
                return choice
            },
            print: { $0.rawValue })
    }
}
