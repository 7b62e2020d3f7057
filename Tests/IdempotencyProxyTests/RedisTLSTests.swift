import Foundation
import RedisClient
import NIOSSL
import NIOPosix
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

/// docs/behaviour.md, TLS for Redis: `rediss://` against Debian's `redis-server` serving TLS only, with
/// certificates `openssl` made for the test.
@Suite struct RedisTLSTests {
    private static func expectProtected(_ h: ProxyHarness, key: String = "k") async throws {
        let first = try await h.send("POST", "/charges", key: key, body: "x")
        #expect(first.status == 201)
        let retry = try await h.send("POST", "/charges", key: key, body: "x")
        #expect(retry.replayed)
        #expect(retry.body == first.body)
    }

    @Test func rediss_verifiedAgainstItsCA() async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates)
        try await withProxy(["redis_tls_ca_file": certificates.caFile], redisURL: redis.url) { h in
            try await Self.expectProtected(h)
            #expect(try h.admin("/readyz").status == 200)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func rediss_withTheClientCertificateAServerDemands() async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates, clientAuth: true)
        let settings = [
            "redis_tls_ca_file": certificates.caFile, "redis_tls_cert_file": certificates.clientCertFile,
            "redis_tls_key_file": certificates.clientKeyFile,
        ]
        try await withProxy(settings, redisURL: redis.url) { h in try await Self.expectProtected(h) }
        // Without it, the server refuses the handshake: 503, never an unprotected request.
        try await withProxy(["redis_tls_ca_file": certificates.caFile], redisURL: redis.url, waitUntilReady: false) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(h.upstream.executions("/charges") == 0)
        }
    }

    /// Never a silent downgrade: a server that does not verify is a Redis that does not answer.
    @Test(arguments: ["other-ca", "system"])
    func rediss_aServerThatDoesNotVerifyIsUnavailable(_ trust: String) async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates)
        let settings = trust == "system" ? [:] : ["redis_tls_ca_file": certificates.otherCAFile]
        try await withProxy(settings.merging(["redis_timeout": "300ms"]) { $1 }, redisURL: redis.url, waitUntilReady: false) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(r.isProblem)
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try h.admin("/readyz").status == 503)
        }
    }

    @Test func rediss_wakesWaitingRetriesOverPubSubAndReconnectsAfterARestart() async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates)
        // A 10 s poll: only a Pub/Sub message (over its own TLS connection) can wake the retry in time.
        try await withProxy(
            ["redis_tls_ca_file": certificates.caFile, "inflight_wait": "5s"], redisURL: redis.url,
            waitPollInterval: .seconds(10)
        ) { h in
            try await Self.expectWaitingRetryWoken(h, executions: 1)
            redis.stop()
            try redis.start()
            #expect(try await h.protectedStreak(4, within: .seconds(10)).streak == 4, "protection over TLS came back after the restart")
        }
    }

    /// A retry of a request in flight (300 ms at the upstream, the `executions`-th) is
    /// replayed within 3 s: with a 10 s poll, only a Pub/Sub message wakes it in time.
    private static func expectWaitingRetryWoken(_ h: ProxyHarness, executions: Int) async throws {
        async let first = h.send("POST", "/charges?delay=300", key: "w", body: "x")
        try await h.upstream.waitUntilExecuting("/charges", count: executions)
        let clock = ContinuousClock()
        let start = clock.now
        let waiting = try await h.send("POST", "/charges?delay=300", key: "w", body: "x")
        #expect(waiting.replayed)
        #expect(clock.now - start < .seconds(3))
        #expect(try await waiting.body == first.body)
    }

    @Test func rediss_aClusterWithEveryNodeAndShardChannelOverTLS() async throws {
        let certificates = try TestCertificates()
        let cluster = try await RedisClusterProcess(tls: certificates)
        let settings = ["redis_cluster": "true", "redis_tls_ca_file": certificates.caFile, "inflight_wait": "5s"]
        try await withProxy(settings, redisURL: cluster.seedsURL, waitPollInterval: .seconds(10)) { h in
            // Keys on every primary: nodes found through CLUSTER SLOTS are reached over TLS too.
            for i in 0..<12 { try await Self.expectProtected(h, key: "key-\(i)") }
            #expect(h.upstream.executions("/charges") == 12)
            // A waiting retry is woken by SPUBLISH on its shard, over TLS.
            try await Self.expectWaitingRetryWoken(h, executions: 13)
        }
    }

    /// A server whose certificate does not verify never counts as up: every attempt fails and
    /// the reconnect backoff grows, instead of a connection that comes up and drops at once.
    @Test func aServerThatDoesNotVerifyIsNeverUp() async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates)
        let configuration = RedisConfiguration(
            address: .tcp(host: "127.0.0.1", port: redis.port), commandTimeout: .milliseconds(300),
            tls: RedisTLS(context: try certificates.clientContext(trusting: certificates.otherCAFile)))
        let events = NIOLockedValueBox<[Bool]>([])
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let connection = try await loop.submit {
            let connection = RedisConnection(configuration: configuration, eventLoop: loop)
            connection.onAvailabilityChange = { _, available, _ in events.withLockedValue { $0.append(available) } }
            return NIOLoopBound(connection, eventLoop: loop)
        }.get()
        try await Task.sleep(for: .seconds(1))
        let reply = try? await loop.flatSubmit { connection.value.send(["PING"]) }.get()
        try await loop.submit { connection.value.close() }.get()
        #expect(reply == nil)
        let seen = events.withLockedValue { $0 }
        #expect(!seen.contains(true), "never up")
        #expect(seen.count < 15, "\(seen.count) attempts in a second: the backoff grew")
    }
}
