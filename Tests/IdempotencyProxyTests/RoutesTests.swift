import Foundation
import IdempotencyCore
import TestSupport
import Testing

/// Routes (docs/behaviour.md, "Routes") against a real Redis, PostgreSQL and upstream.
@Suite struct RoutesTests {
    /// A webhook sender retries the same event without an `Idempotency-Key` header: the event
    /// id in the body is the key.
    @Test func aWebhookRetriedWithoutAKeyHeaderRunsOnce() async throws {
        try await withProxy(["route.hooks.path": "/charges", "route.hooks.key_from": "json:/data/id"]) { h in
            let event = #"{"type":"payment.succeeded","data":{"id":"evt_1","amount":5}}"#
            let first = try await h.send("POST", "/charges", body: event)
            let retry = try await h.send("POST", "/charges", body: event)
            #expect(first.status == 201 && !first.replayed)
            #expect(retry.replayed && retry.body == first.body)
            // A header key is not read on this route: the body's key decides.
            let withHeader = try await h.send("POST", "/charges", key: "ignored", body: event)
            #expect(withHeader.replayed)
            // Another event runs; the same event with another body is 422.
            #expect(try await h.send("POST", "/charges", body: #"{"data":{"id":"evt_2"}}"#).replayed == false)
            #expect(try await h.send("POST", "/charges", body: #"{"data":{"id":"evt_1"},"x":1}"#).status == 422)
            // No key in the body: forwarded unprotected, every time.
            _ = try await h.send("POST", "/charges", body: "not json")
            _ = try await h.send("POST", "/charges", body: "not json")
            #expect(h.upstream.executions("/charges") == 4)
            #expect(try h.admin("/metrics").text.contains("idemproxy_requests_total{outcome=\"passthrough\",route=\"hooks\"} 2"))
            #expect(try h.admin("/metrics").text.contains("idemproxy_requests_total{outcome=\"replayed\",route=\"hooks\"} 2"))
        }
    }

    @Test func requireKeyOnAWebhookRouteRefusesABodyWithoutOne() async throws {
        try await withProxy(["route.hooks.path": "/charges", "route.hooks.key_from": "json:/id", "route.hooks.require_key": "true"]) { h in
            let refused = try await h.send("POST", "/charges", body: #"{"other":1}"#)
            #expect(refused.status == 400 && refused.isProblem)
            #expect(h.upstream.executions("/charges") == 0)
        }
    }

    @Test func routesSetTheirOwnPolicy() async throws {
        let settings = [
            "route.login.path": "/echo/login", "route.login.protect": "false",
            "route.short.path": "/echo/short/*", "route.short.response_ttl": "1s",
            "require_key": "true",
        ]
        try await withProxy(settings) { (h: ProxyHarness) async throws in
            // Not protected: no key needed, nothing stored, run every time.
            #expect(try await h.send("POST", "/echo/login", body: "u=1").status == 200)
            #expect(try await h.send("POST", "/echo/login", key: "k", body: "u=1").replayed == false)
            #expect(try await h.send("POST", "/echo/login", key: "k", body: "u=1").replayed == false)
            #expect(try await h.recordCount() == 0)
            // The top level requires a key; the short route inherits that, and keeps records 1 s.
            #expect(try await h.send("POST", "/echo/other", body: "x").status == 400)
            #expect(try await h.send("POST", "/echo/short/a", key: "s", body: "x").replayed == false)
            #expect(try await h.send("POST", "/echo/short/a", key: "s", body: "x").replayed)
            #expect(try await h.send("POST", "/echo/long", key: "l", body: "x").replayed == false)
            try await Task.sleep(for: .milliseconds(1_500))
            #expect(try await h.send("POST", "/echo/short/a", key: "s", body: "x").replayed == false, "expired after the route's 1 s")
            #expect(try await h.send("POST", "/echo/long", key: "l", body: "x").replayed, "kept for the top level's 24 h")
        }
    }

    /// A record keeps the lifetimes of the route it ran on, even once the route says otherwise.
    @Test func aRecordKeepsItsRoutesLifetimesInBothStores() async throws {
        let table = TestTable()
        let prefix = "test:\(UUID().uuidString.prefix(8)):"
        let short = ["route.short.path": "/echo/short", "route.short.response_ttl": "1s", "route.short.retention": "6s"]
        var ranAt = Date()
        try await withProxy(table.settings(short), prefix: prefix) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/echo/long", key: "l", body: "x").status == 200)
            ranAt = Date()
            #expect(try await h.send("POST", "/echo/short", key: "s", body: "x").status == 200)
        }
        let changed = ["route.short.path": "/echo/short", "route.short.response_ttl": "1h", "route.short.retention": "1h"]
        try await withProxy(table.settings(changed), prefix: prefix) { (h: ProxyHarness) async throws in
            try await h.forgetRedisRecords()
            // Redis forgot both; PostgreSQL replays each until its route's retention when it ran.
            let replay = try await h.send("POST", "/echo/short", key: "s", body: "x")
            if Date().timeIntervalSince(ranAt) < 5 { #expect(replay.replayed, "within the 6 s retention it ran with") }
            try await Task.sleep(for: .seconds(max(0, 6.5 - Date().timeIntervalSince(ranAt))))
            try await h.forgetRedisRecords()
            #expect(try await h.send("POST", "/echo/short", key: "s", body: "x").replayed == false, "6 s retention when it ran")
            #expect(try await h.send("POST", "/echo/long", key: "l", body: "x").replayed, "30 d retention")
        }
    }
}
