import Foundation
import RedisClient
import TestSupport
import Testing

/// docs/behaviour.md §3, rule 11 and bad data in Redis: each test has its own Redis to break.
@Suite struct RedisFaultTests {
    @Test func redisDownClosedGets503ThenRecoversWithoutRestart() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(["redis_timeout": "300ms"], redisURL: redis.url) { h in
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
            // Every event loop reconnects on its own; count consecutive protected successes.
            let (streak, lastKey) = try await h.protectedStreak(6, within: .seconds(5))
            #expect(streak == 6, "protection did not come back within 5 s")
            #expect(try await h.send("POST", "/charges", key: lastKey, body: "x").replayed)
            #expect(try h.admin("/readyz").status == 200)
        }
    }

    @Test func pausedRedisTimesOutInto503() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(["redis_timeout": "300ms"], redisURL: redis.url) { h in
            redis.pause()
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            redis.resume()
            #expect(r.status == 503)
            #expect(h.upstream.executions("/charges") == 0)
        }
    }

    /// A 503 means that Redis did not answer within `redis_timeout`: once Redis is back, no
    /// request is refused because its event loop's connection was still in its reconnect
    /// backoff (which had grown to most of a second while Redis was down).
    @Test func afterARestartNoRequestIsRefusedWhileItsLoopWaitsToReconnect() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(["redis_timeout": "500ms"], redisURL: redis.url) { h in
            redis.stop()
            // Both loops find Redis gone, then keep failing to reconnect: the backoff grows.
            for i in 0..<4 { #expect(try await h.send("POST", "/charges", key: "down-\(i)", body: "x").status == 503) }
            try await Task.sleep(for: .milliseconds(1_500))
            try redis.start()
            var statuses: [Int] = []
            for i in 0..<12 { statuses.append(try await h.send("POST", "/charges", key: "back-\(i)", body: "x").status) }
            #expect(statuses == Array(repeating: 201, count: 12))
        }
    }

    @Test func afterAPauseNoRequestIsRefusedOnceRedisAnswersAgain() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(["redis_timeout": "500ms"], redisURL: redis.url) { h in
            redis.pause()
            // Concurrent requests land on both loops: each loop's connection times out.
            let during = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<4 { group.addTask { try await h.send("POST", "/charges", key: "paused-\(i)", body: "x").status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            redis.resume()
            #expect(during == Array(repeating: 503, count: 4))
            var statuses: [Int] = []
            for i in 0..<12 { statuses.append(try await h.send("POST", "/charges", key: "resumed-\(i)", body: "x").status) }
            #expect(statuses == Array(repeating: 201, count: 12))
        }
    }

    @Test func redisDownOpenForwardsUnprotected() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(["redis_timeout": "300ms", "on_redis_error": "open"], redisURL: redis.url) { h in
            redis.stop()
            let r1 = try await h.send("POST", "/charges", key: "k", body: "x")
            let r2 = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r1.status == 201)
            #expect(r2.status == 201)
            #expect(!r2.replayed)
            #expect(h.upstream.executions("/charges") == 2)
            #expect(try h.metric("redis_error") == 2)
        }
    }

    @Test func aMalformedRecordIsARedisErrorNotACrash() async throws {
        try await withProxy { h in
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
    }

    @Test func waitForReplicasForwardsOnceAReplicaHoldsTheClaim() async throws {
        let primary = try RedisServerProcess(arguments: ["--repl-diskless-sync-delay", "0"])
        // Kept alive until the end of the test by the `withExtendedLifetime` below.
        let replica = try RedisServerProcess(arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])
        let admin = try await TestRedisClient(port: primary.port)
        defer { Task { await admin.close() } }
        // Wait until the replica is attached.
        _ = try await retrying(times: 600, pause: .milliseconds(50), while: { !$0.contains("state=online") }) {
            try await admin.send(["INFO", "replication"]).string ?? ""
        }
        try await withProxy(["redis_wait_replicas": "1", "redis_timeout": "2s"], redisURL: primary.url) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            #expect(h.upstream.executions("/charges") == 1)
            withExtendedLifetime(replica) {}
        }
    }

    @Test func waitForReplicasWithoutReplicasReleasesAndGets503() async throws {
        try await withProxy(["redis_wait_replicas": "1", "redis_timeout": "1s"]) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(r.detail.contains("0 of 1"))
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
        }
    }
}

@Suite struct RedisBlipTests {
    /// Redis is unreachable when the upstream's answer comes back, and stays so for 1.5 s: the
    /// completion is retried after the reconnect, so the response is stored and a retry gets
    /// the replay, not 409 (and, after lock_ttl, a second run).
    @Test func aCompletionSurvivesARedisOutage() async throws {
        let relay = try TCPRelay(targetPort: SharedRedis.port)
        defer { relay.stop() }
        try await withProxy(redisURL: "redis://127.0.0.1:\(relay.port)/0") { h in
            let commands = "idemproxy_redis_command_duration_seconds_count"
            let before = try h.counter(commands)
            let first = Task { try await h.send("POST", "/charges?delay=300", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges")
            relay.outage(true)
            // The claim was one command; the first try to store the answer is the next one.
            let sent = try await retrying(times: 2_000, pause: .milliseconds(5), while: { $0 < before + 2 }) { try h.counter(commands) }
            try #require(sent >= before + 2, "the first try to store the answer was not made")
            try await Task.sleep(for: .milliseconds(1_500))
            relay.outage(false)
            #expect(try await first.value.status == 201)
            // Whichever loop it lands on, a connection that is still down reconnects for it.
            let retry = try await h.send("POST", "/charges?delay=300", key: "k", body: "x")
            #expect(retry.replayed, "\(retry)")
            #expect(h.upstream.executions("/charges") == 1)
        }
    }
}
