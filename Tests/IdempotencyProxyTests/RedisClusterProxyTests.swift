import DemoUpstreamKit
import Foundation
import IdempotencyCore
import RedisClient
import Testing
import TestSupport

/// The proxy with `redis_cluster = true` in front of a real three-primary Redis Cluster.
@Suite(.serialized) struct RedisClusterProxyTests {
    @Test func claimsReplaysAndMismatchesAcrossTheCluster() async throws {
        let cluster = try await RedisClusterProcess()
        try await withProxy(["redis_cluster": "true"], redisURL: cluster.seedsURL) { h in
            #expect(try h.admin("/readyz").status == 200)
            let keys = (0..<24).map { "order-\($0)" }
            var firsts: [String: String] = [:]
            for key in keys {
                let first = try await h.send("POST", "/charges", key: key, body: key)
                #expect(first.status == 201 && !first.replayed)
                firsts[key] = first.text
            }
            for key in keys {
                let retry = try await h.send("POST", "/charges", key: key, body: key)
                #expect(retry.replayed && retry.text == firsts[key])
            }
            #expect(h.upstream.executions("/charges") == keys.count)
            #expect(try await h.send("POST", "/charges", key: keys[0], body: "another body").status == 422)
            // The records are spread over the primaries, each on the node that serves its slot.
            var perNode: [Int: Int] = [:]
            for node in cluster.nodes {
                let client = try await TestRedisClient(port: node.port)
                guard case .array(let found) = try await client.send(["KEYS", .string(h.prefix + "*")]) else { continue }
                await client.close()
                perNode[node.port] = found.count
                for case .bulk(let name) in found {
                    #expect(cluster.port(servingSlot: HashSlot.of(name.readableBytesView)) == node.port)
                }
            }
            #expect(perNode.values.reduce(0, +) == keys.count)
            #expect(perNode.values.filter { $0 > 0 }.count >= 2)
        }
    }

    /// A cluster with a password: the first seed's credentials open every node's connection
    /// (each primary, and the subscriber).
    @Test func theSeedsCredentialsOpenEveryNode() async throws {
        let cluster = try await RedisClusterProcess(password: "s3cret")
        try await withProxy(["redis_cluster": "true", "inflight_wait": "1s"], redisURL: cluster.seedsURL) { (h: ProxyHarness) async throws in
            #expect(try h.admin("/readyz").status == 200)
            for (key, _) in Self.keys(prefix: h.prefix, in: cluster).prefix(12) {
                #expect(try await h.send("POST", "/charges", key: key, body: "x").status == 201)
                #expect(try await h.send("POST", "/charges", key: key, body: "x").replayed)
            }
            #expect(h.upstream.executions("/charges") == 12)
        }
    }

    /// Waiters are woken by the `complete` script's `SPUBLISH` on the record's shard channel,
    /// heard through a subscription on the primary that serves the record; no message goes to
    /// the other nodes (`INFO commandstats`: one SPUBLISH per node, no PUBLISH). With the
    /// safety-net poll stretched beyond the wait, only the message can wake a waiter before its
    /// 3 s deadline (the first completes after ~400 ms).
    @Test func waitingRetriesAreWokenOnTheirShard() async throws {
        let cluster = try await RedisClusterProcess()
        try await withProxy(
            ["redis_cluster": "true", "inflight_wait": "3s"], redisURL: cluster.seedsURL, waitPollInterval: .seconds(60)) { h in
            let keys = cluster.nodes.map { node in Self.keys(prefix: h.prefix, in: cluster).first { $0.port == node.port }!.key }
            try await Self.expectWaitersWoken(keys: keys, h)
            for node in cluster.nodes {
                let probe = try await cluster.client(node)
                #expect(try await probe.calls(of: "SPUBLISH") == 1)
                #expect(try await probe.calls(of: "PUBLISH") == 0)
                await probe.close()
            }
        }
    }

    /// The subscriptions do not hang on the first seed: with it down, waiters on records the
    /// other primaries serve are still woken by messages.
    @Test func waitersAreWokenWithTheFirstSeedDown() async throws {
        let cluster = try await RedisClusterProcess(nodeTimeoutMs: 15_000)
        try await withProxy(
            ["redis_cluster": "true", "inflight_wait": "3s"], redisURL: cluster.seedsURL, waitPollInterval: .seconds(60)) { h in
            #expect(try h.admin("/readyz").status == 200)
            cluster.nodes[0].stop()
            let keys = Self.keys(prefix: h.prefix, in: cluster).filter { $0.port != cluster.nodes[0].port }.map(\.key)
            try await Self.expectWaitersWoken(keys: Array(keys.prefix(2)), h)
        }
    }

    /// For each key: a first request that takes 400 ms, and a retry sent while it runs that
    /// must get its replay well before the retry's 3 s wait ends.
    static func expectWaitersWoken(keys: [String], _ h: ProxyHarness) async throws {
        for (index, key) in keys.enumerated() {
            let slow = Task { try await h.send("POST", "/charges?delay=400", key: key, body: "x") }
            try await h.upstream.waitUntilExecuting("/charges", count: index + 1)
            let clock = ContinuousClock()
            let sent = clock.now
            let retry = try await h.send("POST", "/charges?delay=400", key: key, body: "x")
            #expect(clock.now - sent < .seconds(2), "the waiter for \(key) was not woken by the completion")
            #expect(retry.status == 201 && retry.replayed)
            #expect(try await retry.text == slow.value.text)
        }
        #expect(h.upstream.executions("/charges") == keys.count)
    }

    /// A primary that goes away takes only its own slots with it (503, `/readyz` 503), and its
    /// keys are protected again soon after it is back (docs/behaviour.md §3, rule 11: within 5 s).
    @Test func aPrimaryDownFailsOnlyItsSlotsUntilItIsBack() async throws {
        let cluster = try await RedisClusterProcess()
        try await withProxy(["redis_cluster": "true"], redisURL: cluster.seedsURL) { h in
            let down = cluster.nodes[2]
            let keys = Self.keys(prefix: h.prefix, in: cluster)
            let onDown = try #require(keys.first { $0.port == down.port }?.key)
            let elsewhere = try #require(keys.first { $0.port != down.port }?.key)
            down.stop()
            let refused = try await h.send("POST", "/charges", key: onDown, body: "x")
            #expect(refused.status == 503 && refused.header("Retry-After") != nil)
            #expect(try await h.send("POST", "/charges", key: elsewhere, body: "x").status == 201)
            #expect(try h.admin("/readyz").status == 503)
            try down.start()
            let clock = ContinuousClock()
            let restarted = clock.now
            var status = 0
            while clock.now - restarted < .seconds(5) {
                status = try await h.send("POST", "/charges", key: onDown, body: "x").status
                if status == 201 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(status == 201)
            #expect(try await h.send("POST", "/charges", key: onDown, body: "x").replayed)
            #expect(try h.admin("/readyz").status == 200)
            #expect(h.upstream.executions("/charges") == 2)
        }
    }

    /// A primary fails and its replica takes over. With `redis_wait_replicas = 1` a claim
    /// reaches the replica before the upstream acts; once the cluster has promoted the replica,
    /// the proxy finds it (the slot map is asked for again after the lost connection), and a
    /// response stored before the failover is replayed from it.
    @Test func aFailoverIsFollowedAndStoredResponsesSurviveIt() async throws {
        let cluster = try await RedisClusterProcess(withReplicas: true, nodeTimeoutMs: 1000)
        try await withDemoUpstream { upstream in
            let prefix = "test:\(UUID().uuidString.prefix(8)):"
            try await withProxy(
                ["redis_cluster": "true", "redis_wait_replicas": "1"], upstream: upstream, redisURL: cluster.seedsURL, prefix: prefix) { (replicated: ProxyHarness) async throws in
                // After the failover the promoted replica has no replica of its own, so this one does not WAIT.
                try await withProxy(["redis_cluster": "true"], upstream: upstream, redisURL: cluster.seedsURL, prefix: prefix) { (h: ProxyHarness) async throws in
                    let failing = cluster.nodes[2]
                    let keys = Self.keys(prefix: prefix, in: cluster).filter { $0.port == failing.port }.map(\.key)
                    let first = try await replicated.send("POST", "/charges", key: keys[0], body: "x")
                    #expect(first.status == 201)
                    // The completion reaches the replica asynchronously: wait until it holds the response.
                    let scope = RequestDigest.scope(headerNames: ["Authorization"]) { _ in [] }
                    let record = RequestDigest.recordKey(prefix: prefix, scope: scope, key: keys[0])
                    let replica = try await TestRedisClient(port: cluster.replicas[2].port)
                    defer { Task { await replica.close() } }
                    for _ in 0..<1_500 {
                        let read = try await replica.pipeline([["READONLY"], ["GET", .string(record)]])
                        if case .success(.bulk(let value)) = read[1], value.getInteger(at: value.readerIndex + 1, as: UInt8.self) == 2 { break }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    failing.stop()
                    let clock = ContinuousClock()
                    let stopped = clock.now
                    var status = 0
                    while clock.now - stopped < .seconds(20) {
                        status = try await h.send("POST", "/charges", key: keys[1], body: "y").status
                        if status == 201 { break }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    #expect(status == 201, "no new primary for the failed one's slots")
                    let replay = try await h.send("POST", "/charges", key: keys[0], body: "x")
                    #expect(replay.replayed && replay.body == first.body)
                    #expect(upstream.executions("/charges") == 2)
                }
            }
        }
    }

    /// Idempotency keys with the port of the primary their record lives on.
    static func keys(prefix: String, in cluster: RedisClusterProcess) -> [(key: String, port: Int)] {
        let scope = RequestDigest.scope(headerNames: ["Authorization"]) { _ in [] }
        return (0..<64).map { index in
            let key = "key-\(index)"
            let record = RequestDigest.recordKey(prefix: prefix, scope: scope, key: key)
            return (key, cluster.port(servingSlot: HashSlot.of(Array(record.utf8))))
        }
    }
}
