import DemoUpstreamKit
import Foundation
import IdempotencyCore
import LoadKit
import Logging
import NIOCore
import NIOSSL
import RedisClient
import TestSupport

@testable import IdempotencyProxy

/// A real proxy on a free port in front of a real `DemoUpstream`, with a real Redis; every
/// test gets its own key prefix so tests run in parallel on one Redis.
final class ProxyHarness: @unchecked Sendable {
    let upstream: DemoUpstream
    let server: ProxyServer
    let prefix: String
    let redisURL: String
    private let ownsUpstream: Bool

    var port: Int { server.localAddress.port! }
    var adminPort: Int { server.adminAddress!.port! }

    fileprivate init(upstream: DemoUpstream, server: ProxyServer, prefix: String, redisURL: String, ownsUpstream: Bool) {
        self.upstream = upstream
        self.server = server
        self.prefix = prefix
        self.redisURL = redisURL
        self.ownsUpstream = ownsUpstream
    }

    /// Both loops' store connections are up (a fresh proxy connects in the background); a
    /// proxy that cannot reach Redis fails the test rather than letting it test nothing.
    fileprivate func waitUntilReady() async throws {
        try await eventually("the proxy under test reaching Redis at \(redisURL) (and its PostgreSQL)", pause: .milliseconds(20)) {
            (try? admin("/readyz"))?.status == 200 && (try? admin("/readyz"))?.status == 200
        }
    }

    func stop() async {
        await server.shutdown(grace: .seconds(2))
        if ownsUpstream { await upstream.stop() }
    }

    /// One request on a new connection. The client waits up to 30 s for the answer, longer
    /// than any wait a test sets, so that a test fails on what it checks, not on a socket timeout.
    func request(
        _ method: String, _ path: String, key: String? = nil, headers: [(String, String)] = [], body: String = ""
    ) throws -> RawHTTPClient.Response {
        let client = try RawHTTPClient(port: port, timeoutSeconds: 30)
        var all = headers
        if let key { all.append(("Idempotency-Key", key)) }
        return try client.request(method, path, headers: all, body: Array(body.utf8))
    }

    func admin(_ path: String) throws -> RawHTTPClient.Response {
        try RawHTTPClient(port: adminPort).request("GET", path)
    }

    /// Records this test's proxy wrote to Redis.
    func recordCount() async throws -> Int {
        let redis = try await TestRedisClient(port: Self.port(of: redisURL))
        defer { Task { await redis.close() } }
        guard case .array(let keys) = try await redis.send(["KEYS", .string(prefix + "*")]) else { return -1 }
        return keys.count
    }

    func metric(_ outcome: String) throws -> Int {
        try counter("idemproxy_requests_total{outcome=\"\(outcome)\",route=\"default\"}")
    }

    /// A metric line's value by its full name and labels, e.g. `idemproxy_replays_total{store="postgres"}`;
    /// -1 when there is none.
    func counter(_ series: String) throws -> Int {
        metricValue(series, in: try admin("/metrics").text) ?? -1
    }

    static func port(of url: String) -> Int {
        Int(url.split(separator: ":").last?.split(separator: "/").first ?? "") ?? 6379
    }
}

/// Runs `body` against a fresh proxy, on a free port in front of `upstream` (by default a
/// `DemoUpstream` of its own) and `redisURL`, then stops the proxy and waits for it, whether
/// `body` returned or threw: no test leaves a proxy running behind it. A body whose only
/// `try`s are inside `#expect` spells out its type (`{ (h: ProxyHarness) async throws in`):
/// the macro's expansion does not see that the closure may throw.
func withProxy(
    _ settings: [String: String] = [:],
    upstream: DemoUpstream? = nil,
    upstreamURL: String? = nil,
    redisURL: String = SharedRedis.url,
    prefix: String? = nil,
    waitPollInterval: TimeAmount = .milliseconds(100),
    sweepInterval: TimeAmount = ProxyServer.sweepInterval,
    waitUntilReady: Bool = true,
    _ body: (ProxyHarness) async throws -> Void
) async throws {
    let upstreamServer: DemoUpstream
    if let upstream { upstreamServer = upstream } else { upstreamServer = try await DemoUpstream.start() }
    let prefix = prefix ?? "test:\(UUID().uuidString.prefix(8)):"
    var loader = ConfigLoader()
    let base: [String: String] = [
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "upstream": upstreamURL ?? "http://127.0.0.1:\(upstreamServer.port)",
        "redis_url": redisURL,
        "key_prefix": prefix,
        "upstream_timeout": "5s",
        "lock_ttl": "10s",
        // Lines on the test's own standard error only while debugging (AccessLogTests reads the binary's).
        "access_log": ProcessInfo.processInfo.environment["IDEMPROXY_TEST_LOG"] == nil ? "off" : "protected",
    ]
    for (key, value) in base.merging(settings, uniquingKeysWith: { $1 }) { loader.applySet("\(key)=\(value)") }
    let configuration = try loader.finish().get()
    // IDEMPROXY_TEST_LOG=debug shows the proxies' logs while debugging a test.
    var logger = Logger(label: "test") { label in
        guard ProcessInfo.processInfo.environment["IDEMPROXY_TEST_LOG"] != nil else { return SwiftLogNoOpLogHandler() }
        return StreamLogHandler.standardError(label: label)
    }
    logger.logLevel = Logger.Level(rawValue: ProcessInfo.processInfo.environment["IDEMPROXY_TEST_LOG"] ?? "") ?? .info
    let server = try await ProxyServer.start(
        configuration: configuration, logger: logger, threads: 2, waitPollInterval: waitPollInterval,
        sweepInterval: sweepInterval)
    let harness = ProxyHarness(
        upstream: upstreamServer, server: server, prefix: prefix, redisURL: redisURL, ownsUpstream: upstream == nil)
    try await running({
        if waitUntilReady { try await harness.waitUntilReady() }
        try await body(harness)
    }, then: harness.stop)
}

/// Runs `body` with a `DemoUpstream` of its own (serving HTTPS with `tls`), stopped
/// afterwards whether `body` returned or threw.
func withDemoUpstream(port: Int = 0, tls: NIOSSLContext? = nil, _ body: (DemoUpstream) async throws -> Void) async throws {
    let upstream = try await DemoUpstream.start(port: port, tls: tls)
    try await running({ try await body(upstream) }, then: upstream.stop)
}

/// Runs `body`, then `cleanup`, whether `body` returned or threw.
private func running(_ body: () async throws -> Void, then cleanup: () async -> Void) async throws {
    do {
        try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
}

/// Runs blocking work off the cooperative pool, so waiting on sockets cannot starve other tests.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}

/// Runs a program to its end, off the test's thread: its exit status (nil if it outlived
/// `timeout`) and what it printed.
func runToEnd(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 20
) async throws -> (status: Int32?, stdout: String, stderr: String) {
    try await blocking {
        let child = try ChildProcess(executable, arguments, environment: environment)
        let status = child.wait(timeout: timeout)
        return (status, child.stdout, child.stderr)
    }
}

extension ProxyHarness {
    /// The exactly-once load through this proxy: fresh keys, 8 clients, a tenth of the answers
    /// lost and retried, the upstream's charges checked against the keys.
    func exactlyOnceLoad(requests: Int, maxRetries: Int) -> LoadOptions {
        var options = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: port, path: "/charges"))
        options.requests = requests
        options.concurrency = 8
        options.loseRate = 0.1
        options.maxRetries = maxRetries
        options.statsTarget = HTTPTarget(host: "127.0.0.1", port: upstream.port, path: "/stats")
        return options
    }

    /// Sends protected requests, each with a fresh key, until `count` in a row get 201 or
    /// `limit` passes: every event loop has its stores back. The streak reached, and the key
    /// of the last request.
    func protectedStreak(_ count: Int, within limit: Duration) async throws -> (streak: Int, lastKey: String) {
        let clock = ContinuousClock()
        let start = clock.now
        var streak = 0
        var attempt = 0
        while clock.now - start < limit && streak < count {
            attempt += 1
            let status = try await send("POST", "/charges", key: "after-\(attempt)", body: "x").status
            streak = status == 201 ? streak + 1 : 0
            if status != 201 { try await Task.sleep(for: .milliseconds(50)) }
        }
        return (streak, "after-\(attempt)")
    }

    /// `request` off the cooperative pool.
    func send(
        _ method: String, _ path: String, key: String? = nil, headers: [(String, String)] = [], body: String = ""
    ) async throws -> RawHTTPClient.Response {
        try await blocking { try self.request(method, path, key: key, headers: headers, body: body) }
    }
}

extension RawHTTPClient.Response {
    var isProblem: Bool { header("content-type") == "application/problem+json" }
    /// The `detail` member of a problem body.
    var detail: String {
        guard let range = text.range(of: "\"detail\":\"") else { return "" }
        return String(text[range.upperBound...].prefix { $0 != "\"" })
    }
    var replayed: Bool { header("Idempotent-Replayed") == "true" }
}

extension DemoUpstream {
    /// Waits until the upstream has started executing `count` requests for `path`: the moment a
    /// race test may send its competing request. It throws rather than let the race begin
    /// early, and it allows 30 s because a suite run in parallel on two cores can be that slow.
    func waitUntilExecuting(_ path: String, count: Int = 1) async throws {
        try await eventually("\(path) executing \(count) time(s)", pause: .milliseconds(5)) { executions(path) >= count }
    }
}

/// The value of the metric line of `series` (its full name and labels) in a Prometheus text.
func metricValue(_ series: String, in text: String) -> Int? {
    let line = text.split(separator: "\n").first { $0.hasPrefix(series + " ") }
    return line.flatMap { Int($0.split(separator: " ").last ?? "") }
}
