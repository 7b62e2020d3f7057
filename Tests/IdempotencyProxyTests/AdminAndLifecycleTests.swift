import DemoUpstreamKit
import Foundation
import TestSupport
import Testing

@Suite struct AdminAndLifecycleTests {
    @Test func healthReadinessAndMetrics() async throws {
        try await withProxy { h in
            #expect(try h.admin("/healthz").status == 200)
            #expect(try h.admin("/readyz").status == 200)
            _ = try await h.send("POST", "/charges", key: "k", body: "x")
            let metrics = try h.admin("/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
            // Prometheus text format: every line a comment or `name{labels} value`.
            for line in metrics.text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                #expect(parts.count == 2, "bad line \(line)")
                #expect(Double(parts[1]) != nil, "bad value in \(line)")
                #expect(parts[0].first?.isLetter == true)
            }
            for outcome in ["forwarded", "replayed", "conflict", "mismatch", "bad_request", "too_large", "redis_error", "passthrough", "upstream_error"] {
                #expect(metrics.text.contains("idemproxy_requests_total{outcome=\"\(outcome)\",route=\"default\"}"))
            }
            for histogram in ["idemproxy_request_duration_seconds", "idemproxy_upstream_duration_seconds", "idemproxy_redis_command_duration_seconds"] {
                #expect(metrics.text.contains("\(histogram)_bucket"))
            }
            #expect(metrics.text.contains("idemproxy_requests_in_flight"))
            #expect(try h.metric("forwarded") == 1)
            #expect(try h.admin("/nope").status == 404)
        }
    }

    @Test func shutdownLetsAProtectedRequestInFlightFinishAndStoreItsResult() async throws {
        try await withProxy { (h: ProxyHarness) async throws in
            let upstream = h.upstream
            let prefix = h.prefix
            let slow = Task { try await h.send("POST", "/charges?delay=500", key: "k", body: "x") }
            try await upstream.waitUntilExecuting("/charges")
            let clock = ContinuousClock()
            let start = clock.now
            await h.server.shutdown(grace: .seconds(5))
            #expect(clock.now - start < .seconds(5))
            #expect(try await slow.value.status == 201)
            // A new proxy on the same Redis replays the stored result.
            try await withProxy(upstream: upstream, prefix: prefix) { (next: ProxyHarness) async throws in
                #expect(try await next.send("POST", "/charges?delay=500", key: "k", body: "x").replayed)
                #expect(upstream.executions("/charges") == 1)
            }
        }
    }

    @Test func shutdownStoresTheResultEvenWhenTheClientLeft() async throws {
        try await withProxy { (h: ProxyHarness) async throws in
            let upstream = h.upstream
            let prefix = h.prefix
            try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges?delay=400", headers: [("Idempotency-Key", "gone")], body: Array("x".utf8))
                c.closeNow()
            }
            try await upstream.waitUntilExecuting("/charges")
            await h.server.shutdown(grace: .seconds(5))
            try await withProxy(upstream: upstream, prefix: prefix) { (next: ProxyHarness) async throws in
                #expect(try await next.send("POST", "/charges?delay=400", key: "gone", body: "x").replayed)
            }
        }
    }
}
