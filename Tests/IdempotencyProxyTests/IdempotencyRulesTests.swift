import DemoUpstreamKit
import Foundation
import TestSupport
import Testing

/// docs/behaviour.md §3, one test per rule, end to end: real proxy, real Redis, real upstream.
@Suite struct IdempotencyRulesTests {
    @Test func rule1_noKeyIsForwardedUnprotected() async throws {
        try await withProxy { h in
            _ = try await h.send("POST", "/charges", body: "a=1")
            _ = try await h.send("POST", "/charges", body: "a=1")
            #expect(h.upstream.executions("/charges") == 2)
            #expect(try await h.recordCount() == 0)
            #expect(try h.metric("passthrough") == 2)
        }
    }

    @Test func rule1_requireKeyRefusesAKeylessRequest() async throws {
        try await withProxy(["require_key": "true"]) { h in
            let r = try await h.send("POST", "/charges", body: "a=1")
            #expect(r.status == 400)
            #expect(r.isProblem)
            #expect(r.detail.contains("requires an Idempotency-Key header"))
            #expect(h.upstream.executions("/charges") == 0)
            // Unprotected methods still pass without a key.
            #expect(try await h.send("GET", "/echo").status == 200)
        }
    }

    @Test func rule2_quotedAndBareKeysNameTheSameKey() async throws {
        try await withProxy { h in
            let first = try await h.send("POST", "/charges", key: "\"order-17\"", body: "a=1")
            let second = try await h.send("POST", "/charges", key: "order-17", body: "a=1")
            #expect(first.status == 201)
            #expect(second.replayed)
            #expect(second.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test(arguments: [
        ["\"\""],
        [String(repeating: "k", count: 256)],
        ["k\u{7f}ey"],
        ["a", "b"],
        ["\"unterminated"],
    ])
    func rule2_invalidKeysGet400WithoutTouchingRedisOrUpstream(values: [String]) async throws {
        try await withProxy { h in
            let r = try await h.send("POST", "/charges", headers: values.map { ("Idempotency-Key", $0) }, body: "a=1")
            #expect(r.status == 400)
            #expect(r.isProblem)
            #expect(!r.detail.isEmpty)
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
            #expect(try h.metric("bad_request") == 1)
        }
    }

    @Test func rule2_maxKeyLengthIsConfigurable() async throws {
        try await withProxy(["max_key_length": "8"]) { h in
            #expect(try await h.send("POST", "/charges", key: "12345678", body: "x").status == 201)
            let r = try await h.send("POST", "/charges", key: "123456789", body: "x")
            #expect(r.status == 400)
            #expect(r.detail.contains("limit is 8"))
        }
    }

    @Test func rule3_oversizedBodyGets413WithoutTouchingRedisOrUpstream() async throws {
        try await withProxy(["max_request_body": "1KiB"]) { h in
            let big = String(repeating: "b", count: 1_025)
            let declared = try await h.send("POST", "/charges", key: "k1", body: big)
            #expect(declared.status == 413)
            #expect(declared.isProblem)
            // Chunked: the size is only known while reading.
            let chunked = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges", headers: [("Idempotency-Key", "k2"), ("Transfer-Encoding", "chunked")])
                try c.send("400\r\n" + String(repeating: "c", count: 1_024) + "\r\n1\r\nc\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            #expect(chunked.status == 413)
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
            // Exactly the limit is fine.
            #expect(try await h.send("POST", "/charges", key: "k3", body: String(big.dropLast())).status == 201)
        }
    }

    @Test func rule4_5_firstRequestIsForwardedAndStoredUnderAHashedKey() async throws {
        try await withProxy(["response_ttl": "90s"]) { h in
            let r = try await h.send("POST", "/charges", key: "user key with spaces", body: "amount=5")
            #expect(r.status == 201)
            #expect(!r.replayed)
            #expect(h.upstream.executions("/charges") == 1)
            let redis = try await TestRedisClient(port: SharedRedis.port)
            defer { Task { await redis.close() } }
            guard case .array(let keys) = try await redis.send(["KEYS", .string(h.prefix + "*")]), let key = keys.first?.string else {
                Issue.record("no record stored")
                return
            }
            #expect(key.count == h.prefix.count + 64)
            guard case .integer(let ttl) = try await redis.send(["PTTL", .string(key)]) else { return }
            #expect(ttl > 80_000 && ttl <= 90_000)
        }
    }

    @Test func rule6_retryGetsTheStoredResponseByteForByte() async throws {
        try await withProxy { h in
            let first = try await h.send("POST", "/charges", key: "pay-1", body: "amount=10")
            for _ in 0..<3 {
                let retry = try await h.send("POST", "/charges", key: "pay-1", body: "amount=10")
                #expect(retry.status == first.status)
                #expect(retry.body == first.body)
                #expect(retry.headers.filter { $0.0 != "Idempotent-Replayed" }.map { "\($0.0): \($0.1)" }
                        == first.headers.map { "\($0.0): \($0.1)" })
                #expect(retry.header("Idempotent-Replayed") == "true")
            }
            #expect(h.upstream.executions("/charges") == 1)
            #expect(try h.metric("replayed") == 3)
            #expect(try h.metric("forwarded") == 1)
        }
    }

    @Test func rule6_replayHeaderNameIsConfigurable() async throws {
        try await withProxy(["replay_header": "X-Replayed"]) { h in
            _ = try await h.send("POST", "/charges", key: "k", body: "x")
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(retry.header("X-Replayed") == "true")
            #expect(retry.header("Idempotent-Replayed") == nil)
        }
    }

    @Test func rule7_sameKeyDifferentRequestGets422() async throws {
        try await withProxy { h in
            _ = try await h.send("POST", "/charges", key: "k", body: "amount=1")
            let body = try await h.send("POST", "/charges", key: "k", body: "amount=2")
            let path = try await h.send("POST", "/charges?x=1", key: "k", body: "amount=1")
            let method = try await h.send("PATCH", "/charges", key: "k", body: "amount=1")
            for r in [body, path, method] {
                #expect(r.status == 422)
                #expect(r.isProblem)
            }
            #expect(h.upstream.executions("/charges") == 1)
            #expect(try h.metric("mismatch") == 3)
        }
    }

    @Test func rule7_fingerprintOffReplaysDespiteADifferentBody() async throws {
        try await withProxy(["fingerprint": "false"]) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "amount=1")
            let other = try await h.send("POST", "/charges", key: "k", body: "amount=2")
            #expect(other.replayed)
            #expect(other.body == first.body)
        }
    }

    @Test func rule7_retryWhileInFlightGets409WithRetryAfter() async throws {
        try await withProxy { h in
            let slow = Task { try await h.send("POST", "/charges?delay=3000", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges")
            let retry = try await h.send("POST", "/charges?delay=3000", key: "k", body: "x")
            #expect(retry.status == 409)
            #expect(retry.isProblem)
            #expect(retry.header("Retry-After") != nil)
            #expect(try await slow.value.status == 201)
            #expect(h.upstream.executions("/charges") == 1)
            // After completion the retry is a replay.
            #expect(try await h.send("POST", "/charges?delay=3000", key: "k", body: "x").replayed)
        }
    }

    @Test func rule7_inflightWaitReplaysOnceTheFirstCompletes() async throws {
        try await withProxy(["inflight_wait": "3s"]) { h in
            let slow = Task { try await h.send("POST", "/charges?delay=500", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges")
            let retry = try await h.send("POST", "/charges?delay=500", key: "k", body: "x")
            let first = try await slow.value
            #expect(retry.status == 201)
            #expect(retry.replayed)
            #expect(retry.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func rule7_inflightWaitGives409WhenTheFirstTakesTooLong() async throws {
        try await withProxy(["inflight_wait": "200ms"]) { h in
            let slow = Task { try await h.send("POST", "/charges?delay=3000", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges")
            let retry = try await h.send("POST", "/charges?delay=3000", key: "k", body: "x")
            #expect(retry.status == 409)
            #expect(retry.header("Retry-After") != nil)
            _ = try await slow.value
        }
    }

    @Test func rule7_waiterRunsTheRequestWhenTheFirstIsReleased() async throws {
        try await withProxy(["inflight_wait": "3s"]) { h in
            let failing = Task { try await h.send("POST", "/status/503?delay=400", key: "k", body: "x") }
            try await h.upstream.waitUntilExecuting("/status/503")
            let waiter = try await h.send("POST", "/status/503?delay=400", key: "k", body: "x")
            #expect(try await failing.value.status == 503)
            // The waiter claimed the released key and ran the request itself.
            #expect(waiter.status == 503)
            #expect(!waiter.replayed)
            #expect(h.upstream.executions("/status/503") == 2)
        }
    }

    @Test func rule8_upstream5xxReleasesTheClaim() async throws {
        try await withProxy { h in
            #expect(try await h.send("POST", "/status/500", key: "k", body: "x").status == 500)
            let retry = try await h.send("POST", "/status/500", key: "k", body: "x")
            #expect(retry.status == 500)
            #expect(!retry.replayed)
            #expect(h.upstream.executions("/status/500") == 2)
            #expect(try await h.recordCount() == 0)
        }
    }

    @Test func rule8_store5xxReplaysA5xx() async throws {
        try await withProxy(["store_5xx": "true"]) { h in
            _ = try await h.send("POST", "/status/500", key: "k", body: "x")
            let retry = try await h.send("POST", "/status/500", key: "k", body: "x")
            #expect(retry.status == 500)
            #expect(retry.replayed)
            #expect(h.upstream.executions("/status/500") == 1)
        }
    }

    @Test func rule5_4xxFromUpstreamIsStored() async throws {
        try await withProxy { h in
            _ = try await h.send("POST", "/status/402", key: "k", body: "x")
            let retry = try await h.send("POST", "/status/402", key: "k", body: "x")
            #expect(retry.status == 402)
            #expect(retry.replayed)
        }
    }

    @Test func rule8_unreachableUpstreamGets502AndReleases() async throws {
        let dead = try ClosedPort()
        try await withProxy(upstreamURL: "http://127.0.0.1:\(dead.port)") { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 502)
            #expect(r.isProblem)
            #expect(try await h.recordCount() == 0)
            #expect(try h.metric("upstream_error") == 1)
            // The claim was released: once the upstream is back, the retry runs.
            dead.open()
            try await withDemoUpstream(port: dead.port) { upstream in
                let retry = try await h.send("POST", "/charges", key: "k", body: "x")
                #expect(retry.status == 201)
                #expect(upstream.executions("/charges") == 1)
            }
        }
    }

    @Test func rule8_timeoutGets504AndKeepsTheClaim() async throws {
        try await withProxy(["upstream_timeout": "300ms", "lock_ttl": "5s"]) { h in
            let r = try await h.send("POST", "/charges?delay=2000", key: "k", body: "x")
            #expect(r.status == 504)
            #expect(r.isProblem)
            let retry = try await h.send("POST", "/charges?delay=2000", key: "k", body: "x")
            #expect(retry.status == 409)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func rule8_connectionBrokenAfterSendingGets502AndKeepsTheClaim() async throws {
        try await withProxy { h in
            let r = try await h.send("POST", "/drop", key: "k", body: "x")
            #expect(r.status == 502)
            #expect(r.isProblem)
            #expect(r.detail.contains("broke after the request was sent"))
            let retry = try await h.send("POST", "/drop", key: "k", body: "x")
            #expect(retry.status == 409)
            #expect(h.upstream.executions("/drop") == 1)
        }
    }

    @Test func rule9_oversizedResponseIsDeliveredButNeverRunAgain() async throws {
        try await withProxy(["max_stored_response": "1KiB"]) { h in
            let first = try await h.send("POST", "/big/5000", key: "k", body: "x")
            #expect(first.status == 200)
            #expect(first.body.count == 5_000)
            let retry = try await h.send("POST", "/big/5000", key: "k", body: "x")
            #expect(retry.status == 502)
            #expect(retry.isProblem)
            #expect(retry.detail.contains("too large"))
            #expect(h.upstream.executions("/big/5000") == 1)
        }
    }

    @Test func rule10_clientDisconnectDoesNotCancelTheExchange() async throws {
        try await withProxy { h in
            try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges?delay=300", headers: [("Idempotency-Key", "k")], body: Array("x".utf8))
                c.closeNow()
            }
            try await h.upstream.waitUntilExecuting("/charges")
            // Retry as a client would until the first attempt, still running upstream, completes.
            let retry = try await retrying(times: 50, while: { $0.status == 409 }) {
                try await h.send("POST", "/charges?delay=300", key: "k", body: "x")
            }
            #expect(retry.status == 201)
            #expect(retry.replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func tenantsUsingTheSameKeyNeverSeeEachOthersResponse() async throws {
        try await withProxy { h in
            let alice = try await h.send("POST", "/charges", key: "k", headers: [("Authorization", "Bearer alice")], body: "x")
            let bob = try await h.send("POST", "/charges", key: "k", headers: [("Authorization", "Bearer bob")], body: "x")
            #expect(!bob.replayed)
            #expect(alice.body != bob.body)
            #expect(h.upstream.executions("/charges") == 2)
            let aliceAgain = try await h.send("POST", "/charges", key: "k", headers: [("Authorization", "Bearer alice")], body: "x")
            #expect(aliceAgain.body == alice.body)
        }
    }

    @Test func unprotectedMethodsNeverTouchRedis() async throws {
        try await withProxy { h in
            _ = try await h.send("PUT", "/charges", key: "k", body: "x")
            _ = try await h.send("PUT", "/charges", key: "k", body: "x")
            #expect(h.upstream.executions("/charges") == 2)
            #expect(try await h.recordCount() == 0)
        }
    }

    @Test func theKeyHeaderIsForwardedUpstream() async throws {
        try await withProxy { h in
            let r = try await h.send("POST", "/echo", key: "\"fwd-1\"", body: "x")
            #expect(r.text.contains("Idempotency-Key: \"fwd-1\""))
        }
    }
}

/// Rule 9 with responses that are streamed on because they will not be stored.
@Suite struct OversizedResponseTests {
    @Test(arguments: ["/big/3000000", "/chunked/3000000"])
    func aLargeResponseIsDeliveredWholeAndNeverRunAgain(path: String) async throws {
        try await withProxy(["max_stored_response": "64KiB"]) { h in
            let first = try await h.send("POST", path, key: "k", body: "x")
            #expect(first.status == 200)
            #expect(first.body.count == 3_000_000)
            #expect(!first.isProblem)
            let retry = try await h.send("POST", path, key: "k", body: "x")
            #expect(retry.status == 502)
            #expect(retry.detail.contains("too large"))
            #expect(h.upstream.executions(path) == 1)
        }
    }

    @Test func aLarge5xxIsReleasedSoARetryRunsAgain() async throws {
        // /status answers with a short text; a 5-byte limit makes it "large".
        try await withProxy(["max_stored_response": "5B"]) { h in
            let first = try await h.send("POST", "/status/503", key: "k", body: "x")
            #expect(first.status == 503)
            #expect(first.text == "status 503\n")
            let retry = try await h.send("POST", "/status/503", key: "k", body: "x")
            #expect(retry.status == 503)
            #expect(!retry.replayed)
            #expect(h.upstream.executions("/status/503") == 2)
        }
    }
}
