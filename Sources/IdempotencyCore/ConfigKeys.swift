/// Every configuration key of SPEC §2: its name, how to parse it into the configuration, and
/// how to print it back for `--check`. The table is the single list of keys.
struct ConfigKey: Sendable {
    let name: String
    let apply: @Sendable (inout ProxyConfiguration, String) throws(ConfigValueError) -> Void
    let render: @Sendable (ProxyConfiguration) -> String
}

extension ConfigKey {
    static let all: [ConfigKey] = [
        ConfigKey(name: "listen", apply: { c, v throws(ConfigValueError) in c.listen = try ConfigValues.hostPort(v) },
                  render: { "\($0.listen)" }),
        ConfigKey(name: "upstream", apply: { c, v throws(ConfigValueError) in c.upstream = try UpstreamURL.parse(v) },
                  render: { "\($0.upstream)" }),
        ConfigKey(
            name: "admin_listen",
            apply: { c, v throws(ConfigValueError) in c.adminListen = v == "off" ? nil : try ConfigValues.hostPort(v) },
            render: { $0.adminListen.map { "\($0)" } ?? "off" }),
        ConfigKey(
            name: "redis_url",
            apply: { c, v throws(ConfigValueError) in
                // Cluster seeds share one scheme: redis://h1:p1,h2:p2 (the cross-key check
                // rejects several seeds without redis_cluster = true).
                let parts = ConfigValues.list(v)
                guard let first = parts.first else { throw ConfigValueError("redis_url must not be empty") }
                var urls = [try RedisURL.parse(first)]
                for seed in parts.dropFirst() {
                    urls.append(try RedisURL.parse(seed.hasPrefix("redis://") ? seed : "redis://" + seed))
                }
                c.redisURLs = urls
            },
            render: { $0.redisURLs.map(\.description).joined(separator: ",") }),
        ConfigKey(name: "redis_cluster", apply: { c, v throws(ConfigValueError) in c.redisCluster = try ConfigValues.bool(v) },
                  render: { "\($0.redisCluster)" }),
        ConfigKey(
            name: "redis_timeout",
            apply: { c, v throws(ConfigValueError) in c.redisTimeoutMs = try positive(ConfigValues.duration(v), v) },
            render: { ConfigValues.renderDuration($0.redisTimeoutMs) }),
        ConfigKey(
            name: "redis_wait_replicas",
            apply: { c, v throws(ConfigValueError) in c.redisWaitReplicas = try ConfigValues.integer(v, min: 0, max: 100) },
            render: { "\($0.redisWaitReplicas)" }),
        ConfigKey(
            name: "key_header",
            apply: { c, v throws(ConfigValueError) in c.keyHeader = try ConfigValues.token(v, what: "header name") },
            render: { $0.keyHeader }),
        ConfigKey(
            name: "methods",
            apply: { c, v throws(ConfigValueError) in
                var methods: [String] = []
                for m in ConfigValues.list(v) { methods.append(try ConfigValues.token(m, what: "HTTP method").uppercased()) }
                guard !methods.isEmpty else { throw ConfigValueError("methods must name at least one method") }
                c.methods = methods
            },
            render: { $0.methods.joined(separator: ",") }),
        ConfigKey(name: "require_key", apply: { c, v throws(ConfigValueError) in c.requireKey = try ConfigValues.bool(v) },
                  render: { "\($0.requireKey)" }),
        ConfigKey(
            name: "max_key_length",
            apply: { c, v throws(ConfigValueError) in c.maxKeyLength = try ConfigValues.integer(v, min: 1, max: 8_192) },
            render: { "\($0.maxKeyLength)" }),
        ConfigKey(
            name: "scope_headers",
            apply: { c, v throws(ConfigValueError) in
                var names: [String] = []
                for h in ConfigValues.list(v) { names.append(try ConfigValues.token(h, what: "header name")) }
                c.scopeHeaders = names
            },
            render: { $0.scopeHeaders.joined(separator: ",") }),
        ConfigKey(name: "fingerprint", apply: { c, v throws(ConfigValueError) in c.fingerprint = try ConfigValues.bool(v) },
                  render: { "\($0.fingerprint)" }),
        ConfigKey(
            name: "lock_ttl", apply: { c, v throws(ConfigValueError) in c.lockTTLMs = try positive(ConfigValues.duration(v), v) },
            render: { ConfigValues.renderDuration($0.lockTTLMs) }),
        ConfigKey(
            name: "response_ttl",
            apply: { c, v throws(ConfigValueError) in c.responseTTLMs = try positive(ConfigValues.duration(v), v) },
            render: { ConfigValues.renderDuration($0.responseTTLMs) }),
        ConfigKey(
            name: "inflight_wait", apply: { c, v throws(ConfigValueError) in c.inflightWaitMs = try ConfigValues.duration(v) },
            render: { ConfigValues.renderDuration($0.inflightWaitMs) }),
        ConfigKey(name: "store_5xx", apply: { c, v throws(ConfigValueError) in c.store5xx = try ConfigValues.bool(v) },
                  render: { "\($0.store5xx)" }),
        ConfigKey(
            name: "max_request_body", apply: { c, v throws(ConfigValueError) in c.maxRequestBody = try ConfigValues.size(v) },
            render: { ConfigValues.renderSize($0.maxRequestBody) }),
        ConfigKey(
            name: "max_stored_response",
            apply: { c, v throws(ConfigValueError) in c.maxStoredResponse = try ConfigValues.size(v) },
            render: { ConfigValues.renderSize($0.maxStoredResponse) }),
        ConfigKey(
            name: "on_redis_error",
            apply: { c, v throws(ConfigValueError) in
                guard let mode = ProxyConfiguration.OnRedisError(rawValue: v) else {
                    throw ConfigValueError("expected closed or open, got \"\(v)\"")
                }
                c.onRedisError = mode
            },
            render: { $0.onRedisError.rawValue }),
        ConfigKey(
            name: "upstream_timeout",
            apply: { c, v throws(ConfigValueError) in c.upstreamTimeoutMs = try positive(ConfigValues.duration(v), v) },
            render: { ConfigValues.renderDuration($0.upstreamTimeoutMs) }),
        ConfigKey(
            name: "shutdown_grace", apply: { c, v throws(ConfigValueError) in c.shutdownGraceMs = try ConfigValues.duration(v) },
            render: { ConfigValues.renderDuration($0.shutdownGraceMs) }),
        ConfigKey(
            name: "key_prefix",
            apply: { c, v throws(ConfigValueError) in
                guard v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    throw ConfigValueError("key_prefix must be printable ASCII without spaces")
                }
                c.keyPrefix = v
            },
            render: { $0.keyPrefix }),
        ConfigKey(
            name: "replay_header",
            apply: { c, v throws(ConfigValueError) in c.replayHeader = try ConfigValues.token(v, what: "header name") },
            render: { $0.replayHeader }),
        ConfigKey(
            name: "log_level",
            apply: { c, v throws(ConfigValueError) in
                guard let level = ProxyConfiguration.LogLevel(rawValue: v) else {
                    let names = ProxyConfiguration.LogLevel.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ConfigValueError("expected one of \(names), got \"\(v)\"")
                }
                c.logLevel = level
            },
            render: { $0.logLevel.rawValue }),
    ]

    static let byName: [String: ConfigKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
}

private func positive(_ ms: Int64, _ text: String) throws(ConfigValueError) -> Int64 {
    guard ms > 0 else { throw ConfigValueError("must be more than 0, got \"\(text)\"") }
    return ms
}
