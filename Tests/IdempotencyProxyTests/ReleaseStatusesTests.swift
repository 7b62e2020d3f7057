import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// docs/behaviour.md, "Which upstream answers are stored": an answer that says the request was
/// not processed releases the claim, so that the retry runs; every other answer is replayed.
@Suite struct ReleaseStatusesTests {
    /// Sends the same request twice with one key: whether the second ran again (released) or
    /// was replayed (stored), after checking the first answer went through unchanged.
    private static func secondAttemptRan(_ h: ProxyHarness, status: Int) async throws -> Bool {
        let path = "/status/\(status)"
        let first = try await h.send("POST", path, key: "k-\(status)", body: "x")
        #expect(first.status == status)
        #expect(!first.replayed)
        let retry = try await h.send("POST", path, key: "k-\(status)", body: "x")
        #expect(retry.status == status)
        #expect(retry.body == first.body)
        let executions = h.upstream.executions(path)
        #expect(retry.replayed == (executions == 1), "status \(status): replayed \(retry.replayed), ran \(executions) times")
        return executions == 2
    }

    @Test func notProcessedAndServerErrorsAreReleasedByDefault() async throws {
        try await withProxy { (h: ProxyHarness) async throws in
            for status in [429, 408, 425, 503, 500] {
                #expect(try await Self.secondAttemptRan(h, status: status), "status \(status) was stored")
            }
            #expect(try await h.recordCount() == 0)
        }
    }

    @Test func resultsAndOtherClientErrorsAreStoredByDefault() async throws {
        try await withProxy { (h: ProxyHarness) async throws in
            for status in [201, 400, 404, 409, 422] {
                #expect(try await !Self.secondAttemptRan(h, status: status), "status \(status) was released")
            }
        }
    }

    @Test func aPaymentAPIKeeps500And504() async throws {
        try await withProxy(["release_statuses": "408,425,429,502,503"]) { (h: ProxyHarness) async throws in
            #expect(try await !Self.secondAttemptRan(h, status: 500))
            #expect(try await !Self.secondAttemptRan(h, status: 504))
            #expect(try await Self.secondAttemptRan(h, status: 502))
            #expect(try await Self.secondAttemptRan(h, status: 429))
        }
    }

    @Test func aClassReleasesEachOfItsCodesButNeverA2xx() async throws {
        try await withProxy(["release_statuses": "4xx,2xx"]) { (h: ProxyHarness) async throws in
            #expect(try await Self.secondAttemptRan(h, status: 404))
            #expect(try await Self.secondAttemptRan(h, status: 422))
            #expect(try await !Self.secondAttemptRan(h, status: 500))
            #expect(try await !Self.secondAttemptRan(h, status: 201))
        }
    }

    @Test func store5xxStoresServerErrorsButStillReleases429() async throws {
        try await withProxy(["store_5xx": "true"]) { (h: ProxyHarness) async throws in
            #expect(try await !Self.secondAttemptRan(h, status: 500))
            #expect(try await Self.secondAttemptRan(h, status: 429))
        }
    }

    /// A real retrying client: urllib3's `Retry` retries a 429 (honouring `Retry-After`) with
    /// the same key, against an upstream that rate-limits each key's first attempt. Each key
    /// must end with one execution and a 201.
    @Test func urllib3RetriesA429ThroughTheProxy() async throws {
        let attempts = NIOLockedValueBox([String: Int]())
        let upstream = try ScriptedUpstream { request in
            let key = request.split(separator: "\r\n").first { $0.lowercased().hasPrefix("idempotency-key:") }
                .map { String($0.dropFirst("idempotency-key:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
            let attempt = attempts.withLockedValue { counts -> Int in
                counts[key, default: 0] += 1
                return counts[key]!
            }
            if attempt == 1 {
                return .init("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 4\r\n\r\nslow")
            }
            let body = "{\"key\":\"\(key)\",\"attempt\":\(attempt)}"
            return .init("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        }
        defer { upstream.stop() }
        let script = """
            import sys, urllib3
            from urllib3.util.retry import Retry
            retry = Retry(total=5, status_forcelist=[429], allowed_methods=None, backoff_factor=0, respect_retry_after_header=True)
            http = urllib3.PoolManager(retries=retry)
            for i in range(10):
                r = http.request("POST", "http://127.0.0.1:%s/charges" % sys.argv[1], body=b"amount=10",
                                 headers={"Idempotency-Key": "urllib3-%d" % i})
                print(r.status, r.data.decode())
            """
        try await withProxy(upstreamURL: "http://127.0.0.1:\(upstream.port)") { (h: ProxyHarness) async throws in
            let run = try await runToEnd("/usr/bin/python3", ["-c", script, "\(h.port)"], timeout: 60)
            #expect(run.status == 0, "\(run.stderr)")
            let lines = run.stdout.split(separator: "\n")
            #expect(lines.count == 10)
            for (i, line) in lines.enumerated() {
                #expect(line == "201 {\"key\":\"urllib3-\(i)\",\"attempt\":2}")
            }
            // Two attempts per key reached the upstream: the 429, then the one execution.
            #expect(attempts.withLockedValue { $0 }.values.allSatisfy { $0 == 2 })
            #expect(attempts.withLockedValue { $0 }.count == 10)
        }
    }
}
