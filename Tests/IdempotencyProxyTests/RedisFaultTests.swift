import Foundation
import RedisClient
import TestSupport
import Testing

/// SPEC §3 rule 11 and bad data in Redis: each test has its own Redis to break.
@Suite struct RedisFaultTests {
    @Test func redisDownClosedGets503ThenRecoversWithoutRestart() async throws {
        let redis = try RedisServerProcess()
        let h = try await ProxyHarness.start(["redis_timeout": "300ms"], redisURL: redis.url)
        defer { Task { await h.stop() } }
        #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)

        redis.stop()
        let down = try await h.send("POST", "/charges", key: "during", body: "x")
        #expect(down.status == 503)
        #expect(down.isProblem)
        #expect(down.header("Retry-After") != nil)
        #expect(h.upstream.executions("/charges") == 1)
        #expect(try h.admin("/readyz").status == 503)
        #expect(try h.metric("redis_error") == 1)

        try redis.start()
        let clock = ContinuousClock()
        let start = clock.now
        // Every event loop reconnects on its own; count consecutive protected successes.
        var streak = 0
        var attempt = 0
        while clock.now - start < .seconds(5) && streak < 6 {
            attempt += 1
            let status = try await h.send("POST", "/charges", key: "after-\(attempt)", body: "x").status
            streak = status == 201 ? streak + 1 : 0
            if status != 201 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(streak == 6, "protection did not come back within 5 s")
        #expect(try await h.send("POST", "/charges", key: "after-\(attempt)", body: "x").replayed)
        #expect(try h.admin("/readyz").status == 200)
    }

    @Test func pausedRedisTimesOutInto503() async throws {
        let redis = try RedisServerProcess()
        let h = try await ProxyHarness.start(["redis_timeout": "300ms"], redisURL: redis.url)
        defer { Task { await h.stop() } }
        redis.pause()
        let r = try await h.send("POST", "/charges", key: "k", body: "x")
        redis.resume()
        #expect(r.status == 503)
        #expect(h.upstream.executions("/charges") == 0)
    }

    @Test func redisDownOpenForwardsUnprotected() async throws {
        let redis = try RedisServerProcess()
        let h = try await ProxyHarness.start(["redis_timeout": "300ms", "on_redis_error": "open"], redisURL: redis.url)
        defer { Task { await h.stop() } }
        redis.stop()
        let r1 = try await h.send("POST", "/charges", key: "k", body: "x")
        let r2 = try await h.send("POST", "/charges", key: "k", body: "x")
        #expect(r1.status == 201)
        #expect(r2.status == 201)
        #expect(!r2.replayed)
        #expect(h.upstream.executions("/charges") == 2)
        #expect(try h.metric("redis_error") == 2)
    }

    @Test func aMalformedRecordIsARedisErrorNotACrash() async throws {
        let h = try await ProxyHarness.start()
        defer { Task { await h.stop() } }
        _ = try await h.send("POST", "/charges", key: "k", body: "x")
        let client = try await TestRedisClient(port: SharedRedis.port)
        defer { Task { await client.close() } }
        guard case .array(let keys) = try await client.send(["KEYS", .string(h.prefix + "*")]), let key = keys.first?.string else {
            Issue.record("no record")
            return
        }
        _ = try await client.send(["SET", .string(key), "garbage from another writer"])
        let r = try await h.send("POST", "/charges", key: "k", body: "x")
        #expect(r.status == 503)
        #expect(r.isProblem)
        #expect(h.upstream.executions("/charges") == 1)
        // The proxy still serves other keys.
        #expect(try await h.send("POST", "/charges", key: "other", body: "x").status == 201)
    }

    @Test func waitForReplicasForwardsOnceAReplicaHoldsTheClaim() async throws {
        let primary = try RedisServerProcess(arguments: ["--repl-diskless-sync-delay", "0"])
        // Kept alive until the end of the test by the `withExtendedLifetime` below.
        let replica = try RedisServerProcess(arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])
        let admin = try await TestRedisClient(port: primary.port)
        defer { Task { await admin.close() } }
        // Wait until the replica is attached.
        _ = try await retrying(times: 100, pause: .milliseconds(50), while: { !$0.contains("state=online") }) {
            try await admin.send(["INFO", "replication"]).string ?? ""
        }
        let h = try await ProxyHarness.start(["redis_wait_replicas": "1", "redis_timeout": "2s"], redisURL: primary.url)
        defer { Task { await h.stop() } }
        #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
        #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
        #expect(h.upstream.executions("/charges") == 1)
        withExtendedLifetime(replica) {}
    }

    @Test func waitForReplicasWithoutReplicasReleasesAndGets503() async throws {
        let h = try await ProxyHarness.start(["redis_wait_replicas": "1", "redis_timeout": "200ms"])
        defer { Task { await h.stop() } }
        let r = try await h.send("POST", "/charges", key: "k", body: "x")
        #expect(r.status == 503)
        #expect(r.detail.contains("0 of 1"))
        #expect(h.upstream.executions("/charges") == 0)
        #expect(try await h.recordCount() == 0)
    }
}

@Suite struct RedisBlipTests {
    /// Redis is unreachable when the upstream's answer comes back: the completion is retried
    /// after the reconnect, so the response is stored and a retry gets the replay, not 409.
    @Test func aCompletionSurvivesARedisOutage() async throws {
        let relay = try TCPRelay(targetPort: SharedRedis.port)
        defer { relay.stop() }
        let h = try await ProxyHarness.start(redisURL: "redis://127.0.0.1:\(relay.port)/0")
        defer { Task { await h.stop() } }
        let commands = "idemproxy_redis_command_duration_seconds_count"
        let before = try h.metricLine(commands)
        let first = Task { try await h.send("POST", "/charges?delay=300", key: "k", body: "x") }
        try await h.upstream.waitUntilExecuting("/charges")
        relay.outage(true)
        // The claim was one command; the first try to store the answer is the next one.
        _ = try await retrying(times: 500, pause: .milliseconds(5), while: { $0 < before + 2 }) { try h.metricLine(commands) }
        relay.outage(false)
        #expect(try await first.value.status == 201)
        // The other event loop's connection may still be reconnecting: 503 means "retry later".
        let retry = try await retrying(times: 30, while: { $0.status == 503 }) {
            try await h.send("POST", "/charges?delay=300", key: "k", body: "x")
        }
        #expect(retry.replayed, "\(retry)")
        #expect(h.upstream.executions("/charges") == 1)
    }
}
