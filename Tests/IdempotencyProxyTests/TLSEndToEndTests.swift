import LoadKit
import NIOPosix
import NIOSSL
import TestSupport
import Testing

/// The exactly-once load with TLS on every hop a deployment encrypts: clients to `listen` over
/// HTTPS, the proxy to Redis over `rediss://`.
@Suite struct TLSEndToEndTests {
    @Test func exactlyOnceThroughHTTPSWithRedissBehind() async throws {
        let certificates = try TestCertificates()
        let redis = try RedisServerProcess(tls: certificates)
        let settings = [
            "tls_cert_file": certificates.serverCertFile, "tls_key_file": certificates.serverKeyFile,
            "redis_tls_ca_file": certificates.caFile,
        ]
        try await withProxy(settings, redisURL: redis.url) { h in
            var options = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: h.port, path: "/charges", tls: true))
            options.tls = try certificates.clientContext(trusting: certificates.caFile)
            options.requests = 400
            options.concurrency = 8
            options.loseRate = 0.25
            options.maxRetries = 30
            options.statsTarget = HTTPTarget(host: "127.0.0.1", port: h.upstream.port, path: "/stats")
            let report = try await LoadRunner(options: options).run(group: MultiThreadedEventLoopGroup.singleton)
            #expect(report.losses > 0)
            #expect(report.replays > 0)
            #expect(report.duplicates == 0)
            #expect(report.unanswered == 0)
            #expect(report.passed)
            #expect(h.upstream.snapshot().charges == 400)
        }
    }
}
