import Foundation
import IdempotencyCore
import LoadKit
import NIOPosix
import RedisClient
import TestSupport
import Testing

/// docs/behaviour.md, "Redis Sentinel": the proxy finds the master through real Sentinels and
/// follows a failover without a restart.
@Suite struct RedisSentinelTests {
    static func settings(_ extra: [String: String] = [:]) -> [String: String] {
        ["redis_sentinel": RedisSentinelGroup.masterName, "redis_timeout": "500ms"].merging(extra) { $1 }
    }

    /// Waits until the Sentinels name another master than `port`; the moment they do.
    static func waitForSwitch(_ group: RedisSentinelGroup, from port: Int) async throws -> ContinuousClock.Instant {
        try await eventually("the Sentinels switching the master away from \(port)", pause: .milliseconds(20)) {
            guard let now = try await group.masterPort() else { return false }
            return now != port
        }
        return ContinuousClock.now
    }

    /// Protected requests (to `/status/201`), each with a fresh key, until one gets 201 with its record on the
    /// master at `masterPort` (with PostgreSQL behind, a 201 alone may come from PostgreSQL):
    /// how long after `since`.
    static func firstProtected201(
        _ h: ProxyHarness, on masterPort: Int, since: ContinuousClock.Instant, tag: String
    ) async throws -> Duration {
        let master = try await TestRedisClient(port: masterPort, timeout: .seconds(2))
        var attempt = 0
        try await eventually("a protected 201 recorded on the new master", within: 30, pause: .milliseconds(10)) {
            attempt += 1
            let key = "\(tag)-\(attempt)"
            // Not a charge: the load's count of charges stays its own.
            guard try await h.send("POST", "/status/201", key: key, body: "x").status == 201 else { return false }
            let record = RequestDigest.recordKey(prefix: h.prefix, scope: RequestDigest.scope(headerNames: ["Authorization"]) { _ in [] }, key: key)
            return try await master.send(["EXISTS", .string(record)]) == .integer(1)
        }
        await master.close()
        return ContinuousClock.now - since
    }

    @Test func aPrimaryKilledUnderTheExactlyOnceLoadIsFollowedWithNoDuplicate() async throws {
        let group = try RedisSentinelGroup()
        try await group.waitUntilSettled()
        let table = TestTable()
        try await withProxy(table.settings(Self.settings()), redisURL: group.url) { h in
            #expect(try h.admin("/readyz").text.contains("master 127.0.0.1:\(group.primary.port)"))
            async let report = LoadRunner(options: h.exactlyOnceLoad(requests: 2_000, maxRetries: 60))
                .run(group: MultiThreadedEventLoopGroup.singleton)
            let chargedBefore = try await retrying(times: 1_000, pause: .milliseconds(10), while: { $0 < 300 }) {
                h.upstream.snapshot().charges
            }
            let oldPort = group.primary.port
            group.primary.stop()
            let killed = ContinuousClock.now
            let switched = try await Self.waitForSwitch(group, from: oldPort)
            let gap = try await Self.firstProtected201(h, on: group.replica.port, since: switched, tag: "after-switch")
            print("Sentinel failover (SIGKILL): the Sentinels switched \(switched - killed) after the kill; first protected 201 \(gap) after the switch")
            #expect(gap < .seconds(5))
            // Each event loop follows on its own; /readyz asks whichever serves it.
            try await eventually("/readyz naming the new master", within: 5, pause: .milliseconds(20)) {
                try h.admin("/readyz").text.contains("master 127.0.0.1:\(group.replica.port)")
            }

            // The old primary comes back after 5 s, empty, and is made a replica.
            try await Task.sleep(until: killed + .seconds(5))
            try group.primary.start()
            let result = try await report
            #expect(chargedBefore < 2_000, "the primary was killed mid-run")
            #expect(result.duplicates == 0)
            #expect(result.mismatches == 0)
            #expect(result.unanswered == 0)
            #expect(result.passed)
            #expect(h.upstream.snapshot().charges == 2_000)

            try await eventually("the old primary made a replica", pause: .milliseconds(200)) {
                try await group.info(port: oldPort, section: "replication").contains("role:slave")
            }
            for i in 0..<20 { #expect(try await h.send("POST", "/charges", key: "late-\(i)", body: "x").status == 201) }
            // No script ever ran on it since it came back: replication carries the effects,
            // so an EVALSHA there could only have come from a proxy writing to it.
            let commands = try await group.info(port: oldPort, section: "commandstats")
            #expect(!commands.contains("cmdstat_evalsha") && !commands.contains("cmdstat_eval:"), "\(commands)")
        }
    }

    @Test func aPlannedFailoverWithOneSentinelDownIsFollowedWithin5s() async throws {
        let group = try RedisSentinelGroup()
        try await group.waitUntilSettled()
        // The first Sentinel of redis_url is down from the start: the others answer.
        group.sentinels[0].stop()
        try await withProxy(Self.settings(), redisURL: group.url) { h in
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)
            let oldPort = group.primary.port
            #expect(try await group.sentinels[1].send(["SENTINEL", "FAILOVER", .string(RedisSentinelGroup.masterName)]) == .status("OK"))
            let switched = try await Self.waitForSwitch(group, from: oldPort)
            let gap = try await Self.firstProtected201(h, on: group.replica.port, since: switched, tag: "after")
            print("Sentinel failover (SENTINEL FAILOVER): first protected 201 \(gap) after the switch")
            #expect(gap < .seconds(5))
            // Each event loop follows on its own; /readyz asks whichever serves it.
            try await eventually("/readyz naming the new master", within: 5, pause: .milliseconds(20)) {
                try h.admin("/readyz").text.contains("master 127.0.0.1:\(group.replica.port)")
            }
            // What the old master held was replicated: the first key is replayed from the new one.
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func rediss_toTheSentinelsAndTheMasterFollowsAPlannedFailover() async throws {
        let certificates = try TestCertificates()
        let group = try RedisSentinelGroup(tls: certificates)
        try await group.waitUntilSettled()
        try await withProxy(Self.settings(["redis_tls_ca_file": certificates.caFile]), redisURL: group.url) { h in
            #expect(h.redisURL.hasPrefix("rediss://"))
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            let oldPort = group.primary.port
            #expect(try await group.sentinels[0].send(["SENTINEL", "FAILOVER", .string(RedisSentinelGroup.masterName)]) == .status("OK"))
            let switched = try await Self.waitForSwitch(group, from: oldPort)
            // Without PostgreSQL a 201 needs Redis: the new master, over TLS.
            var attempt = 0
            try await eventually("a protected 201 after the switch", pause: .milliseconds(10)) {
                attempt += 1
                return try await h.send("POST", "/status/201", key: "after-\(attempt)", body: "x").status == 201
            }
            // Each event loop follows on its own; /readyz asks whichever serves it.
            try await eventually("/readyz naming the new master", within: 5, pause: .milliseconds(20)) {
                try h.admin("/readyz").text.contains("master 127.0.0.1:\(group.replica.port)")
            }
            print("Sentinel failover over TLS: /readyz named the new master \(ContinuousClock.now - switched) after the switch")
            #expect(ContinuousClock.now - switched < .seconds(5))
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func redisWaitReplicasWithSentinelWaitsForTheReplica() async throws {
        let group = try RedisSentinelGroup()
        try await group.waitUntilSettled()
        try await withProxy(Self.settings(["redis_wait_replicas": "1"]), redisURL: group.url) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            let replica = try await TestRedisClient(port: group.replica.port)
            let keys = try await replica.send(["KEYS", .string(h.prefix + "*")])
            await replica.close()
            guard case .array(let found) = keys else {
                Issue.record("KEYS: \(keys)")
                return
            }
            #expect(found.count == 1, "the replica holds the record")
        }
    }

    @Test func noMasterKnownIs503WithoutPostgresAndNotReady() async throws {
        // Sentinels that monitor no master of this name.
        let group = try RedisSentinelGroup()
        try await withProxy(Self.settings(["redis_sentinel": "nosuchmaster"]), redisURL: group.url, waitUntilReady: false) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(try h.admin("/readyz").status == 503)
            #expect(try h.admin("/readyz").text.contains("no Redis master known from the Sentinels"))
            #expect(h.upstream.executions("/charges") == 0)
        }
    }
}
