import DemoUpstreamKit
import Foundation
import IdempotencyCore
import IdempotencyScripts
import NIOCore
import RedisClient
import TestSupport
import Testing

@testable import IdempotencyProxy

/// Exactly-once under races: simultaneous duplicates, several proxies, expired leases.
@Suite struct ConcurrencyTests {
    /// Sends `count` identical requests at the same moment, each on its own connection.
    private func burst(_ h: ProxyHarness, count: Int, path: String, key: String) async throws -> [RawHTTPClient.Response] {
        try await blocking {
            // A thread per request: all of them in flight at once, whatever the number of cores.
            let clients = try (0..<count).map { _ in try RawHTTPClient(port: h.port) }
            let results = NIOLockedResults(count: count)
            let done = DispatchGroup()
            for i in 0..<count {
                done.enter()
                Thread {
                    results.set(i, Result { try clients[i].request("POST", path, headers: [("Idempotency-Key", key)], body: Array("amount=1".utf8)) })
                    done.leave()
                }.start()
            }
            done.wait()
            return try results.all()
        }
    }

    @Test func fiftySimultaneousDuplicatesRunOnceAndTheRestGet409() async throws {
        try await withProxy { h in
            let responses = try await burst(h, count: 50, path: "/charges?delay=3000", key: "dup")
            #expect(h.upstream.executions("/charges") == 1)
            let original = responses.filter { $0.status == 201 && !$0.replayed }
            #expect(original.count == 1)
            // On a slow machine a straggler may arrive after the first completed: then it is a replay.
            let others = responses.filter { !($0.status == 201 && !$0.replayed) }
            #expect(others.allSatisfy { $0.status == 409 || ($0.replayed && $0.body == original.first?.body) })
            #expect(others.filter { $0.status == 409 }.count >= 40)
        }
    }

    @Test func fiftySimultaneousDuplicatesWithInflightWaitAllGetTheSameAnswer() async throws {
        try await withProxy(["inflight_wait": "2s"]) { h in
            let responses = try await burst(h, count: 50, path: "/charges?delay=300", key: "dup")
            #expect(h.upstream.executions("/charges") == 1)
            #expect(responses.allSatisfy { $0.status == 201 })
            #expect(Set(responses.map(\.body)).count == 1)
            #expect(responses.filter(\.replayed).count == 49)
        }
    }

    @Test func twoProxiesSharingRedisRunARequestOnce() async throws {
        try await withDemoUpstream { upstream in
            let prefix = "test:\(UUID().uuidString.prefix(8)):"
            try await withProxy(upstream: upstream, prefix: prefix) { (a: ProxyHarness) async throws in
                try await withProxy(upstream: upstream, prefix: prefix) { (b: ProxyHarness) async throws in
                    var bodies = Set<[UInt8]>()
                    for i in 0..<6 {
                        let proxy = i % 2 == 0 ? a : b
                        let r = try await proxy.send("POST", "/charges", key: "shared", body: "x")
                        #expect(r.status == 201)
                        #expect(r.replayed == (i > 0))
                        bodies.insert(r.body)
                    }
                    #expect(bodies.count == 1)
                    #expect(upstream.executions("/charges") == 1)
                }
            }
        }
    }

    /// A proxy whose Redis traffic is held back past its lease must not overwrite the record of
    /// the proxy that took the key over (docs/behaviour.md §3, rule 5).
    @Test func lateCompletionFromAnExpiredLeaseDoesNotOverwriteTheNewOwner() async throws {
        try await withDemoUpstream { upstream in
            let prefix = "test:\(UUID().uuidString.prefix(8)):"
            let relay = try TCPRelay(targetPort: SharedRedis.port)
            defer { relay.stop() }
            // A: lease 3 s, talks to Redis through the relay. B: direct. The upstream takes
            // 1.5 s: time enough to hold the relay before A's completion, and well inside A's
            // upstream_timeout, even on a busy machine.
            try await withProxy(
                ["lock_ttl": "3s", "upstream_timeout": "2900ms", "redis_timeout": "5s"],
                upstream: upstream, redisURL: "redis://127.0.0.1:\(relay.port)/0", prefix: prefix) { (a: ProxyHarness) async throws in
                try await withProxy(upstream: upstream, prefix: prefix) { (b: ProxyHarness) async throws in

                    // A claims; once the upstream is working on A's request (1.5 s), A's Redis traffic is
                    // held beyond its lease; B takes the expired key over and completes first.
                    let first = Task { try await a.send("POST", "/charges?delay=1500", key: "k", body: "x") }
                    try await upstream.waitUntilExecuting("/charges")
                    relay.hold()
                    try await Task.sleep(for: .milliseconds(3_200))
                    let second = try await b.send("POST", "/charges?delay=1500", key: "k", body: "x")
                    #expect(second.status == 201)
                    #expect(!second.replayed)
                    relay.release()
                    let late = try await first.value
                    #expect(late.status == 201)
                    #expect(late.body != second.body)
                    // The record is B's: every retry replays B's answer.
                    let retry = try await b.send("POST", "/charges?delay=1500", key: "k", body: "x")
                    #expect(retry.replayed)
                    #expect(retry.body == second.body)
                    #expect(try a.counter("idemproxy_completions_lost_total") == 1)
                }
            }
        }
    }
}

/// Results filled in from several threads.
final class NIOLockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<RawHTTPClient.Response, Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<RawHTTPClient.Response, Error>) { lock.withLock { results[i] = r } }
    func all() throws -> [RawHTTPClient.Response] { try lock.withLock { try results.map { try $0!.get() } } }
}

/// `inflight_wait` is driven by Redis Pub/Sub: with the safety-net poll stretched beyond the
/// wait, only a published message can wake the waiting retry before its deadline (without
/// one it would only look again when the 10 s wait ends; the first ends after 2 s).
@Suite struct InflightWaitPubSubTests {
    @Test func aRetryOnAnotherProxyIsWokenByTheFirstCompletion() async throws {
        try await withDemoUpstream { upstream in
            let prefix = "test:\(UUID().uuidString.prefix(8)):"
            try await withProxy(["inflight_wait": "10s"], upstream: upstream, prefix: prefix) { (a: ProxyHarness) async throws in
                try await withProxy(
                    ["inflight_wait": "10s"], upstream: upstream, prefix: prefix, waitPollInterval: .seconds(60)) { (b: ProxyHarness) async throws in
                    let first = Task { try await a.send("POST", "/charges?delay=2000", key: "k", body: "x") }
                    try await upstream.waitUntilExecuting("/charges")
                    let clock = ContinuousClock()
                    let sent = clock.now
                    let waiter = try await b.send("POST", "/charges?delay=2000", key: "k", body: "x")
                    #expect(clock.now - sent < .seconds(6), "the waiter was not woken by the completion")
                    let original = try await first.value
                    #expect(waiter.status == 201)
                    #expect(waiter.replayed)
                    #expect(waiter.body == original.body)
                    #expect(upstream.executions("/charges") == 1)
                }
            }
        }
    }

    /// With `inflight_wait = 0s` nobody on this proxy waits: completions are not published
    /// (Redis counts the PUBLISH calls scripts make in `INFO commandstats`).
    @Test func completionsArePublishedOnlyByProxiesThatLetRetriesWait() async throws {
        let redis = try RedisServerProcess()
        let probe = try await TestRedisClient(port: redis.port)
        defer { Task { await probe.close() } }
        for (wait, published) in [("0s", 0), ("1s", 1)] {
            try await withProxy(["inflight_wait": wait], redisURL: redis.url) { h in
                let before = try await probe.calls(of: "PUBLISH")
                #expect(try await h.send("POST", "/charges", key: "k-\(wait)", body: "x").status == 201)
                #expect(try await probe.calls(of: "PUBLISH") - before == published, "inflight_wait = \(wait)")
            }
        }
    }

    /// Waking waiters is best effort: a message Redis refuses (`SPUBLISH` before Redis 7; here
    /// a command that does not exist) must not stop a completion or a release.
    @Test func aRefusedWakeUpStillStoresAndReleases() async throws {
        let redis = try RedisServerProcess()
        let client = try await TestRedisClient(port: redis.port)
        defer { Task { await client.close() } }
        let owner = [UInt8](repeating: 7, count: IdempotencyRecord.ownerLength)
        let fingerprint = [UInt8](repeating: 1, count: IdempotencyRecord.fingerprintLength)
        let inFlight = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight).encoded()
        let done = IdempotencyRecord(
            owner: owner, fingerprint: fingerprint,
            state: .completed(StoredResponse(status: 201, headers: [("Content-Length", "2")], body: Array("ok".utf8)))
        ).encoded()
        for key in ["stored", "released"] {
            let deadline = RedisArgument.string(String(WallClock.milliseconds() + 60_000))
            #expect(try await client.run(.claim, keys: [.string(key)], arguments: [.bytes(inFlight), "60000", deadline]) == .integer(1))
        }
        let stored = try await client.run(
            .complete, keys: ["stored"], arguments: [.bytes(owner), .bytes(done), "60000", "NOSUCHCOMMAND"])
        #expect(stored == .integer(1))
        #expect(try await client.send(["GET", "stored"]) == .bulk(ByteBuffer(bytes: done)))
        #expect(try await client.run(.release, keys: ["released"], arguments: [.bytes(owner), "NOSUCHCOMMAND"]) == .integer(1))
        #expect(try await client.send(["EXISTS", "released"]) == .integer(0))
    }

    @Test func aWaiterTakesOverAReleasedKeyWhenWoken() async throws {
        try await withProxy(["inflight_wait": "10s"], waitPollInterval: .seconds(60)) { h in
            let failing = Task { try await h.send("POST", "/status/500?delay=2000", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/status/500")
            let clock = ContinuousClock()
            let sent = clock.now
            let waiter = try await h.send("POST", "/status/500?delay=2000", key: "k", body: "x")
            #expect(clock.now - sent < .seconds(6), "the waiter was not woken by the release")
            #expect(try await failing.value.status == 500)
            #expect(waiter.status == 500)
            #expect(!waiter.replayed)
            #expect(h.upstream.executions("/status/500") == 2)
        }
    }
}
