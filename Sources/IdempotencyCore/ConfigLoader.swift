#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds a `ProxyConfiguration` from its sources, strictly: every error in every source is
/// reported, each with where it came from, and nothing is half-applied.
///
/// Precedence, lowest first: defaults, the file, `IDEMPROXY_<KEY>` environment variables,
/// `--set KEY=VALUE`.
public struct ConfigLoader {
    /// One configuration error, printed as `location: message`. (Not a `Problem`: that is an
    /// RFC 9457 answer to a client.)
    public struct Finding: Error, Equatable, CustomStringConvertible {
        /// `FILE:LINE`, `--set KEY` or `IDEMPROXY_KEY`.
        public let location: String
        public let message: String
        public var description: String { "\(location): \(message)" }
    }

    /// Every error found, in source order.
    public struct Findings: Error, Equatable {
        public let all: [Finding]
    }

    public static let environmentPrefix = "IDEMPROXY_"

    private var configuration = ProxyConfiguration()
    /// Where each key's effective value was set; absent means the default.
    private var origins: [String: String] = [:]
    /// When each key's effective value was applied, by the count of values applied so far.
    private var applied: [String: Int] = [:]
    private var applications = 0
    public private(set) var findings: [Finding] = []
    /// Each route's lines as given, in the order their names first came; applied over the
    /// top level once it is complete.
    private var routeLines: [RouteLines] = []

    private struct RouteLines {
        let name: String
        /// Where the route's name first came: a route without `path` is reported there.
        let firstLocation: String
        var fields: [(field: String, value: String, location: String)] = []
    }

    public init() {}

    /// Applies a key=value file. `name` is what messages call it.
    public mutating func applyFile(named name: String, contents: String) {
        var seen: [String: Int] = [:]
        var lineNumber = 0
        for rawLine in contents.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = ConfigValues.trim(String(rawLine))
            if line.isEmpty || line.hasPrefix("#") { continue }
            let location = "\(name):\(lineNumber)"
            guard let equals = line.firstIndex(of: "=") else {
                findings.append(Finding(location: location, message: "expected key = value, got \"\(line)\""))
                continue
            }
            let key = ConfigValues.trim(String(line[..<equals]))
            let value = ConfigValues.trim(String(line[line.index(after: equals)...]))
            guard !key.isEmpty else {
                findings.append(Finding(location: location, message: "missing key before \"=\""))
                continue
            }
            if let first = seen[key] {
                findings.append(Finding(location: location, message: "duplicate key \(key) (first set on line \(first))"))
                continue
            }
            seen[key] = lineNumber
            apply(key: key, value: value, location: location)
        }
    }

    /// Applies every `IDEMPROXY_<KEY>` variable; other variables are ignored.
    public mutating func applyEnvironment(_ environment: [String: String]) {
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix(Self.environmentPrefix) {
            let key = String(name.dropFirst(Self.environmentPrefix.count)).lowercased()
            guard !key.hasPrefix("route") else {
                findings.append(Finding(location: name, message: "routes have no environment form: set route.NAME.FIELD in the file or with --set"))
                continue
            }
            apply(key: key, value: ConfigValues.trim(value), location: name)
        }
    }

    /// Applies one `--set KEY=VALUE` argument.
    public mutating func applySet(_ argument: String) {
        guard let equals = argument.firstIndex(of: "=") else {
            findings.append(Finding(location: "--set \(argument)", message: "expected KEY=VALUE"))
            return
        }
        let key = ConfigValues.trim(String(argument[..<equals]))
        let value = ConfigValues.trim(String(argument[argument.index(after: equals)...]))
        apply(key: key, value: value, location: "--set \(key)")
    }

    /// The configuration, or every error found in all sources and across keys.
    public func finish() -> Result<ProxyConfiguration, Findings> {
        var findings = self.findings
        var c = configuration
        func origin(_ keys: String...) -> String {
            // Blame the key the user set last; precedence order makes that the highest one.
            for key in keys { if let o = origins[key] { return o } }
            return "configuration"
        }
        if c.lockTTLMs <= c.upstreamTimeoutMs {
            findings.append(Finding(
                location: origin("lock_ttl", "upstream_timeout"),
                message: "lock_ttl (\(ConfigValues.renderDuration(c.lockTTLMs))) must exceed upstream_timeout (\(ConfigValues.renderDuration(c.upstreamTimeoutMs))), or a slow upstream could run a request twice"))
        }
        let sentinel = !c.redisSentinel.isEmpty
        if c.redisCluster && sentinel, let (first, second) = bothSet("redis_cluster", "redis_sentinel") {
            findings.append(Finding(
                location: second,
                message: "redis_sentinel and redis_cluster = true exclude each other (the other at \(first)): a Redis Cluster fails over by itself"))
        }
        if c.redisURLs.count > 1 && !c.redisCluster && !sentinel {
            findings.append(Finding(location: origin("redis_url"), message: "several Redis URLs need redis_cluster = true (seeds) or redis_sentinel (Sentinels)"))
        }
        let unixSocket = c.redisURLs.contains { if case .unix = $0.location { return true } else { return false } }
        if c.redisCluster, unixSocket {
            findings.append(Finding(location: origin("redis_url"), message: "Redis Cluster seeds must be redis://host:port"))
        }
        if sentinel, origins["redis_url"] == nil {
            findings.append(Finding(location: origin("redis_sentinel"), message: "redis_sentinel needs redis_url to list the Sentinels (redis://s1:26379,s2:26379,s3:26379)"))
        } else if sentinel, unixSocket {
            findings.append(Finding(location: origin("redis_url"), message: "with redis_sentinel, redis_url lists the Sentinels as redis://host:port"))
        }
        if !sentinel, !c.redisSentinelPassword.isEmpty {
            findings.append(Finding(location: origin("redis_sentinel_password"), message: "redis_sentinel_password is set, but redis_sentinel is not"))
        }
        if sentinel, let first = c.redisURLs.first, c.redisURLs.dropFirst().contains(where: {
            ($0.username != nil || $0.password != nil) && ($0.username != first.username || $0.password != first.password)
        }) || Set(c.redisURLs.map(\.database).filter { $0 != 0 }).count > 1 {
            findings.append(Finding(location: origin("redis_url"), message: "with redis_sentinel, redis_url names the master's user, password and /db once: redis://user:password@s1:26379,s2:26379/db"))
        }
        if c.redisCluster, c.redisURLs.contains(where: { $0.database != 0 }) {
            findings.append(Finding(location: origin("redis_url"), message: "Redis Cluster has only database 0; drop the /db from the seeds"))
        }
        if c.redisCluster, let first = c.redisURLs.first, c.redisURLs.dropFirst().contains(where: {
            ($0.username != nil || $0.password != nil) && ($0.username != first.username || $0.password != first.password)
        }) {
            // Every node is opened with one set of credentials; silently ignoring a seed's
            // own would surface only as AUTH failures at run time.
            findings.append(Finding(location: origin("redis_url"), message: "Redis Cluster seeds share one user and password (the first seed's open every node); give later seeds the same or none"))
        }
        // Without a long-term store, retention matters only where the user set it.
        if c.retentionMs < c.responseTTLMs && (c.postgresURL != nil || origins["retention"] != nil) {
            findings.append(Finding(
                location: origin("retention", "response_ttl"),
                message: "retention (\(ConfigValues.renderDuration(c.retentionMs))) must be at least response_ttl (\(ConfigValues.renderDuration(c.responseTTLMs))): PostgreSQL must keep a record as long as Redis replays it"))
        }
        /// One group of TLS keys: set only where its scheme is (`unused`: why not), its files
        /// readable, its certificate and key a pair. `serverName`: the group's other key.
        func tlsKeys(_ files: ProxyConfiguration.TLSFiles, serverName: (key: String, value: String)? = nil, unused: String?) {
            let set = [(files.caName, files.ca)] + (serverName.map { [$0] } ?? []) + [
                (files.certificateName, files.certificate), (files.keyName, files.key),
            ]
            for (key, value) in set where !value.isEmpty {
                if let unused {
                    findings.append(Finding(location: origin(key), message: "\(key) is set, but \(unused)"))
                } else if key.hasSuffix("_file") && access(value, R_OK) != 0 {
                    findings.append(Finding(location: origin(key), message: "\(key): \(value) cannot be read"))
                }
            }
            if files.certificate.isEmpty != files.key.isEmpty {
                findings.append(Finding(
                    location: origin(files.certificate.isEmpty ? files.keyName : files.certificateName),
                    message: "\(files.certificateName) and \(files.keyName) are a pair: set both or neither"))
            }
        }
        tlsKeys(c.listenerTLS, unused: nil)
        tlsKeys(c.redisTLS, unused: c.redisURL.tls ? nil : "redis_url is not rediss://")
        tlsKeys(
            c.upstreamTLS, serverName: ("upstream_tls_server_name", c.upstreamTLSServerName),
            unused: c.upstream.tls ? nil : "upstream is not https://")
        if let file = c.postgresURL?.sslRootCert, access(file, R_OK) != 0 {
            findings.append(Finding(location: origin("postgres_url"), message: "postgres_url: sslrootcert \(file) cannot be read"))
        }
        if let (first, second) = bothSet("store_5xx", "release_statuses") {
            findings.append(Finding(
                location: second,
                message: "store_5xx and release_statuses are both set (the other at \(first)); store_5xx = true is the older spelling of release_statuses = \(ReleaseStatuses.storing5xx): keep one"))
        }
        if let (first, second) = bothSet("admin_token", "admin_token_file") {
            findings.append(Finding(location: second, message: "admin_token and admin_token_file are both set (the other at \(first)): keep one"))
        } else if !c.adminTokenFile.isEmpty {
            switch Self.firstLine(ofFile: c.adminTokenFile) {
            case .some(let token) where !token.isEmpty: c.adminToken = token
            case .some: findings.append(Finding(location: origin("admin_token_file"), message: "admin_token_file: \(c.adminTokenFile) has no token on its first line"))
            case .none: findings.append(Finding(location: origin("admin_token_file"), message: "admin_token_file: \(c.adminTokenFile) cannot be read"))
            }
        }
        if !c.adminToken.isEmpty && c.adminListen == nil {
            findings.append(Finding(location: origin("admin_listen"), message: "the records API (admin_token) needs admin_listen, which is off"))
        }
        if c.scopeHeaders.contains(where: { $0.lowercased() == c.keyHeader.lowercased() }) {
            findings.append(Finding(location: origin("scope_headers"), message: "scope_headers must not contain the key header \(c.keyHeader)"))
        }
        let topLevel = c
        for lines in routeLines {
            if let route = Self.route(lines, over: topLevel, findings: &findings) {
                c.routes.append(route)
            }
        }
        return findings.isEmpty ? .success(c) : .failure(Findings(all: findings))
    }

    /// The keys a route may set for itself besides `path`, `host`, `protect` and `key_from`.
    static let routeOverrides: [String] = [
        "methods", "require_key", "key_header", "scope_headers", "fingerprint", "lock_ttl", "response_ttl", "retention",
        "inflight_wait", "store_5xx", "release_statuses", "max_request_body", "max_stored_response", "upstream_timeout",
    ]

    /// A route's lines applied over the top level, each error at its own line; nil when the
    /// route cannot be made.
    private static func route(
        _ lines: RouteLines, over topLevel: ProxyConfiguration, findings: inout [Finding]
    ) -> Route? {
        let name = lines.name
        var settings = topLevel
        var path: PathPattern?
        var host: String?
        var protect = true
        var keyFromJSON: JSONPointer?
        /// Where each field was set, and in which order.
        var setAt: [String: (location: String, order: Int)] = [:]
        for (order, (field, value, location)) in lines.fields.enumerated() {
            do {
                switch field {
                case "path": path = try PathPattern(parsing: value)
                case "host": host = try routeHost(value)
                case "protect": protect = try ConfigValues.bool(value)
                case "key_from": keyFromJSON = try keyFrom(value)
                case _ where routeOverrides.contains(field): try ConfigKey.byName[field]!.apply(&settings, value)
                default:
                    findings.append(Finding(
                        location: location,
                        message: "unknown route field \"\(field)\" in route.\(name).\(field) (a route takes path, host, protect, key_from, \(routeOverrides.joined(separator: ", ")))"))
                    continue
                }
                setAt[field] = (location, order)
            } catch {
                findings.append(Finding(location: location, message: "route.\(name).\(field): \(error.message)"))
            }
        }
        /// The later of the fields the route set among `fields`, where a conflict is reported.
        func blame(_ fields: String...) -> String? {
            fields.compactMap { setAt[$0] }.max { $0.order < $1.order }?.location
        }
        if settings.lockTTLMs <= settings.upstreamTimeoutMs, let location = blame("lock_ttl", "upstream_timeout") {
            findings.append(Finding(
                location: location,
                message: "route \(name): lock_ttl (\(ConfigValues.renderDuration(settings.lockTTLMs))) must exceed upstream_timeout (\(ConfigValues.renderDuration(settings.upstreamTimeoutMs))), or a slow upstream could run a request twice"))
        }
        // Without a long-term store a route's retention means nothing (and `--check` prints it).
        if settings.retentionMs < settings.responseTTLMs, settings.postgresURL != nil, let location = blame("retention", "response_ttl")
        {
            findings.append(Finding(
                location: location,
                message: "route \(name): retention (\(ConfigValues.renderDuration(settings.retentionMs))) must be at least response_ttl (\(ConfigValues.renderDuration(settings.responseTTLMs)))"))
        }
        if let store5xx = setAt["store_5xx"], let statuses = setAt["release_statuses"] {
            let (first, second) = store5xx.order < statuses.order ? (store5xx, statuses) : (statuses, store5xx)
            findings.append(Finding(
                location: second.location,
                message: "route \(name): store_5xx and release_statuses are both set (the other at \(first.location)): keep one"))
        }
        if settings.scopeHeaders.contains(where: { $0.lowercased() == settings.keyHeader.lowercased() }),
            let location = blame("scope_headers", "key_header")
        {
            findings.append(Finding(location: location, message: "route \(name): scope_headers must not contain the key header \(settings.keyHeader)"))
        }
        guard let path else {
            // (A path that was given and refused is reported at its own line.)
            if !lines.fields.contains(where: { $0.field == "path" }) {
                findings.append(Finding(location: lines.firstLocation, message: "route \(name) has no path (route.\(name).path = /v1/charges)"))
            }
            return nil
        }
        return Route(name: name, path: path, host: host, protect: protect, keyFromJSON: keyFromJSON, settings: settings)
    }

    /// A route's `host`: a name or address without a port, in any case; empty: any host.
    private static func routeHost(_ value: String) throws(ConfigValueError) -> String? {
        guard !value.isEmpty else { return nil }
        let name = value.lowercased()
        let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
        try ConfigValues.validateHost(bare, in: value)
        guard bare.contains(":") == name.hasPrefix("[") else {
            throw ConfigValueError("a route's host is matched without its port (write [::1] for an IPv6 address), got \"\(value)\"")
        }
        return name
    }

    /// Letters, digits, `_` and `-`.
    private static func isRouteNameByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || ConfigValues.isAlphanumeric(byte)
    }

    /// `header`, or `json:POINTER`.
    private static func keyFrom(_ value: String) throws(ConfigValueError) -> JSONPointer? {
        if value == "header" { return nil }
        guard value.hasPrefix("json:") else {
            throw ConfigValueError("expected header or json:POINTER (json:/id, json:/data/event_id), got \"\(value)\"")
        }
        return try JSONPointer(parsing: String(value.dropFirst("json:".count)))
    }

    /// A `route.NAME.FIELD` line.
    private mutating func applyRoute(key: String, value: String, location: String) {
        let parts = key.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[2].isEmpty, !parts[1].isEmpty, parts[1].utf8.allSatisfy(Self.isRouteNameByte) else {
            findings.append(Finding(location: location, message: "expected route.NAME.FIELD (NAME of letters, digits, _ and -), got \"\(key)\""))
            return
        }
        let name = String(parts[1])
        let field = String(parts[2])
        guard name != Route.defaultName else {
            findings.append(Finding(location: location, message: "a route may not be named \(Route.defaultName): that is the top level's name in metrics and logs"))
            return
        }
        if !routeLines.contains(where: { $0.name == name }) { routeLines.append(RouteLines(name: name, firstLocation: location)) }
        let index = routeLines.firstIndex { $0.name == name }!
        // A later source overrides the same field (precedence), in the place of the first.
        if let same = routeLines[index].fields.firstIndex(where: { $0.field == field }) {
            routeLines[index].fields[same] = (field, value, location)
        } else {
            routeLines[index].fields.append((field, value, location))
        }
    }

    /// Where `key`'s effective value was set (`FILE:LINE`, `--set KEY`, `IDEMPROXY_KEY`), for
    /// a problem found after loading.
    public func location(of key: String) -> String { origins[key] ?? "configuration" }

    /// A file's first line without surrounding whitespace; nil when it cannot be read.
    private static func firstLine(ofFile path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        let length = getline(&line, &capacity, file)
        guard length >= 0, let line else { return ferror(file) == 0 ? "" : nil }
        let bytes = UnsafeRawBufferPointer(start: line, count: length)
        return ConfigValues.trim(String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }, as: UTF8.self))
    }

    /// The effective configuration as `key = value` lines, in the documented order.
    public static func render(_ configuration: ProxyConfiguration) -> String {
        var lines = ConfigKey.all.compactMap { key in key.render.map { "\(key.name) = \($0(configuration))" } }
        for route in configuration.routes {
            let prefix = "route.\(route.name)."
            lines += [
                "\(prefix)path = \(route.path)", "\(prefix)host = \(route.host ?? "")", "\(prefix)protect = \(route.protect)",
                "\(prefix)key_from = \(route.keyFromJSON.map { "json:\($0)" } ?? "header")",
            ]
            for field in routeOverrides {
                guard let render = ConfigKey.byName[field]?.render else { continue }
                lines.append("\(prefix)\(field) = \(render(route.settings))")
            }
        }
        return lines.joined(separator: "\n")
    }

    public static var keyNames: [String] { ConfigKey.all.map(\.name) }

    /// The locations of two keys that were both set, in the order they were applied (so the
    /// second is the later line, environment variable or `--set`); nil unless both were.
    private func bothSet(_ a: String, _ b: String) -> (String, String)? {
        guard let originA = origins[a], let originB = origins[b], let orderA = applied[a], let orderB = applied[b] else {
            return nil
        }
        return orderA < orderB ? (originA, originB) : (originB, originA)
    }

    private mutating func apply(key: String, value: String, location: String) {
        if key.hasPrefix("route.") { return applyRoute(key: key, value: value, location: location) }
        guard let entry = ConfigKey.byName[key] else {
            findings.append(Finding(location: location, message: "unknown key \"\(key)\"\(suggestion(for: key))"))
            return
        }
        do {
            try entry.apply(&configuration, value)
            origins[key] = location
            applications += 1
            applied[key] = applications
        } catch {
            findings.append(Finding(location: location, message: "\(key): \(error.message)"))
        }
    }

    private func suggestion(for key: String) -> String {
        let lowered = String(key.lowercased().map { $0 == "-" ? "_" : $0 })
        if lowered != key, ConfigKey.byName[lowered] != nil { return " (did you mean \(lowered)?)" }
        return ""
    }
}
